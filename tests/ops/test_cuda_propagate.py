"""The CUDA extension called directly, against the float64 reference (GPU only).

tests/ops/test_propagate.py checks the public op on every device; this module adds what is
specific to the fused CUDA kernel: any subset and order of directions in one launch, lines
that span several threads and several channel packings, float64 (double accumulation),
float16/bfloat16 against the error
of the same computation done by PyTorch in that precision, bit-identical backward results,
and the error messages of the C++ checks.
"""
import itertools

import pytest
import torch

from gspn2_dense.ops import DIRECTIONS, gspn_scan_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.fixture(scope='module')
def ext():
    from gspn2_dense.ops._build import load_extension
    return load_extension('cuda')


def _reference(x, gates, lam, u, directions, chunk, normalize, merge):
    """Composed from the one-direction reference; runs in the dtype of the inputs."""
    hs = [gspn_scan_ref(x, gates[:, i], lam[:, i], DIRECTIONS[d], chunk or None, normalize)
          for i, d in enumerate(directions)]
    if not merge:
        return torch.stack(hs, dim=1)
    return sum(u[:, i] * h for i, h in enumerate(hs))


def _inputs(B, C, G, H, W, D, normalize, device, seed):
    gen = torch.Generator(device='cpu').manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    if normalize:
        gates = torch.randn(B, D, G, 3, H, W, generator=gen, dtype=torch.float64) * 2
    else:  # already-normalised weights with rows summing to at most 1
        gates = torch.rand(B, D, G, 3, H, W, generator=gen, dtype=torch.float64) / 3
    lam = torch.rand(B, D, C, H, W, generator=gen, dtype=torch.float64)
    u = torch.randn(B, D, C, H, W, generator=gen, dtype=torch.float64)
    return [t.to(device) for t in (x, gates, lam, u)]


def _rel(a, b):
    """Relative error; below a norm of 1 (O(1) random inputs) it becomes absolute, so that
    rounding noise on an exactly-zero gradient (size-1 lines, single steps) is not
    divided by zero."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1.0)).item()


# Tolerance floor by dtype; low precision may also reach twice the error of PyTorch's own
# computation in that precision (flash-attention's rule).
FLOOR = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}

CASES = [
    # B, C, G, H, W, directions, chunk
    # (planes of more than 256 positions or lines of more than 32: smaller ones take the
    # small-plane kernels, SMALL_CASES; test_launch_plan.py checks that these lists
    # reach every kind of launch the plan picks)
    (2, 4, 4, 9, 31, (0,), 0),
    (1, 6, 2, 17, 17, (1, 3), 0),
    (2, 4, 1, 12, 24, (0, 1, 2, 3), 0),
    (1, 8, 2, 33, 31, (3, 2, 1, 0), 4),
    (1, 3, 3, 1, 300, (0, 2), 0),
    (1, 2, 1, 6, 1, (2, 1), 2),
    (1, 2, 2, 40, 1030, (0, 3), 0),   # a line spread over many threads, scalar path
    (1, 4, 1, 260, 64, (2, 1), 7),    # vertical vector path, horizontal lines of 260
    (1, 3, 1, 11, 36, (3, 2, 1), 5),  # horizontal vector runs, a partial vertical run
    (1, 2, 2, 1100, 6, (2, 3), 0),    # lines of 1100: CTAs of 275 threads, one-step runs
    (1, 4, 1, 6, 1040, (0, 2, 1), 3),  # long mode with a gate group of 4 (2 per thread)
    # warp mode (lines of at most 128): 4 directions merged, G = 1, backbone line lengths
    (2, 24, 1, 56, 56, (0, 1, 2, 3), 0),  # 16 lanes per line, 8 channels per CTA
    (1, 48, 1, 28, 28, (0, 1, 2, 3), 2),  # 8 lanes per line, chunk 2
    (1, 4, 2, 7, 41, (3, 2, 1, 0), 3),    # 2 lanes per line, odd chunk
    (2, 8, 2, 7, 40, (2, 3), 0),          # horizontal lines of 7: 2 lanes, 2 channels per thread
    (1, 2, 1, 20, 128, (0, 1, 2, 3), 0),  # the longest warp-mode line (32 lanes)
    # CTA mode (129 .. 1024)
    (1, 2, 1, 129, 10, (2, 3), 0),        # the shortest CTA-mode line
    (1, 3, 3, 14, 200, (0, 1), 5),
    (1, 4, 2, 300, 12, (2, 3, 0), 0),
    # the paired merge: top-down with bottom-up in the CTA and long modes
    (1, 4, 1, 300, 200, (0, 1), 0),
    (1, 2, 1, 200, 1100, (1, 0), 5),
    # the shared-line mode: lines beyond the long mode's 2048 positions
    (1, 3, 1, 3, 4097, (0, 1), 0),        # rows of 4097, G = 1 (a partial sum per channel)
    (2, 2, 2, 2050, 3, (2, 3, 1), 7),     # columns of 2050 on transposed planes, G = C, chunked
]


@pytest.mark.parametrize('case', CASES, ids=lambda c: f'{c[0]}x{c[1]}g{c[2]}_{c[3]}x{c[4]}_d{"".join(map(str, c[5]))}_k{c[6]}')
@pytest.mark.parametrize('normalize,merge', [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(ext, case, normalize, merge, dtype):
    _check_against_reference(ext, case, normalize, merge, dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_split_follows_the_callers_stream(ext, dtype):
    """The split runs its vertical half on a side stream. Called on a user stream that is
    still busy (a sleep) when it fills in the inputs, forward and backward must wait for it
    and give, bit for bit, the results of the same call on the default stream."""
    inputs = [t.to(dtype) for t in _inputs(1, 4, 1, 160, 144, 4, True, 'cuda', seed=11)]
    dirs = [2, 0, 3, 1]  # lines of 160 > 128: the horizontal entries go through transposes

    def call(x, gates, lam, u):
        out, hidden = ext.forward(x, gates, lam, u, dirs, 0, True, True, True)
        grads = ext.backward(torch.ones_like(out), x, gates, lam, u, hidden, dirs, 0, True, True)
        return [out, hidden, *grads]

    want = call(*inputs)
    blanks = [torch.zeros_like(t) for t in inputs]
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(100_000_000)  # about 50 ms before the inputs are written
        for blank, t in zip(blanks, inputs):
            blank.copy_(t)
        got = call(*blanks)
    torch.cuda.synchronize()
    for name, a, b in zip(['y', 'hidden', 'grad_x', 'grad_gates', 'grad_lam', 'grad_u'], got,
                          want):
        assert torch.equal(a, b), name


# Shapes the plan sends to the plane mode (propagate.h) in some dtype or pass: forward on lines
# of 33..64 (17..64 in float32), backward on lines of 14..64, the staged planes within the
# shared-memory budget; the other passes of these shapes take the warp mode.
# _check_against_reference checks every gradient and that a repeated backward is bit-identical.
# A CTA holds 1, 2 or 4 channels of a gate group (the most that divide C / G and fit).
PLANE_CASES = [
    # B, C, G, H, W, directions, chunk
    (2, 96, 1, 7, 40, (0, 1, 2, 3), 0),
    (3, 48, 1, 14, 40, (0, 1, 2, 3), 0),
    (2, 64, 8, 28, 28, (0, 1, 2, 3), 0),   # 4 channels of a group per CTA
    (2, 70, 1, 56, 56, (0, 1, 2, 3), 3),   # 16-bit forward: 2 channels per CTA
    (1, 6, 6, 13, 23, (3, 1, 2, 0), 3),     # odd plane, G = C, odd chunk
    (1, 4, 2, 17, 19, (2, 0), 0),           # 2 channels per CTA, 2 groups
    (2, 3, 1, 64, 33, (1, 3, 0), 5),        # the longest plane-mode line, NP = 2
    (1, 5, 5, 11, 33, (2,), 0),             # one direction (gspn_scan's launch)
    (1, 2, 1, 1, 40, (0, 2), 0),            # a single row
]


@pytest.mark.parametrize('case', PLANE_CASES, ids=lambda c: f'{c[0]}x{c[1]}g{c[2]}_{c[3]}x{c[4]}_d{"".join(map(str, c[5]))}_k{c[6]}')
@pytest.mark.parametrize('normalize,merge', [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_plane_mode_matches_reference(ext, case, normalize, merge, dtype):
    _check_against_reference(ext, case, normalize, merge, dtype)


def test_gspn_scan_on_cuda(ext):
    from gspn2_dense.ops import gspn_scan
    x, gates, lam, _ = _inputs(3, 50, 1, 14, 20, 1, True, 'cuda', seed=9)
    for direction in DIRECTIONS:
        got = gspn_scan(x.float(), gates[:, 0].float(), lam[:, 0].float(), direction, chunk=2)
        want = gspn_scan_ref(x, gates[:, 0], lam[:, 0], direction, 2)
        assert _rel(got, want) <= FLOOR[torch.float32], direction


# Lines of every length the issue lists around the warp, CTA and thread boundaries: (H, W) =
# (L, 6) gives horizontal lines of L and vertical scans of L steps, (6, L) the converse.
LINE_LENGTHS = [1, 2, 31, 32, 33, 127, 128, 129, 1000, 4097]
LINE_SHAPES = [(L, 6) for L in LINE_LENGTHS] + [(6, L) for L in LINE_LENGTHS]


@pytest.mark.parametrize('hw', LINE_SHAPES, ids=lambda hw: f'{hw[0]}x{hw[1]}')
@pytest.mark.parametrize('G', [1, 3])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_line_lengths(ext, hw, G, dtype):
    """Four directions over odd channel counts (C = 3), gates shared (G = 1) or per channel."""
    _check_against_reference(ext, (1, 3, G, *hw, (0, 1, 2, 3), 0), True, True, dtype)


def _check_against_reference(ext, case, normalize, merge, dtype):
    B, C, G, H, W, dirs, chunk = case
    D = len(dirs)
    x, gates, lam, u = _inputs(B, C, G, H, W, D, normalize, 'cuda', seed=hash(case) % 1000)
    leaves = [t.clone().requires_grad_() for t in (x, gates, lam, u)]
    ref = _reference(*leaves, dirs, chunk, normalize, merge)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, leaves, grad_out, allow_unused=True)

    low = [t.to(dtype) for t in (x, gates, lam, u)]
    out, hidden = ext.forward(*low, list(dirs), chunk, normalize, merge, True)
    low_ref = _reference(*low, dirs, chunk, normalize, merge)
    tol = max(FLOOR[dtype], 2 * _rel(low_ref, ref))
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert _rel(out, ref) <= tol, (_rel(out, ref), tol)

    saved = hidden if merge else out
    grads = ext.backward(grad_out.to(dtype), *low, saved, list(dirs), chunk, normalize, merge)
    names = ('x', 'gates', 'lam', 'u')
    for name, g, rg in zip(names, grads, ref_grads):
        if name == 'u' and not merge:
            assert g is not None and not g.any()
            continue
        assert g.dtype == dtype and g.shape == rg.shape, name
        assert torch.isfinite(g).all(), name
        # The backward sums long chains in float32; allow 4x the forward's tolerance.
        assert _rel(g, rg) <= 4 * tol, (name, _rel(g, rg), tol)

    again = ext.backward(grad_out.to(dtype), *low, saved, list(dirs), chunk, normalize, merge)
    for name, g, g2 in zip(names, grads, again):
        assert torch.equal(g, g2), f'backward of {name} is not deterministic'


# Local scans (chunk 1 or 2; propagate_local.h): one thread per position and channel slice,
# every direction; the backward recomputes h, so it is also checked without a saved hidden.
LOCAL_CASES = [
    # B, C, G, H, W, directions, chunk
    (2, 4, 1, 9, 13, (0, 1, 2, 3), 2),
    (1, 6, 2, 17, 5, (1, 3), 2),
    (1, 3, 3, 1, 7, (0, 2), 2),       # one row: vertical scans are all chunk starts
    (1, 2, 1, 6, 1, (2, 1), 2),       # one column
    (2, 5, 5, 8, 8, (3, 2, 1, 0), 1),  # chunk 1: h = lam x
    (1, 24, 1, 31, 33, (0, 1, 2, 3), 2),  # odd sizes, one group of 24 split in slices
    (1, 8, 4, 2, 2, (0, 3), 2),
    (3, 20, 1, 56, 56, (0, 1, 2, 3), 2),  # a backbone stage (GSPN-2-T stage 1 at B3)
    (1, 2, 1, 4097, 3, (2, 3), 2),    # lines beyond the other modes' 2048
]


@pytest.mark.parametrize('case', LOCAL_CASES, ids=lambda c: f'{c[0]}x{c[1]}g{c[2]}_{c[3]}x{c[4]}_d{"".join(map(str, c[5]))}_k{c[6]}')
@pytest.mark.parametrize('normalize,merge', [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_local_matches_reference(ext, case, normalize, merge, dtype):
    _check_against_reference(ext, case, normalize, merge, dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_local_backward_needs_no_hidden(ext, dtype):
    x, gates, lam, u = (t.to(dtype) for t in _inputs(2, 12, 1, 20, 18, 4, True, 'cuda', seed=3))
    out, hidden = ext.forward(x, gates, lam, u, [0, 1, 2, 3], 2, True, True, False)
    assert hidden.numel() == 0
    out2, saved = ext.forward(x, gates, lam, u, [0, 1, 2, 3], 2, True, True, True)
    assert torch.equal(out, out2)
    grad = torch.randn_like(out)
    with_saved = ext.backward(grad, x, gates, lam, u, saved, [0, 1, 2, 3], 2, True, True)
    without = ext.backward(grad, x, gates, lam, u, hidden, [0, 1, 2, 3], 2, True, True)
    for a, b in zip(with_saved, without):
        assert torch.equal(a, b)


# Small planes (lines of at most 32, at most 256 positions; propagate_small.h): one warp per
# direction, lanes along the line; any chunk, the backward recomputes h. Chunks 1 and 2 take
# the local kernels, so these use 0 or >= 3.
SMALL_CASES = [
    # B, C, G, H, W, directions, chunk
    (2, 4, 1, 14, 14, (0, 1, 2, 3), 0),   # a global backbone stage at 224 px
    (4, 160, 1, 7, 7, (0, 1, 2, 3), 0),   # GSPN-2-T stage 4: one channel per CTA, partial sums
    (1, 24, 1, 16, 16, (0, 1, 2, 3), 0),  # the largest square plane, slices of one group
    (2, 4, 4, 9, 13, (0,), 0),            # one direction, G = C
    (1, 6, 2, 17, 5, (1, 3), 0),
    (2, 5, 5, 8, 8, (3, 2, 1, 0), 3),     # odd chunk
    (3, 20, 1, 32, 8, (0, 1, 2, 3), 0),   # horizontal lines of 32 lanes
    (1, 8, 4, 8, 32, (0, 3), 5),          # vertical lines of 32 lanes, chunk 5
    (1, 3, 3, 1, 7, (0, 2), 0),           # one row: vertical scans are single steps
    (1, 2, 1, 31, 1, (2, 1), 0),          # one column
    (1, 2, 1, 1, 1, (0, 1, 2, 3), 0),     # one position
    (1, 6, 2, 11, 13, (2, 0, 3), 4),
]


@pytest.mark.parametrize('case', SMALL_CASES, ids=lambda c: f'{c[0]}x{c[1]}g{c[2]}_{c[3]}x{c[4]}_d{"".join(map(str, c[5]))}_k{c[6]}')
@pytest.mark.parametrize('normalize,merge', [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_small_matches_reference(ext, case, normalize, merge, dtype):
    _check_against_reference(ext, case, normalize, merge, dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('chunk', [0, 3])
def test_small_backward_needs_no_hidden(ext, dtype, chunk):
    x, gates, lam, u = (t.to(dtype) for t in _inputs(3, 16, 1, 14, 14, 4, True, 'cuda', seed=4))
    out, hidden = ext.forward(x, gates, lam, u, [0, 1, 2, 3], chunk, True, True, False)
    assert hidden.numel() == 0
    out2, saved = ext.forward(x, gates, lam, u, [0, 1, 2, 3], chunk, True, True, True)
    assert torch.equal(out, out2) and saved.shape == lam.shape
    grad = torch.randn_like(out)
    with_saved = ext.backward(grad, x, gates, lam, u, saved, [0, 1, 2, 3], chunk, True, True)
    without = ext.backward(grad, x, gates, lam, u, hidden, [0, 1, 2, 3], chunk, True, True)
    for a, b in zip(with_saved, without):
        assert torch.equal(a, b)


@pytest.mark.parametrize('hw', [(16, 16), (17, 16), (32, 8), (33, 4), (8, 32), (4, 33), (14, 14)])
def test_recomputes_hidden_states_the_kernels_rule(ext, hw):
    """ops.propagate.recomputes_hidden (which decides what gspn_propagate saves) and the
    binding's plan agree: where it says so, a backward without hidden state works; elsewhere
    the binding asks for it."""
    from gspn2_dense.ops.propagate import recomputes_hidden
    H, W = hw
    x, gates, lam, u = (t.float() for t in _inputs(1, 4, 1, H, W, 4, True, 'cuda', seed=H))
    out, empty = ext.forward(x, gates, lam, u, [0, 1, 2, 3], 0, True, True, False)
    args = (torch.randn_like(out), x, gates, lam, u)
    if recomputes_hidden(0, H, W):
        _, saved = ext.forward(x, gates, lam, u, [0, 1, 2, 3], 0, True, True, True)
        for a, b in zip(ext.backward(*args, empty, [0, 1, 2, 3], 0, True, True),
                        ext.backward(*args, saved, [0, 1, 2, 3], 0, True, True)):
            assert torch.equal(a, b)
    else:
        with pytest.raises(RuntimeError, match='hidden must be'):
            ext.backward(*args, empty, [0, 1, 2, 3], 0, True, True)


PAIRED_SHAPES = [
    # B, C, G, H, W: CTA mode (vector and scalar rows), long mode, more CTAs than SMs (pairs
    # that do not run side by side), fewer rows than a merge period
    (1, 4, 1, 512, 200), (1, 2, 2, 200, 131), (2, 2, 2, 300, 1100), (64, 16, 1, 96, 160),
    (1, 8, 1, 13, 132),
]


@pytest.mark.parametrize('shape', PAIRED_SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('dirs', [[0, 1], [1, 0]], ids=['td_bu', 'bu_td'])
def test_paired_merge_is_exact(ext, shape, dirs):
    """A merged launch of top-down and bottom-up adds the two directions' u * h as float32
    products rounded before the sum, whoever adds them (the CTA that reaches a row second or
    the last one, for rows both wrote before seeing each other's progress): y is, bit for
    bit, u0 * h0 + u1 * h1 of the saved float32 hidden states, on every call."""
    B, C, G, H, W = shape
    x, gates, lam, u = (t.float() for t in _inputs(B, C, G, H, W, 2, True, 'cuda', seed=H))
    for _ in range(3):
        out, hidden = ext.forward(x, gates, lam, u, dirs, 0, True, True, True)
        want = u[:, 0] * hidden[:, 0] + u[:, 1] * hidden[:, 1]
        assert torch.equal(out, want), (out - want).abs().max().item()
    ref = _reference(x.double(), gates.double(), lam.double(), u.double(), dirs, 0, True, True)
    assert _rel(out, ref) <= FLOOR[torch.float32]


def test_hidden_is_each_direction(ext):
    x, gates, lam, u = _inputs(1, 4, 2, 10, 11, 4, True, 'cuda', seed=3)
    out, hidden = ext.forward(x.float(), gates.float(), lam.float(), u.float(), [0, 1, 2, 3],
                              0, True, True, True)
    ref = _reference(x, gates, lam, u, (0, 1, 2, 3), 0, True, False)
    assert _rel(hidden, ref) < 1e-5
    out2, empty = ext.forward(x.float(), gates.float(), lam.float(), u.float(), [0, 1, 2, 3],
                              0, True, True, False)
    assert empty.numel() == 0 and torch.equal(out, out2)


def test_empty_inputs(ext):
    for B, C, H, W in [(0, 4, 5, 6), (2, 4, 0, 6)]:
        x = torch.randn(B, C, H, W, device='cuda')
        gates = torch.randn(B, 2, 1, 3, H, W, device='cuda')
        lam = torch.randn(B, 2, C, H, W, device='cuda')
        out, _ = ext.forward(x, gates, lam, lam, [0, 2], 0, True, True, True)
        assert out.shape == x.shape
        grads = ext.backward(out, x, gates, lam, lam, lam.clone(), [0, 2], 0, True, True)
        assert [g.shape for g in grads] == [x.shape, gates.shape, lam.shape, lam.shape]


def test_errors(ext):
    x = torch.randn(1, 2, 4, 4, device='cuda')
    gates = torch.randn(1, 1, 1, 3, 4, 4, device='cuda')
    lam = torch.randn(1, 1, 2, 4, 4, device='cuda')
    with pytest.raises(RuntimeError, match='lam must be'):
        ext.forward(x, gates, lam[:, :, :1], None, [0], 0, True, False, False)
    with pytest.raises(RuntimeError, match='gates must be'):
        ext.forward(x, gates[..., :3], lam, None, [0], 0, True, False, False)
    with pytest.raises(RuntimeError, match='on a CUDA device'):
        ext.forward(x.cpu(), gates.cpu(), lam.cpu(), None, [0], 0, True, False, False)
    long = torch.randn(1, 1, 1, 8193, device='cuda')
    with pytest.raises(RuntimeError, match='lines of at most 8192'):
        ext.forward(long, torch.randn(1, 1, 1, 3, 1, 8193, device='cuda'),
                    torch.randn(1, 1, 1, 1, 8193, device='cuda'), None, [0], 0, True, False,
                    False)
    # a horizontal direction's lines are columns; through the transposed split too
    tall = torch.randn(1, 1, 8200, 4, device='cuda')
    with pytest.raises(RuntimeError, match=r'lines of at most 8192 .*got a line of 8200 '
                                           r'\(H = 8200, W = 4; direction 2 scans columns'):
        ext.forward(tall, torch.randn(1, 4, 1, 3, 8200, 4, device='cuda'),
                    torch.randn(1, 4, 1, 8200, 4, device='cuda'), None, [0, 1, 2, 3], 0, True,
                    False, False)
    out, _ = ext.forward(x, gates, lam, None, [0], 0, True, False, False)
    with pytest.raises(RuntimeError, match='grad_out must be'):
        ext.backward(out[:, 0], x, gates, lam, None, out, [0], 0, True, False)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_all_flags_large_line_groups(ext, dtype):
    """Several channels per gate group packed into one CTA, chunked and global."""
    for chunk, G in itertools.product((0, 3), (1, 4)):
        x, gates, lam, u = _inputs(2, 8, G, 24, 20, 4, True, 'cuda', seed=G + chunk)
        ref = _reference(x, gates, lam, u, (0, 1, 2, 3), chunk, True, True)
        out, _ = ext.forward(*(t.to(dtype) for t in (x, gates, lam, u)), [0, 1, 2, 3], chunk,
                             True, True, False)
        assert _rel(out, ref) <= FLOOR[dtype], (chunk, G, _rel(out, ref))
