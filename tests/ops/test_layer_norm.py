"""The fused layer norm (gspn2_dense.ops.layer_norm) against ``F.layer_norm``.

On the CPU the custom ops run their float32 PyTorch maths: these tests check the formulas,
the autograd wiring and the dispatch of :func:`layer_norm`. On a
CUDA device the same tests run the kernels, over the widths of every lane layout (one to 32
values per lane, partial last chunks), row counts around the CTA and warp granules, and every
storage-type pair.
"""
import pytest
import torch
import torch.nn.functional as F

from gspn2_dense.ops import layer_norm
from gspn2_dense.ops.layer_norm import (_FusedLayerNorm, fused_applies, layer_norm_backward,
                                        layer_norm_forward)

from test_propagate import DEVICES  # tests/ops is on sys.path (rootdir-less test dirs)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# bound on |ours - float64 reference| / (1 + |reference|) for an output of each dtype
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _inputs(rows, channels, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, channels, generator=g) * 3 + 1).to(dtype)
    weight = torch.randn(channels, generator=g)
    bias = torch.randn(channels, generator=g)
    return x.to(device), weight.to(device), bias.to(device)


def _reference(x, weight, bias, grad_y, eps=1e-6):
    """float64 ``F.layer_norm`` and its gradients."""
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, weight, bias))
    y = F.layer_norm(x64, x64.shape[-1:], w64, b64, eps)
    y.backward(grad_y.double())
    return y.detach(), x64.grad, w64.grad, b64.grad


def _close(ours, ref, dtype, what):
    err = ((ours.double() - ref) / (1 + ref.abs())).abs().max().item()
    assert err <= TOL[dtype], f'{what}: error {err:.3g} above {TOL[dtype]:.3g}'


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('x_dtype,y_dtype', [(t, t) for t in DTYPES] + [
    (torch.float32, torch.bfloat16), (torch.float32, torch.float16), (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize('rows,channels', [
    (1, 1), (3, 31), (5, 32), (7, 33), (64, 40), (129, 80), (33, 127), (17, 128), (9, 129),
    (70, 320), (5, 640), (3, 1000), (4, 1024)])
def test_matches_float64_layer_norm(device, x_dtype, y_dtype, rows, channels):
    if device == 'cpu' and rows * channels > 20000:
        pytest.skip('covered on CUDA')
    x, weight, bias = _inputs(rows, channels, x_dtype, device)
    x.requires_grad_()
    weight.requires_grad_()
    bias.requires_grad_()
    _, mean, rstd = layer_norm_forward(x.detach(), weight.detach(), bias.detach(), 1e-6, y_dtype)
    assert mean.shape == rstd.shape == (rows,) and mean.dtype == rstd.dtype == torch.float32
    y = _FusedLayerNorm.apply(x, weight, bias, 1e-6, y_dtype)
    assert y.dtype == y_dtype and y.shape == x.shape
    grad_y = torch.randn(rows, channels, generator=torch.Generator().manual_seed(1)).to(y_dtype).to(device)
    y.backward(grad_y)
    ref_y, ref_dx, ref_dw, ref_db = _reference(x, weight, bias, grad_y)
    _close(y, ref_y, y_dtype, 'y')
    _close(x.grad, ref_dx, x_dtype, 'grad_x')
    # (sums over the rows of products of stored values: the scale is the row count)
    _close(weight.grad / rows, ref_dw / rows, torch.float32, 'grad_weight')
    _close(bias.grad / rows, ref_db / rows, torch.float32, 'grad_bias')
    assert x.grad.dtype == x_dtype and weight.grad.dtype == torch.float32


@CUDA
@pytest.mark.parametrize('rows', [0, 1, 4, 31, 129, 4097, 100003])
@pytest.mark.parametrize('channels', [40, 80, 640])
def test_cuda_rows_and_determinism(rows, channels):
    x, weight, bias = _inputs(rows, channels, torch.bfloat16, 'cuda')
    grad_y = torch.randn_like(x)
    y, mean, rstd = layer_norm_forward(x, weight, bias, 1e-6, torch.bfloat16)
    first = layer_norm_backward(grad_y, x, mean, rstd, weight)
    again = layer_norm_backward(grad_y, x, mean, rstd, weight)
    for a, b in zip(first, again):
        assert torch.equal(a, b), 'repeated backward calls must be bit-identical'
    if rows:
        ref_y, ref_dx, ref_dw, ref_db = _reference(x, weight, bias, grad_y)
        _close(y, ref_y, torch.bfloat16, 'y')
        _close(first[0], ref_dx, torch.bfloat16, 'grad_x')
        _close(first[1] / rows, ref_dw / rows, torch.float32, 'grad_weight')
        _close(first[2] / rows, ref_db / rows, torch.float32, 'grad_bias')
    else:
        assert y.shape == (0, channels) and not first[1].any() and not first[2].any()


@pytest.mark.parametrize('device', DEVICES)
def test_layer_norm_entry_point_matches_f_layer_norm(device):
    """:func:`layer_norm` gives ``F.layer_norm``'s result and gradients whichever path it takes,
    including the fallbacks (non-contiguous input, no affine parameters, too wide)."""
    x, weight, bias = _inputs(24, 48, torch.float32, device)
    cases = [(x.view(4, 6, 48), weight, bias), (x.t().contiguous().t(), weight, bias),
             (x, None, None), (torch.randn(3, 1100, device=device), torch.randn(1100, device=device),
                               torch.randn(1100, device=device))]
    for inp, w, b in cases:
        leaves = [t.detach().clone().requires_grad_() for t in (inp, w, b) if t is not None]
        ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]
        args = leaves + [None] * (3 - len(leaves))
        ref_args = ref_leaves + [None] * (3 - len(ref_leaves))
        y = layer_norm(*args, eps=1e-5)
        ref = F.layer_norm(ref_args[0], ref_args[0].shape[-1:], ref_args[1], ref_args[2], 1e-5)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
        g = torch.randn_like(y)
        y.backward(g)
        ref.backward(g)
        for a, r in zip(leaves, ref_leaves):
            torch.testing.assert_close(a.grad, r.grad, rtol=1e-4, atol=1e-4)


def test_fused_applies_only_where_the_kernel_does():
    x, w, b = _inputs(4, 16, torch.float32, 'cpu')
    assert not fused_applies(x, w, b)  # CPU: F.layer_norm
    if torch.cuda.is_available():
        xc, wc, bc = x.cuda(), w.cuda(), b.cuda()
        assert fused_applies(xc, wc, bc)
        assert not fused_applies(xc.double(), wc, bc)
        assert not fused_applies(xc.t(), wc, bc)
        assert not fused_applies(xc, None, bc)


@CUDA
def test_cuda_jit_trace_records_the_norm():
    """Traced, :func:`layer_norm` must be an operator the trace records (the extension call is
    invisible to the tracer, so tracing takes F.layer_norm)."""
    x, weight, bias = _inputs(8, 40, torch.float32, 'cuda')
    traced = torch.jit.trace(lambda t: layer_norm(t, weight, bias, 1e-6), (x,))
    assert 'aten::layer_norm' in str(traced.graph)
    other = torch.randn_like(x)
    torch.testing.assert_close(traced(other), F.layer_norm(other, (40,), weight, bias, 1e-6))


@pytest.mark.parametrize('device', DEVICES)
def test_bad_inputs_say_what_was_expected(device):
    x, weight, bias = _inputs(4, 16, torch.float32, device)
    with pytest.raises(ValueError, match=r'weight must be a float32 tensor of shape \(16,\).*got torch.float16'):
        layer_norm_forward(x, weight.half(), bias, 1e-6, torch.float32)
    with pytest.raises(ValueError, match=r'bias must be a float32 tensor of shape \(16,\).*\(15,\)'):
        layer_norm_forward(x, weight, bias[:15], 1e-6, torch.float32)
    with pytest.raises(ValueError, match='float32, float16 or bfloat16, got x torch.float32 and out_dtype torch.int32'):
        layer_norm_forward(x, weight, bias, 1e-6, torch.int32)
    with pytest.raises(ValueError, match='got x torch.float64'):
        layer_norm_forward(x.double(), weight, bias, 1e-6, torch.float32)


@CUDA
def test_cuda_bad_inputs_raise():
    x, weight, bias = _inputs(4, 1100, torch.float32, 'cuda')
    from gspn2_dense.ops._build import load_extension
    ext = load_extension('cuda')
    with pytest.raises(RuntimeError, match='1 to 1024 elements, got 1100'):
        ext.layer_norm_forward(x, weight, bias, 1e-6, torch.float32)
    x, weight, bias = _inputs(4, 16, torch.float32, 'cuda')
    with pytest.raises(RuntimeError, match='x must be a contiguous tensor'):
        ext.layer_norm_forward(x.t(), weight[:4].contiguous(), bias[:4].contiguous(), 1e-6, torch.float32)
    with pytest.raises(RuntimeError, match='eps must be positive'):
        ext.layer_norm_forward(x, weight, bias, 0.0, torch.float32)
