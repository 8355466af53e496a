"""Time the CPU kernel of the GSPN-2 propagation against the pure-PyTorch reference.

    python tools/benchmark_op_cpu.py                      # B=2, C=16, H=W=128, float32
    python tools/benchmark_op_cpu.py --out docs/benchmarks/op_cpu
    python tools/benchmark_op_cpu.py --against HEAD~1     # also: this kernel vs another commit's

writes ``<out>.json`` (figures + machine) and ``<out>.md`` (tables), one run per torch
thread count (default: 1 and all cores). Not a test: run it on a quiet machine; the load
average after each run is recorded with the figures. What is measured and how:
:mod:`gspn2_dense.benchmarks.op`.
"""
import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from gspn2_dense.benchmarks import op, report


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
    parser.add_argument('--against', metavar='REV', default=None,
                        help='also time the kernel of csrc/ at git revision REV against this '
                             "checkout's, alternately in this process, with one torch thread")
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', type=Path, default=None,
                        help='write <out>.json and <out>.md (e.g. docs/benchmarks/op_cpu)')
    args = parser.parse_args()
    shape = dict(B=args.batch, C=args.channels, H=args.size, W=args.size, G=args.groups)
    dtype = getattr(torch, args.dtype)
    runs = []
    for run in op.run_thread_counts(args.threads or sorted({1, torch.get_num_threads()}), shape,
                                    dtype, args.repeats, args.ref_repeats):
        print(f"{run['torch_threads']} torch thread(s):\n{report.records_table(run['results'])}\n",
              flush=True)
        runs.append(run)
    comparison = None
    if args.against is not None:
        with tempfile.TemporaryDirectory() as build_dir:
            other = op.cpu_extension_at(args.against, Path(build_dir))
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            rows = op.compare_builds(other, **shape, dtype=dtype, repeats=args.repeats)
            torch.set_num_threads(previous)
        comparison = dict(against=args.against, threads=1, rows=rows)
        print(f'against {args.against} (1 torch thread):\n{report.records_table(rows)}\n', flush=True)
    if args.out is not None:
        record = op.cpu_record(shape, runs, args.dtype, args.repeats, args.ref_repeats,
                               shlex.join(['python', *sys.argv]), comparison, args.commit)
        report.write(args.out, record, op.cpu_markdown(record))


if __name__ == '__main__':
    main()
