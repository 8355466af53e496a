"""A/B on the device: ways to sum a bias gradient over the positions, at GSPN-2-T's shapes.

    python tools/device/bias_grad_ab.py --out $OUT/bias_grad_ab

The bias gradient of a 1x1 projection (or of a channels_last convolution) is the sum of the
output gradient, an (N, C) row-major bfloat16 matrix, over its N rows. Eager PyTorch computes
it with ``reduce_kernel``; this times that and the alternatives against the same run's read
bandwidth (a sum of the whole matrix into one number) and checks each against a float64 sum.
"""
import argparse
import json

import torch

from gspn2_dense.benchmarks import report
from gspn2_dense.benchmarks.timing import Timer, run_stamp

# (positions, channels): the 1x1 projections' outputs of GSPN-2-T's four stages at B128 224 px
SHAPES = [(128 * 56 * 56, c) for c in (80, 192, 240)] + [(128 * 28 * 28, c) for c in (160, 384, 480)] \
    + [(128 * 14 * 14, c) for c in (320, 768, 960)] + [(128 * 7 * 7, c) for c in (640, 1920)]


def two_level(dy: torch.Tensor, width: int = 2048) -> torch.Tensor:
    n, c = dy.shape
    k = max(1, width // c)
    while n % k:
        k -= 1
    return dy.view(n // k, k * c).sum(0, dtype=torch.float32).view(k, c).sum(0)


def options():
    ones = {}

    def gemv(dy):
        n = dy.shape[0]
        if n not in ones:
            ones[n] = torch.ones(1, n, device=dy.device, dtype=dy.dtype)
        return (ones[n] @ dy).view(-1)

    return {
        'sum(0)': lambda dy: dy.sum(0),
        'sum(0, float32)': lambda dy: dy.sum(0, dtype=torch.float32),
        'ones @ dy': gemv,
        'two-level 2048': two_level,
        'two-level 4096': lambda dy: two_level(dy, 4096),
        'channels_last sum(0,2,3)': lambda dy: dy.view(128, -1, 1, dy.shape[1]).permute(0, 3, 1, 2).sum((0, 2, 3)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--out', default='bias_grad_ab')
    parser.add_argument('--commit', default=None)
    args = parser.parse_args()
    timer = Timer(torch.device('cuda'))
    rows = []
    for n, c in SHAPES:
        dy = torch.randn(n, c, device='cuda', dtype=torch.bfloat16)
        exact = dy.double().sum(0)
        floor = timer.measure(lambda: dy.sum(dtype=torch.float32), args.iters, 3).ms
        row = dict(N=n, C=c, read_ms=floor)
        for name, fn in options().items():
            err = ((fn(dy).double() - exact).abs().max() / exact.abs().max()).item()
            row[name] = timer.measure(lambda: fn(dy), args.iters, 3).ms
            row[name + ' err'] = err
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = list(options())
    body = report.table(['N', 'C', 'read ms'] + names, (
        [str(r['N']), str(r['C']), f"{r['read_ms']:.3f}"] + [f"{r[k]:.3f}" for k in names] for r in rows))
    totals = {k: sum(r[k] for r in rows) for k in ['read_ms'] + names}
    text = f'# Bias-gradient sums\n\n{body}\n\ntotals (ms): {json.dumps(totals)}\n'
    result = dict(run_stamp(torch.device('cuda'), args.commit), rows=rows, totals=totals)
    report.write(args.out, result, text)
    print(text)


if __name__ == '__main__':
    main()
