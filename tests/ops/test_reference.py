"""The reference against a literal per-pixel loop written from SPEC section 1.1."""
import itertools
import math

import pytest
import torch

from gspn2_dense.ops import DIRECTIONS, gspn_propagate_ref, gspn_scan_ref


def _pixel_order(direction, H, W):
    """(step, list of pixels (i, j) of that step's line, predecessor of (i, j) shifted by tap k)."""
    if direction in ('top_down', 'bottom_up'):
        rows = range(H) if direction == 'top_down' else range(H - 1, -1, -1)
        prev = -1 if direction == 'top_down' else 1
        for s, i in enumerate(rows):
            yield s, [(i, j) for j in range(W)], lambda i, j, k, p=prev: (i + p, j + k)
    else:
        cols = range(W) if direction == 'left_right' else range(W - 1, -1, -1)
        prev = -1 if direction == 'left_right' else 1
        for s, j in enumerate(cols):
            yield s, [(i, j) for i in range(H)], lambda i, j, k, p=prev: (i + k, j + p)


def _loop_scan(x, gates, lam, direction, chunk, normalize):
    """SPEC 1.1 taken literally: one pixel at a time, Python floats."""
    B, C, H, W = x.shape
    G = gates.shape[1]
    vertical = direction in ('top_down', 'bottom_up')
    n = W if vertical else H
    h = [[[[0.0] * W for _ in range(H)] for _ in range(C)] for _ in range(B)]
    for b, c in itertools.product(range(B), range(C)):
        g = c // (C // G)
        for s, line, neighbour in _pixel_order(direction, H, W):
            restart = s == 0 or (chunk is not None and s % chunk == 0)
            for i, j in line:
                pos = j if vertical else i
                valid = [k for k in (-1, 0, 1) if 0 <= pos + k < n]
                a = {k: float(gates[b, g, k + 1, i, j]) for k in valid}
                if normalize:
                    sig = {k: 1.0 / (1.0 + math.exp(-v)) for k, v in a.items()}
                    total = sum(sig.values())
                    w = {k: v / total for k, v in sig.items()}
                else:
                    w = a
                acc = float(lam[b, c, i, j]) * float(x[b, c, i, j])
                if not restart:
                    for k in valid:
                        pi, pj = neighbour(i, j, k)
                        acc += w[k] * h[b][c][pi][pj]
                h[b][c][i][j] = acc
    return torch.tensor(h, dtype=torch.float64).reshape(B, C, H, W)


def _inputs(B, C, G, H, W, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    gates = torch.randn(B, G, 3, H, W, generator=gen, dtype=torch.float64)
    lam = torch.rand(B, C, H, W, generator=gen, dtype=torch.float64)
    return x, gates, lam


@pytest.mark.parametrize('direction', DIRECTIONS)
@pytest.mark.parametrize('chunk', [None, 1, 2, 3])
@pytest.mark.parametrize('normalize', [True, False])
def test_scan_ref_matches_pixel_loop(direction, chunk, normalize):
    x, gates, lam = _inputs(2, 4, 2, 5, 4)
    if not normalize:
        gates = gates.sigmoid() * 0.5
    got = gspn_scan_ref(x, gates, lam, direction, chunk=chunk, normalize=normalize)
    want = _loop_scan(x, gates, lam, direction, chunk, normalize)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('shape', [(1, 1), (1, 4), (4, 1)])
@pytest.mark.parametrize('direction', DIRECTIONS)
def test_scan_ref_thin_lines(shape, direction):
    x, gates, lam = _inputs(1, 2, 1, *shape, seed=1)
    got = gspn_scan_ref(x, gates, lam, direction)
    torch.testing.assert_close(got, _loop_scan(x, gates, lam, direction, None, True),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('merge', [True, False])
def test_propagate_ref_is_the_merged_scans(merge):
    B, C, G, H, W = 1, 4, 2, 3, 5
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    gates = torch.randn(B, 4, G, 3, H, W, generator=gen, dtype=torch.float64)
    lam = torch.rand(B, 4, C, H, W, generator=gen, dtype=torch.float64)
    u = torch.randn(B, 4, C, H, W, generator=gen, dtype=torch.float64)
    hs = [_loop_scan(x, gates[:, d], lam[:, d], name, 2, True) for d, name in enumerate(DIRECTIONS)]
    got = gspn_propagate_ref(x, gates, lam, u if merge else None, chunk=2, merge=merge)
    want = sum(u[:, d] * hs[d] for d in range(4)) if merge else torch.stack(hs, 1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_normalised_rows_keep_the_state_bounded():
    """Weights of each row sum to 1, so |h| <= steps * max|lam * x| even for huge logits."""
    x, gates, lam = _inputs(1, 2, 1, 40, 6, seed=3)
    h = gspn_scan_ref(x, gates * 50, lam, 'top_down')
    assert h.abs().max() <= 40 * (lam * x).abs().max()
