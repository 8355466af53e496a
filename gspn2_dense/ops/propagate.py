"""The fused GSPN-2 propagation op: public API, ``torch.library`` registration and autograd.

Two custom ops carry the work, both dispatching to the compiled extension of the input's
device (``csrc/cpu`` for CPU tensors, ``csrc/cuda`` for CUDA tensors), which is loaded, and
built if need be, on first use (:func:`gspn2_dense.ops._build.load_extension`):

* ``gspn2::propagate_forward(x, gates, lam, u, directions, chunk, normalize, merge,
  save_hidden) -> (out, hidden)``
* ``gspn2::propagate_backward(grad_out, x, gates, lam, u, hidden, directions, chunk,
  normalize, merge) -> (grad_x, grad_gates, grad_lam, grad_u)``

with the shapes of ``csrc/gspn2_common.h``. Each has a fake (meta) implementation, and the
forward has a registered autograd formula, so ``torch.compile(fullgraph=True)`` traces
through them (the backward's own formula only refuses double backward).

Layout: the ops take tensors of any layout and return contiguous (row-major) tensors, the
fakes included. The public functions make their inputs contiguous *before* calling the op, so
under ``torch.compile`` that copy is an ordinary graph node which inductor fuses into the
producer (e.g. the slices of the mixer's projection), and inside the op it is a no-op. :func:`gspn_scan` (one direction) and :func:`gspn_propagate` (four directions,
merged) validate their inputs and call the forward op; the pure-PyTorch references with the
same signatures live in :mod:`gspn2_dense.ops.reference`.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ._build import load_extension
from .validation import DIRECTIONS, check_chunk, check_propagate_inputs, check_scan_inputs

__all__ = ['gspn_scan', 'gspn_propagate', 'propagate_forward', 'propagate_backward']


def _extension(x: Tensor):
    if x.device.type not in ('cpu', 'cuda'):
        raise ValueError(f'x must be a CPU or CUDA tensor for the compiled op, got {x.device}')
    return load_extension(x.device.type)


def _contiguous(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _contiguous_empty(t: Tensor, shape=None) -> Tensor:
    """What the kernels return: a new row-major tensor (``empty_like`` would keep ``t``'s
    strides, e.g. channels_last, which the kernels never produce)."""
    return t.new_empty(t.shape if shape is None else shape)


# Two kinds of launch need no saved hidden state on CUDA, because their kernels recompute h in
# the backward (csrc/cuda/scan_launch.h, is_one_pass): scans that restart every 1 or 2 steps
# (the backbones' local stages; h is one step from the inputs) and planes whose lines fit one
# warp (the global stages at classification sizes, e.g. 14 x 14 and 7 x 7 at 224 px).
# gspn_propagate saves none there on CUDA, so training keeps no (B, 4, C, H, W) buffer for
# them; on CPU it still saves it (the recompute would cost a forward of the op in every
# backward), and the backward of a CPU local scan without it runs that forward first.
LOCAL_MAX_CHUNK = 2
SMALL_MAX_LINE = 32  # kSmallMaxLine, kSmallMaxPlane in csrc/cuda/propagate_small.h
SMALL_MAX_PLANE = 256


def recomputes_hidden(chunk: int, height: int, width: int) -> bool:
    """Whether the CUDA kernels recompute the hidden state of a launch with core ``chunk``
    (0 = global) over ``height x width`` planes, so that its forward need not save it."""
    local = 1 <= chunk <= LOCAL_MAX_CHUNK
    small = (height <= SMALL_MAX_LINE and width <= SMALL_MAX_LINE
             and height * width <= SMALL_MAX_PLANE)
    return local or small


def _hidden_shape(x: Tensor, num_directions: int) -> Tuple[int, ...]:
    B, C, H, W = x.shape
    return (B, num_directions, C, H, W)


@torch.library.custom_op('gspn2::propagate_forward', mutates_args=())
def propagate_forward(x: Tensor, gates: Tensor, lam: Tensor, u: Optional[Tensor],
                      directions: List[int], chunk: int, normalize: bool, merge: bool,
                      save_hidden: bool) -> Tuple[Tensor, Tensor]:
    """Core forward: ``out`` is y (B, C, H, W) with ``merge`` else h (B, D, C, H, W);
    ``hidden`` is h when ``merge and save_hidden``, else an empty tensor."""
    out, hidden = _extension(x).forward(x.contiguous(), gates.contiguous(), lam.contiguous(),
                                        _contiguous(u), list(directions), chunk, normalize,
                                        merge, save_hidden)
    return out, hidden


@propagate_forward.register_fake
def _propagate_forward_fake(x, gates, lam, u, directions, chunk, normalize, merge, save_hidden):
    hidden_shape = _hidden_shape(x, len(directions))
    out = _contiguous_empty(x, x.shape if merge else hidden_shape)
    hidden = _contiguous_empty(x, hidden_shape if merge and save_hidden else (0,))
    return out, hidden


@torch.library.custom_op('gspn2::propagate_backward', mutates_args=())
def propagate_backward(grad_out: Tensor, x: Tensor, gates: Tensor, lam: Tensor,
                       u: Optional[Tensor], hidden: Tensor, directions: List[int], chunk: int,
                       normalize: bool, merge: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Core backward; ``hidden`` is the forward's ``hidden`` (merge) or its ``out`` (no merge).
    ``grad_u`` is an empty tensor without merge."""
    grad_x, grad_gates, grad_lam, grad_u = _extension(x).backward(
        grad_out.contiguous(), x.contiguous(), gates.contiguous(), lam.contiguous(),
        _contiguous(u), hidden.contiguous(), list(directions), chunk, normalize, merge)
    if grad_u is None:
        grad_u = x.new_empty((0,))
    return grad_x, grad_gates, grad_lam, grad_u


@propagate_backward.register_fake
def _propagate_backward_fake(grad_out, x, gates, lam, u, hidden, directions, chunk, normalize,
                             merge):
    grad_u = _contiguous_empty(u) if merge else _contiguous_empty(x, (0,))
    return _contiguous_empty(x), _contiguous_empty(gates), _contiguous_empty(lam), grad_u


def _setup_context(ctx, inputs, output):
    x, gates, lam, u, directions, chunk, normalize, merge, _ = inputs
    out, hidden = output
    ctx.directions, ctx.chunk, ctx.normalize, ctx.merge = list(directions), chunk, normalize, merge
    # Without merge the output is the hidden state itself.
    ctx.save_for_backward(x, gates, lam, u if merge else None, hidden if merge else out)
    # `hidden` is saved state, not a result: no gradient flows into it, and none is filled in.
    ctx.mark_non_differentiable(hidden)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_hidden):
    if grad_out is None:
        return (None,) * 9
    x, gates, lam, u, hidden = ctx.saved_tensors
    if tuple(hidden.shape) != _hidden_shape(x, len(ctx.directions)):
        on_cuda = x.device.type == 'cuda'
        local = 1 <= ctx.chunk <= LOCAL_MAX_CHUNK
        if not (local or (on_cuda and recomputes_hidden(ctx.chunk, *x.shape[-2:]))):
            raise RuntimeError(
                'gspn2::propagate_forward ran with save_hidden=False, so its output cannot be '
                'differentiated; call it with save_hidden=True (gspn_propagate does so whenever '
                'an input requires grad; scans with chunk 1 or 2, and on CUDA planes whose '
                f'lines fit a warp, need no saved state; got chunk {ctx.chunk} and planes '
                f'{tuple(x.shape[-2:])} on {x.device.type})')
        if not on_cuda:  # (the CUDA kernels recompute it themselves)
            hidden, _ = propagate_forward(x, gates, lam, None, ctx.directions, ctx.chunk,
                                          ctx.normalize, False, False)
    grad_x, grad_gates, grad_lam, grad_u = propagate_backward(
        grad_out.contiguous(), x, gates, lam, u, hidden, ctx.directions, ctx.chunk,
        ctx.normalize, ctx.merge)
    return (grad_x, grad_gates, grad_lam, grad_u if ctx.merge else None,
            None, None, None, None, None)


propagate_forward.register_autograd(_backward, setup_context=_setup_context)


def _double_backward(ctx, *grads):
    raise RuntimeError(
        'gspn2 propagation supports first-order gradients only: double backward (a second '
        'backward through a graph built with create_graph=True, e.g. a gradient penalty) is '
        'not implemented for gspn_propagate / gspn_scan')


propagate_backward.register_autograd(_double_backward)


def gspn_scan(x: Tensor, gates: Tensor, lam: Tensor, direction: str,
              chunk: Optional[int] = None, normalize: bool = True) -> Tensor:
    """One scan direction of the GSPN-2 propagation (SPEC section 1.1), fused kernel.

    Args:
        x, lam: (B, C, H, W).
        gates: (B, G, 3, H, W) gate logits (or normalised weights with ``normalize=False``),
            taps ordered k = -1, 0, +1 along the line, stored at the destination pixel;
            ``C % G == 0`` and channel c uses group ``c // (C // G)``.
        direction: one of ``DIRECTIONS``.
        chunk: the hidden state restarts every ``chunk`` steps; None = one global scan.
        normalize: gates are logits, normalised to ``sigmoid(a_k) / sum of valid sigmoids``.

    Returns:
        h: (B, C, H, W), differentiable in ``x``, ``gates`` and ``lam``.
    """
    d = check_scan_inputs(x, gates, lam, direction, chunk, normalize)
    out, _ = propagate_forward(x.contiguous(), gates.unsqueeze(1).contiguous(),
                               lam.unsqueeze(1).contiguous(), None, [d], check_chunk(chunk),
                               normalize, False, False)
    return out.squeeze(1)


def gspn_propagate(x: Tensor, gates: Tensor, lam: Tensor, u: Optional[Tensor],
                   chunk: Optional[int] = None, normalize: bool = True,
                   merge: bool = True) -> Tensor:
    """The four scan directions of ``DIRECTIONS`` in one fused call (SPEC section 1.2).

    Args:
        x: (B, C, H, W).
        gates: (B, 4, G, 3, H, W) gate logits (or weights with ``normalize=False``).
        lam, u: (B, 4, C, H, W); ``u`` is unused (and may be None) when ``merge`` is False.
        chunk, normalize: as in :func:`gspn_scan`.
        merge: return ``y = sum_d u_d * h_d`` (B, C, H, W); otherwise the stacked ``h_d``
            (B, 4, C, H, W).
    """
    check_propagate_inputs(x, gates, lam, u, chunk, merge, normalize)
    u = u if merge else None
    core_chunk = check_chunk(chunk)
    recomputed = x.device.type == 'cuda' and recomputes_hidden(core_chunk, *x.shape[-2:])
    save_hidden = merge and not recomputed and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, gates, lam, u))
    out, _ = propagate_forward(x.contiguous(), gates.contiguous(), lam.contiguous(),
                               _contiguous(u), list(range(len(DIRECTIONS))),
                               core_chunk, normalize, merge, save_hidden)
    return out
