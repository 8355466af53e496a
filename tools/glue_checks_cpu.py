"""Check two ideas for GSPN-2-T's eager glue on the CPU: the LPU residual folded into its
convolution (bf16 error, bytes saved) and the host cost of the propagation op per call.

    python tools/glue_checks_cpu.py --out docs/benchmarks/glue_checks_cpu

What is measured and why: :mod:`gspn2_dense.benchmarks.glue_checks`. Writes ``<out>.md`` and
``<out>.json``.
"""
import argparse
import shlex
import sys

import torch

from gspn2_dense.benchmarks import glue_checks, report
from gspn2_dense.benchmarks.timing import run_stamp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', default='glue_checks_cpu')
    args = parser.parse_args()
    result = glue_checks.run(run_stamp(torch.device('cpu'), args.commit),
                             shlex.join(['python', *sys.argv]))
    text = glue_checks.markdown(result)
    report.write(args.out, result, text)
    print(text)


if __name__ == '__main__':
    main()
