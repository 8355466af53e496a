"""Throughput, batch-1 latency and dense-prediction cost of GSPN-2 next to Swin-T, ConvNeXt-T, ViT-S.

    python tools/benchmark_backbone.py --out docs/benchmarks/backbones       # on a GPU
    # on the device machine (see tools/device/backbone_run.sh), results under $OUT:
    python tools/benchmark_backbone.py --out $OUT/backbones --commit <hash>
    python tools/benchmark_backbone.py --device cpu --models gspn2_test --compiled-models gspn2_test \\
        --batch 2 --img-size 64 --latency-models gspn2_test --sizes 64 --dense-models '' \\
        --dtype float32                                                        # CPU smoke run

What is measured and how: :mod:`gspn2_dense.benchmarks.backbones`. Writes ``<out>.json`` and
``<out>.md``. The dense part needs mmseg; it is skipped (and says so) without it.
"""
import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import gspn2_dense  # noqa: F401  (registers the GSPN-2 timm models)
from gspn2_dense.benchmarks import backbones as bench
from gspn2_dense.benchmarks.timing import Timer, run_stamp


def _names(text):
    return [n for n in text.split(',') if n]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='docs/benchmarks/backbones', help='output stem (.json, .md)')
    parser.add_argument('--models', default=','.join(bench.MODELS), help='eager throughput')
    parser.add_argument('--compiled-models', default=','.join(bench.COMPILED_MODELS),
                        help='torch.compile throughput (compilation costs about a minute each)')
    parser.add_argument('--latency-models', default=','.join(bench.LATENCY_MODELS))
    parser.add_argument('--latency-modes', default='eager,cuda_graph')
    parser.add_argument('--sizes', default=','.join(map(str, bench.LATENCY_SIZES)), help='latency sizes (px)')
    parser.add_argument('--dense-models', default=','.join(bench.DENSE_MODELS))
    parser.add_argument('--dense-sizes', default=','.join(map(str, bench.DENSE_SIZES)))
    parser.add_argument('--dense-batch', type=int, default=2)
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
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            parser.error('--device cuda but no GPU is visible; use --device cpu for a smoke run')
        from gspn2_dense.ops._build import load_extension
        started = time.time()
        load_extension('cuda')
        print(f'extension ready in {time.time() - started:.0f} s', flush=True)
        torch.backends.cudnn.benchmark = True
    timer = Timer(device)
    result = dict(run_stamp(device, args.commit), dtype=args.dtype, img_size=args.img_size,
                  batch=args.batch, dense_batch=args.dense_batch,
                  memory_format='channels_last' if args.channels_last else 'NCHW',
                  command=shlex.join(['python', *sys.argv]), throughput=[], latency=[], dense=[])

    def report(part, row):
        print(json.dumps(row), flush=True)
        result[part].append(row)

    for mode, names in (('eager', args.models), ('compiled', args.compiled_models)):
        for name in _names(names):
            report('throughput', bench.throughput(name, mode, device, dtype, timer, args.img_size,
                                                  args.batch, args.iters, args.warmup, memory_format))
    sizes = [int(s) for s in _names(args.sizes)]
    for name in _names(args.latency_models):
        for mode in _names(args.latency_modes):
            if mode == 'cuda_graph' and device.type != 'cuda':
                continue
            report('latency', bench.latency(name, sizes, mode, device, dtype, timer,
                                            args.latency_iters, args.warmup))
    if _names(args.dense_models) and importlib.util.find_spec('mmseg') is None:
        print('mmseg is not installed: the dense-prediction part is skipped', flush=True)
    else:
        dense_sizes = [int(s) for s in _names(args.dense_sizes)]
        for name in _names(args.dense_models):
            report('dense', bench.dense(name, dense_sizes, device, dtype, timer, args.dense_batch))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps(result, indent=1) + '\n')
    out.with_suffix('.md').write_text(bench.markdown(result))
    print(bench.markdown(result))


if __name__ == '__main__':
    main()
