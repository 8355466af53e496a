"""Where the GPU time of the fused op (or of a backbone training step) goes, kernel by kernel.

    python tools/profile_op.py --cases "1024,56^2" --out docs/benchmarks/profile_op
    python tools/profile_op.py --backbone gspn2_tiny --batch 128 --out $OUT/profile_tiny
    python tools/profile_op.py --backbone gspn2_tiny --compile --out $OUT/profile_tiny_compiled

Op cases are the ``tools/benchmark_op.py`` cases whose name contains one of the
comma-separated ``--cases`` strings. What is measured and how:
:mod:`gspn2_dense.benchmarks.profile`. Writes ``<out>.md`` and ``<out>.json``.
"""
import argparse
import shlex
import sys

from gspn2_dense.benchmarks import op, profile, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', default='1024,56^2,small',
                        help='comma-separated substrings of benchmark_op.py case names')
    parser.add_argument('--backbone', default=None, help='profile a timm model instead')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--compile', action='store_true', help='profile the torch.compile-d backbone')
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', default='profile_op')
    args = parser.parse_args()
    cases = op.select_cases([w for w in args.cases.split(',') if w])
    result, text = profile.run(cases, args.backbone, args.batch, args.img_size, args.reps,
                               args.commit, shlex.join(['python', *sys.argv]), args.compile,
                               on_section=lambda section: print(section, flush=True))
    report.write(args.out, result, text)


if __name__ == '__main__':
    main()
