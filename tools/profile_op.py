"""Where the GPU time of the fused op (or of a backbone training step) goes, kernel by kernel.

    python tools/profile_op.py --cases "1024,56^2" --out docs/benchmarks/profile_op
    python tools/profile_op.py --backbone gspn2_tiny --batch 128 --out $OUT/profile_tiny

Op cases are the ``tools/benchmark_op.py`` cases whose name contains one of the
comma-separated ``--cases`` strings; each is run ``--reps`` times forward (``save_hidden``
off, as timed there) and backward under ``torch.profiler`` after a warm-up, and every CUDA
kernel's device time is summed by name and divided by ``--reps``: ms per call, launches per
call and share of the call. ``--backbone`` profiles a training step of a timm model instead
(bfloat16 autocast, cross-entropy, backward, AdamW step), kernels grouped by what they do.
Writes ``<out>.md`` and ``<out>.json``.
"""
import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from gspn2_dense.ops.benchmark import GPU_CASES, make_gpu_inputs

# kernel-name pattern -> category, first match wins (backbone profiles)
CATEGORIES = [
    ('gspn2 transpose', r'transpose_planes|TransposeParams'),
    ('gspn2 op', r'gspn2|propagate'),
    ('matmul / 1x1 conv', r'gemm|sm90_xmma|cutlass|cublas|nvjet|Kernel2'),
    ('convolution', r'conv|implicit|winograd|dgrad|wgrad|fprop'),
    ('normalisation', r'norm|welford|layer_norm|batch_norm'),
    ('softmax / loss', r'softmax|nll|cross_entropy|log_softmax'),
    ('optimizer', r'adam|multi_tensor|foreach'),
    ('copy / layout', r'copy|cat|index|gather|scatter|permute|transpose|contiguous'),
    ('reduction', r'reduce|sum|mean'),
    ('elementwise', r'elementwise|vectorized|unrolled|activation|gelu|silu|sigmoid|mul|add'),
]


def kernel_times(fn, reps):
    """{kernel name: (total device us, launches)} of ``reps`` calls of fn (after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    times = defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            times[ev.name][0] += ev.device_time
            times[ev.name][1] += 1
    return {k: (v[0] / reps, v[1] / reps) for k, v in times.items()}


def short(name, width=90):
    name = re.sub(r'\s+', ' ', name)
    return name if len(name) <= width else name[:width - 3] + '...'


def table(times, title, top=None):
    total = sum(t for t, _ in times.values())
    rows = sorted(times.items(), key=lambda kv: -kv[1][0])[:top]
    lines = [f'**{title}**: {total / 1e3:.3f} ms of kernels per call', '',
             '| kernel | ms | launches | share |', '|---|---|---|---|']
    lines += [f'| `{short(k)}` | {t / 1e3:.3f} | {n:g} | {t / max(total, 1e-9):.0%} |'
              for k, (t, n) in rows]
    return '\n'.join(lines) + '\n', total


def grouped(times):
    groups = defaultdict(lambda: [0.0, 0])
    for name, (t, n) in times.items():
        cat = next((c for c, pat in CATEGORIES if re.search(pat, name, re.I)), 'other')
        groups[cat][0] += t
        groups[cat][1] += n
    return {k: tuple(v) for k, v in groups.items()}


def profile_cases(ext, wanted, reps):
    sections, record = [], []
    for name, B, C, H, W, dirs, G, dtype, _ in GPU_CASES:
        if not any(w in name for w in wanted):
            continue
        D, G = len(dirs), G or C
        merge = D > 1
        s = make_gpu_inputs(B, C, H, W, D, G, dtype, seed=0)
        u = s['u'] if merge else None
        out, hidden = ext.forward(s['x'], s['gates'], s['lam'], u, dirs, 0, True, merge, True)
        grad = torch.randn_like(out)
        saved = hidden if merge else out
        fwd = kernel_times(lambda: ext.forward(s['x'], s['gates'], s['lam'], u, dirs, 0, True,
                                               merge, False), reps)
        bwd = kernel_times(lambda: ext.backward(grad, s['x'], s['gates'], s['lam'], u, saved,
                                                dirs, 0, True, merge), reps)
        head = f'### {name} (B={B}, C={C}, {H}x{W}, {D} dirs, G={G}, {str(dtype)[6:]})\n'
        fwd_md, fwd_total = table(fwd, 'forward')
        bwd_md, bwd_total = table(bwd, 'backward')
        sections.append(head + '\n' + fwd_md + '\n' + bwd_md)
        record.append(dict(name=name, forward_us=fwd, backward_us=bwd))
        print(sections[-1], flush=True)
        del s, out, hidden, grad, saved
    return sections, record


def profile_backbone(model_name, batch, img_size, reps):
    import timm
    import gspn2_dense  # noqa: F401  (registers the models)
    model = timm.create_model(model_name).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, img_size, img_size, device='cuda')
    labels = torch.randint(0, 1000, (batch,), device='cuda')

    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    times = kernel_times(step, reps)
    head = (f'### {model_name} training step (batch {batch}, {img_size} px, bfloat16 autocast, '
            f'AdamW)\n')
    cat_md, total = table(grouped(times), 'by category')
    top_md, _ = table(times, 'top kernels', top=25)
    section = head + '\n' + cat_md + '\n' + top_md
    print(section, flush=True)
    return [section], [dict(name=model_name, batch=batch, img_size=img_size, kernels_us=times)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cases', default='1024,56^2,small',
                        help='comma-separated substrings of benchmark_op.py case names')
    parser.add_argument('--backbone', default=None, help='profile a timm model instead')
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--commit', default='unknown')
    parser.add_argument('--out', default='profile_op')
    args = parser.parse_args()
    from gspn2_dense.ops._build import load_extension
    ext = load_extension('cuda')
    if args.backbone:
        sections, record = profile_backbone(args.backbone, args.batch, args.img_size, args.reps)
    else:
        sections, record = profile_cases(ext, [w for w in args.cases.split(',') if w], args.reps)
    device = torch.cuda.get_device_name()
    head = (f'# Kernel time breakdown on {device}\n\ntorch {torch.__version__}, commit '
            f'{args.commit}; `{" ".join(sys.argv)}`; device time per call summed by kernel '
            f'(torch.profiler, {args.reps} calls after a warm-up). Kernels on concurrent '
            f'streams overlap (the op runs the vertical half of a transposed split on a side '
            f'stream), so a sum can exceed the call\'s time.\n\n')
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f'{args.out}.md').write_text(head + '\n'.join(sections))
    Path(f'{args.out}.json').write_text(json.dumps(dict(device=device, commit=args.commit,
                                                        argv=sys.argv, results=record), indent=1))


if __name__ == '__main__':
    main()
