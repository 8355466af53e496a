"""Monocular depth metrics with the NYUv2 Eigen crop (mmseg ``METRICS``).

mmseg 1.2.2's ``DepthMetric`` fails as soon as ``depth_metrics`` is given
(``isinstance(x, [tuple, list])``) and applies the Eigen crop at fixed 640x480 pixel coordinates;
:class:`MonoDepthMetric` fixes both and reports the metrics of Eigen et al. (NeurIPS 2014) as used
by BTS / AdaBins / DINOv2.
"""
from collections import OrderedDict
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS
from torch import Tensor

# Eigen et al.'s evaluation crop on NYUv2's 480x640 frames: rows [45, 471), columns [41, 601).
EIGEN_CROP_480x640 = (45, 471, 41, 601)


def eigen_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Boolean (H, W) mask of the Eigen crop, scaled from 480x640 to ``height`` x ``width``.

    At 480x640 it is exactly rows 45..470 and columns 41..600.
    """
    top, bottom, left, right = EIGEN_CROP_480x640
    mask = torch.zeros((height, width), dtype=torch.bool, device=device)
    mask[round(top * height / 480):round(bottom * height / 480),
         round(left * width / 640):round(right * width / 640)] = True
    return mask


def depth_errors(gt: Tensor, pred: Tensor) -> Dict[str, float]:
    """The standard depth errors between two 1-D tensors of valid, positive depths.

    ``silog`` is ``100 * sqrt(mean(d^2) - mean(d)^2)`` with ``d = log(pred) - log(gt)`` (KITTI / BTS).
    """
    if gt.shape != pred.shape or gt.dim() != 1:
        raise ValueError(f'gt and pred must be 1-D tensors of the same length, got {tuple(gt.shape)} '
                         f'and {tuple(pred.shape)}')
    gt, pred = gt.double(), pred.double()
    ratio = torch.maximum(gt / pred, pred / gt)
    diff = pred - gt
    log_diff = pred.log() - gt.log()
    return OrderedDict(
        rmse=diff.pow(2).mean().sqrt().item(),
        abs_rel=(diff.abs() / gt).mean().item(),
        sq_rel=(diff.pow(2) / gt).mean().item(),
        rmse_log=log_diff.pow(2).mean().sqrt().item(),
        log10=(pred.log10() - gt.log10()).abs().mean().item(),
        silog=100.0 * (log_diff.pow(2).mean() - log_diff.mean().pow(2)).clamp(min=0).sqrt().item(),
        d1=(ratio < 1.25).double().mean().item(),
        d2=(ratio < 1.25**2).double().mean().item(),
        d3=(ratio < 1.25**3).double().mean().item(),
    )


@METRICS.register_module()
class MonoDepthMetric(BaseMetric):
    """RMSE, AbsRel, SqRel, RMSE-log, log10, SILog and delta1/2/3, averaged over images.

    Per image, pixels with ``min_depth < gt < max_depth`` (inside the Eigen crop when
    ``eigen_crop=True``) are evaluated; predictions are clipped to ``[min_depth, max_depth]``
    first (as BTS / AdaBins / DINOv2 do). Each image's errors are computed on its own, then
    averaged over images.

    Args:
        metrics (Sequence[str], optional): which of :attr:`METRICS` to report. Defaults to all.
        min_depth (float): smallest evaluated depth in metres. Defaults to 1e-3.
        max_depth (float): largest evaluated depth in metres (10 for NYUv2). Defaults to 10.
        eigen_crop (bool): evaluate inside the Eigen crop only. Defaults to False.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): prefix of the metric names.
    """

    METRICS = ('rmse', 'abs_rel', 'sq_rel', 'rmse_log', 'log10', 'silog', 'd1', 'd2', 'd3')
    default_prefix: Optional[str] = None

    def __init__(self, metrics: Optional[Sequence[str]] = None, min_depth: float = 1e-3,
                 max_depth: float = 10.0, eigen_crop: bool = False, collect_device: str = 'cpu',
                 prefix: Optional[str] = None, **kwargs) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if kwargs:
            raise TypeError(f'MonoDepthMetric got unexpected arguments {sorted(kwargs)}')
        if metrics is None:
            metrics = self.METRICS
        if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
            raise TypeError(f'metrics must be a list or tuple of names from {self.METRICS}, got {metrics!r}')
        unknown = [name for name in metrics if name not in self.METRICS]
        if unknown:
            raise ValueError(f'unknown depth metrics {unknown}; expected names from {self.METRICS}')
        if not 0 <= min_depth < max_depth:
            raise ValueError(f'need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}')
        self.metrics = tuple(metrics)
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.eigen_crop = eigen_crop

    def eval_mask(self, gt: Tensor) -> Tensor:
        mask = (gt > self.min_depth) & (gt < self.max_depth)
        if self.eigen_crop:
            mask &= eigen_crop_mask(*gt.shape[-2:], device=gt.device)
        return mask

    def image_errors(self, gt: Tensor, pred: Tensor) -> Tuple[Dict[str, float], int]:
        """Errors of one (H, W) prediction against its (H, W) ground truth, and the pixel count."""
        if gt.shape != pred.shape:
            raise ValueError(f'prediction and ground truth must have the same shape, got '
                             f'{tuple(pred.shape)} and {tuple(gt.shape)}')
        mask = self.eval_mask(gt)
        count = int(mask.sum())
        if count == 0:
            return {}, 0
        pred = pred.clamp(self.min_depth, self.max_depth)
        return depth_errors(gt[mask], pred[mask]), count

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample['pred_depth_map']['data'].squeeze(0).float()
            gt = sample['gt_depth_map']['data'].squeeze(0).float().to(pred.device)
            errors, count = self.image_errors(gt, pred)
            if count:
                self.results.append(errors)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if not results:
            raise RuntimeError(f'MonoDepthMetric: no image had a valid ground-truth pixel in '
                               f'({self.min_depth}, {self.max_depth}) metres'
                               + (' inside the Eigen crop' if self.eigen_crop else ''))
        out = OrderedDict((name, sum(r[name] for r in results) / len(results)) for name in self.metrics)
        print_log('depth metrics over %d images: %s' % (
            len(results), ', '.join(f'{k}={v:.4f}' for k, v in out.items())), logger='current')
        return out
