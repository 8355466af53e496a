"""The GSPN-2 backbone for mmsegmentation: a thin wrapper around the timm model.

``type='GSPN2'`` in ``mmseg.registry.MODELS``. The wrapper builds the timm model of
:mod:`gspn2_dense.models.gspn2` (``arch`` picks the registered variant, explicit ``dims`` /
``depths`` / model options override it), keeps it as ``self.trunk`` and returns the stage
outputs of ``out_indices`` as NCHW maps at strides 4, 8, 16, 32. Checkpoints go through the
model file's :func:`~gspn2_dense.models.gspn2.checkpoint_filter_fn`, so one loader accepts
our own, timm, open_clip (``visual.trunk.*``) and mmseg (``backbone.*``) checkpoints.
"""
import logging
from typing import Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ..engine.checkpoint import CheckpointError, load_checkpoint_file
from .graphs import optional_graphs
from .gspn2 import NUM_STAGES, checkpoint_filter_fn
from .variants import VARIANTS, get_variant

__all__ = ['GSPN2Backbone', 'ARCHS']

ARCHS = tuple(v.arch for v in VARIANTS.values())


@MODELS.register_module(name='GSPN2')
class GSPN2Backbone(BaseModule):
    """GSPN-2 backbone returning a tuple of NCHW feature maps (contiguous).

    Args:
        arch: Variant, one of ``ARCHS`` (a row of :mod:`.variants`; the timm model ``gspn2_{arch}``).
        dims: Channels per stage, overriding the variant's.
        depths: Blocks per stage, overriding the variant's.
        out_indices: Stages whose outputs are returned (0..3, strides 4..32).
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and stages 0..k-1; frozen
            parts stay in eval mode through ``train()`` and get no gradient.
        norm_eval: Keep BatchNorm layers in eval mode during training (the model itself
            uses LayerNorm, which has no running statistics).
        with_cp: Gradient checkpointing of the blocks.
        drop_path_rate: Stochastic depth rate.
        cuda_graph: Replay the forward from CUDA graphs where it is frozen (linear probes: all
            stages frozen, or inference), one graph per input shape; the eager forward of a
            frozen backbone is bound by the host at probe batch sizes
            (:class:`~gspn2_dense.models.graphs.FrozenForwardGraphs` says when it applies).
        init_cfg: ``dict(type='Pretrained', checkpoint=path)`` loads a checkpoint into the trunk.
        **model_kwargs: Further :class:`~gspn2_dense.models.gspn2.GSPN2` options
            (``proxy_dim``, ``gate_groups``, ``local_chunk``, ``global_stages``, ``use_lpu``,
            ``mlp_ratio``, ``inner_ratio``, ``in_chans``).
    """

    def __init__(self,
                 arch: str = 'tiny',
                 dims: Optional[Sequence[int]] = None,
                 depths: Optional[Sequence[int]] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.0,
                 cuda_graph: bool = False,
                 init_cfg: Optional[dict] = None,
                 **model_kwargs):
        super().__init__(init_cfg=init_cfg)
        if arch not in ARCHS:
            raise ValueError(f'arch must be one of {ARCHS}, got {arch!r}')
        out_indices = tuple(out_indices) if isinstance(out_indices, Sequence) else (out_indices,)
        if not out_indices or any(not isinstance(i, int) or not 0 <= i < NUM_STAGES for i in out_indices):
            raise ValueError(f'out_indices must be stage indices in 0..{NUM_STAGES - 1}, got {out_indices}')
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= NUM_STAGES:
            raise ValueError(f'frozen_stages must be an int in -1..{NUM_STAGES}, got {frozen_stages!r}')
        if init_cfg is not None and (not isinstance(init_cfg, dict) or init_cfg.get('type') != 'Pretrained'
                                     or set(init_cfg) != {'type', 'checkpoint'}):
            raise ValueError("init_cfg must be None or dict(type='Pretrained', checkpoint=...) (key prefixes "
                             f'are found by the checkpoint filter), got {init_cfg!r}')
        overrides = {k: v for k, v in dict(dims=dims, depths=depths).items() if v is not None}
        self.trunk = timm.create_model(get_variant(arch).name, num_classes=0, drop_path_rate=drop_path_rate,
                                       **overrides, **model_kwargs)
        self.trunk.prune_intermediate_layers(list(out_indices), prune_norm=True, prune_head=True)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.num_features = [self.trunk.feature_info[i]['num_chs'] for i in out_indices]
        self.trunk.set_grad_checkpointing(with_cp)
        self._freeze_stages()
        self.graphs = optional_graphs(cuda_graph, self.trunk, self._features)

    def _frozen_modules(self) -> Sequence[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.trunk.stem, *self.trunk.stages[:self.frozen_stages]]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'GSPN2Backbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint into the trunk; without one keep timm's init.

        The local file is read by the toolkit's one loader (weights-only, with messages for
        unusable files) and mapped by :func:`~gspn2_dense.models.gspn2.checkpoint_filter_fn`,
        which knows every checkpoint layout.
        """
        if self.init_cfg is None:
            return
        path = self.init_cfg['checkpoint']
        checkpoint = load_checkpoint_file(path, expected='a checkpoint holding a GSPN-2 trunk (backbone, '
                                                         'open_clip or segmentor)')
        try:
            state_dict = checkpoint_filter_fn(checkpoint, self.trunk)
        except (TypeError, KeyError, ValueError) as err:
            raise CheckpointError(f'{path}: {err}') from None
        result = self.trunk.load_state_dict(state_dict, strict=False)
        matched = len(state_dict) - len(result.unexpected_keys)
        if matched == 0:
            raise KeyError(f"no key of checkpoint {self.init_cfg['checkpoint']!r} matches the GSPN2 "
                           f'backbone; first keys after filtering: {sorted(state_dict)[:5]}')
        print_log(f"GSPN2: loaded {matched} tensors from {self.init_cfg['checkpoint']}", logger='current')
        if result.missing_keys:
            print_log(f'GSPN2: missing keys (left at their init): {result.missing_keys}',
                      logger='current', level=logging.WARNING)
        if result.unexpected_keys:
            print_log(f'GSPN2: unexpected keys (not in the backbone, ignored): {result.unexpected_keys}',
                      logger='current', level=logging.WARNING)
        self._is_init = True

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if x.dim() != 4:
            raise ValueError(f'x must be (B, C, H, W), got shape {tuple(x.shape)}')
        return self._features(x) if self.graphs is None else self.graphs.run(x)

    def _features(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # The trunk runs channels_last; the maps leave it contiguous, as mmseg's heads and
        # TimmFeatures' maps are: a head's logits resized to the label's size and its loss ran
        # 1.12x slower on channels_last features (docs/benchmarks/backbones.md, 2026-12-06),
        # while the copy is of stride-4..32 maps.
        feats = self.trunk.forward_intermediates(x, indices=list(self.out_indices),
                                                 intermediates_only=True)
        return tuple(f.contiguous() for f in feats)
