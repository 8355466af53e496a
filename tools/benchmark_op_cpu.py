"""Time the CPU kernel of the GSPN-2 propagation against the pure-PyTorch reference.

    python tools/benchmark_op_cpu.py                      # B=2, C=16, H=W=128, float32
    python tools/benchmark_op_cpu.py --out docs/benchmarks/op_cpu

writes ``<out>.json`` (figures + machine) and ``<out>.md`` (a table). Not a test: run it on a
quiet machine; the load average at the end of the run is recorded with the figures.
"""
import argparse
import json
from pathlib import Path

import torch

from gspn2_dense.ops.benchmark import machine_info, markdown_table, run_benchmark


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--channels', type=int, default=16)
    parser.add_argument('--size', type=int, default=128, help='H = W')
    parser.add_argument('--groups', type=int, default=1, help='gate groups G')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float64', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--ref-repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--out', type=Path, default=None,
                        help='write <out>.json and <out>.md (e.g. docs/benchmarks/op_cpu)')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape = dict(B=args.batch, C=args.channels, H=args.size, W=args.size, G=args.groups)
    rows = run_benchmark(**shape, dtype=getattr(torch, args.dtype), device='cpu',
                         repeats=args.repeats, ref_repeats=args.ref_repeats)
    machine = machine_info()
    table = markdown_table(rows)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = dict(shape=shape, dtype=args.dtype, results=rows, machine=machine)
        args.out.with_suffix('.json').write_text(json.dumps(record, indent=2) + '\n')
        shape_text = ', '.join(f'{k}={v}' for k, v in shape.items())
        args.out.with_suffix('.md').write_text(
            f'# CPU kernel vs pure-PyTorch reference\n\n'
            f'`python tools/benchmark_op_cpu.py --out {args.out}`: {shape_text}, {args.dtype}, '
            f'median of {args.repeats} (kernel) / {args.ref_repeats} (reference) runs after a '
            f'warm-up; fwd+bwd = `torch.autograd.grad` for every input.\n\n{table}\n\n'
            f"Machine: {machine['cpu']}, {machine['cores']} cores, "
            f"{machine['torch_threads']} torch threads, torch {machine['torch']}, "
            f"commit {machine['git_commit']}, {machine['date']}, load average "
            f"{machine['load_average']} (1, 5, 15 min) at the end of the run.\n")


if __name__ == '__main__':
    main()
