"""Input validation shared by the GSPN-2 propagation op and its reference.

The fused op (:mod:`gspn2_dense.ops.propagate`) and the pure-PyTorch reference
(:mod:`gspn2_dense.ops.reference`) call the same functions, so a bad input raises the same
message from both. Every message names the argument, what was expected and what came.
"""
from typing import Optional

import torch

DIRECTIONS = ('top_down', 'bottom_up', 'left_right', 'right_left')
"""Scan directions, in the order of the stacked direction dimension (SPEC section 1.2)."""

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def direction_index(direction: str) -> int:
    """Index of ``direction`` in :data:`DIRECTIONS`; raises ``ValueError`` for unknown names."""
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        raise ValueError(f'direction must be one of {DIRECTIONS}, got {direction!r}')
    return DIRECTIONS.index(direction)


def check_chunk(chunk: Optional[int]) -> int:
    """Validate ``chunk`` (None or a positive int) and return it as the core's int (0 = global)."""
    if chunk is None:
        return 0
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise TypeError(
            f'chunk must be None or a positive int, got {type(chunk).__name__} {chunk!r}')
    if chunk <= 0:
        raise ValueError(f'chunk must be None or a positive int, got {chunk}')
    return chunk


def check_flag(value, name: str) -> None:
    """``value`` must be a real ``bool`` (``None``, ints and strings are refused, not coerced)."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {type(value).__name__} {value!r}')


def _check_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(t).__name__}')


def _check_like_x(t: torch.Tensor, name: str, x: torch.Tensor) -> None:
    if t.dtype != x.dtype:
        raise TypeError(f'{name} must have the dtype of x ({x.dtype}), got {t.dtype}')
    if t.device != x.device:
        raise ValueError(f'{name} must be on the device of x ({x.device}), got {t.device}')


def _check_x(x: torch.Tensor) -> None:
    _check_tensor(x, 'x')
    if x.dim() != 4:
        raise ValueError(f'x must be (B, C, H, W), got shape {tuple(x.shape)}')
    if x.dtype not in SUPPORTED_DTYPES:
        names = ', '.join(str(d).replace('torch.', '') for d in SUPPORTED_DTYPES)
        raise TypeError(f'x must be a floating-point tensor ({names}), got {x.dtype}')


def _check_gates(gates: torch.Tensor, x: torch.Tensor, num_directions: Optional[int]) -> None:
    """``gates`` is (B, G, 3, H, W) when ``num_directions`` is None, else (B, D, G, 3, H, W)."""
    _check_tensor(gates, 'gates')
    B, C, H, W = x.shape
    if num_directions is None:
        layout, lead, rank = '(B, G, 3, H, W)', (B,), 5
    else:
        layout, lead, rank = f'(B, {num_directions}, G, 3, H, W)', (B, num_directions), 6
    expected = '(' + ', '.join(str(s) for s in lead) + f', G, 3, {H}, {W})'
    ok = gates.dim() == rank and tuple(gates.shape[:len(lead)]) == lead and tuple(
        gates.shape[-3:]) == (3, H, W)
    if not ok:
        raise ValueError(
            f'gates must be {layout} = {expected} for x of shape {tuple(x.shape)}, '
            f'got shape {tuple(gates.shape)}')
    G = gates.shape[len(lead)]
    if G < 1 or C % G != 0:
        raise ValueError(
            f'gates has G = {G} groups, which must be >= 1 and divide the channels C = {C}')
    _check_like_x(gates, 'gates', x)


def _check_per_channel(t: torch.Tensor, name: str, x: torch.Tensor,
                       num_directions: Optional[int]) -> None:
    _check_tensor(t, name)
    B, C, H, W = x.shape
    if num_directions is None:
        layout, expected = '(B, C, H, W)', (B, C, H, W)
    else:
        layout, expected = f'(B, {num_directions}, C, H, W)', (B, num_directions, C, H, W)
    if tuple(t.shape) != expected:
        raise ValueError(
            f'{name} must be {layout} = {expected} for x of shape {tuple(x.shape)}, '
            f'got shape {tuple(t.shape)}')
    _check_like_x(t, name, x)


def check_scan_inputs(x: torch.Tensor, gates: torch.Tensor, lam: torch.Tensor, direction: str,
                      chunk: Optional[int], normalize: bool = True) -> int:
    """Validate the inputs of ``gspn_scan``; returns the direction's index."""
    check_flag(normalize, 'normalize')
    _check_x(x)
    _check_gates(gates, x, None)
    _check_per_channel(lam, 'lam', x, None)
    check_chunk(chunk)
    return direction_index(direction)


def check_propagate_inputs(x: torch.Tensor, gates: torch.Tensor, lam: torch.Tensor,
                           u: Optional[torch.Tensor], chunk: Optional[int], merge: bool,
                           normalize: bool = True) -> None:
    """Validate the inputs of ``gspn_propagate`` (all four directions)."""
    check_flag(merge, 'merge')
    check_flag(normalize, 'normalize')
    _check_x(x)
    num_directions = len(DIRECTIONS)
    _check_gates(gates, x, num_directions)
    _check_per_channel(lam, 'lam', x, num_directions)
    if u is None:
        if merge:
            raise ValueError(
                f'u must be a (B, {num_directions}, C, H, W) tensor when merge=True, got None')
    else:
        _check_per_channel(u, 'u', x, num_directions)
    check_chunk(chunk)

