"""Host time per forward + backward of the ways a model's small ops can be called, on the CPU.

    python tools/probe_host_cost.py --out docs/benchmarks/host_cost

Tiny tensors (4 x 8), so that the time is the calls' own cost (Python, autograd, autocast,
dispatcher), not arithmetic. What it compares, each forward + backward under bf16 autocast:

* ``F.linear`` against a linear whose bias gradient is a GEMV in a Python ``autograd.Function``
  (the variant tried and removed at f9289e8, defined here);
* the block norms' old path (``x.to``, two parameter casts, ``F.layer_norm``) against an
  ``autograd.Function`` and a ``torch.library`` custom op with trivial bodies: the cost of
  the two ways the fused layer norm can be wired (docs/ops.md, "The fused layer norm").
"""
import argparse
import time
from typing import Tuple

import torch
import torch.nn.functional as F

from gspn2_dense.benchmarks import report
from gspn2_dense.benchmarks.timing import run_stamp

BF16 = torch.bfloat16


class _GemvBiasLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, weight, bias):
        ctx.save_for_backward(rows, weight)
        return torch.addmm(bias, rows, weight.t())

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        return grad @ weight, grad.t() @ rows, grad.new_ones(grad.shape[0]) @ grad


class _TrivialFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, dtype):
        ctx.save_for_backward(x, weight)
        return x.detach().to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad.to(x.dtype), weight, weight, None, None


@torch.library.custom_op('gspn2_probe::trivial_forward', mutates_args=())
def _trivial_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                     dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return x.to(dtype), weight.clone(), bias.clone()


@torch.library.custom_op('gspn2_probe::trivial_backward', mutates_args=())
def _trivial_backward(grad: torch.Tensor, x: torch.Tensor,
                      weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return grad.to(x.dtype), weight.clone(), weight.clone()


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _backward(ctx, grad, *_):
    x, weight = ctx.saved_tensors
    return (*_trivial_backward(grad, x, weight), None, None)


_trivial_forward.register_autograd(_backward, setup_context=_setup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--calls', type=int, default=3000)
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', default='host_cost')
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8, 8, requires_grad=True)
    w1 = torch.randn(8, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    grad = torch.randn(4, 8, dtype=BF16)

    def autocast(fn):
        def step():
            with torch.autocast('cpu', dtype=BF16):
                y = fn()
            y.backward(grad)
        return step

    def plain(fn):  # a norm path: autocast on around it, off inside, as in the model
        return autocast(lambda: _no_autocast(fn))

    def _no_autocast(fn):
        with torch.autocast('cpu', enabled=False):
            return fn()

    cases = [
        ('F.linear under autocast', autocast(lambda: F.linear(x, w, b))),
        ('GEMV bias-gradient autograd.Function', autocast(
            lambda: _GemvBiasLinear.apply(x.to(BF16), w.to(BF16), b.to(BF16)))),
        ('old norm path: x.to, parameter casts, F.layer_norm', plain(
            lambda: F.layer_norm(x.to(BF16), (8,), w1.to(BF16), b.to(BF16), 1e-6))),
        ('autograd.Function, trivial body', plain(
            lambda: _TrivialFunction.apply(x, w1, b, 1e-6, BF16))),
        ('torch.library custom op, trivial body', plain(
            lambda: _trivial_forward(x, w1, b, 1e-6, BF16)[0])),
    ]
    rows = []
    for name, step in cases:
        for _ in range(200):
            step()
        start = time.perf_counter()
        for _ in range(args.calls):
            step()
        us = (time.perf_counter() - start) / args.calls * 1e6
        rows.append(dict(case=name, us=us))
        print(f'{name}: {us:.1f} us', flush=True)
    result = dict(run_stamp(torch.device('cpu'), args.commit), calls=args.calls, rows=rows)
    text = '\n'.join([
        '# Host time per forward + backward (CPU, one thread, 4 x 8 tensors, bf16 autocast)', '',
        f"{result['device']}; " + report.stamp_line(result), '',
        report.table(['call', 'us per forward + backward'],
                     [[r['case'], f"{r['us']:.1f}"] for r in rows])]) + '\n'
    report.write(args.out, result, text)


if __name__ == '__main__':
    main()
