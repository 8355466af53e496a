"""Parameter and MAC counting for the backbones, the propagation op included.

MACs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which knows the
matrix products and convolutions of aten (counted as multiply-accumulates; element-wise
ops, norms, activations and pooling are not counted, as in fvcore / timm's usual figures).
The fused op ``gspn2::propagate_forward`` is opaque to it, so this module registers a
formula for it (:func:`propagate_macs`):

* per output element and direction: 3 taps (``w_k * h``) + ``lam * x`` + the merge
  ``u * h`` = 5 MACs (4 without the merge);
* per gate group, pixel and direction: 3 MACs for the tap normalisation
  (``sigmoid(a_k) / sum sigmoid``), when the op normalises.

A model that contains the op but whose count shows none raises instead of under-counting.

MACs say little about these backbones' speed on a GPU, where most of their layers are bound
by memory traffic and launches: :func:`count_traffic` counts, per forward, the aten kernels
that are not views and the bytes each reads and writes (tensor sizes, as an unfused eager run
moves them; caches and fusion are ignored), by kind of kernel.
"""
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from gspn2_dense.ops import propagate as _propagate  # noqa: F401  (defines the gspn2:: custom ops)

from .gspn2 import GSPN2Mixer
from .variants import VARIANTS, timm_size_kwargs

__all__ = ['Complexity', 'Traffic', 'complexity_table', 'count_complexity', 'count_traffic',
           'propagate_macs', 'traffic_table']

PROPAGATE_OP = torch.ops.gspn2.propagate_forward
MACS_PER_TAP_STEP = 3 + 1  # three taps + lam * x, per output element and direction
MACS_PER_MERGE = 1  # u * h, per output element and direction
MACS_PER_GATE_NORM = 3  # per gate group, pixel and direction


def propagate_macs(x_shape: Sequence[int], gates_shape: Sequence[int], num_directions: int,
                   normalize: bool = True, merge: bool = True) -> int:
    """MACs of one ``gspn2::propagate_forward`` call on ``x`` (B, C, H, W) and gates (B, D, G, 3, H, W)."""
    batch, channels, height, width = x_shape
    groups = gates_shape[2]
    pixels = batch * height * width * num_directions
    per_element = MACS_PER_TAP_STEP + (MACS_PER_MERGE if merge else 0)
    return pixels * (channels * per_element + (groups * MACS_PER_GATE_NORM if normalize else 0))


def _propagate_flops(x_shape, gates_shape, lam_shape, u_shape, directions, chunk, normalize, merge,
                     save_hidden, out_shape=None) -> int:
    """FlopCounterMode formula (FLOPs = 2 x MACs, the counter's convention for products)."""
    return 2 * propagate_macs(x_shape, gates_shape, len(directions), normalize, merge)


@dataclass
class Complexity:
    params: int
    macs: int
    macs_by_op: Dict[str, int] = field(default_factory=dict)

    @property
    def propagate_macs(self) -> int:
        return self.macs_by_op.get(str(PROPAGATE_OP), 0)


def count_complexity(model: nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224)) -> Complexity:
    """Parameters and MACs of one forward of ``model`` on a single image of ``input_size``.

    The model may live on the ``meta`` device (no memory, no compute): every counted op,
    the propagation op included, has a shape-only implementation.
    """
    if len(input_size) != 3 or any(not isinstance(s, int) or s < 1 for s in input_size):
        raise ValueError(f'input_size must be (C, H, W) positive ints, got {tuple(input_size)}')
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    counter = FlopCounterMode(display=False, custom_mapping={PROPAGATE_OP: _propagate_flops})
    was_training = model.training
    model.eval()
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size, device=device))
    model.train(was_training)
    flops = counter.get_flop_counts()['Global']
    macs_by_op = {str(op): count // 2 for op, count in flops.items()}
    result = Complexity(params=sum(p.numel() for p in model.parameters()), macs=sum(macs_by_op.values()),
                        macs_by_op=macs_by_op)
    if any(isinstance(m, GSPN2Mixer) for m in model.modules()) and result.propagate_macs == 0:
        raise RuntimeError(f'{type(model).__name__} contains propagation mixers but no MACs were counted '
                           f'for {PROPAGATE_OP}; does the model call gspn2_dense.ops.gspn_propagate?')
    return result


@dataclass
class Traffic:
    """Kernels and bytes of one forward: activation bytes read and written, parameter (and
    buffer) bytes read, and per kind ``(kernels, activation bytes read, written)``."""
    kernels: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    weight_bytes_read: int = 0
    by_kind: Dict[str, Tuple[int, int, int]] = field(default_factory=dict)

    def add(self, kind: str, read: int, written: int, weights: int = 0):
        self.kernels += 1
        self.bytes_read += read
        self.bytes_written += written
        self.weight_bytes_read += weights
        n, r, w = self.by_kind.get(kind, (0, 0, 0))
        self.by_kind[kind] = (n + 1, r + read, w + written)


_KINDS = {
    'mm': 'matmul', 'addmm': 'matmul', 'bmm': 'matmul', 'baddbmm': 'matmul',
    'native_layer_norm': 'norm', 'native_group_norm': 'norm', 'native_batch_norm': 'norm',
    '_native_batch_norm_legit_no_training': 'norm',
    'clone': 'copy', 'copy_': 'copy', '_to_copy': 'copy', 'cat': 'copy', 'constant_pad_nd': 'copy',
    'propagate_forward': 'gspn2 op',
}


def _kind(func, args) -> str:
    name = func.overloadpacket.__name__
    if name == 'convolution':  # args: input, weight, bias, stride, padding, dilation, transposed, pad, groups
        weight, groups = args[1], args[8]
        pointwise = all(k == 1 for k in weight.shape[2:])
        return 'matmul' if pointwise and groups == 1 else 'conv' if groups == 1 else 'depth-wise conv'
    if 'scaled_dot_product' in name:
        return 'attention'
    return _KINDS.get(name, 'elementwise / other')


def _nbytes(tree, keep=lambda t: True) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(tree)
               if isinstance(t, torch.Tensor) and keep(t))


class _TrafficMode(TorchDispatchMode):
    def __init__(self, traffic: Traffic, weights: Sequence[torch.Tensor]):
        super().__init__()
        self.traffic = traffic
        self.weight_ids = {id(w) for w in weights}
        self.fused_depth = 0  # > 0 inside a call counted as one fused kernel

    def is_weight(self, t: torch.Tensor) -> bool:
        """A parameter or buffer, or a view of one (``weight.t()`` in ``F.linear``)."""
        return id(t) in self.weight_ids or (t._base is not None and id(t._base) in self.weight_ids)

    def record(self, kind: str, inputs, out):
        self.traffic.add(kind, _nbytes(inputs, lambda t: not self.is_weight(t)), _nbytes(out),
                         _nbytes(inputs, self.is_weight))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (not self.fused_depth and not func.is_view
                and func.overloadpacket.__name__ not in ('detach', 'lift_fresh')):
            self.record(_kind(func, args), (args, kwargs), out)
        return out


class _FusedAttentionMode(TorchFunctionMode):
    """Counts ``F.scaled_dot_product_attention`` as the one fused kernel a GPU runs (read q, k,
    v and any mask, write the output), not as the math decomposition the CPU / meta backends
    dispatch to."""

    def __init__(self, inner: _TrafficMode):
        super().__init__()
        self.inner = inner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **kwargs)
        self.inner.fused_depth += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.inner.fused_depth -= 1
        self.inner.record('attention', (args, kwargs), out)
        return out


def count_traffic(model: nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224)) -> Traffic:
    """Kernels and bytes read / written by one inference forward of ``model`` on one image.

    Counts every aten call that is not a view (as eager mode launches them; torch.compile
    fuses some) with the sizes of its tensor arguments and results; parameters and buffers
    (read once per batch, so they fade at large batches) are counted apart;
    ``scaled_dot_product_attention`` counts as one fused kernel. The model may live on the
    ``meta`` device.
    """
    if len(input_size) != 3 or any(not isinstance(s, int) or s < 1 for s in input_size):
        raise ValueError(f'input_size must be (C, H, W) positive ints, got {tuple(input_size)}')
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    was_training = model.training
    model.eval()
    image = torch.zeros(1, *input_size, device=device)
    traffic = Traffic()
    dispatch = _TrafficMode(traffic, [*model.parameters(), *model.buffers()])
    with torch.no_grad(), dispatch, _FusedAttentionMode(dispatch):
        model(image)
    model.train(was_training)
    return traffic


def traffic_table(names: Sequence[str], img_size: int = 224) -> str:
    """A markdown table of the kernels and activation traffic of one forward of timm models."""
    traffics = {name: count_traffic(_create_on_meta(name, img_size), (3, img_size, img_size))
                for name in names}
    kinds = sorted({k for t in traffics.values() for k in t.by_kind})
    rows = ['| model | kernels | activation MB read / written | weight MB | '
            + ' | '.join(f'{k}: kernels / MB' for k in kinds) + ' |',
            '|---|---|---|---|' + '---|' * len(kinds)]
    for name, t in traffics.items():
        cells = []
        for k in kinds:
            n, r, w = t.by_kind.get(k, (0, 0, 0))
            cells.append(f'{n} / {(r + w) / 1e6:.1f}')
        rows.append(f'| {name} | {t.kernels} | {t.bytes_read / 1e6:.1f} / {t.bytes_written / 1e6:.1f} | '
                    f'{t.weight_bytes_read / 1e6:.1f} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)


def _create_on_meta(name: str, img_size: int = 224) -> nn.Module:
    import timm  # the counter itself does not need timm
    with torch.device('meta'):
        return timm.create_model(name, **timm_size_kwargs(name, img_size))


def complexity_table(names: Sequence[str], img_size: int = 224) -> str:
    """A markdown table of params / MACs (and the op's share) of timm models ``names``.

    At 224x224, GSPN-2 variants with paper figures (:mod:`.variants`) are compared with them.
    """
    rows = ['| model | params (M) | MACs (G) | of which propagation (G) | paper params / MACs | deviation |',
            '|---|---|---|---|---|---|']
    for name in names:
        result = count_complexity(_create_on_meta(name, img_size), (3, img_size, img_size))
        reference, deviation = '-', '-'
        figures = VARIANTS[name].paper if name in VARIANTS else None
        if figures is not None and img_size == 224:
            params, macs = figures.params, figures.macs
            reference = f'{params / 1e6:.1f}M / {macs / 1e9:.1f}G'
            deviation = f'{result.params / params - 1:+.1%} / {result.macs / macs - 1:+.1%}'
        rows.append(f'| {name} | {result.params / 1e6:.2f} | {result.macs / 1e9:.3f} | '
                    f'{result.propagate_macs / 1e9:.4f} | {reference} | {deviation} |')
    return '\n'.join(rows)
