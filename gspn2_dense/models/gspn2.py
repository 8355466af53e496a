"""GSPN-2: a hierarchical vision backbone built on 2-D line-scan propagation.

A four-stage backbone (strides 4, 8, 16, 32) whose token mixer is the generalized
spatial propagation of GSPN: a linear recurrence that sweeps the image line by line
in four directions, with row-stochastic three-tap weights. GSPN-2 runs it in a
compact proxy channel space with gates shared across channels, all four directions
in one fused op (``gspn2_dense.ops.gspn_propagate``).

Paper: `GSPN-2: Efficient Parallel Sequence Modeling` (NeurIPS 2025),
https://arxiv.org/abs/2512.07884; predecessor `Parallel Sequence Modeling via
Generalized Spatial Propagation Network` (CVPR 2025), https://arxiv.org/abs/2501.12381.

    @inproceedings{wang2025gspn2,
      title={GSPN-2: Efficient Parallel Sequence Modeling},
      author={Wang, Hongjun and others},
      booktitle={NeurIPS},
      year={2025}
    }

The paper's code is not public: this file is this project's implementation, in
timm's model-file layout (blocks, stage, model, checkpoint filter, default configs,
one registered function per variant, whose sizes are its row of :mod:`.variants`). Weights
come from local files only, e.g.
``timm.create_model('gspn2_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
"""
from numbers import Integral
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (ClassifierHead, DropPath, LayerNorm2d, register_notrace_function,
                         trunc_normal_)
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from gspn2_dense.ops import gspn_propagate, layer_norm

from .variants import VARIANTS

__all__ = ['CHECKPOINT_LAYOUTS', 'FusedLayerNorm2d', 'GSPN2', 'GSPN2Block', 'GSPN2Mixer', 'GSPN2Stage',
           'LowPrecisionLayerNorm2d', 'checkpoint_filter_fn', 'checkpoint_layout',
           'checkpoint_state_dict']

# FX symbolic tracing (torchvision's create_feature_extractor, timm's features_only with
# feature_cls='fx') keeps the fused op as one leaf call instead of tracing into its input checks.
torch.fx.wrap('gspn_propagate')
register_notrace_function(gspn_propagate)

NUM_STAGES = 4
NUM_DIRECTIONS = 4
NUM_TAPS = 3


def _per_stage(value, name: str) -> Tuple[int, ...]:
    """Broadcast one int to every stage, or check a sequence has one int per stage."""
    if isinstance(value, Integral):
        return (int(value),) * NUM_STAGES
    if isinstance(value, Sequence) and len(value) == NUM_STAGES and all(isinstance(v, Integral) for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(f'{name} must be one int or a sequence of {NUM_STAGES}, got {value!r}')


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``conv`` applied as a linear map over the channels of every position.

    The model runs channels_last, where the permutes are views: one GEMM with the bias in its
    epilogue, no layout copies, and a channels_last result (the parameters stay the conv's,
    so checkpoints are unchanged).
    """
    return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


def _layer_norm_nhwc(x: torch.Tensor, norm: nn.LayerNorm, low_precision: bool) -> torch.Tensor:
    """``layer_norm`` over the last dim of ``x``. Under autocast its output is the autocast
    dtype with ``low_precision``, else float32 (what autocast gives ``F.layer_norm``); the
    fused kernel (:func:`gspn2_dense.ops.layer_norm`) reads ``x`` in its own dtype either way."""
    device = x.device.type
    # (meta tensors, which the complexity count runs, have no autocast state to ask about;
    # torch.amp.is_autocast_available would say so but breaks torch.compile's graph)
    if device == 'meta' or not torch.is_autocast_enabled(device):
        return layer_norm(x, norm.weight, norm.bias, norm.eps)
    dtype = torch.get_autocast_dtype(device) if low_precision else torch.float32
    with torch.autocast(device, enabled=False):
        return layer_norm(x, norm.weight, norm.bias, norm.eps, out_dtype=dtype)


# FX tracing keeps the autocast test as one call (it reads the device of a traced tensor).
torch.fx.wrap('_layer_norm_nhwc')
register_notrace_function(_layer_norm_nhwc)


class FusedLayerNorm2d(LayerNorm2d):
    """timm's LayerNorm2d (float32 output under autocast), run by the fused layer-norm kernel
    on channels_last CUDA maps (``F.layer_norm`` elsewhere). Same parameters and checkpoints."""

    low_precision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_norm_nhwc(x.permute(0, 2, 3, 1), self, self.low_precision).permute(0, 3, 1, 2)


class LowPrecisionLayerNorm2d(FusedLayerNorm2d):
    """LayerNorm2d for a norm whose output goes straight into a projection.

    Under autocast, ``layer_norm`` runs in float32 and returns float32, which the projection
    casts back to the autocast dtype at once: two casts of the activation and float32 bytes
    in between. This norm returns the autocast dtype (statistics and affine parameters stay in
    float32), reading its input in whatever dtype it comes. Outside autocast it is
    ``LayerNorm2d``; the parameters (and checkpoints) are the same.
    """

    low_precision = True


class PointwiseMlp(nn.Module):
    """FFN of 1x1 convolutions: ``fc2(act(fc1(x)))``, run as GEMMs over the channels."""

    def __init__(self, dim: int, hidden_dim: int, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden_dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.fc2, self.act(_pointwise(self.fc1, x)))


class LocalPerceptionUnit(nn.Module):
    """Residual depth-wise 3x3 convolution: ``x + dwconv(x)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class GSPN2Mixer(nn.Module):
    """Token mixer: four-direction line-scan propagation in a compact proxy space.

    ``x`` (``dim``) -> 1x1 in-projection (``inner_dim``) -> SiLU -> depth-wise 3x3 ->
    one 1x1 convolution predicting the proxy features (``proxy_dim``), the gate logits
    (4 directions x ``gate_groups`` x 3 taps), ``lam`` (through a sigmoid, in (0, 1))
    and ``u`` (4 x ``proxy_dim`` each) -> ``gspn_propagate`` + ``skip_scale * proxy``
    -> 1x1 lift to ``inner_dim`` -> LayerNorm2d -> 1x1 out-projection to ``dim``.

    Args:
        dim: Input and output channels.
        inner_dim: Channels of the expanded space (``d_inner``).
        proxy_dim: Channels of the propagation space.
        gate_groups: Gate groups; 1 shares the gates over all proxy channels (GSPN-2),
            ``proxy_dim`` gives every channel its own gates (GSPN-1 style).
        chunk: Scan restarts every ``chunk`` steps (local layer); None scans whole lines.
    """

    def __init__(self, dim: int, inner_dim: int, proxy_dim: int, gate_groups: int = 1,
                 chunk: Optional[int] = None):
        super().__init__()
        if proxy_dim % gate_groups:
            raise ValueError(f'gate_groups must divide proxy_dim, got gate_groups={gate_groups} '
                             f'and proxy_dim={proxy_dim}')
        self.proxy_dim = proxy_dim
        self.gate_groups = gate_groups
        self.chunk = chunk
        self.split_sizes = [proxy_dim, NUM_DIRECTIONS * gate_groups * NUM_TAPS,
                            NUM_DIRECTIONS * proxy_dim, NUM_DIRECTIONS * proxy_dim]
        self.in_proj = nn.Conv2d(dim, inner_dim, kernel_size=1)
        self.act = nn.SiLU()
        self.conv_dw = nn.Conv2d(inner_dim, inner_dim, kernel_size=3, padding=1, groups=inner_dim)
        self.proxy_proj = nn.Conv2d(inner_dim, sum(self.split_sizes), kernel_size=1)
        self.skip_scale = nn.Parameter(torch.ones(proxy_dim))
        self.lift = nn.Conv2d(proxy_dim, inner_dim, kernel_size=1)
        self.out_norm = LowPrecisionLayerNorm2d(inner_dim)
        self.out_proj = nn.Conv2d(inner_dim, dim, kernel_size=1)

    def __prepare_scriptable__(self) -> 'GSPN2Mixer':
        # torch.jit.script calls this on every submodule before compiling anything.
        raise RuntimeError(
            'GSPN-2 models cannot be compiled by torch.jit.script: the token mixer calls the '
            'fused propagation op through Python-level input checks, which TorchScript does '
            'not support. Use torch.compile (fullgraph=True works), torch.export or '
            'torch.jit.trace instead.')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.propagate(self.conv_dw(self.act(_pointwise(self.in_proj, x))))
        return _pointwise(self.out_proj, self.out_norm(_pointwise(self.lift, _channels_last(y))))

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        """The middle of the mixer: the depth-wise convolution's output (B, inner_dim, H, W) ->
        proxy features, gates, lam and u -> ``gspn_propagate`` + ``skip_scale * proxy``, a
        contiguous (B, proxy_dim, H, W) map."""
        batch, channels, height, width = x.shape
        # The propagation reads (B, C, H, W) planes: one batched GEMM maps the positions
        # (rows of the channels_last map, a view) straight to planes, bias included.
        # (The weight is cast before it is expanded: under autocast the cast of the expanded
        # weight would write, and its backward read, one float32 copy per batch item.)
        tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        weight = self.proxy_proj.weight.flatten(1).to(tokens.dtype)
        planes = torch.baddbmm(self.proxy_proj.bias.to(tokens.dtype).view(1, -1, 1),
                               weight.expand(batch, -1, -1), tokens.transpose(1, 2))
        proxy, gates, lam, u = planes.view(batch, -1, height, width).split(self.split_sizes, dim=1)
        gates = gates.reshape(batch, NUM_DIRECTIONS, self.gate_groups, NUM_TAPS, height, width)
        lam = torch.sigmoid(lam).reshape(batch, NUM_DIRECTIONS, self.proxy_dim, height, width)
        u = u.reshape(batch, NUM_DIRECTIONS, self.proxy_dim, height, width)
        y = gspn_propagate(proxy, gates, lam, u, chunk=self.chunk)
        # (in y's dtype: a float32 skip_scale would promote the sum, and the lift's input, to
        # float32 under autocast)
        return torch.addcmul(y, proxy, self.skip_scale.to(y.dtype).view(1, -1, 1, 1))


class GSPN2Block(nn.Module):
    """LPU -> ``x + drop_path(mixer(norm(x)))`` -> LPU -> ``x + drop_path(ffn(norm(x)))``."""

    def __init__(self, dim: int, inner_ratio: float = 1.0, proxy_dim: int = 32, gate_groups: int = 1,
                 chunk: Optional[int] = None, mlp_ratio: float = 3.0, use_lpu: bool = True,
                 drop_path: float = 0.0):
        super().__init__()
        self.lpu1 = LocalPerceptionUnit(dim) if use_lpu else nn.Identity()
        self.norm1 = LowPrecisionLayerNorm2d(dim)
        self.mixer = GSPN2Mixer(dim, int(round(inner_ratio * dim)), proxy_dim, gate_groups, chunk)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.lpu2 = LocalPerceptionUnit(dim) if use_lpu else nn.Identity()
        self.norm2 = LowPrecisionLayerNorm2d(dim)
        self.mlp = PointwiseMlp(dim, int(round(mlp_ratio * dim)), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lpu1(x)
        x = x + self.drop_path1(self.mixer(self.norm1(x)))
        x = self.lpu2(x)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class GSPN2Stage(nn.Module):
    """Optional 3x3 stride-2 convolution + LayerNorm2d, then ``depth`` blocks."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, downsample: bool,
                 drop_path_rates: Sequence[float], **block_kwargs):
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1),
                FusedLayerNorm2d(out_chs),
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            GSPN2Block(out_chs, drop_path=drop_path_rates[i], **block_kwargs) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class GSPN2(nn.Module):
    """GSPN-2 backbone: conv stem (stride 4), four stages, norm, classifier head.

    Args:
        in_chans: Input image channels.
        num_classes: Classifier outputs; 0 gives no classifier.
        global_pool: Pooling type of the head ('avg', 'max', ..., '' for none).
        depths: Blocks per stage (default: ``gspn2_tiny``'s).
        dims: Channels per stage (default: ``gspn2_tiny``'s).
        inner_ratio: Mixer expansion, ``d_inner = inner_ratio * dim``.
        proxy_dim: Channels of the propagation space, one int or one per stage; None gives
            a quarter of each stage's width.
        gate_groups: Gate groups, one int or one per stage; 1 is GSPN-2's channel-shared
            propagation, ``gate_groups == proxy_dim`` is GSPN-1's per-channel one.
        local_chunk: Chunk length (scan restart period) of the local stages.
        global_stages: Indices of the stages whose scans run over whole lines.
        use_lpu: Whether blocks use the local perception units.
        mlp_ratio: FFN expansion.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate, rising linearly over the blocks.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Sequence[int] = VARIANTS['gspn2_tiny'].depths,
            dims: Sequence[int] = VARIANTS['gspn2_tiny'].dims,
            inner_ratio: float = 1.0,
            proxy_dim: Optional[Union[int, Sequence[int]]] = None,
            gate_groups: Union[int, Sequence[int]] = 1,
            local_chunk: int = 2,
            global_stages: Sequence[int] = (2, 3),
            use_lpu: bool = True,
            mlp_ratio: float = 3.0,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        depths = _per_stage(depths, 'depths')
        dims = _per_stage(dims, 'dims')
        if proxy_dim is None:
            proxy_dim = tuple(max(c // 4, 1) for c in dims)
        proxy_dims = _per_stage(proxy_dim, 'proxy_dim')
        gate_groups = _per_stage(gate_groups, 'gate_groups')
        if any(d < 1 for d in depths) or any(c < 2 for c in dims) or any(p < 1 for p in proxy_dims):
            raise ValueError(f'depths must be >= 1, dims >= 2 and proxy_dim >= 1, '
                             f'got depths={depths}, dims={dims}, proxy_dim={proxy_dims}')
        for i, (proxy, groups) in enumerate(zip(proxy_dims, gate_groups)):
            if groups < 1 or proxy % groups:
                raise ValueError(f'gate_groups must divide proxy_dim in every stage, got gate_groups='
                                 f'{groups} and proxy_dim={proxy} in stage {i}')
        if not isinstance(local_chunk, Integral) or local_chunk < 1:
            raise ValueError(f'local_chunk must be a positive int, got {local_chunk!r}')
        if any(s not in range(NUM_STAGES) for s in global_stages):
            raise ValueError(f'global_stages must be stage indices in 0..{NUM_STAGES - 1}, '
                             f'got {tuple(global_stages)}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')

        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1),
            FusedLayerNorm2d(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1),
        )
        rates = [drop_path_rate * i / max(sum(depths) - 1, 1) for i in range(sum(depths))]
        stages, self.feature_info = [], []
        for i in range(NUM_STAGES):
            start = sum(depths[:i])
            stages.append(GSPN2Stage(
                dims[i - 1] if i else dims[0], dims[i], depths[i], downsample=i > 0,
                drop_path_rates=rates[start:start + depths[i]],
                inner_ratio=inner_ratio, proxy_dim=proxy_dims[i], gate_groups=gate_groups[i],
                chunk=None if i in global_stages else local_chunk, mlp_ratio=mlp_ratio, use_lpu=use_lpu))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = FusedLayerNorm2d(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {name for name, param in self.named_parameters() if param.ndim <= 1}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Union[str, List]]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward through the stages, collecting the outputs of the stages in ``indices``.

        Args:
            x: Input images (B, C, H, W).
            indices: Last n stages if int, all if None, these stages if a sequence.
            norm: Apply the final norm to the last stage's output when it is taken.
            stop_early: Stop after the last stage that is taken.
            output_fmt: Only 'NCHW'.
            intermediates_only: Return only the list of stage outputs.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_index = len(self.stages) - 1
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        intermediates = []
        x = self.stem(_channels_last(x))
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == last_index else x)
        if intermediates_only:
            return intermediates
        if i == last_index:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last one in ``indices`` (and the norm / head)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm or max_index < NUM_STAGES - 1:
            self.norm = nn.Identity()
        if prune_head or max_index < NUM_STAGES - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            self.head = ClassifierHead(self.num_features, 0, pool_type='')
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(_channels_last(x))
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


_CHECKPOINT_WRAPPERS = ('state_dict', 'model', 'module')
_DDP_PREFIX = 'module.'

# Every checkpoint layout the toolkit reads, by kind: (kind, key prefixes that mark it, prefixes
# under which it holds the GSPN-2 trunk). The first kind one of whose markers occurs is the
# checkpoint's; the first of its trunk prefixes that occurs is the trunk's.
CHECKPOINT_LAYOUTS = (
    # mmseg segmentors; tools/train.py writes the GSPN2 wrapper's backbone.trunk.*
    ('segmentor', ('decode_head.', 'backbone.'), ('backbone.trunk.', 'backbone.')),
    # open_clip(_train): the image tower is open_clip's TimmModel, its timm model under trunk.
    ('clip', ('visual.', 'logit_scale'), ('visual.trunk.',)),
    # this model / timm / a converted CLIP tower; trunk.*: the mmseg GSPN2 wrapper's own state dict
    ('backbone', ('stem.', 'stages.', 'trunk.'), ('trunk.', '')),
)


def checkpoint_state_dict(checkpoint: Dict) -> Dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: ``{'state_dict' | 'model' | 'module': ...}`` wrappers
    opened, DDP's ``module.`` prefix removed, non-tensor entries dropped."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'state_dict must be a dict of tensors, got {type(checkpoint).__name__}')
    state_dict = checkpoint
    while not any(isinstance(v, torch.Tensor) for v in state_dict.values()):
        wrapper = next((k for k in _CHECKPOINT_WRAPPERS if isinstance(state_dict.get(k), dict)), None)
        if wrapper is None:
            raise KeyError(f'no tensors in the checkpoint and none of the wrappers {_CHECKPOINT_WRAPPERS}; '
                           f'top-level keys: {sorted(state_dict)[:10]}')
        state_dict = state_dict[wrapper]
    return {k.removeprefix(_DDP_PREFIX): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def checkpoint_layout(state_dict: Dict[str, torch.Tensor]) -> Tuple[str, Optional[str]]:
    """``(kind, trunk prefix)`` of a :func:`checkpoint_state_dict` by :data:`CHECKPOINT_LAYOUTS`.

    ``kind`` is ``'segmentor'``, ``'clip'``, ``'backbone'`` or ``'unknown'``; the prefix is
    ``None`` when a checkpoint of a known kind holds no GSPN-2 trunk (e.g. a ViT CLIP model)
    and ``''`` for a trunk at the top level or an unknown kind.
    """
    for kind, markers, trunk_prefixes in CHECKPOINT_LAYOUTS:
        if any(k.startswith(markers) for k in state_dict):
            return kind, next((p for p in trunk_prefixes if any(k.startswith(p) for k in state_dict)), None)
    return 'unknown', ''


def _key_groups(state_dict: Dict[str, torch.Tensor], shown: int = 8) -> List[str]:
    groups = sorted({'.'.join(k.split('.')[:2]) for k in state_dict})
    return groups[:shown] + ([f'... ({len(groups) - shown} more)'] if len(groups) > shown else [])


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: Optional[nn.Module] = None
                         ) -> Dict[str, torch.Tensor]:
    """Map any checkpoint of a GSPN-2 trunk to the keys of :class:`GSPN2`.

    Accepts every layout of :data:`CHECKPOINT_LAYOUTS`: this model's own / timm state dicts,
    ``{'state_dict' | 'model' | 'module': ...}`` wrappers, DDP's ``module.`` prefix, open_clip
    checkpoints (``visual.trunk.*``; the rest of the CLIP model is dropped) and mmseg
    checkpoints (``backbone.*`` or the wrapper's ``backbone.trunk.*``; heads are dropped). A
    CLIP or segmentor checkpoint without a GSPN-2 trunk raises ``ValueError``; keys of an
    unknown layout pass unchanged (the model's load reports what does not fit). With ``model``
    given (timm's filter signature), a headless checkpoint (e.g. a converted CLIP tower) gets
    ``model``'s own classifier tensors, so the trunk loads strictly and the head keeps its
    initialisation; that is logged.
    """
    state_dict = checkpoint_state_dict(state_dict)
    kind, prefix = checkpoint_layout(state_dict)
    if prefix is None:
        expected = next(' or '.join(f'"{p}*"' for p in trunk_prefixes)
                        for name, _, trunk_prefixes in CHECKPOINT_LAYOUTS if name == kind)
        raise ValueError(f'this {kind} checkpoint holds no GSPN-2 trunk: expected keys {expected}, got '
                         f'keys {_key_groups(state_dict)}')
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    classifier = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier') or 'head.fc'
    head = {k: v for k, v in (model.state_dict() if model is not None else {}).items()
            if k.startswith(classifier + '.')}
    if head and not any(k.startswith(classifier + '.') for k in state_dict):
        import logging  # local: only this function of the model file logs
        logging.getLogger(__name__).info(
            f'checkpoint has no classifier ({classifier}.*; e.g. a converted CLIP image tower): '
            f'loading the trunk, the {classifier} head keeps its initialisation '
            f'(pass num_classes=0 for a model without it)')
        state_dict.update(head)
    return state_dict


def _create_gspn2(variant: str, pretrained: bool = False, **kwargs) -> GSPN2:
    """Build ``variant`` with its row of the variant table (:mod:`.variants`); ``kwargs`` override it."""
    return build_model_with_cfg(
        GSPN2, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **dict(VARIANTS[variant].model_args, **kwargs))


def _cfg(**kwargs) -> Dict:
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0', 'classifier': 'head.fc',
        'paper_ids': 'arXiv:2512.07884', 'paper_name': 'GSPN-2: Efficient Parallel Sequence Modeling',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    f'{v.name}.untrained': _cfg(input_size=(3, v.img_size, v.img_size), pool_size=(v.img_size // 32,) * 2)
    for v in VARIANTS.values()
})


# One entry point per row of the variant table (timm registers a function under its own name).
@register_model
def gspn2_test(pretrained: bool = False, **kwargs) -> GSPN2:
    return _create_gspn2('gspn2_test', pretrained, **kwargs)


@register_model
def gspn2_nano(pretrained: bool = False, **kwargs) -> GSPN2:
    return _create_gspn2('gspn2_nano', pretrained, **kwargs)


@register_model
def gspn2_tiny(pretrained: bool = False, **kwargs) -> GSPN2:
    return _create_gspn2('gspn2_tiny', pretrained, **kwargs)


@register_model
def gspn2_small(pretrained: bool = False, **kwargs) -> GSPN2:
    return _create_gspn2('gspn2_small', pretrained, **kwargs)


@register_model
def gspn2_base(pretrained: bool = False, **kwargs) -> GSPN2:
    return _create_gspn2('gspn2_base', pretrained, **kwargs)
