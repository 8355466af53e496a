import math

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample

import gspn2_dense  # noqa: F401  (registers MonoDepthMetric)
from gspn2_dense.evaluation import MonoDepthMetric, eigen_crop_mask


def sample(gt, pred):
    s = SegDataSample()
    s.gt_depth_map = PixelData(data=gt[None])
    s.pred_depth_map = PixelData(data=pred[None])
    return s.to_dict()


def evaluate(metric, pairs):
    metric.process({}, [sample(gt, pred) for gt, pred in pairs])
    return metric.compute_metrics(metric.results)


def test_hand_computed_values_without_crop():
    # 2x2 image: gt = [1, 2; 4, 0(invalid)], pred = [2, 2; 3, 7]
    gt = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    pred = torch.tensor([[2.0, 2.0], [3.0, 7.0]])
    out = evaluate(MonoDepthMetric(), [(gt, pred)])
    # valid pixels: (1 -> 2), (2 -> 2), (4 -> 3); errors 1, 0, -1
    assert out['rmse'] == pytest.approx(math.sqrt(2 / 3))
    assert out['abs_rel'] == pytest.approx((1 / 1 + 0 + 1 / 4) / 3)
    assert out['sq_rel'] == pytest.approx((1 / 1 + 0 + 1 / 4) / 3)
    # ratios max(gt/pred, pred/gt): 2, 1, 4/3 -> only the exact pixel is under 1.25
    assert out['d1'] == pytest.approx(1 / 3)
    assert out['d2'] == pytest.approx(2 / 3)  # 4/3 < 1.5625, 2 > 1.5625
    assert out['d3'] == pytest.approx(2 / 3)  # 2 > 1.953
    assert out['log10'] == pytest.approx((math.log10(2) + 0 + math.log10(4 / 3)) / 3)
    d = [math.log(2), 0.0, math.log(3 / 4)]
    mean = sum(d) / 3
    assert out['silog'] == pytest.approx(100 * math.sqrt(sum(x * x for x in d) / 3 - mean**2))


def test_images_are_averaged_not_pixels():
    perfect = torch.full((4, 4), 2.0)
    bad = torch.full((2, 2), 2.0)
    out = evaluate(MonoDepthMetric(metrics=['rmse', 'd1']), [(perfect, perfect.clone()), (bad, bad * 2)])
    assert set(out) == {'rmse', 'd1'}
    assert out['rmse'] == pytest.approx(1.0)  # (0 + 2) / 2, not weighted by 16 vs 4 pixels
    assert out['d1'] == pytest.approx(0.5)


def test_eigen_crop_480x640_and_scaled():
    mask = eigen_crop_mask(480, 640)
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (45, 470, 41, 600)
    assert mask.sum().item() == 426 * 560
    small = eigen_crop_mask(48, 64)
    assert small.sum().item() == 43 * 56  # rows round(4.5)=4 .. round(47.1)=47, cols 4 .. 60


def test_eigen_crop_changes_the_result():
    gt = torch.full((48, 64), 3.0)
    pred = gt.clone()
    pred[:2] = 6.0  # wrong only on the top rows, which the Eigen crop removes
    full = evaluate(MonoDepthMetric(), [(gt, pred)])
    cropped = evaluate(MonoDepthMetric(eigen_crop=True), [(gt, pred)])
    assert full['rmse'] == pytest.approx(math.sqrt(9 * 2 / 48))
    assert full['d1'] == pytest.approx(46 / 48)
    assert cropped['rmse'] == 0 and cropped['abs_rel'] == 0 and cropped['d1'] == 1


def test_max_depth_clipping_and_range():
    gt = torch.tensor([[1.0, 12.0]])  # 12 m is beyond max_depth: not evaluated
    pred = torch.tensor([[20.0, 5.0]])  # clipped to 10
    out = evaluate(MonoDepthMetric(max_depth=10.0), [(gt, pred)])
    assert out['rmse'] == pytest.approx(9.0)


def test_registered_and_bad_arguments():
    metric = METRICS.build(dict(type='MonoDepthMetric', metrics=['rmse', 'abs_rel', 'd1'], eigen_crop=True))
    assert metric.metrics == ('rmse', 'abs_rel', 'd1')
    with pytest.raises(ValueError, match=r"unknown depth metrics \['rmse_lin'\]"):
        MonoDepthMetric(metrics=['rmse_lin'])
    with pytest.raises(TypeError, match='metrics must be a list or tuple'):
        MonoDepthMetric(metrics='rmse')
    with pytest.raises(ValueError, match='min_depth < max_depth'):
        MonoDepthMetric(min_depth=2, max_depth=1)
    with pytest.raises(RuntimeError, match='no image had a valid ground-truth pixel'):
        evaluate(MonoDepthMetric(), [(torch.zeros(2, 2), torch.ones(2, 2))])
    with pytest.raises(ValueError, match='same shape'):
        evaluate(MonoDepthMetric(), [(torch.ones(2, 2), torch.ones(2, 3))])
