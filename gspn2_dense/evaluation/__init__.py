"""Metrics that mmseg lacks, registered in mmseg's ``METRICS``."""
from .depth_metric import MonoDepthMetric, depth_errors, eigen_crop_mask

__all__ = ['MonoDepthMetric', 'depth_errors', 'eigen_crop_mask']
from .multitask_metric import MultiTaskMetric, delta_m, load_results  # noqa: E402

__all__ += ['MultiTaskMetric', 'delta_m', 'load_results']
