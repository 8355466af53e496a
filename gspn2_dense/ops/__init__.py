"""The GSPN-2 line-scan propagation op: fused kernels, autograd and a pure-PyTorch reference.

See ``docs/ops.md`` for the semantics (SPEC section 1), the API and how the kernels are built.
Importing this package needs neither a compiler nor a GPU: the compiled extension is loaded
(and built just in time if need be) when the op first runs.
"""
from .layer_norm import layer_norm
from .propagate import gspn_propagate, gspn_scan
from .reference import gspn_propagate_ref, gspn_scan_ref
from .validation import DIRECTIONS

__all__ = ['DIRECTIONS', 'gspn_scan', 'gspn_propagate', 'gspn_scan_ref', 'gspn_propagate_ref', 'layer_norm']
