"""Any timm model as an mmseg backbone (``type='TimmFeatures'`` in mmseg ``MODELS``).

The baselines the dense probes compare GSPN-2 with (Swin-T, ConvNeXt-T, ...) come in through
``timm.create_model(name, features_only=True)``; stage maps are returned as NCHW whatever the
model's own output format (timm's Swin returns NHWC). mmseg's ``TIMMBackbone`` returns the
model's format as is, which breaks every head on Swin.
"""
from typing import Optional, Sequence, Tuple

import timm
import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from .graphs import optional_graphs

__all__ = ['TimmFeatureBackbone']


@MODELS.register_module(name='TimmFeatures')
class TimmFeatureBackbone(BaseModule):
    """Stage maps of a timm model, NCHW.

    Args:
        model_name: the timm model (e.g. ``'swin_tiny_patch4_window7_224'``, ``'convnext_tiny'``).
        out_indices: feature levels to return (timm's ``out_indices``).
        checkpoint: a timm-format checkpoint file loaded through timm's own filter
            (``pretrained_cfg_overlay=dict(file=...)``); ``None`` keeps the random init.
        cuda_graph: replay the forward from CUDA graphs where it is frozen (see
            :class:`~gspn2_dense.models.graphs.FrozenForwardGraphs`), as ``GSPN2``'s option.
        **model_kwargs: further ``timm.create_model`` arguments (e.g. ``img_size``,
            ``strict_img_size=False`` for Swin on other image sizes, ``drop_path_rate``).
    """

    def __init__(self, model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3),
                 checkpoint: Optional[str] = None, cuda_graph: bool = False,
                 **model_kwargs) -> None:
        super().__init__(init_cfg=None)
        if model_name not in timm.list_models():
            raise KeyError(f'timm has no model {model_name!r} (timm {timm.__version__}); see '
                           'timm.list_models()')
        pretrained = checkpoint is not None
        overlay = dict(file=checkpoint) if pretrained else None
        self.trunk = timm.create_model(model_name, features_only=True, out_indices=tuple(out_indices),
                                       pretrained=pretrained, pretrained_cfg_overlay=overlay, **model_kwargs)
        if pretrained:
            print_log(f'TimmFeatures: loaded {model_name} weights from {checkpoint}', logger='current')
        self.channels_last = str(getattr(self.trunk, 'output_fmt', 'NCHW')).endswith('NHWC')
        self.num_features = list(self.trunk.feature_info.channels())
        self.strides = list(self.trunk.feature_info.reduction())
        self.graphs = optional_graphs(cuda_graph, self.trunk, self._features)

    def init_weights(self) -> None:
        """Weights come from ``timm.create_model`` (random init or ``checkpoint``); nothing to do."""
        self._is_init = True

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'x must be (B, C, H, W), got shape {tuple(x.shape)}')
        return self._features(x) if self.graphs is None else self.graphs.run(x)

    def _features(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.trunk(x)
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return tuple(feats)
