"""Time the CPU kernel of the GSPN-2 propagation against the pure-PyTorch reference.

    python tools/benchmark_op_cpu.py                      # B=2, C=16, H=W=128, float32
    python tools/benchmark_op_cpu.py --out docs/benchmarks/op_cpu

writes ``<out>.json`` (figures + machine) and ``<out>.md`` (tables), one run per torch
thread count (default: 1 and all cores). Not a test: run it on a quiet machine; the load
average after each run is recorded with the figures.
"""
import argparse
from pathlib import Path

import torch

from gspn2_dense.ops.benchmark import run_thread_counts, write_report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--channels', type=int, default=16)
    parser.add_argument('--size', type=int, default=128, help='H = W')
    parser.add_argument('--groups', type=int, default=1, help='gate groups G')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float64', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--ref-repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, nargs='+', default=None,
                        help='torch thread counts to run with (default: 1 and all cores)')
    parser.add_argument('--out', type=Path, default=None,
                        help='write <out>.json and <out>.md (e.g. docs/benchmarks/op_cpu)')
    args = parser.parse_args()
    shape = dict(B=args.batch, C=args.channels, H=args.size, W=args.size, G=args.groups)
    threads = args.threads or sorted({1, torch.get_num_threads()})
    settings = dict(dtype=args.dtype, repeats=args.repeats, ref_repeats=args.ref_repeats)
    runs = run_thread_counts(threads, shape, **settings)
    if args.out is not None:
        write_report(args.out, shape, runs, command=f'python tools/benchmark_op_cpu.py --out '
                     f'{args.out}', **settings)


if __name__ == '__main__':
    main()
