"""Registers the GSPN-2 modules in mmsegmentation's registries (needs mmseg).

Imported by ``import gspn2_dense`` when mmseg is installed, so configs can bring everything
in with ``custom_imports=dict(imports=['gspn2_dense'], allow_failed_imports=False)``.
Every mmseg-dependent model module is listed here.
"""
from . import backbones, heads, losses, multitask, segmentors, timm_backbone  # noqa: F401
