"""1x1 projections over channels_last maps, with the bias gradient summed by a GEMM.

A 1x1 convolution over a channels_last map is ``F.linear`` of its (N, C) rows. In eager
PyTorch the backward of that linear sums the output gradient over the N rows for the bias with
``reduce_kernel``, which at GSPN-2-T's widths (80 to 1920 columns, up to 400k rows) runs at
2-3x the time of reading the gradient once (H200, ``tools/device/bias_grad_ab.py``:
0.18 ms against 0.065 ms for ``ones @ grad`` at 401408 x 192). :class:`_LinearGemmBiasGrad` is
the same linear with that sum done as a matrix-vector product by cuBLAS. It runs where it helps:
CUDA tensors, eager mode (``torch.compile`` keeps ``F.linear``, whose reductions inductor
generates itself), anything else goes through ``F.linear`` unchanged.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['pointwise_linear']

_ONES: Dict[Tuple[torch.device, torch.dtype], Tensor] = {}


def _ones(n: int, like: Tensor) -> Tensor:
    """A length-``n`` vector of ones in ``like``'s dtype and device (one buffer per pair,
    grown when a longer one is asked for)."""
    key = (like.device, like.dtype)
    ones = _ONES.get(key)
    if ones is None or ones.numel() < n:
        ones = _ONES[key] = torch.ones(n, device=like.device, dtype=like.dtype)
    return ones[:n]


class _LinearGemmBiasGrad(torch.autograd.Function):
    """``rows @ weight.T + bias`` of a 2-D ``rows``; every input in one dtype."""

    @staticmethod
    def forward(ctx, rows: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(rows, weight)
        return torch.addmm(bias, rows, weight.t())

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_rows = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad.t() @ rows if ctx.needs_input_grad[1] else None
        grad_bias = _ones(grad.shape[0], grad) @ grad if ctx.needs_input_grad[2] else None
        return grad_rows, grad_weight, grad_bias


def _compute_dtype(x: Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def pointwise_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.linear(x, weight, bias)`` over the last dim of ``x`` (weight (out, in), bias (out,)).

    Under autocast it computes in the autocast dtype, as ``F.linear`` does.
    """
    if (x.device.type != 'cuda' or bias is None or not x.is_contiguous()
            or torch.compiler.is_compiling() or not torch.is_grad_enabled()):
        return F.linear(x, weight, bias)
    dtype = _compute_dtype(x)
    rows = x.reshape(-1, x.shape[-1]).to(dtype)
    out = _LinearGemmBiasGrad.apply(rows, weight.to(dtype), bias.to(dtype))
    return out.view(*x.shape[:-1], weight.shape[0])
