"""Benchmark the fused GSPN-2 CUDA kernels against the bytes floor (SPEC 1.4).

    python tools/benchmark_op.py --out docs/benchmarks/op          # on a GPU: JSON + markdown
    python tools/benchmark_op.py --plot docs/benchmarks/op.json    # anywhere: the plots

What is measured and how: :mod:`gspn2_dense.benchmarks.op`.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

from gspn2_dense.benchmarks import op, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='docs/benchmarks/op', help='output stem (.json, .md)')
    parser.add_argument('--plot', help='draw the plots of an existing JSON result and exit')
    parser.add_argument('--cases', default='', help='comma-separated substrings of case names')
    parser.add_argument('--no-reference', action='store_true')
    parser.add_argument('--sdpa-sizes', default='64,128,256,512,1024,2048')
    parser.add_argument('--reps', type=int, default=20, help='timed runs per figure (median)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--commit', default=None, help='commit of the tree (.git may be absent)')
    args = parser.parse_args()
    if args.plot:
        for path in op.plot(report.read(args.plot), Path(args.plot).with_suffix('')):
            print(path)
        return
    result = op.run_gpu(
        op.select_cases([w for w in args.cases.split(',') if w]),
        reference=not args.no_reference,
        sdpa_sizes=[int(v) for v in args.sdpa_sizes.split(',') if v], reps=args.reps,
        warmup=args.warmup, commit=args.commit,
        command=shlex.join(['python', *sys.argv]),
        on_case=lambda row: print(json.dumps(row), flush=True))
    text = op.gpu_markdown(result)
    report.write(args.out, result, text)
    print(text)


if __name__ == '__main__':
    main()
