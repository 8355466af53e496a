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
"""
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from gspn2_dense.ops import propagate as _propagate  # noqa: F401  (defines the gspn2:: custom ops)

from .gspn2 import GSPN2Mixer
from .variants import VARIANTS

__all__ = ['Complexity', 'complexity_table', 'count_complexity', 'propagate_macs']

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


def _create_on_meta(name: str) -> nn.Module:
    import timm  # the counter itself does not need timm
    with torch.device('meta'):
        return timm.create_model(name)


def complexity_table(names: Sequence[str], img_size: int = 224) -> str:
    """A markdown table of params / MACs (and the op's share) of timm models ``names``.

    At 224x224, GSPN-2 variants with paper figures (:mod:`.variants`) are compared with them.
    """
    rows = ['| model | params (M) | MACs (G) | of which propagation (G) | paper params / MACs | deviation |',
            '|---|---|---|---|---|---|']
    for name in names:
        result = count_complexity(_create_on_meta(name), (3, img_size, img_size))
        reference, deviation = '-', '-'
        figures = VARIANTS[name].paper if name in VARIANTS else None
        if figures is not None and img_size == 224:
            params, macs = figures.params, figures.macs
            reference = f'{params / 1e6:.1f}M / {macs / 1e9:.1f}G'
            deviation = f'{result.params / params - 1:+.1%} / {result.macs / macs - 1:+.1%}'
        rows.append(f'| {name} | {result.params / 1e6:.2f} | {result.macs / 1e9:.3f} | '
                    f'{result.propagate_macs / 1e9:.4f} | {reference} | {deviation} |')
    return '\n'.join(rows)
