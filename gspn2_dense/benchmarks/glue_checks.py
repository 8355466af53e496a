"""CPU checks of two ideas for GSPN-2-T's eager glue (docs/benchmarks/backbones.md, fifth session).

* **The LPU's residual folded into its convolution**: ``x + dwconv(x)`` as one depth-wise
  convolution whose centre tap is ``1 + w``. :func:`lpu_fold_errors` gives the relative error of
  ``forward_features`` against float32 with and without the fold under bf16 autocast;
  :func:`lpu_sum_traffic` the activation bytes of the residual sums the fold would remove.
* **The host cost of the propagation op's Python layers**: :func:`op_host_cost`, microseconds
  per call on planes so small that the kernel costs nothing.
"""
import contextlib
import time
from typing import Callable, Dict, List, Sequence
from unittest import mock

import timm
import torch
import torch.nn.functional as F

from . import report
from ..models import gspn2
from ..models.variants import VARIANTS
from ..ops import gspn_propagate
from ..ops.propagate import _extension, propagate_forward

__all__ = ['lpu_fold_errors', 'lpu_sum_traffic', 'markdown', 'op_host_cost', 'run']


def _folded_lpu(self, x: torch.Tensor) -> torch.Tensor:
    centre = torch.zeros_like(self.conv.weight)
    centre[:, :, 1, 1] = 1.0
    return F.conv2d(x, self.conv.weight + centre, self.conv.bias, padding=1, groups=self.conv.groups)


def _lpu_folded():
    """The LPUs folded while the returned context is active."""
    return mock.patch.object(gspn2.LocalPerceptionUnit, 'forward', _folded_lpu)


def lpu_fold_errors(tap_stds: Sequence[float] = (0.05, 0.15), batch: int = 2,
                    img_size: int = 224) -> List[Dict]:
    """Relative error (Frobenius) of gspn2_tiny's ``forward_features`` against float32, under CPU
    bf16 autocast, with the LPU as a separate sum and folded; random init with the LPU taps drawn
    from N(0, std) (trained taps are not near zero)."""
    rows = []
    for std in tap_stds:
        torch.manual_seed(0)
        model = timm.create_model('gspn2_tiny', num_classes=0).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, gspn2.LocalPerceptionUnit):
                    module.conv.weight.normal_(0, std)
        x = torch.randn(batch, 3, img_size, img_size)

        def features(bf16: bool) -> torch.Tensor:
            with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                return model.forward_features(x).float()

        reference, unfolded = features(False), features(True)
        with _lpu_folded():
            folded_fp32, folded = features(False), features(True)
        error = lambda a: ((a - reference).norm() / reference.norm()).item()  # noqa: E731
        rows.append(dict(tap_std=std, fp32_folded=error(folded_fp32), bf16_unfolded=error(unfolded),
                         bf16_folded=error(folded)))
    return rows


def lpu_sum_traffic(sizes: Sequence[int] = (1024, 2048), name: str = 'gspn2_tiny') -> List[Dict]:
    """MB (float32 sizes, batch 1, as ``count_traffic`` counts) that the residual sums of the
    LPUs read and write in one forward: two maps read, one written, two LPUs per block."""
    variant = VARIANTS[name]
    rows = []
    for size in sizes:
        total = sum(2 * depth * 3 * dim * (size // 4 >> i) ** 2 * 4
                    for i, (depth, dim) in enumerate(zip(variant.depths, variant.dims)))
        rows.append(dict(img_size=size, lpu_sum_mb=total / 1e6))
    return rows


def _us_per_call(fn: Callable[[], object], calls: int) -> float:
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def op_host_cost(calls: int = 2000) -> List[Dict]:
    """Microseconds per call of the propagation op's layers on (1, 4, 4, 4) CPU planes."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 4, 4)
    gates, lam, u = torch.randn(1, 4, 1, 3, 4, 4), torch.rand(1, 4, 4, 4, 4), torch.randn(1, 4, 4, 4, 4)
    ext = _extension(x)
    directions = [0, 1, 2, 3]

    class Plain(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gates, lam, u):
            return ext.forward(x, gates, lam, u, directions, 0, True, True, False)[0]

        @staticmethod
        def backward(ctx, grad):
            raise NotImplementedError

    x_grad = x.clone().requires_grad_()
    paths = [
        ('gspn_propagate', torch.no_grad, lambda: gspn_propagate(x, gates, lam, u)),
        ('gspn_propagate, an input requiring grad', contextlib.nullcontext,
         lambda: gspn_propagate(x_grad, gates, lam, u)),
        ('the torch.library custom op alone', torch.no_grad,
         lambda: propagate_forward(x, gates, lam, u, directions, 0, True, True, False)),
        ('the extension called directly', torch.no_grad,
         lambda: ext.forward(x, gates, lam, u, directions, 0, True, True, False)),
        ('a plain autograd.Function around it', torch.no_grad, lambda: Plain.apply(x, gates, lam, u)),
        ('a plain autograd.Function, an input requiring grad', contextlib.nullcontext,
         lambda: Plain.apply(x_grad, gates, lam, u)),
        ('an ATen add, for scale', torch.no_grad, lambda: torch.add(x, x)),
    ]
    rows = []
    for path, mode, fn in paths:
        with mode():
            rows.append(dict(path=path, us_per_call=_us_per_call(fn, calls)))
    return rows


def markdown(result: Dict) -> str:
    lines = ['# Two glue ideas checked on the CPU', '',
             f"{result['stamp']['device']}, {report.stamp_line(result['stamp'])}; `{result['command']}`", '',
             '## The LPU residual folded into its convolution', '',
             'Relative error of gspn2_tiny `forward_features` against float32 (batch 2, 224 px, CPU '
             'bf16 autocast, random init, LPU taps from N(0, s)):', '',
             report.table(['LPU taps', 'fp32 folded vs float32', 'bf16, separate sum', 'bf16, folded'],
                          [(f"N(0, {r['tap_std']})", f"{r['fp32_folded']:.2e}", f"{r['bf16_unfolded']:.2%}",
                            f"{r['bf16_folded']:.2%}") for r in result['lpu_fold']]), '',
             'Activation traffic of the residual sums in one forward (float32 sizes, batch 1):', '',
             report.table(['input', 'MB'], [(f"{r['img_size']} px", f"{r['lpu_sum_mb']:.1f}")
                                            for r in result['lpu_traffic']]), '',
             '## Host cost of the propagation op per call', '',
             report.table(['path', 'us per call'], [(r['path'], f"{r['us_per_call']:.1f}")
                                                    for r in result['op_host_cost']]), '']
    return '\n'.join(lines)


def run(stamp: Dict, command: str) -> Dict:
    return dict(stamp=stamp, command=command, lpu_fold=lpu_fold_errors(), lpu_traffic=lpu_sum_traffic(),
                op_host_cost=op_host_cost())
