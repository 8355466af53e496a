"""Throughput and memory of the GSPN-2 backbones next to timm's Swin-T, ConvNeXt-T and ViT-S.

    PYTHONPATH=. python tools/benchmark_backbone.py                 # on a GPU, ~3-6 min
    # on the device machine, results under $OUT, extension built for sm_90 on 16 cores:
    PYTHONPATH=$PWD TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 GSPN2_EXT_DIR=/tmp/gspn2_ext \
        python tools/benchmark_backbone.py --out $OUT/backbones --commit <hash>
    PYTHONPATH=. python tools/benchmark_backbone.py --device cpu --models gspn2_test \\
        --batch 2 --sizes 64,96 --latency-models gspn2_test --dtype float32   # CPU smoke run

Part 1, at 224x224, batch 128, bfloat16 autocast, random init, eager PyTorch (``--compile``:
torch.compile, warm-up iterations then include compilation): images/s and
peak memory of the forward (``torch.no_grad``) and of a training step (forward, cross-entropy,
backward, AdamW step) for every model of ``--models``. Part 2: batch-1 forward latency
against input size (224 to 2048 px) for ``--latency-models``, with the log-log slope of
time against pixels between consecutive sizes (1 = linear, 2 = quadratic).

Timing: CUDA events around ``--iters`` iterations after ``--warmup`` ones (median of the
per-iteration times); peak memory is ``torch.cuda.max_memory_allocated`` over one
iteration minus what was allocated before it. Needs only torch and timm (and this repo on
``PYTHONPATH``). The fused op's CUDA extension is loaded (built if need be) first, outside
any timing. Writes ``<out>.json`` and ``<out>.md``.
"""
import argparse
import datetime
import json
import math
import statistics
import shlex
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import gspn2_dense  # noqa: F401  (registers the GSPN-2 timm models)

MODELS = ['gspn2_tiny', 'gspn2_small', 'gspn2_base',
          'swin_tiny_patch4_window7_224', 'convnext_tiny', 'vit_small_patch16_224']
LATENCY_MODELS = ['gspn2_tiny', 'convnext_tiny', 'vit_small_patch16_224']
SIZES = [224, 512, 1024, 1536, 2048]


def create(name: str, img_size: int, device: torch.device) -> torch.nn.Module:
    """A randomly initialised timm model; ViTs get ``dynamic_img_size`` to take any size."""
    kwargs = dict(dynamic_img_size=True) if name.startswith('vit_') else {}
    return timm.create_model(name, **kwargs).to(device)


class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def median_ms(self, fn, iters: int, warmup: int) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def peak_gib(self, fn):
        if not self.cuda:
            return None
        fn()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**30


def throughput(name, args, device, dtype, timer):
    """Forward and training-step images/s and peak memory at ``args.img_size``."""
    row = dict(model=name)
    torch.manual_seed(0)
    model = create(name, args.img_size, device)
    row['params_m'] = sum(p.numel() for p in model.parameters()) / 1e6
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run = torch.compile(model) if args.compile else model
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    target = torch.randint(0, model.num_classes, (args.batch,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward():
        with torch.no_grad(), autocast:
            run(x)

    def train_step():
        with autocast:
            loss = F.cross_entropy(run(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for mode, fn in (('infer', forward), ('train', train_step)):
        model.train(mode == 'train')
        try:
            ms = timer.median_ms(fn, args.iters, args.warmup)
            row[f'{mode}_ms'] = ms
            row[f'{mode}_img_s'] = args.batch / ms * 1e3
            row[f'{mode}_peak_gib'] = timer.peak_gib(fn)
        except torch.OutOfMemoryError:
            row[f'{mode}_ms'] = row[f'{mode}_img_s'] = row[f'{mode}_peak_gib'] = None
            row[f'{mode}_error'] = 'out of memory'
        optimizer.zero_grad(set_to_none=True)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    del run, model, optimizer, x
    return row


def latency(name, sizes, args, device, dtype, timer):
    """Batch-1 forward latency (ms) at each size, and the log-log slope against pixels."""
    torch.manual_seed(0)
    model = create(name, sizes[0], device).eval()
    run = torch.compile(model, dynamic=False) if args.compile else model
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    points = []
    for size in sizes:
        x = torch.randn(1, 3, size, size, device=device)

        def forward():
            with torch.no_grad(), autocast:
                run(x)

        try:
            points.append(dict(size=size, ms=timer.median_ms(forward, args.latency_iters, args.warmup),
                               peak_gib=timer.peak_gib(forward)))
        except torch.OutOfMemoryError:
            points.append(dict(size=size, ms=None, peak_gib=None, error='out of memory'))
        del x
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    for prev, cur in zip(points, points[1:]):
        if prev['ms'] and cur['ms']:
            cur['slope'] = math.log(cur['ms'] / prev['ms']) / math.log((cur['size'] / prev['size']) ** 2)
    del run, model
    return dict(model=name, points=points)


def fmt(value, spec, missing='-'):
    return missing if value is None else format(value, spec)


def markdown(result) -> str:
    lines = [f"# Backbone throughput on {result['device']}", '',
             f"torch {result['torch']}, CUDA {result['cuda']}, timm {result['timm']}, {result['date']}, "
             f"commit {result['commit']}. Random init, {'torch.compile' if result['compile'] else 'eager PyTorch'}, "
             f"{result['dtype']} autocast, "
             f"NCHW input. Produced by `{result['command']}`.", '',
             f"## {result['img_size']}x{result['img_size']}, batch {result['batch']}", '',
             '| model | params (M) | forward img/s | forward peak GiB | train step img/s | train peak GiB |',
             '|---|---|---|---|---|---|']
    for r in result['throughput']:
        lines.append(f"| {r['model']} | {r['params_m']:.1f} | {fmt(r['infer_img_s'], '.0f', 'OOM')} | "
                     f"{fmt(r['infer_peak_gib'], '.2f')} | {fmt(r['train_img_s'], '.0f', 'OOM')} | "
                     f"{fmt(r['train_peak_gib'], '.2f')} |")
    by_name = {r['model']: r for r in result['throughput']}
    ours, swin = by_name.get('gspn2_tiny'), by_name.get('swin_tiny_patch4_window7_224')
    if ours and swin and ours.get('infer_img_s') and swin.get('infer_img_s'):
        ratio_i = ours['infer_img_s'] / swin['infer_img_s']
        ratio_t = (ours['train_img_s'] / swin['train_img_s']
                   if ours.get('train_img_s') and swin.get('train_img_s') else None)
        lines += ['', f"GSPN-2-T / Swin-T: forward {ratio_i:.2f}x, training step {fmt(ratio_t, '.2f')}x "
                      f"(goal: >= 1)."]
    if result['latency']:
        sizes = [p['size'] for p in result['latency'][0]['points']]
        lines += ['', '## Batch-1 forward latency (ms) against input size', '',
                  '| model | ' + ' | '.join(f'{s} px' for s in sizes) + ' |',
                  '|---|' + '---|' * len(sizes)]
        for entry in result['latency']:
            cells = []
            for p in entry['points']:
                cell = fmt(p['ms'], '.2f', 'OOM')
                if p.get('slope') is not None:
                    cell += f" (slope {p['slope']:.2f})"
                cells.append(cell)
            lines.append(f"| {entry['model']} | " + ' | '.join(cells) + ' |')
        lines += ['', 'Slope: log-log slope of time against pixels from the previous size '
                      '(1 = linear in pixels, 2 = quadratic).']
    return '\n'.join(lines) + '\n'


def git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='docs/benchmarks/backbones', help='output stem (.json, .md)')
    parser.add_argument('--models', default=','.join(MODELS))
    parser.add_argument('--latency-models', default=','.join(LATENCY_MODELS))
    parser.add_argument('--sizes', default=','.join(map(str, SIZES)), help='latency input sizes (px)')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--latency-iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--dtype', default='bfloat16', choices=['bfloat16', 'float16', 'float32'])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model (default: eager)')
    parser.add_argument('--commit', default=None, help='git commit to record (default: git rev-parse)')
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            parser.error('--device cuda but no GPU is visible; use --device cpu for a smoke run')
        from gspn2_dense.ops._build import load_extension
        started = time.time()
        load_extension('cuda')
        print(f'extension ready in {time.time() - started:.0f} s', flush=True)
        torch.backends.cudnn.benchmark = True
    timer = Timer(device)
    result = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU',
                  torch=torch.__version__, cuda=torch.version.cuda, timm=timm.__version__,
                  date=datetime.date.today().isoformat(), commit=args.commit or git_commit(),
                  dtype=args.dtype, compile=args.compile, img_size=args.img_size, batch=args.batch,
                  command=shlex.join(['python', *sys.argv]), throughput=[], latency=[])
    for name in filter(None, args.models.split(',')):
        row = throughput(name, args, device, dtype, timer)
        print(json.dumps(row), flush=True)
        result['throughput'].append(row)
    sizes = [int(s) for s in args.sizes.split(',') if s]
    for name in filter(None, args.latency_models.split(',')):
        entry = latency(name, sizes, args, device, dtype, timer)
        print(json.dumps(entry), flush=True)
        result['latency'].append(entry)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps(result, indent=1) + '\n')
    out.with_suffix('.md').write_text(markdown(result))
    print(markdown(result))


if __name__ == '__main__':
    main()
