"""GSPN-2 models.

``gspn2`` holds the timm-style backbones and needs only timm; importing this package
registers them in timm's model registry. The OpenMMLab modules (mmseg backbone, heads,
segmentors, losses) need mmsegmentation and are imported by :mod:`.openmmlab`, which
``import gspn2_dense`` loads when mmseg is installed -- add new mmseg modules there.
"""
from .gspn2 import GSPN2, checkpoint_filter_fn

__all__ = ['GSPN2', 'checkpoint_filter_fn']
