"""Bilinear resizing of head outputs to the label's size, with a fast, deterministic backward.

The dense heads predict at feature resolution (a 32nd of the image for the last stage) and take
their losses at the label's resolution, so every training step resizes its logits by up to 32x
in each axis. ``F.interpolate``'s CUDA backward adds every output gradient into its input
neighbours with atomics: at a 32x upsampling about 4096 of them land on each input pixel, and
the linear-probe head's backward at 2048 px (150 classes, batch 2) took 638 ms of a 734 ms
head step on an H100 (``tools/device/seg_loss_layout.py``). Results of such atomics also depend
on their order, so the backward is not deterministic.

:func:`resize_bilinear` gives the same forward (it calls ``F.interpolate``, so the values are
bit-identical) and computes the backward as two matrix products with the interpolation
matrices of the two axes, ``dL/dx = A_h^T (dL/dy) A_w``, each row of ``A`` holding the two
weights of one output position (``interpolation_matrix``): deterministic, and on the tensor
cores.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def interpolation_matrix(n_in: int, n_out: int, align_corners: bool, dtype: torch.dtype,
                         device) -> Tensor:
    """(n_out, n_in): row ``o`` holds the weights that 1-D linear interpolation gives output
    position ``o``, as ``F.interpolate(mode='bilinear')`` computes them (source index
    ``(o + 0.5) n_in / n_out - 0.5`` clamped at 0 without ``align_corners``,
    ``o (n_in - 1) / (n_out - 1)`` with it; the upper neighbour clamped to the last position)."""
    out = torch.arange(n_out, dtype=torch.float64, device=device)
    if align_corners:
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else torch.zeros_like(out)
    else:
        src = ((out + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    lo = src.floor().clamp(max=n_in - 1)
    frac = src - lo
    hi = (lo + 1).clamp(max=n_in - 1)
    cols = torch.arange(n_in, dtype=torch.float64, device=device)
    matrix = (1 - frac)[:, None] * (cols == lo[:, None]) + frac[:, None] * (cols == hi[:, None])
    return matrix.to(dtype)


class _ResizeBilinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: Tensor, size: Tuple[int, int], align_corners: bool) -> Tensor:
        ctx.in_size = tuple(x.shape[-2:])
        ctx.align_corners = align_corners
        ctx.dtype = x.dtype
        return F.interpolate(x, size=size, mode='bilinear', align_corners=align_corners)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (h_in, w_in), (h_out, w_out) = ctx.in_size, grad.shape[-2:]
        with torch.autocast(grad.device.type, enabled=False):
            # The cheaper order of the two products: the first in the gradient's dtype (float32
            # accumulation), the second in float32 (float64 for float64): one rounding between.
            acc = torch.promote_types(grad.dtype, torch.float32)
            work = lambda dtype: dict(dtype=dtype, device=grad.device)  # noqa: E731
            if h_out * w_out * w_in + h_in * h_out * w_in <= h_out * w_out * h_in + h_in * w_out * w_in:
                a_w = interpolation_matrix(w_in, w_out, ctx.align_corners, **work(grad.dtype))
                partial = torch.matmul(grad, a_w).to(acc)                       # (.., h_out, w_in)
                a_h = interpolation_matrix(h_in, h_out, ctx.align_corners, **work(acc))
                grad_x = torch.matmul(a_h.t(), partial)
            else:
                a_h = interpolation_matrix(h_in, h_out, ctx.align_corners, **work(grad.dtype))
                partial = torch.matmul(a_h.t(), grad).to(acc)                   # (.., h_in, w_out)
                a_w = interpolation_matrix(w_in, w_out, ctx.align_corners, **work(acc))
                grad_x = torch.matmul(partial, a_w)
        return grad_x.to(ctx.dtype), None, None


def resize_bilinear(x: Tensor, size: Sequence[int], align_corners: bool = False) -> Tensor:
    """``F.interpolate(x, size, mode='bilinear', align_corners=align_corners)`` of an (N, C, H, W)
    tensor; the backward is two matrix products (deterministic; see the module docstring).
    Returns ``x`` itself when it already has ``size``."""
    if x.dim() != 4:
        raise ValueError(f'resize_bilinear expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}')
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f'size must be two positive ints (height, width), got {size}')
    if size == tuple(x.shape[-2:]):
        return x
    if not x.requires_grad:
        return F.interpolate(x, size=size, mode='bilinear', align_corners=align_corners)
    return _ResizeBilinear.apply(x, size, align_corners)
