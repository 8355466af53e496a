"""The fused op (compiled kernels + custom ops + autograd) against the float64 reference."""
import pytest
import torch

from gspn2_dense.ops import (DIRECTIONS, gspn_propagate, gspn_propagate_ref, gspn_scan,
                             gspn_scan_ref)
from gspn2_dense.ops.propagate import propagate_backward, propagate_forward, recomputes_hidden

DEVICES = ['cpu'] + [
    pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason='needs a CUDA device'))]


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
DEVICE_DTYPES = [
    pytest.param(d, t, id=f'{d}-{str(t).replace("torch.", "")}', marks=pytest.mark.skipif(
        d == 'cuda' and not torch.cuda.is_available(), reason='needs a CUDA device'))
    for d in ('cpu', 'cuda') for t in DTYPES]

# (B, C, G, H, W): odd sizes, lines of length 1, an empty batch, G = 1, an intermediate
# divisor and G = C.
SHAPES = [(2, 4, 1, 5, 7), (1, 6, 3, 1, 9), (1, 6, 6, 8, 1), (2, 6, 2, 6, 6), (0, 4, 2, 3, 5),
          (1, 1, 1, 1, 1)]
CHUNKS = [None, 1, 2, 3]


def make_inputs(B, C, G, H, W, dtype=torch.float64, device='cpu', seed=0, normalize=True,
                requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    gates = torch.randn(B, 4, G, 3, H, W, generator=gen, dtype=torch.float64)
    if not normalize:
        gates = gates.sigmoid() / 3
    lam = torch.rand(B, 4, C, H, W, generator=gen, dtype=torch.float64)
    u = torch.randn(B, 4, C, H, W, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype).requires_grad_(requires_grad)
            for t in (x, gates, lam, u)]


def value_and_grads(fn, inputs, grad_seed=1, **kwargs):
    """Output of ``fn(*inputs, **kwargs)`` and the gradients of <out, r> for a random r."""
    out = fn(*inputs, **kwargs)
    gen = torch.Generator().manual_seed(grad_seed)
    r = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out)
    diff = [t for t in inputs if t is not None and t.requires_grad]
    grads = torch.autograd.grad(out, diff, r, allow_unused=True) if out.numel() else [
        torch.zeros_like(t) for t in diff]
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, diff)]
    return [out.detach()] + [g.detach() for g in grads]


def fp64(inputs):
    return [None if t is None else t.detach().to(torch.float64).cpu().requires_grad_(
        t.requires_grad) for t in inputs]


def assert_close_to_reference(got, want, low_precision_ref, dtype, names):
    """``got`` (kernel, in ``dtype``) vs ``want`` (reference, float64).

    float32/float64: absolute and relative tolerances. bfloat16/float16 (flash-attention's
    rule): the kernel's error against float64 is at most twice the error of the reference
    itself run in the low precision, plus a small floor.
    """
    for name, g, w, lp in zip(names, got, want, low_precision_ref):
        g = g.to(torch.float64).cpu()
        if dtype == torch.float64:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=name)
        elif dtype == torch.float32:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5, msg=name)
        else:
            if w.numel() == 0:
                continue
            err = (g - w).abs().max().item()
            ref_err = (lp.to(torch.float64).cpu() - w).abs().max().item()
            floor = 1e-2 * max(1.0, w.abs().max().item())
            assert err <= 2 * ref_err + floor, (
                f'{name}: kernel error {err:.3g} > 2 x low-precision reference error '
                f'{ref_err:.3g} + {floor:.3g}')


@pytest.mark.parametrize('device,dtype', DEVICE_DTYPES)
@pytest.mark.parametrize('merge', [True, False])
@pytest.mark.parametrize('chunk', CHUNKS)
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_propagate_matches_reference(shape, chunk, merge, device, dtype):
    inputs = make_inputs(*shape, dtype=dtype, device=device)
    if not merge:
        inputs[3] = None
    kw = dict(chunk=chunk, merge=merge)
    got = value_and_grads(gspn_propagate, inputs, **kw)
    want = value_and_grads(gspn_propagate_ref, fp64(inputs), **kw)
    low = value_and_grads(gspn_propagate_ref, inputs, **kw) if dtype in (
        torch.bfloat16, torch.float16) else want
    names = ['y', 'grad_x', 'grad_gates', 'grad_lam', 'grad_u'][:len(got)]
    assert got[0].shape == want[0].shape and got[0].dtype == dtype
    assert_close_to_reference(got, want, low, dtype, names)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('G', [1, 3])
def test_propagate_matches_reference_multithreaded(G, device):
    """A size at which the CPU kernel runs several work items per thread."""
    inputs = make_inputs(2, 6, G, 40, 33, dtype=torch.float32, device=device, seed=4)
    got = value_and_grads(gspn_propagate, inputs, chunk=16)
    want = value_and_grads(gspn_propagate_ref, fp64(inputs), chunk=16)
    assert_close_to_reference(got, want, want, torch.float32,
                              ['y', 'grad_x', 'grad_gates', 'grad_lam', 'grad_u'])


@pytest.mark.parametrize('device,dtype', DEVICE_DTYPES)
@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize('direction', DIRECTIONS)
def test_scan_matches_reference(direction, normalize, device, dtype):
    x, gates, lam, _ = make_inputs(2, 6, 3, 5, 6, dtype=dtype, device=device, seed=3,
                                   normalize=normalize)
    inputs = [x, gates[:, 1].detach().requires_grad_(), lam[:, 2].detach().requires_grad_()]
    kw = dict(direction=direction, chunk=4, normalize=normalize)
    got = value_and_grads(gspn_scan, inputs, **kw)
    want = value_and_grads(gspn_scan_ref, fp64(inputs), **kw)
    low = value_and_grads(gspn_scan_ref, inputs, **kw) if dtype in (
        torch.bfloat16, torch.float16) else want
    assert_close_to_reference(got, want, low, dtype, ['h', 'grad_x', 'grad_gates', 'grad_lam'])


@pytest.mark.parametrize('device', DEVICES)
def test_propagate_unnormalised_weights(device):
    inputs = make_inputs(1, 4, 2, 6, 5, device=device, seed=5, normalize=False)
    got = value_and_grads(gspn_propagate, inputs, chunk=3, normalize=False)
    want = value_and_grads(gspn_propagate_ref, fp64(inputs), chunk=3, normalize=False)
    assert_close_to_reference(got, want, want, torch.float64,
                              ['y', 'grad_x', 'grad_gates', 'grad_lam', 'grad_u'])


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('scale', [30.0, 200.0])
@pytest.mark.parametrize('height,width,chunk', [(5, 6, None), (5, 6, 2), (40, 36, None)],
                         ids=['small-plane', 'local', 'whole-line'])
def test_saturated_gate_logits(scale, height, width, chunk, device):
    """Logits far in the sigmoid's tails (all valid sigmoids of a position underflow at 200)
    still match, on each family of CUDA kernels: small planes, local chunks, long lines."""
    x, gates, lam, u = make_inputs(1, 4, 1, height, width, dtype=torch.float32, device=device,
                                   seed=6, requires_grad=False)
    gates = (gates * scale).requires_grad_()
    inputs = [x.requires_grad_(), gates, lam.requires_grad_(), u.requires_grad_()]
    got = value_and_grads(gspn_propagate, inputs, chunk=chunk)
    want = value_and_grads(gspn_propagate_ref, fp64(inputs), chunk=chunk)
    assert_close_to_reference(got, want, want, torch.float32,
                              ['y', 'grad_x', 'grad_gates', 'grad_lam', 'grad_u'])


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('merge,normalize,chunk', [(True, True, None), (True, False, 2),
                                                   (False, True, 3)])
def test_propagate_gradcheck(merge, normalize, chunk, device):
    x, gates, lam, u = make_inputs(1, 4, 2, 4, 3, device=device, seed=7, normalize=normalize)
    u = u if merge else None

    def fn(x, gates, lam, *rest):
        return gspn_propagate(x, gates, lam, rest[0] if rest else None, chunk=chunk,
                              normalize=normalize, merge=merge)

    args = (x, gates, lam) + ((u,) if merge else ())
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('direction', DIRECTIONS)
def test_scan_gradcheck(direction, device):
    x, gates, lam, _ = make_inputs(1, 2, 1, 3, 4, device=device, seed=8)
    gates = gates[:, 0].detach().requires_grad_()
    lam = lam[:, 0].detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, g, l: gspn_scan(x, g, l, direction, chunk=2), (x, gates, lam), eps=1e-6,
        atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('merge', [True, False])
def test_bit_identical_repeats(merge, device):
    # Large enough for the CPU kernel to split the work over threads.
    inputs = make_inputs(2, 8, 1, 40, 37, dtype=torch.float32, device=device, seed=9)
    if not merge:
        inputs[3] = None
    first = value_and_grads(gspn_propagate, inputs, chunk=5, merge=merge)
    second = value_and_grads(gspn_propagate, inputs, chunk=5, merge=merge)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize('device', DEVICES)
def test_non_contiguous_inputs(device):
    x, gates, lam, u = make_inputs(2, 4, 2, 6, 5, dtype=torch.float32, device=device,
                                   requires_grad=False)
    views = [x.transpose(2, 3).contiguous().transpose(2, 3),
             gates.transpose(-1, -2).contiguous().transpose(-1, -2),
             torch.cat([lam, lam], dim=2)[:, :, ::2],
             u.transpose(0, 1).contiguous().transpose(0, 1)]
    assert not any(t.is_contiguous() for t in views)
    dense = [v.contiguous() for v in views]
    # The expanded gradient of .sum() is non-contiguous as well.
    got = value_and_grads(lambda *t: gspn_propagate(*t, chunk=2).sum(),
                          [v.requires_grad_() for v in views])
    want = value_and_grads(lambda *t: gspn_propagate(*t, chunk=2).sum(),
                           [d.requires_grad_() for d in dense])
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    h = gspn_scan(views[0], views[1][:, 3], views[2][:, 1], 'right_left')
    assert torch.equal(h, gspn_scan(dense[0], dense[1][:, 3], dense[2][:, 1], 'right_left'))


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('B,C,G', [(0, 4, 2), (2, 0, 1)])
def test_empty_batch_or_channels(B, C, G, device):
    x, gates, lam, u = make_inputs(B, C, G, 3, 4, dtype=torch.float32, device=device)
    y = gspn_propagate(x, gates, lam, u)
    assert y.shape == (B, C, 3, 4)
    h = gspn_propagate(x, gates, lam, None, merge=False)
    assert h.shape == (B, 4, C, 3, 4)
    grads = torch.autograd.grad(y.sum() + h.sum(), (x, gates, lam, u), allow_unused=True)
    for g, t in zip(grads, (x, gates, lam, u)):
        assert g is None or (g.shape == t.shape and not g.any())


@pytest.mark.parametrize('device', DEVICES)
def test_nan_and_inf_propagate(device):
    x, gates, lam, u = make_inputs(2, 3, 1, 5, 6, dtype=torch.float32, device=device,
                                   requires_grad=False)
    x[0, 1, 2, 3] = float('nan')
    gates[1, 0, 0, 1] = float('inf')  # sigmoid(inf) = 1: still a valid weight
    y = gspn_propagate(x, gates, lam, u)
    assert y[0, 1].isnan().any()
    # Other channels and the other batch element never see the NaN.
    assert y[0, [0, 2]].isfinite().all() and y[1].isfinite().all()
    x[1, 0, 0, 0] = float('inf')
    h = gspn_scan(x, gates[:, 0], lam[:, 0], 'top_down')
    assert h[1, 0, 0, 0].isinf() and h[1, 1:].isfinite().all()
    # A NaN gate logit poisons its pixel's weights, hence h there and below, in every channel.
    gates[0, 0, 0, 1, 2, 3] = float('nan')
    h = gspn_scan(x[:1].nan_to_num(0.0), gates[:1, 0], lam[:1, 0], 'top_down')
    assert h[0, :, 2, 3].isnan().all() and h[0, :, :2].isfinite().all()


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('merge', [True, False])
def test_opcheck(merge, device):
    x, gates, lam, u = make_inputs(1, 4, 2, 3, 5, dtype=torch.float32, device=device)
    u = u if merge else None
    torch.library.opcheck(propagate_forward, (x, gates, lam, u, [0, 1, 2, 3], 2, True, merge,
                                              merge))
    out, hidden = propagate_forward(x, gates, lam, u, [0, 1, 2, 3], 2, True, merge, merge)
    grad = torch.randn_like(out)
    torch.library.opcheck(propagate_backward,
                          (grad, x.detach(), gates.detach(), lam.detach(),
                           None if u is None else u.detach(),
                           (hidden if merge else out).detach(), [0, 1, 2, 3], 2, True, merge))
    # One direction, as gspn_scan calls it.
    torch.library.opcheck(propagate_forward, (x, gates[:, 2:3], lam[:, 2:3], None, [2], 0, True,
                                              False, False))


@pytest.mark.parametrize('device', DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def block(x, gates, lam, u):
        y = gspn_propagate(x, gates, lam, u, chunk=2)
        h = gspn_scan(y, gates[:, 0], lam[:, 0], 'left_right')
        return (h * 2).sum()

    compiled = torch.compile(block, fullgraph=True, backend='aot_eager')
    inputs = make_inputs(1, 4, 1, 5, 4, dtype=torch.float32, device=device)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    want_loss = block(*inputs)
    want = torch.autograd.grad(want_loss, inputs)
    torch.testing.assert_close(loss, want_loss)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('chunk', [1, 2])
@pytest.mark.parametrize('shape', [(2, 4, 1, 5, 7), (1, 3, 3, 1, 6), (1, 2, 2, 8, 1)],
                         ids=lambda s: 'x'.join(map(str, s)))
def test_local_scans_save_no_hidden_state(device, chunk, shape):
    """Scans restarting every 1 or 2 steps keep no hidden state for the backward (it is
    recomputed) and still give the reference's values and gradients."""
    B, C, G, H, W = shape
    inputs = make_inputs(B, C, G, H, W, device=device, seed=chunk)
    out, hidden = propagate_forward(*inputs, [0, 1, 2, 3], chunk, True, True, False)
    assert hidden.numel() == 0
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, grad)
    ref_inputs = [t.detach().cpu().requires_grad_() for t in inputs]
    ref = gspn_propagate_ref(*ref_inputs, chunk=chunk)
    want = torch.autograd.grad(ref, ref_inputs, grad.cpu())
    torch.testing.assert_close(out.cpu(), ref)
    for name, g, w in zip(('x', 'gates', 'lam', 'u'), got, want):
        torch.testing.assert_close(g.cpu(), w, msg=lambda m: f'{name}: {m}')
    # gspn_propagate asks for no saved state there on CUDA (on CPU it saves it)
    loss = gspn_propagate(*inputs, chunk=chunk).mul(grad).sum()
    for g, w in zip(torch.autograd.grad(loss, inputs), want):
        torch.testing.assert_close(g.cpu(), w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('chunk', [None, 3])
def test_small_planes_save_no_hidden_state_on_cuda(chunk):
    """On CUDA, planes whose lines fit a warp keep no hidden state for the backward either
    (the small-plane kernels recompute it), through the op's autograd formula."""
    inputs = make_inputs(2, 8, 1, 14, 14, device='cuda', seed=5)
    core = chunk or 0
    assert recomputes_hidden(core, 14, 14) and not recomputes_hidden(core, 17, 16)
    out, hidden = propagate_forward(*inputs, [0, 1, 2, 3], core, True, True, False)
    assert hidden.numel() == 0
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, grad)
    ref_inputs = [t.detach().cpu().requires_grad_() for t in inputs]
    ref = gspn_propagate_ref(*ref_inputs, chunk=chunk)
    want = torch.autograd.grad(ref, ref_inputs, grad.cpu())
    torch.testing.assert_close(out.cpu(), ref)
    for name, g, w in zip(('x', 'gates', 'lam', 'u'), got, want):
        torch.testing.assert_close(g.cpu(), w, msg=lambda m: f'{name}: {m}')


def test_recomputed_hidden_rule():
    """Where the CUDA kernels recompute the hidden state: local scans at any size, other
    scans on planes whose lines fit a warp (at most 32) and that hold at most 256 positions;
    tests/ops/test_cuda_propagate.py checks that the binding follows the same rule."""
    assert recomputes_hidden(1, 4096, 4096) and recomputes_hidden(2, 3, 5000)
    assert recomputes_hidden(0, 14, 14) and recomputes_hidden(7, 7, 7)
    assert recomputes_hidden(0, 32, 8) and recomputes_hidden(0, 16, 16)
    assert not recomputes_hidden(0, 17, 16) and not recomputes_hidden(0, 33, 1)
    assert not recomputes_hidden(3, 1, 33) and not recomputes_hidden(0, 56, 56)


def test_backward_needs_saved_hidden():
    x, gates, lam, u = make_inputs(1, 2, 1, 3, 3)
    out, _ = propagate_forward(x, gates, lam, u, [0, 1, 2, 3], 0, True, True, False)
    with pytest.raises(RuntimeError, match='save_hidden=False'):
        out.sum().backward()


# ----------------------------------------------------------------------------- validation

def _bad_propagate_inputs():
    x, gates, lam, u = make_inputs(2, 4, 2, 3, 5, dtype=torch.float32, requires_grad=False)
    cases = {
        'x rank': (dict(x=x[0]), ValueError, r'x must be \(B, C, H, W\), got shape \(4, 3, 5\)'),
        'gates rank': (dict(gates=gates[:, 0]), ValueError,
                       r'gates must be \(B, 4, G, 3, H, W\) = \(2, 4, G, 3, 3, 5\).*'
                       r'got shape \(2, 2, 3, 3, 5\)'),
        'gates H': (dict(gates=gates[..., :2, :]), ValueError,
                    r'gates must be .*got shape \(2, 4, 2, 3, 2, 5\)'),
        'gates taps': (dict(gates=gates[:, :, :, :2]), ValueError,
                       r'gates must be .*got shape \(2, 4, 2, 2, 3, 5\)'),
        'gates B': (dict(gates=gates[:1]), ValueError, r'gates must be .*got shape \(1, 4'),
        'groups': (dict(gates=torch.cat([gates, gates[:, :, :1]], 2)), ValueError,
                   r'G = 3 groups, which must be >= 1 and divide the channels C = 4'),
        'lam C': (dict(lam=lam[:, :, :3]), ValueError,
                  r'lam must be \(B, 4, C, H, W\) = \(2, 4, 4, 3, 5\).*'
                  r'got shape \(2, 4, 3, 3, 5\)'),
        'lam W': (dict(lam=lam[..., :4]), ValueError, r'lam must be .*got shape \(2, 4, 4, 3, 4\)'),
        'u shape': (dict(u=u[:, :3]), ValueError, r'u must be .*got shape \(2, 3, 4, 3, 5\)'),
        'u missing': (dict(u=None), ValueError, r'u must be a \(B, 4, C, H, W\) tensor when '
                                                r'merge=True, got None'),
        'gates dtype': (dict(gates=gates.double()), TypeError,
                        r'gates must have the dtype of x \(torch.float32\), got torch.float64'),
        'lam dtype': (dict(lam=lam.half()), TypeError,
                      r'lam must have the dtype of x \(torch.float32\), got torch.float16'),
        'u dtype': (dict(u=u.bfloat16()), TypeError, r'u must have the dtype of x'),
        'int x': (dict(x=x.long(), gates=gates.long(), lam=lam.long(), u=u.long()), TypeError,
                  r'x must be a floating-point tensor .*got torch.int64'),
        'lam device': (dict(lam=lam.to('meta')), ValueError,
                       r'lam must be on the device of x \(cpu\), got meta'),
        'chunk 0': (dict(chunk=0), ValueError, r'chunk must be None or a positive int, got 0'),
        'chunk -2': (dict(chunk=-2), ValueError, r'chunk must be None or a positive int, got -2'),
        'chunk float': (dict(chunk=2.0), TypeError, r'chunk must be None or a positive int, '
                                                     r'got float 2.0'),
        'x not a tensor': (dict(x=[1.0]), TypeError, r'x must be a torch.Tensor, got list'),
        'merge None': (dict(merge=None), TypeError, r'merge must be True or False, got NoneType None'),
        'merge 1': (dict(merge=1), TypeError, r'merge must be True or False, got int 1'),
        'normalize str': (dict(normalize='yes'), TypeError,
                          r"normalize must be True or False, got str 'yes'"),
    }
    base = dict(x=x, gates=gates, lam=lam, u=u)
    return [pytest.param({**base, **change}, err, match, id=name)
            for name, (change, err, match) in cases.items()]


@pytest.mark.parametrize('fn', [gspn_propagate, gspn_propagate_ref])
@pytest.mark.parametrize('kwargs,err,match', _bad_propagate_inputs())
def test_propagate_rejects_bad_inputs(kwargs, err, match, fn):
    with pytest.raises(err, match=match):
        fn(**{'chunk': None, **kwargs})


@pytest.mark.parametrize('fn', [gspn_scan, gspn_scan_ref])
def test_scan_rejects_bad_inputs(fn):
    x, gates, lam, _ = make_inputs(1, 4, 2, 3, 5, dtype=torch.float32, requires_grad=False)
    g, lm = gates[:, 0], lam[:, 0]
    with pytest.raises(ValueError, match=r"direction must be one of \('top_down', 'bottom_up', "
                                         r"'left_right', 'right_left'\), got 'diagonal'"):
        fn(x, g, lm, 'diagonal')
    with pytest.raises(ValueError, match=r'gates must be \(B, G, 3, H, W\) = \(1, G, 3, 3, 5\)'):
        fn(x, gates, lm, 'top_down')
    with pytest.raises(ValueError, match=r'lam must be \(B, C, H, W\) = \(1, 4, 3, 5\)'):
        fn(x, g, lam, 'top_down')
    with pytest.raises(ValueError, match=r'chunk must be None or a positive int, got 0'):
        fn(x, g, lm, 'top_down', chunk=0)
    with pytest.raises(TypeError, match=r'gates must have the dtype of x'):
        fn(x, g.double(), lm, 'top_down')
    with pytest.raises(TypeError, match=r'normalize must be True or False, got NoneType None'):
        fn(x, g, lm, 'top_down', normalize=None)


def test_compiled_extension_checks_too():
    """The C++ layer validates on its own when the core op is called directly."""
    x, gates, lam, u = make_inputs(1, 4, 2, 3, 5, dtype=torch.float32, requires_grad=False)
    with pytest.raises(RuntimeError, match=r'gates must be \(B, D, G, 3, H, W\)'):
        propagate_forward(x, gates[:, :3], lam, u, [0, 1, 2, 3], 0, True, True, False)
    with pytest.raises(RuntimeError, match='direction top_down is repeated'):
        propagate_forward(x, gates, lam, u, [0, 1, 0, 3], 0, True, True, False)
    with pytest.raises(RuntimeError, match=r'hidden .* must have shape'):
        propagate_backward(x, x, gates, lam, u, x.new_empty(0), [0, 1, 2, 3], 0, True, True)
