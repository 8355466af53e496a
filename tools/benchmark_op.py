"""Benchmark the fused GSPN-2 CUDA kernels against the bytes floor (issue 4, SPEC 1.4).

    python tools/benchmark_op.py --out docs/benchmarks/op          # on a GPU: JSON + markdown
    python tools/benchmark_op.py --plot docs/benchmarks/op.json    # anywhere: the plots

The floor of a case is the bytes it must move (every input read once, every output written
once) over the device-to-device copy bandwidth measured in the same process. Kernels are
timed with CUDA events after a warm-up; each figure is the median of >= 20 runs over a
rotation of input sets larger than the L2 cache. The extension is called directly (the
torch.library layer adds only host time). Also timed: the pure-PyTorch reference loop and
SDPA (bf16, 8 heads x 64) at equal tokens.
"""
import argparse
import contextlib
import datetime
import json
import math
import statistics
import subprocess
from pathlib import Path

import torch

from gspn2_dense.ops.benchmark import DIRS4, GPU_CASES, make_gpu_inputs

def copy_bandwidth(gib=2.0, reps=10):
    """Bytes read plus written per second of a large device-to-device copy."""
    n = int(gib * 2**30) // 4
    src = torch.empty(n, dtype=torch.float32, device='cuda').uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda _: dst.copy_(src), 1, reps=reps)
    del src, dst
    return 2 * n * 4 / (ms * 1e-3)


def time_ms(fn, n_sets, reps=20, warmup=3):
    """Median milliseconds of fn(set_index), rotating over n_sets input sets."""
    for i in range(warmup):
        fn(i % n_sets)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i % n_sets)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@contextlib.contextmanager
def line_modes_in_place(ext):
    """Policies 0 (off) of set_plane_mode and set_transpose_mode (csrc/cuda/propagate.h)."""
    previous = ext.set_plane_mode(0), ext.set_transpose_mode(0)
    try:
        yield
    finally:
        ext.set_plane_mode(previous[0])
        ext.set_transpose_mode(previous[1])


def run_case(ext, name, B, C, H, W, dirs, G, dtype, targets, bandwidth, l2_bytes, reps=20,
             warmup=3):
    D, G = len(dirs), G or C
    merge = D > 1
    es = torch.tensor([], dtype=dtype).element_size()
    xb, gb, lb = B * C * H * W * es, B * D * G * 3 * H * W * es, B * D * C * H * W * es
    out_b = xb if merge else lb
    fwd_bytes = xb + gb + lb + (lb if merge else 0) + out_b
    # backward reads grad_out, x, gates, lam, (u), hidden; writes grad_x, grad_gates, grad_lam, (grad_u)
    bwd_bytes = out_b + xb + gb + lb + lb + (2 * lb if merge else 0) + xb + gb + lb
    n_sets = max(1, min(4, math.ceil(4 * l2_bytes / fwd_bytes)))
    sets = [make_gpu_inputs(B, C, H, W, D, G, dtype, seed=s) for s in range(n_sets)]
    u_of = lambda s: s['u'] if merge else None  # noqa: E731
    fwd = lambda i: ext.forward(sets[i]['x'], sets[i]['gates'], sets[i]['lam'], u_of(sets[i]),  # noqa: E731
                                dirs, 0, True, merge, False)
    fwd_ms = time_ms(fwd, n_sets, reps, warmup)
    # the same forward in one fused launch of the line modes (no plane mode, horizontal
    # directions scanned in place rather than through transposed planes), for comparison
    with line_modes_in_place(ext):
        fwd_line_ms = time_ms(fwd, n_sets, reps, warmup)
    saved = []
    for s in sets:
        out, hidden = ext.forward(s['x'], s['gates'], s['lam'], u_of(s), dirs, 0, True, merge, True)
        saved.append((torch.randn_like(out), hidden if merge else out))
        del out
    bwd = lambda i: ext.backward(saved[i][0], sets[i]['x'], sets[i]['gates'], sets[i]['lam'],  # noqa: E731
                                 u_of(sets[i]), saved[i][1], dirs, 0, True, merge)
    bwd_ms = time_ms(bwd, n_sets, reps, warmup)
    with line_modes_in_place(ext):  # the same backward in one fused launch of the line modes
        bwd_line_ms = time_ms(bwd, n_sets, reps, warmup)
    # peak memory of one training step (forward saving h, backward), beyond its inputs
    s = sets[0]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out, hidden = ext.forward(s['x'], s['gates'], s['lam'], u_of(s), dirs, 0, True, merge, True)
    grads = ext.backward(torch.ones_like(out), s['x'], s['gates'], s['lam'], u_of(s),
                         hidden if merge else out, dirs, 0, True, merge)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out, hidden, grads, saved, sets
    fwd_floor, bwd_floor = fwd_bytes / bandwidth * 1e3, bwd_bytes / bandwidth * 1e3
    return dict(name=name, B=B, C=C, H=H, W=W, directions=dirs, G=G, dtype=str(dtype)[6:],
                fwd_ms=fwd_ms, fwd_line_modes_ms=fwd_line_ms, bwd_ms=bwd_ms,
                bwd_line_modes_ms=bwd_line_ms,
                fwd_floor_ms=fwd_floor, bwd_floor_ms=bwd_floor,
                fwd_eff=fwd_floor / fwd_ms, bwd_eff=bwd_floor / bwd_ms,
                fwd_target=targets[0], bwd_target=targets[1], peak_fwd_bwd_gib=peak / 2**30,
                n_input_sets=n_sets)


def reference_loop_ms():
    """The PyTorch reference loop (one direction, fp32) at the paper shape."""
    from gspn2_dense.ops import gspn_scan_ref
    s = make_gpu_inputs(16, 8, 1024, 1024, 1, 8, torch.float32, seed=0)
    with torch.no_grad():
        return time_ms(lambda _: gspn_scan_ref(s['x'], s['gates'][:, 0], s['lam'][:, 0],
                                               'top_down'), 1, reps=3, warmup=1)


def sdpa_sweep(ext, sizes, C=32):
    """SDPA (bf16, 8 heads x 64, one image) vs the fused op (4 directions, G=1, C channels)."""
    import torch.nn.functional as F
    rows = []
    for side in sizes:
        tokens = side * side
        entry = dict(side=side, tokens=tokens)
        s = make_gpu_inputs(1, C, side, side, 4, 1, torch.bfloat16, seed=side)
        entry['op_fwd_ms'] = time_ms(lambda _: ext.forward(s['x'], s['gates'], s['lam'], s['u'],
                                                           DIRS4, 0, True, True, False), 1)
        del s
        # predicted flash-attention time at ~500 TFLOP/s: skip where it would exceed ~3 s
        if 4 * tokens * tokens * 512 / 5e14 < 3.0:
            try:
                q = torch.randn(1, 8, tokens, 64, device='cuda', dtype=torch.bfloat16)
                reps = 20 if tokens <= 128 * 128 else 3
                entry['sdpa_ms'] = time_ms(
                    lambda _: F.scaled_dot_product_attention(q, q, q), 1, reps=reps, warmup=1)
                del q
            except torch.OutOfMemoryError:
                entry['sdpa_ms'] = None
        else:
            entry['sdpa_ms'] = None
        torch.cuda.empty_cache()
        rows.append(entry)
    return rows


def markdown(result):
    lines = [f"# GSPN-2 fused op on {result['device']}", '',
             f"torch {result['torch']}, CUDA {result['cuda']}, {result['date']}, "
             f"commit {result['commit']}; copy bandwidth {result['bandwidth_tbs']:.2f} TB/s "
             f"(bytes read + written of a {result['copy_gib']} GiB D2D copy).", '',
             '| case | B | C | HxW | dirs | G | dtype | fwd ms | floor | eff | target | '
             'fwd ms, fused line modes | bwd ms | floor | eff | target | bwd ms, fused line modes | '
             'peak fwd+bwd GiB |',
             '|' + '---|' * 18]
    for r in result['cases']:
        t = lambda v: '' if v is None else f'{v:.0%}'  # noqa: E731
        lines.append(
            f"| {r['name']} | {r['B']} | {r['C']} | {r['H']}x{r['W']} | {len(r['directions'])} "
            f"| {r['G']} | {r['dtype']} | {r['fwd_ms']:.3f} | {r['fwd_floor_ms']:.3f} | "
            f"{r['fwd_eff']:.0%} | {t(r['fwd_target'])} | {r.get('fwd_line_modes_ms', 0):.3f} | "
            f"{r['bwd_ms']:.3f} | "
            f"{r['bwd_floor_ms']:.3f} | {r['bwd_eff']:.0%} | {t(r['bwd_target'])} | "
            f"{r.get('bwd_line_modes_ms', 0):.3f} | {r['peak_fwd_bwd_gib']:.2f} |")
    if result.get('reference_loop_ms'):
        lines += ['', f"PyTorch reference loop, paper shape (fp32, 1 direction, B=16, C=8, "
                      f"1024^2), forward: {result['reference_loop_ms']:.1f} ms."]
    if result.get('sdpa'):
        lines += ['', 'Fused op (4 directions, G=1, C=32, bf16, B=1, forward) vs SDPA '
                      '(bf16, 8 heads x 64, B=1) at equal tokens:', '',
                  '| side | tokens | op fwd ms | SDPA ms | SDPA / op |', '|---|---|---|---|---|']
        for e in result['sdpa']:
            sd, op = e['sdpa_ms'], e['op_fwd_ms']
            sd_text = '-' if sd is None else f'{sd:.3f}'
            ratio = '-' if sd is None else f'{sd / op:.1f}x'
            lines.append(f"| {e['side']} | {e['tokens']} | {op:.3f} | {sd_text} | {ratio} |")
    return '\n'.join(lines) + '\n'


def plot(json_path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    result = json.loads(Path(json_path).read_text())
    stem = Path(json_path).with_suffix('')
    stamp = f"{result['device']}, torch {result['torch']}, {result['date']}, {result['commit']}"
    if result.get('sdpa'):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        rows = result['sdpa']
        tok = [e['tokens'] for e in rows]
        ax.loglog(tok, [e['op_fwd_ms'] for e in rows], 'o-', label='GSPN-2 fused fwd (C=32, 4 dirs)')
        ax.loglog(tok, [e['op_floor_ms'] for e in rows], 'k--', label='bytes floor')
        sd = [(e['tokens'], e['sdpa_ms']) for e in rows if e['sdpa_ms']]
        if sd:
            ax.loglog(*zip(*sd), 's-', label='SDPA bf16 8x64')
        ax.set_xlabel('tokens (H x W)')
        ax.set_ylabel('ms')
        ax.set_title(stamp, fontsize=7)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f'{stem}_time_vs_resolution.png', dpi=120)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = [r['name'] for r in result['cases']]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [r['fwd_eff'] for r in result['cases']], 0.4, label='forward')
    ax.bar([x + 0.2 for x in xs], [r['bwd_eff'] for r in result['cases']], 0.4, label='backward')
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, ha='right', fontsize=7)
    ax.set_ylabel('efficiency (bytes floor / time)')
    ax.set_title(stamp, fontsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(f'{stem}_efficiency.png', dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='docs/benchmarks/op', help='output stem (.json, .md)')
    parser.add_argument('--plot', help='draw the plots of an existing JSON result and exit')
    parser.add_argument('--cases', default='', help='comma-separated substrings of case names')
    parser.add_argument('--no-reference', action='store_true')
    parser.add_argument('--sdpa-sizes', default='64,128,256,512,1024,2048')
    parser.add_argument('--reps', type=int, default=20, help='timed runs per figure (median)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--commit', default='', help='commit of the tree (.git may be absent)')
    parser.add_argument('--channels-per-thread', type=int, default=0, choices=[0, 1, 2, 4],
                        help='line-mode channels per thread: 0 the default choice, else at most '
                             'that many (set_channels_per_thread, csrc/cuda/propagate.h)')
    args = parser.parse_args()
    if args.plot:
        plot(args.plot)
        return
    from gspn2_dense.ops._build import load_extension
    ext = load_extension('cuda')
    ext.set_channels_per_thread(args.channels_per_thread)
    props = torch.cuda.get_device_properties(0)
    bandwidth = copy_bandwidth(reps=max(2, min(10, args.reps)))
    commit = args.commit
    try:
        commit = commit or subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                                          capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = 'unknown'
    result = dict(device=props.name, torch=torch.__version__, cuda=torch.version.cuda,
                  date=datetime.date.today().isoformat(), commit=commit,
                  bandwidth_tbs=bandwidth / 1e12, copy_gib=2.0,
                  channels_per_thread_policy=args.channels_per_thread, cases=[])
    wanted = [w for w in args.cases.split(',') if w]
    for case in GPU_CASES:
        if wanted and not any(w in case[0] for w in wanted):
            continue
        r = run_case(ext, *case, bandwidth=bandwidth, l2_bytes=props.L2_cache_size,
                     reps=args.reps, warmup=args.warmup)
        print(json.dumps(r), flush=True)
        result['cases'].append(r)
        torch.cuda.empty_cache()
    if not args.no_reference:
        result['reference_loop_ms'] = reference_loop_ms()
    sizes = [int(v) for v in args.sdpa_sizes.split(',') if v]
    result['sdpa'] = sdpa_sweep(ext, sizes)
    for e in result['sdpa']:
        n = e['tokens'] * 32
        e['op_floor_ms'] = (n * 2 * (1 + 4 + 4 + 1) + 4 * 3 * e['tokens'] * 2) / bandwidth * 1e3
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f'{args.out}.json').write_text(json.dumps(result, indent=1))
    Path(f'{args.out}.md').write_text(markdown(result))
    print(markdown(result))


if __name__ == '__main__':
    main()
