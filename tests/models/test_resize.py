"""resize_bilinear: F.interpolate's forward, a backward of two matrix products."""
import pytest
import torch
import torch.nn.functional as F

from gspn2_dense.models.resize import interpolation_matrix, resize_bilinear

# (input H, W) -> (output H, W): up, down, mixed, to and from 1, 32x as the heads do.
SIZES = [((4, 5), (16, 20)), ((7, 3), (29, 2)), ((16, 16), (4, 4)), ((1, 1), (5, 7)),
         ((5, 7), (1, 1)), ((9, 13), (9, 40)), ((2, 3), (64, 96))]


def _interpolate_and_grad(x, size, align_corners, grad, resize):
    x = x.detach().clone().requires_grad_()
    y = resize(x, size, align_corners)
    (dx,) = torch.autograd.grad(y, x, grad)
    return y, dx


def _torch_resize(x, size, align_corners):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=align_corners)


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('size_in,size_out', SIZES)
def test_matches_interpolate_float64(size_in, size_out, align_corners):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size_in, dtype=torch.float64)
    grad = torch.randn(2, 3, *size_out, dtype=torch.float64)
    y, dx = _interpolate_and_grad(x, size_out, align_corners, grad, resize_bilinear)
    y_ref, dx_ref = _interpolate_and_grad(x, size_out, align_corners, grad, _torch_resize)
    assert torch.equal(y, y_ref)  # the forward is F.interpolate itself
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 4e-3)])
def test_low_precision_gradients_close_to_float64(dtype, tol):
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    grad = torch.randn(2, 4, 48, 40, dtype=torch.float64)
    _, dx_ref = _interpolate_and_grad(x, (48, 40), False, grad, _torch_resize)
    _, dx = _interpolate_and_grad(x.to(dtype), (48, 40), False, grad.to(dtype), resize_bilinear)
    assert dx.dtype == dtype
    scale = dx_ref.abs().max()
    torch.testing.assert_close(dx.double() / scale, dx_ref / scale, rtol=0, atol=tol)


def test_gradcheck_and_channels_last():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: resize_bilinear(t, (7, 5), False), (x,))
    grad = torch.randn(1, 2, 7, 9, dtype=torch.float64)
    x_cl = x.detach().contiguous(memory_format=torch.channels_last)
    _, dx = _interpolate_and_grad(x_cl, (7, 9), False, grad, resize_bilinear)
    _, dx_ref = _interpolate_and_grad(x.detach(), (7, 9), False, grad, _torch_resize)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)


def test_rows_of_the_interpolation_matrix_sum_to_one():
    for align_corners in (False, True):
        m = interpolation_matrix(7, 23, align_corners, torch.float64, 'cpu')
        assert m.shape == (23, 7)
        torch.testing.assert_close(m.sum(1), torch.ones(23, dtype=torch.float64))
        assert ((m != 0).sum(1) <= 2).all()


def test_same_size_returns_input_and_no_grad_path():
    x = torch.randn(1, 2, 5, 6)
    assert resize_bilinear(x, (5, 6)) is x
    y = resize_bilinear(x, (10, 12))
    assert y.grad_fn is None
    assert torch.equal(y, _torch_resize(x, (10, 12), False))


def test_errors():
    with pytest.raises(ValueError, match=r'expects an \(N, C, H, W\) tensor, got shape \(2, 5, 6\)'):
        resize_bilinear(torch.randn(2, 5, 6), (3, 3))
    with pytest.raises(ValueError, match=r'size must be two positive ints \(height, width\), got \(0, 4\)'):
        resize_bilinear(torch.randn(1, 1, 5, 6), (0, 4))
    with pytest.raises(ValueError, match=r'got \(4,\)'):
        resize_bilinear(torch.randn(1, 1, 5, 6), (4,))
