"""Pure-PyTorch reference of the GSPN-2 line-scan propagation (SPEC section 1).

``gspn_scan_ref`` and ``gspn_propagate_ref`` have the signatures of the fused
``gspn_scan`` / ``gspn_propagate`` and compute the same thing with plain tensor
operations: every direction is turned into a top-to-bottom scan by flipping and
transposing, each step updates a whole row of every (batch, channel) at once, and a Python
loop runs over the steps. The computation runs in the dtype of the inputs, so it is exact in
float64 (the ground truth of the tests) and is differentiable by autograd. It never calls the
compiled kernels.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .validation import DIRECTIONS, check_chunk, check_propagate_inputs, check_scan_inputs

__all__ = ['gspn_scan_ref', 'gspn_propagate_ref', 'tap_weights_ref']


def _to_top_down(t: torch.Tensor, direction: str) -> torch.Tensor:
    """View ``t`` (..., H, W) as (..., steps, line) so that the scan runs over dim -2 forwards."""
    if direction == 'top_down':
        return t
    if direction == 'bottom_up':
        return t.flip(-2)
    if direction == 'left_right':
        return t.transpose(-1, -2)
    return t.transpose(-1, -2).flip(-2)


def _from_top_down(t: torch.Tensor, direction: str) -> torch.Tensor:
    """Inverse of :func:`_to_top_down` (every view but right_left's is its own inverse)."""
    if direction == 'right_left':
        return t.flip(-2).transpose(-1, -2)
    return _to_top_down(t, direction)


def tap_weights_ref(gates: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Propagation weights ``w`` from ``gates`` (..., 3, steps, line), taps along the last dim.

    A tap whose neighbour falls outside the line gets weight 0. With ``normalize`` the gates
    are logits and ``w_k = sigmoid(a_k) / sum over valid taps of sigmoid(a_k')``; otherwise
    they are used as given.
    """
    n = gates.shape[-1]
    pos = torch.arange(n, device=gates.device)
    valid = torch.stack([pos >= 1, torch.ones_like(pos, dtype=torch.bool), pos <= n - 2])
    valid = valid[:, None, :]  # (3, 1, line), broadcast over steps
    if normalize:
        s = torch.where(valid, torch.sigmoid(gates), torch.zeros((), dtype=gates.dtype,
                                                                 device=gates.device))
        return s / s.sum(dim=-3, keepdim=True)
    return torch.where(valid, gates, torch.zeros((), dtype=gates.dtype, device=gates.device))


def _scan_top_down(x: torch.Tensor, w: torch.Tensor, lam: torch.Tensor, chunk: int) -> torch.Tensor:
    """Top-to-bottom scan. x, lam: (B, G, Cg, S, N); w: (B, G, 1, 3, S, N); returns h like x."""
    steps, n = x.shape[-2], x.shape[-1]
    z = lam * x
    h_prev = torch.zeros_like(z[..., 0, :])
    rows = []
    for s in range(steps):
        if chunk and s % chunk == 0:
            h_prev = torch.zeros_like(h_prev)
        left = F.pad(h_prev[..., :n - 1], (1, 0))  # h_prev[p - 1]
        right = F.pad(h_prev[..., 1:], (0, 1))  # h_prev[p + 1]
        h = (z[..., s, :] + w[..., 0, s, :] * left + w[..., 1, s, :] * h_prev
             + w[..., 2, s, :] * right)
        rows.append(h)
        h_prev = h
    if not rows:
        return torch.zeros_like(z)
    return torch.stack(rows, dim=-2)


def _scan_ref(x: torch.Tensor, gates: torch.Tensor, lam: torch.Tensor, direction: str, chunk: int,
              normalize: bool) -> torch.Tensor:
    B, C, H, W = x.shape
    G = gates.shape[1]
    cg = C // G if G else 0
    xs = _to_top_down(x, direction)
    lams = _to_top_down(lam, direction)
    steps, n = xs.shape[-2:]
    w = tap_weights_ref(_to_top_down(gates, direction), normalize)
    h = _scan_top_down(
        xs.reshape(B, G, cg, steps, n), w.unsqueeze(2), lams.reshape(B, G, cg, steps, n), chunk)
    return _from_top_down(h.reshape(B, C, steps, n), direction)


def gspn_scan_ref(x: torch.Tensor, gates: torch.Tensor, lam: torch.Tensor, direction: str,
                  chunk: Optional[int] = None, normalize: bool = True) -> torch.Tensor:
    """Reference of ``gspn_scan``: one scan direction.

    Args:
        x, lam: (B, C, H, W).
        gates: (B, G, 3, H, W) gate logits (or normalised weights with ``normalize=False``),
            taps ordered k = -1, 0, +1 along the line; ``C % G == 0``.
        direction: one of :data:`DIRECTIONS`.
        chunk: the hidden state restarts every ``chunk`` steps; None = one global scan.
        normalize: gates are logits to normalise with a sigmoid and the sum over valid taps.

    Returns:
        h: (B, C, H, W).
    """
    check_scan_inputs(x, gates, lam, direction, chunk, normalize)
    return _scan_ref(x, gates, lam, direction, check_chunk(chunk), normalize)


def gspn_propagate_ref(x: torch.Tensor, gates: torch.Tensor, lam: torch.Tensor,
                       u: Optional[torch.Tensor], chunk: Optional[int] = None,
                       normalize: bool = True, merge: bool = True) -> torch.Tensor:
    """Reference of ``gspn_propagate``: the four directions of :data:`DIRECTIONS`, merged.

    Args:
        x: (B, C, H, W).
        gates: (B, 4, G, 3, H, W) gate logits (or weights with ``normalize=False``).
        lam, u: (B, 4, C, H, W); ``u`` is unused (and may be None) when ``merge`` is False.
        chunk, normalize: as in :func:`gspn_scan_ref`.
        merge: return ``y = sum_d u_d * h_d`` (B, C, H, W); otherwise the stacked ``h_d``
            (B, 4, C, H, W).
    """
    check_propagate_inputs(x, gates, lam, u, chunk, merge, normalize)
    core_chunk = check_chunk(chunk)
    hs = [_scan_ref(x, gates[:, d], lam[:, d], name, core_chunk, normalize)
          for d, name in enumerate(DIRECTIONS)]
    if not merge:
        return torch.stack(hs, dim=1)
    y = u[:, 0] * hs[0]
    for d in range(1, len(DIRECTIONS)):
        y = y + u[:, d] * hs[d]
    return y
