"""The op's custom-op registration over input layouts: fakes promise what the kernels return.

``torch.compile`` (inductor) checks at run time that every custom-op output has the strides
its fake promised; a fake that follows the input's layout (``empty_like``) while the kernel
returns row-major tensors crashed channels_last models in the backward. These tests run the
registration checks (``torch.library.opcheck``) and inductor itself over the layouts the
models produce.
"""
import pytest
import torch

from gspn2_dense.ops import gspn_propagate
from gspn2_dense.ops.propagate import propagate_backward, propagate_forward

from test_propagate import DEVICES, make_inputs  # tests/ops is on sys.path (rootdir-less test dirs)

B, C, G, H, W = 2, 4, 1, 5, 6


def _channels_last(t):
    """``t`` with its channel-like dim (1 for x, 2 for the stacked inputs) innermost."""
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    # (B, D, C..., H, W) with the channels innermost, as a channels_last projection gives.
    order = (0, 1) + tuple(range(3, t.dim())) + (2,)
    inverse = [order.index(i) for i in range(t.dim())]
    return t.permute(order).contiguous().permute(inverse)


def _channel_slice(t):
    """``t`` as a channel slice of a wider tensor (what ``split`` of a projection gives)."""
    dim = 1 if t.dim() == 4 else 2
    shape = list(t.shape)
    shape[dim] += 3
    wide = torch.zeros(shape, dtype=t.dtype, device=t.device)
    return wide.narrow(dim, 1, t.shape[dim]).copy_(t)


def _expanded(t):
    """``t``'s first batch entry broadcast over the batch (stride 0)."""
    return t[:1].expand(t.shape)


LAYOUTS = {
    'contiguous': lambda t: t,
    'channels_last': _channels_last,
    'channel_slice': _channel_slice,
    'expanded': _expanded,
}


def _layout_inputs(layout, device, dtype=torch.float32):
    x, gates, lam, u = [t.detach() for t in make_inputs(B, C, G, H, W, dtype=dtype,
                                                        device=device)]
    make = LAYOUTS[layout]
    return [make(t) for t in (x, gates, lam, u)]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_layouts_make_no_difference(layout, device):
    inputs = [t.requires_grad_() for t in _layout_inputs(layout, device)]
    plain = [t.detach().contiguous().requires_grad_() for t in inputs]
    assert layout == 'contiguous' or not all(t.is_contiguous() for t in inputs)
    out = gspn_propagate(*inputs, chunk=2)
    want = gspn_propagate(*plain, chunk=2)
    assert out.is_contiguous()
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    r = torch.randn_like(want)
    for g, w in zip(torch.autograd.grad(out, inputs, r), torch.autograd.grad(want, plain, r)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('merge', [True, False])
def test_opcheck_layouts(layout, merge, device):
    x, gates, lam, u = _layout_inputs(layout, device)
    u = u if merge else None
    x, gates, lam = (t.requires_grad_() for t in (x, gates, lam))
    args = (x, gates, lam, u, [0, 1, 2, 3], 2, True, merge, merge)
    torch.library.opcheck(propagate_forward, args)
    out, hidden = propagate_forward(*args)
    assert out.is_contiguous() and hidden.is_contiguous()
    grad = LAYOUTS[layout](torch.randn_like(out))
    torch.library.opcheck(propagate_backward,
                          (grad, x.detach(), gates.detach(), lam.detach(), u,
                           (hidden if merge else out).detach(), [0, 1, 2, 3], 2, True, merge))


def _strides(ts):
    return [tuple(t.stride()) for t in ts]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('merge', [True, False])
def test_fakes_promise_the_real_strides(layout, merge, device):
    """opcheck compares shapes and dtypes of fake and real outputs, not strides; inductor
    asserts strides, so they are compared here."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    x, gates, lam, u = _layout_inputs(layout, device)
    u = u if merge else None
    fwd_args = (x, gates, lam, u, [0, 1, 2, 3], 2, True, merge, merge)
    out, hidden = propagate_forward(*fwd_args)
    grad = LAYOUTS[layout](torch.randn_like(out))
    bwd_args = (grad, x, gates, lam, u, hidden if merge else out, [0, 1, 2, 3], 2, True, merge)
    real = [(out, hidden), propagate_backward(*bwd_args)]
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = [propagate_forward(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                    for a in fwd_args]),
                propagate_backward(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a
                                     for a in bwd_args])]
    for r, f in zip(real, fake):
        assert [t.shape for t in r] == [t.shape for t in f]
        assert _strides(r) == _strides(f)


def test_double_backward_is_refused():
    x, gates, lam, u = make_inputs(1, 2, 1, 3, 4)
    y = gspn_propagate(x, gates, lam, u)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='first-order gradients only: double backward'):
        gx.sum().backward()


def _mixer_like(x, gates, lam, u):
    """The mixer's pattern: the op's inputs come as channel slices of one channels_last map."""
    y = gspn_propagate(x, gates, lam.sigmoid(), u, chunk=2)
    return (y * x).sum()


@pytest.mark.parametrize('device', DEVICES)
def test_inductor_channels_last_forward_and_backward(device):
    """Reproduces the crash of `benchmark_backbone.py --compile`: inductor's stride assertion
    on the backward's outputs when the inputs are channels_last."""
    torch._dynamo.reset()
    inputs = [t.requires_grad_() for t in _layout_inputs('channels_last', device)]
    compiled = torch.compile(_mixer_like, fullgraph=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    want_loss = _mixer_like(*inputs)
    want = torch.autograd.grad(want_loss, inputs)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
