"""The GSPN-2 line-scan propagation op: fused kernels, autograd and a pure-PyTorch reference.

See ``docs/ops.md`` for the semantics (SPEC section 1), the API and how the kernels are built.
"""
from .reference import gspn_propagate_ref, gspn_scan_ref
from .validation import DIRECTIONS

__all__ = ['DIRECTIONS', 'gspn_scan_ref', 'gspn_propagate_ref']
