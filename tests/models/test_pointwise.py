"""The 1x1 projection with its bias gradient summed by a GEMM against ``F.linear``."""
import pytest
import torch
import torch.nn.functional as F

from gspn2_dense.models.pointwise import _LinearGemmBiasGrad, pointwise_linear

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def _leaves(*shapes, dtype=torch.float64, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype).to(device).requires_grad_() for s in shapes]


def _grads(fn, leaves, grad):
    for t in leaves:
        t.grad = None
    out = fn(*leaves)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize('rows,cin,cout', [(1, 1, 1), (37, 5, 3), (500, 24, 40)])
def test_function_matches_f_linear_in_float64(rows, cin, cout):
    """The autograd function itself (device-agnostic), exact maths against F.linear."""
    leaves = _leaves((rows, cin), (cout, cin), (cout,))
    grad = torch.randn(rows, cout, dtype=torch.float64)
    ours, ours_grads = _grads(_LinearGemmBiasGrad.apply, leaves, grad)
    ref, ref_grads = _grads(F.linear, leaves, grad)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_cpu_and_inference_take_f_linear():
    x, w, b = _leaves((2, 3, 4, 5), (6, 5), (6,), dtype=torch.float32)
    torch.testing.assert_close(pointwise_linear(x, w, b), F.linear(x, w, b))
    assert 'GemmBiasGrad' not in type(pointwise_linear(x, w, b).grad_fn).__name__


@CUDA
@pytest.mark.parametrize('autocast', [False, True])
def test_cuda_matches_f_linear(autocast):
    x, w, b = _leaves((4, 7, 9, 48), (80, 48), (80,), dtype=torch.float32, device='cuda')
    grad = torch.randn(4, 7, 9, 80, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
        ours, ours_grads = _grads(pointwise_linear, [x, w, b], grad)
        ref, ref_grads = _grads(F.linear, [x, w, b], grad)
        taken = type(pointwise_linear(x, w, b).grad_fn.next_functions[0][0]).__name__
    assert 'GemmBiasGrad' in taken, f'the GEMM bias-gradient path was not taken: {taken}'
    assert ours.dtype == ref.dtype
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours, ref, **tol)
    for a, r in zip(ours_grads, ref_grads):
        assert a.dtype == r.dtype
        torch.testing.assert_close(a / r.abs().max(), r / r.abs().max(), **tol)
