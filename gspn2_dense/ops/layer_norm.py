"""Layer norm over the last dimension with a fused CUDA kernel for the widths of vision blocks.

PyTorch's CUDA layer norm gives every row its own CTA; over the channels of a channels_last
map (40 to 1024 channels, millions of positions) most of its threads idle, and GSPN-2-T's
norms took 14 ms of an 83 ms training step at 224 px B128 (docs/benchmarks/profile_gspn2_tiny.md).
``csrc/cuda/layer_norm.cu`` gives a warp several rows, keeps the statistics and the affine
parameters in float32 and reads and writes the input's dtype. Two functions carry it:

* ``layer_norm_forward(x, weight, bias, eps, out_dtype) -> (y, mean, rstd)``
* ``layer_norm_backward(grad_y, x, mean, rstd, weight) -> (grad_x, grad_weight, grad_bias)``

``x`` is a contiguous (..., C) tensor, ``y`` has its shape in ``out_dtype`` (float32, float16
or bfloat16: a norm under autocast reads the residual stream's float32 and writes the autocast
dtype in one pass, or the other way round), ``weight`` and ``bias`` are (C,) float32, ``mean``
and ``rstd`` float32 of ``x``'s shape without its last dim. On CUDA they run the kernels; on the
CPU the same maths in float32 PyTorch (:func:`_forward_reference`), so that the formulas and
the autograd wiring are tested without a GPU. :func:`layer_norm` is the entry point the
models call: the fused op where it applies (a CUDA tensor of float32 / float16 / bfloat16 with
C <= 1024, outside ``torch.compile``, whose inductor fuses norms itself, and outside
``torch.jit.trace``), ``F.layer_norm`` otherwise, with the same result up to rounding.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._build import load_extension

__all__ = ['MAX_FUSED_CHANNELS', 'layer_norm', 'layer_norm_backward', 'layer_norm_forward',
           'layer_norm_unfused']

MAX_FUSED_CHANNELS = 1024  # kMaxLayerNormChannels in csrc/cuda/layer_norm.h
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> None:
    channels = x.shape[-1] if x.dim() else 0
    for name, t in (('weight', weight), ('bias', bias)):
        if t is not None and (t.dtype != torch.float32 or tuple(t.shape) != (channels,)
                              or t.device != x.device):
            raise ValueError(f'gspn2 layer_norm: {name} must be a float32 tensor of shape '
                             f'({channels},) on {x.device}, got {t.dtype} {tuple(t.shape)} on '
                             f'{t.device}')


def _forward_reference(x: Tensor, weight: Tensor, bias: Tensor, eps: float,
                       out_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    xf = x.float()
    mean = xf.mean(-1)
    rstd = torch.rsqrt(xf.var(-1, unbiased=False) + eps)
    y = (xf - mean.unsqueeze(-1)) * rstd.unsqueeze(-1) * weight + bias
    return y.to(out_dtype), mean, rstd


def _backward_reference(grad_y: Tensor, x: Tensor, mean: Tensor, rstd: Tensor,
                        weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    xhat = (x.float() - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    dy = grad_y.float()
    g = dy * weight
    grad_x = rstd.unsqueeze(-1) * (g - g.mean(-1, keepdim=True)
                                   - xhat * (g * xhat).mean(-1, keepdim=True))
    rows = tuple(range(x.dim() - 1))
    return grad_x.to(x.dtype), (dy * xhat).sum(rows), dy.sum(rows)


def layer_norm_forward(x: Tensor, weight: Tensor, bias: Tensor, eps: float,
                       out_dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """Layer norm of the last dim of a contiguous ``x``: ``(y, mean, rstd)``, y in
    ``out_dtype``; the CUDA kernel on CUDA tensors, the float32 reference elsewhere."""
    _check(x, weight, bias)
    if out_dtype not in FUSED_DTYPES or x.dtype not in FUSED_DTYPES:
        raise ValueError(f'gspn2 layer_norm: x and the output must be float32, float16 or '
                         f'bfloat16, got x {x.dtype} and out_dtype {out_dtype}')
    return _run_forward(x.contiguous(), weight, bias, eps, out_dtype)


def _run_forward(x, weight, bias, eps, out_dtype):
    # (unchecked: the callers have; the extension checks shapes and devices again)
    if x.device.type == 'cuda':
        y, mean, rstd = load_extension('cuda').layer_norm_forward(x, weight, bias, eps, out_dtype)
        return y, mean, rstd
    return _forward_reference(x, weight, bias, eps, out_dtype)


def layer_norm_backward(grad_y: Tensor, x: Tensor, mean: Tensor, rstd: Tensor,
                        weight: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(grad_x, grad_weight, grad_bias)`` of :func:`layer_norm_forward`."""
    _check(x, weight)
    return _run_backward(grad_y.contiguous(), x.contiguous(), mean.contiguous(), rstd.contiguous(),
                         weight)


def _run_backward(grad_y, x, mean, rstd, weight):
    if x.device.type == 'cuda':
        grad_x, grad_weight, grad_bias = load_extension('cuda').layer_norm_backward(
            grad_y, x, mean, rstd, weight)
        return grad_x, grad_weight, grad_bias
    return _backward_reference(grad_y, x, mean, rstd, weight)


class _FusedLayerNorm(torch.autograd.Function):
    """Autograd of :func:`layer_norm_forward`. A plain ``autograd.Function`` calling the
    extension, not a ``torch.library`` custom op: the eager step of GSPN-2-T is bound by the
    host's per-op work, and the custom-op dispatch cost more host time than the kernels saved
    (H200, ``tools/device/glue_ab.py``). ``torch.compile`` never sees it (:func:`fused_applies`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        # (the hot path: fused_applies and layer_norm have vetted the arguments)
        y, mean, rstd = _run_forward(x, weight, bias, eps, out_dtype)
        ctx.save_for_backward(x, mean, rstd, weight)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, mean, rstd, weight = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = _run_backward(grad_y.contiguous(), x, mean, rstd, weight)
        return grad_x, grad_weight, grad_bias, None, None


def fused_applies(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> bool:
    """Whether :func:`layer_norm` runs the fused kernel for these arguments."""
    return (x.device.type == 'cuda' and x.dtype in FUSED_DTYPES and x.dim() >= 1
            and 1 <= x.shape[-1] <= MAX_FUSED_CHANNELS and x.is_contiguous()
            and weight is not None and bias is not None
            # (inductor fuses norms itself; torch.jit.trace records only dispatcher calls, and
            # the extension call is not one)
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing())


def layer_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float = 1e-5,
               out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """``F.layer_norm(x, x.shape[-1:], weight, bias, eps)`` in ``out_dtype`` (default: x's).

    Call it outside autocast (or with autocast disabled): it computes in the dtypes it is
    given. The fused kernel where :func:`fused_applies` (statistics and affine parameters in
    float32, the parameters' gradients in their own dtype); elsewhere ``F.layer_norm`` of ``x``
    cast to ``out_dtype``, with the parameters cast to it too.
    """
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if fused_applies(x, weight, bias) and out_dtype in FUSED_DTYPES:
        return _FusedLayerNorm.apply(x, weight.float(), bias.float(), float(eps), out_dtype)
    return layer_norm_unfused(x, weight, bias, eps, out_dtype)


def layer_norm_unfused(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                       eps: float = 1e-5, out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """:func:`layer_norm` without the kernel: ``F.layer_norm`` of ``x`` and the parameters cast
    to ``out_dtype`` (default: x's)."""
    out_dtype = x.dtype if out_dtype is None else out_dtype
    cast = (lambda t: None if t is None else t.to(out_dtype))
    return F.layer_norm(cast(x), x.shape[-1:], cast(weight), cast(bias), eps)
