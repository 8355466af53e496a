"""Count parameters and MACs of a backbone, the propagation op included.

    python tools/get_flops.py gspn2_tiny --img-size 224
    python tools/get_flops.py --all [--out docs/benchmarks/complexity.md]
    python tools/get_flops.py --traffic gspn2_tiny,swin_tiny_patch4_window7_224 [--out docs/benchmarks/traffic.md]

Any timm model name works (the GSPN-2 ones are registered by ``import gspn2_dense``). The
models are built on the ``meta`` device, so even the largest count in seconds with no memory.
The counting conventions are in ``gspn2_dense/models/complexity.py`` and ``docs/models.md``.
``--traffic`` counts instead the kernels and bytes of one forward, by kind of kernel
(``count_traffic``): what bounds these models on a GPU more than their MACs.
"""
import argparse
from pathlib import Path

import timm
import torch

import gspn2_dense  # noqa: F401  (registers the GSPN-2 timm models)
from gspn2_dense.models.complexity import complexity_table, count_complexity, traffic_table
from gspn2_dense.models.variants import BASELINES, VARIANTS

# every GSPN-2 variant, then timm models of the same size counted as a check of the convention
ALL = [*VARIANTS, *BASELINES.values()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('model', nargs='?', help='timm model name, e.g. gspn2_tiny')
    parser.add_argument('--img-size', type=int, default=224, help='square input size (default 224)')
    parser.add_argument('--all', action='store_true', help=f'markdown table of {", ".join(ALL)}')
    parser.add_argument('--out', type=Path, help='with --all or --traffic: also write the table to this file')
    parser.add_argument('--traffic', metavar='MODELS',
                        help='comma-separated timm models: a table of kernels and bytes per forward')
    args = parser.parse_args()
    if args.traffic:
        names = [n for n in args.traffic.split(',') if n]
        table = traffic_table(names, args.img_size)
        print(table)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(f'Kernels and bytes of one inference forward, float32, input {args.img_size}x'
                                f'{args.img_size}, batch 1 (`python tools/get_flops.py --traffic '
                                f'{args.traffic} --img-size {args.img_size}`).\n\n{table}\n')
        return
    if args.all == bool(args.model):
        parser.error('give either a model name or --all')
    if args.all:
        table = complexity_table(ALL, args.img_size)
        print(table)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(f'Input {args.img_size}x{args.img_size}, batch 1 '
                                f'(`python tools/get_flops.py --all --img-size {args.img_size}`).\n\n{table}\n')
        return
    with torch.device('meta'):
        model = timm.create_model(args.model)
    result = count_complexity(model, (3, args.img_size, args.img_size))
    print(f'{args.model} @ {args.img_size}x{args.img_size}: params {result.params / 1e6:.2f} M, '
          f'MACs {result.macs / 1e9:.3f} G (propagation op {result.propagate_macs / 1e9:.4f} G)')


if __name__ == '__main__':
    main()
