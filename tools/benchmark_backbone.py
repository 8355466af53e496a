"""Throughput, batch-1 latency and dense-prediction cost of GSPN-2 next to Swin-T, ConvNeXt-T, ViT-S.

    python tools/benchmark_backbone.py --out docs/benchmarks/backbones       # on a GPU
    # on the device machine (see tools/device/backbone_run.sh), results under $OUT:
    python tools/benchmark_backbone.py --out $OUT/backbones --commit <hash>
    python tools/benchmark_backbone.py --device cpu --models gspn2_test --compiled-models gspn2_test \\
        --batch 2 --img-size 64 --latency-models gspn2_test --sizes 64 --dense-models '' \\
        --dtype float32                                                        # CPU smoke run
    python tools/benchmark_backbone.py --plot docs/benchmarks/backbones.json  # the latency plot

What is measured and how: :mod:`gspn2_dense.benchmarks.backbones`. Writes ``<out>.json`` and
``<out>.md``. The dense part needs mmseg; it is skipped (and says so) without it.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

import gspn2_dense  # noqa: F401  (registers the GSPN-2 timm models)
from gspn2_dense.benchmarks import backbones as bench
from gspn2_dense.benchmarks import report


def _names(text):
    return [n for n in text.split(',') if n]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='docs/benchmarks/backbones', help='output stem (.json, .md)')
    parser.add_argument('--plot', help='draw the latency plot of an existing JSON result and exit')
    parser.add_argument('--models', default=','.join(bench.MODELS), help='eager throughput')
    parser.add_argument('--compiled-models', default=','.join(bench.COMPILED_MODELS),
                        help='torch.compile throughput (compilation costs about a minute each)')
    parser.add_argument('--latency-models', default=','.join(bench.LATENCY_MODELS))
    parser.add_argument('--latency-modes', default='eager,cuda_graph',
                        help=f"comma-separated, of {', '.join(bench.LATENCY_MODES)} "
                             '(compiled_cuda_graph compiles once per size)')
    parser.add_argument('--sizes', default=','.join(map(str, bench.LATENCY_SIZES)), help='latency sizes (px)')
    parser.add_argument('--dense-models', default=','.join(bench.DENSE_MODELS))
    parser.add_argument('--dense-sizes', default=','.join(map(str, bench.DENSE_SIZES)))
    parser.add_argument('--dense-batch', type=int, default=2)
    parser.add_argument('--dense-modes', default='eager',
                        help=f"comma-separated, of {', '.join(bench.DENSE_MODES)} (compiled: the segmentor's "
                             'loss through torch.compile, once per size and regime; graphed: the probe '
                             'with its frozen backbone replayed from CUDA graphs)')
    parser.add_argument('--dense-regimes', default=','.join(bench.DENSE_REGIMES),
                        help='probe (frozen backbone) and/or finetune')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--latency-iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--channels-last', action='store_true', help='channels_last models and inputs')
    parser.add_argument('--commit', default=None, help='git commit to record (default: git rev-parse)')
    args = parser.parse_args()
    if args.plot:
        for path in bench.plot(report.read(args.plot), Path(args.plot).with_suffix('')):
            print(path)
        return
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda but no GPU is visible; use --device cpu for a smoke run')
    result = bench.run(
        device, getattr(torch, args.dtype), models=_names(args.models),
        compiled_models=_names(args.compiled_models), latency_models=_names(args.latency_models),
        latency_modes=_names(args.latency_modes), sizes=[int(s) for s in _names(args.sizes)],
        dense_models=_names(args.dense_models), dense_sizes=[int(s) for s in _names(args.dense_sizes)],
        dense_batch=args.dense_batch, dense_modes=_names(args.dense_modes),
        dense_regimes=_names(args.dense_regimes), img_size=args.img_size, batch=args.batch, iters=args.iters,
        latency_iters=args.latency_iters, warmup=args.warmup,
        memory_format=torch.channels_last if args.channels_last else torch.contiguous_format,
        commit=args.commit, command=shlex.join(['python', *sys.argv]),
        on_row=lambda part, row: print(json.dumps(row), flush=True),
        on_result=lambda partial: report.write(args.out, partial, bench.markdown(partial)))
    for reason in result['skipped']:
        print(f'skipped: {reason}', flush=True)
    text = bench.markdown(result)
    report.write(args.out, result, text)
    print(text)


if __name__ == '__main__':
    main()
