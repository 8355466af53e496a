import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.structures import SegDataSample


def test_iou_on_a_crafted_pair():
    """mmseg's IoUMetric (used by every segmentation probe config) against hand-computed IoU."""
    gt = torch.tensor([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 2],
                         [2, 2, 0, 0]])
    # class 0: inter 3, union gt 4 + pred 4 - 3 = 5 -> 0.6
    # class 1: inter 3, union 4 + 4 - 3 = 5 -> 0.6
    # class 2: inter 2, union 3 + 3 - 2 = 4 -> 0.5    (the ignored pixel counts for nobody)
    s = SegDataSample()
    s.gt_sem_seg = PixelData(data=gt[None])
    s.pred_sem_seg = PixelData(data=pred[None])
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process({}, [s.to_dict()])
    out = metric.compute_metrics(metric.results)
    assert out['mIoU'] == pytest.approx(100 * np.mean([0.6, 0.6, 0.5]), abs=0.01)
    assert out['aAcc'] == pytest.approx(100 * 8 / 11, abs=0.01)
