"""The propagation op's benchmark: the cases, how each is run, and its reports.

**CPU** (``tools/benchmark_op_cpu.py``, ``docs/benchmarks/op_cpu.md``): the compiled kernel
against the pure-PyTorch reference through the public functions, forward alone (under
``torch.no_grad``) and forward + backward (``torch.autograd.grad`` for every input, so no
gradient accumulation is timed), medians after a warm-up, wall clock and process CPU time,
once per torch thread count; optionally this checkout's CPU extension against the one built
from ``csrc/`` of another git revision, the raw ``forward`` / ``backward`` calls timed
alternately in one process.

**GPU** (``tools/benchmark_op.py``, ``docs/benchmarks/op.md``): the CUDA extension called
directly (the ``torch.library`` layer adds only host time) on :data:`GPU_CASES` against the
bytes floor: every input read once and every output written once (:func:`case_bytes`) at the
device-to-device copy bandwidth measured in the same process. Each figure is the median of
CUDA-event timings after a warm-up, over a rotation of input sets larger than the L2 cache;
with the launches the plan picks for each call (the extension's ``plan``) and the peak memory
of a training step. Also: the reference loop at the paper's shape and SDPA at equal tokens.
"""
import itertools
import math
import statistics
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ..ops import DIRECTIONS, gspn_propagate, gspn_propagate_ref, gspn_scan, gspn_scan_ref
from ..ops._build import build_cpu_variant, load_extension
from ..ops.propagate import recomputes_hidden
from . import report
from .timing import Timer, git, load_average, run_stamp

DIRS4 = (0, 1, 2, 3)


class OpCase(NamedTuple):
    name: str
    B: int
    C: int
    H: int
    W: int
    directions: Tuple[int, ...]
    G: Optional[int]  # gate groups; None = C (GSPN-1's per-channel gates)
    dtype: torch.dtype
    chunk: int = 0  # restart period, 0 = global scans

    @property
    def groups(self) -> int:
        return self.G or self.C


GPU_CASES = [
    OpCase('paper fp32 1dir', 16, 8, 1024, 1024, (0,), None, torch.float32),
    OpCase('paper bf16 1dir', 16, 8, 1024, 1024, (0,), None, torch.bfloat16),
    # the paper's shape in the other directions ('paper ... 1dir' above is top_down): a slow
    # direction shows here, not only in the four-direction sums
    *(OpCase(f'paper {t} 1dir {DIRECTIONS[d]}', 16, 8, 1024, 1024, (d,), None, dtype)
      for t, dtype in (('fp32', torch.float32), ('bf16', torch.bfloat16)) for d in (1, 2, 3)),
    OpCase('4dir G1 bf16 56^2', 128, 24, 56, 56, DIRS4, 1, torch.bfloat16),
    OpCase('4dir G1 bf16 28^2', 128, 48, 28, 28, DIRS4, 1, torch.bfloat16),
    OpCase('4dir G1 bf16 14^2', 128, 96, 14, 14, DIRS4, 1, torch.bfloat16),
    OpCase('4dir G1 bf16 7^2', 128, 192, 7, 7, DIRS4, 1, torch.bfloat16),
    OpCase('4dir G1 fp32 28^2', 128, 48, 28, 28, DIRS4, 1, torch.float32),
    OpCase('4dir G1 bf16 1024^2', 4, 32, 1024, 1024, DIRS4, 1, torch.bfloat16),
    *(OpCase(f'1dir G1 bf16 1024^2 {name}', 4, 32, 1024, 1024, (d,), 1, torch.bfloat16)
      for d, name in enumerate(DIRECTIONS)),
    OpCase('4dir G1 bf16 2048^2', 1, 32, 2048, 2048, DIRS4, 1, torch.bfloat16),
    OpCase('small batch fp32 1dir', 1, 8, 1024, 1024, (0,), None, torch.float32),
    # GSPN-2-T's four stages at 224 px, B128 (proxy width = dim / 4; stages 1-2 local, chunk 2)
    OpCase('GSPN2-T stage 1 56^2 k2', 128, 20, 56, 56, DIRS4, 1, torch.bfloat16, 2),
    OpCase('GSPN2-T stage 2 28^2 k2', 128, 40, 28, 28, DIRS4, 1, torch.bfloat16, 2),
    OpCase('GSPN2-T stage 3 14^2', 128, 80, 14, 14, DIRS4, 1, torch.bfloat16),
    OpCase('GSPN2-T stage 4 7^2', 128, 160, 7, 7, DIRS4, 1, torch.bfloat16),
    # the global stages at 512 px (stage 4 a small plane, stage 3 past its limit)
    OpCase('GSPN2-T stage 3 32^2', 16, 80, 32, 32, DIRS4, 1, torch.bfloat16),
    OpCase('GSPN2-T stage 4 16^2', 16, 160, 16, 16, DIRS4, 1, torch.bfloat16),
    # the local stages of a 2048 px dense-prediction input (batch 2)
    OpCase('GSPN2-T stage 1 512^2 k2', 2, 20, 512, 512, DIRS4, 1, torch.bfloat16, 2),
    OpCase('GSPN2-T stage 2 256^2 k2', 2, 40, 256, 256, DIRS4, 1, torch.bfloat16, 2),
    # and its global stages (lines of 128 in the warp mode, horizontal ones in place; 64^2 in
    # the plane mode)
    OpCase('GSPN2-T stage 3 128^2', 2, 80, 128, 128, DIRS4, 1, torch.bfloat16),
    OpCase('GSPN2-T stage 4 64^2', 2, 160, 64, 64, DIRS4, 1, torch.bfloat16),
]


def select_cases(wanted: Sequence[str], cases: Sequence[OpCase] = GPU_CASES) -> List[OpCase]:
    """The cases whose name contains one of ``wanted`` (all of them when it is empty)."""
    return [c for c in cases if not wanted or any(w in c.name for w in wanted)]


def make_inputs(case: OpCase, device, seed: int) -> Dict[str, torch.Tensor]:
    """Random x, gates, lam (in [0, 1)) and u of a case, made on ``device``."""
    D = len(case.directions)
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(device=device, dtype=case.dtype, generator=gen)
    B, C, H, W = case.B, case.C, case.H, case.W
    return dict(x=torch.randn(B, C, H, W, **kw),
                gates=torch.randn(B, D, case.groups, 3, H, W, **kw),
                lam=torch.rand(B, D, C, H, W, **kw), u=torch.randn(B, D, C, H, W, **kw))


def case_bytes(case: OpCase) -> Tuple[int, int]:
    """Bytes the forward and the backward of a case must move at least: every input read
    once, every output written once (merged when there is more than one direction)."""
    D, merge = len(case.directions), len(case.directions) > 1
    es = torch.tensor([], dtype=case.dtype).element_size()
    plane = case.B * case.H * case.W * es
    xb, gb, lb = plane * case.C, plane * D * case.groups * 3, plane * D * case.C
    out_b = xb if merge else lb
    u_b = lb if merge else 0
    fwd = xb + gb + lb + u_b + out_b  # x, gates, lam, (u) -> y or h
    # grad_out, x, gates, lam, (u), hidden -> grad_x, grad_gates, grad_lam, (grad_u); the
    # one-pass kernels (local scans, small planes) read no hidden state
    hidden_b = 0 if recomputes_hidden(case.chunk, case.H, case.W) and merge else lb
    bwd = out_b + xb + gb + lb + u_b + hidden_b + xb + gb + lb + u_b
    return fwd, bwd


# ---------------------------------------------------------------------------------- CPU


def _forward(fn, inputs, kwargs):
    def run():
        with torch.no_grad():
            return fn(*inputs, **kwargs)
    return run


def _forward_backward(fn, inputs, kwargs):
    grad_out = torch.randn_like(fn(*inputs, **kwargs).detach())

    def run():
        return torch.autograd.grad(fn(*inputs, **kwargs), inputs, grad_out)
    return run


def cpu_cases(B: int, C: int, H: int, W: int, G: int, dtype: torch.dtype) -> List[Dict]:
    """The timed calls: ``gspn_propagate`` (4 directions merged) and ``gspn_scan`` in two
    directions, each with its reference."""
    s = make_inputs(OpCase('cpu', B, C, H, W, DIRS4, G, dtype), 'cpu', seed=0)
    x, gates, lam, u = (s[k].requires_grad_() for k in ('x', 'gates', 'lam', 'u'))
    cases = [dict(name='gspn_propagate', op=gspn_propagate, ref=gspn_propagate_ref,
                  inputs=(x, gates, lam, u), kwargs={})]
    for direction in ('top_down', 'left_right'):
        one = (x, gates[:, 0].detach().requires_grad_(), lam[:, 0].detach().requires_grad_())
        cases.append(dict(name=f'gspn_scan({direction})', op=gspn_scan, ref=gspn_scan_ref,
                          inputs=one, kwargs=dict(direction=direction)))
    return cases


def run_cpu(B: int = 2, C: int = 16, H: int = 128, W: int = 128, G: int = 1,
            dtype: torch.dtype = torch.float32, repeats: int = 15,
            ref_repeats: int = 5) -> List[Dict]:
    """Median ms of kernel and reference per case, forward and forward + backward, with the
    speed-ups in wall clock and in process CPU time."""
    timer = Timer('cpu')
    rows = []
    for case in cpu_cases(B, C, H, W, G, dtype):
        row = dict(case=case['name'])
        for mode, wrap in (('fwd', _forward), ('fwd+bwd', _forward_backward)):
            kernel = timer.measure(wrap(case['op'], case['inputs'], case['kwargs']), repeats, 1)
            ref = timer.measure(wrap(case['ref'], case['inputs'], case['kwargs']), ref_repeats, 1)
            row[f'{mode} kernel ms'] = round(kernel.ms, 2)
            row[f'{mode} reference ms'] = round(ref.ms, 2)
            row[f'{mode} speed-up'] = round(ref.ms / kernel.ms, 1)
            row[f'{mode} CPU-time speed-up'] = round(ref.cpu_ms / max(kernel.cpu_ms, 1e-6), 1)
        rows.append(row)
    return rows


def run_thread_counts(threads: Sequence[int], shape: Dict, dtype: torch.dtype, repeats: int,
                      ref_repeats: int) -> Iterator[Dict]:
    """:func:`run_cpu` once per torch thread count, one run at a time as it finishes."""
    previous = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            rows = run_cpu(**shape, dtype=dtype, repeats=repeats, ref_repeats=ref_repeats)
            yield dict(torch_threads=n, results=rows, load_average_after=load_average())
    finally:
        torch.set_num_threads(previous)


def cpu_extension_at(rev: str, build_dir: Path):
    """The CPU extension built from ``csrc/`` of git revision ``rev`` of the checkout in the
    working directory (for A/B timings), in ``build_dir``."""
    try:
        archive = git('archive', '--prefix=csrc/', f'{rev}:csrc')
    except ValueError as err:
        raise ValueError(f'cannot read csrc/ at git revision {rev!r}: {err}') from None
    src = Path(build_dir) / 'src'
    src.mkdir(parents=True, exist_ok=True)
    subprocess.run(['tar', '-x', '-C', str(src)], input=archive, check=True)
    name = 'gspn2_dense_cpu_at_' + ''.join(c if c.isalnum() else '_' for c in rev)
    return build_cpu_variant(src / 'csrc', name, Path(build_dir))


def compare_builds(other, B: int, C: int, H: int, W: int, G: int, dtype: torch.dtype,
                   repeats: int) -> List[Dict]:
    """Forward and backward of this checkout's CPU extension and of ``other`` (an extension
    module, e.g. :func:`cpu_extension_at`) on the same inputs (normalised gates), timed
    alternately in this process; medians of ``repeats``, speed-up = other's time / this one's."""
    this, timer = load_extension('cpu'), Timer('cpu')
    s = make_inputs(OpCase('cpu', B, C, H, W, DIRS4, G, dtype), 'cpu', seed=0)
    gen = torch.Generator().manual_seed(1)
    cases = [('4 directions merged', [0, 1, 2, 3], True)]
    cases += [(f'{name} (one direction)', [d], False) for name, d in (('top_down', 0), ('left_right', 2))]
    rows = []
    for name, directions, merge in cases:
        D = len(directions)
        args = (s['x'], s['gates'][:, :D].contiguous(), s['lam'][:, :D].contiguous(),
                s['u'][:, :D].contiguous() if merge else None)
        grad_out = torch.randn((B, C, H, W) if merge else (B, D, C, H, W), generator=gen).to(dtype)
        calls = {}
        for label, ext in (('this', this), ('other', other)):
            out, hidden = ext.forward(*args, directions, 0, True, merge, True)
            saved = hidden if merge else out
            calls[label, 'fwd'] = lambda ext=ext: ext.forward(*args, directions, 0, True, merge, True)
            calls[label, 'bwd'] = lambda ext=ext, saved=saved: ext.backward(
                grad_out, *args, saved, directions, 0, True, merge)
        samples = {key: [] for key in calls}
        for _ in range(repeats):
            for key, fn in calls.items():
                samples[key].append(timer.once(fn).ms)
        row = dict(case=name)
        for mode in ('fwd', 'bwd'):
            mine, theirs = (statistics.median(samples[label, mode]) for label in ('this', 'other'))
            row[f'{mode} ms'] = round(mine, 3)
            row[f'{mode} ms, other'] = round(theirs, 3)
            row[f'{mode} speed-up'] = round(theirs / mine, 2)
        rows.append(row)
    return rows


def cpu_record(shape: Dict, runs: Sequence[Dict], dtype: str, repeats: int, ref_repeats: int,
               command: str, comparison: Optional[Dict] = None, commit: Optional[str] = None) -> Dict:
    """The CPU report's record: the stamp (with ``kernel_isa``: which build of the CPU
    kernel's hot loops ran, 'x86-64-v3' or 'baseline'), settings, runs and the comparison
    (``dict(against=rev, threads=n, rows=compare_builds(...))``)."""
    return dict(run_stamp('cpu', commit), kernel_isa=load_extension('cpu').kernel_isa(),
                command=command, shape=dict(shape), dtype=dtype, repeats=repeats,
                ref_repeats=ref_repeats, runs=list(runs), comparison=comparison)


def cpu_markdown(record: Dict) -> str:
    shape_text = ', '.join(f'{k}={v}' for k, v in record['shape'].items())
    lines = ['# CPU kernel vs pure-PyTorch reference', '',
             f"`{record['command']}`: {shape_text}, {record['dtype']}; median of "
             f"{record['repeats']} (kernel) / {record['ref_repeats']} (reference) runs after a "
             'warm-up; fwd+bwd = `torch.autograd.grad` for every input. Speed-up = reference '
             'time / kernel time, in wall clock and in process CPU time (all threads). On a '
             'machine shared with other jobs (see the load averages), multi-threaded timings '
             'mostly measure waits for descheduled threads at the end of each parallel region; '
             'the one-thread figures are the stable ones.']
    for run in record['runs']:
        lines += ['', f"## {run['torch_threads']} torch thread(s)", '',
                  report.records_table(run['results']), '',
                  f"Load average (1, 5, 15 min) after the run: {run['load_average_after']}."]
    comparison = record.get('comparison')
    if comparison:
        lines += ['', f"## Against the kernel of {comparison['against']}", '',
                  f"The raw extension calls (`forward` / `backward`, normalised gates, "
                  f"G={record['shape']['G']}) of this checkout and of `csrc/` at "
                  f"{comparison['against']}, built alike and timed alternately in one process "
                  f"with {comparison['threads']} torch thread(s); speed-up = the other build's "
                  "time / this one's.", '', report.records_table(comparison['rows'])]
    lines += ['', f"Machine: {record['device']}, {record['cores']} cores, kernel loops built for "
                  f"{record['kernel_isa']}; {report.stamp_line(record)}."]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------- GPU


def _rotating(fn: Callable[[int], object], n_sets: int) -> Callable[[], object]:
    """``fn(i)`` as a call without arguments, ``i`` cycling over ``n_sets`` input sets."""
    turn = itertools.count()
    return lambda: fn(next(turn) % n_sets)


def copy_bandwidth(timer: Timer, gib: float = 2.0, reps: int = 10) -> float:
    """Bytes read plus written per second of a large device-to-device copy."""
    src = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32, device='cuda').uniform_()
    dst = torch.empty_like(src)
    ms = timer.median_ms(lambda: dst.copy_(src), reps, 3)
    return 2 * src.numel() * 4 / (ms * 1e-3)


def run_gpu_case(ext, case: OpCase, bandwidth: float, l2_bytes: int, timer: Timer,
                 reps: int = 20, warmup: int = 3) -> Dict:
    """Forward and backward times of one case, their floors and efficiencies, the launches
    the plan picks for them (csrc/cuda/launch_plan.h), and the peak memory of a training step
    beyond its inputs."""
    dirs, merge = list(case.directions), len(case.directions) > 1
    fwd_bytes, bwd_bytes = case_bytes(case)
    n_sets = max(1, min(4, math.ceil(4 * l2_bytes / fwd_bytes)))
    sets = [make_inputs(case, 'cuda', seed) for seed in range(n_sets)]
    for s in sets:
        s['u'] = s['u'] if merge else None

    chunk = case.chunk
    # (nothing saved for the backward where the kernels recompute it, as the op does on CUDA)
    recomputed = recomputes_hidden(chunk, case.H, case.W)

    def forward(s, save):
        return ext.forward(s['x'], s['gates'], s['lam'], s['u'], dirs, chunk, True, merge,
                           save and not recomputed)

    def backward(s, grad, saved):
        return ext.backward(grad, s['x'], s['gates'], s['lam'], s['u'], saved, dirs, chunk, True,
                            merge)

    fwd = _rotating(lambda i: forward(sets[i], False), n_sets)
    saved = []
    for s in sets:
        out, hidden = forward(s, True)
        saved.append((torch.randn_like(out), hidden if merge else out))
        del out
    bwd = _rotating(lambda i: backward(sets[i], *saved[i]), n_sets)
    row = dict(name=case.name, B=case.B, C=case.C, H=case.H, W=case.W, directions=dirs,
               G=case.groups, dtype=str(case.dtype).removeprefix('torch.'), chunk=chunk,
               n_input_sets=n_sets)
    for key, fn in (('fwd', fwd), ('bwd', bwd)):
        row[f'{key}_ms'] = timer.median_ms(fn, reps, warmup)
        row[f'{key}_plan'] = ext.plan([case.B, case.C, case.H, case.W], case.groups, dirs, chunk,
                                      case.dtype, key == 'bwd')
    del saved

    def train_step():
        out, hidden = forward(sets[0], True)
        return backward(sets[0], torch.ones_like(out), hidden if merge else out)

    row['peak_fwd_bwd_gib'] = timer.peak_gib(train_step)
    row['dwconv_fwd_ms'], row['dwconv_bwd_ms'] = depthwise_conv_ms(case, timer, reps, warmup)
    row['fwd_floor_ms'], row['bwd_floor_ms'] = fwd_bytes / bandwidth * 1e3, bwd_bytes / bandwidth * 1e3
    row['fwd_eff'], row['bwd_eff'] = row['fwd_floor_ms'] / row['fwd_ms'], row['bwd_floor_ms'] / row['bwd_ms']
    return row


def depthwise_conv_ms(case: OpCase, timer: Timer, reps: int, warmup: int) -> Tuple[float, float]:
    """Forward and backward (input and weight gradients) ms of a 3x3 depth-wise
    ``nn.Conv2d`` over the case's x (B, C, H, W), channels_last: the cost of the cheapest
    spatial mixing layer on the same tensor, a floor users know."""
    conv = torch.nn.Conv2d(case.C, case.C, 3, padding=1, groups=case.C).to(
        'cuda', case.dtype, memory_format=torch.channels_last)
    x = torch.randn(case.B, case.C, case.H, case.W, device='cuda', dtype=case.dtype).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    with torch.no_grad():
        fwd = timer.median_ms(lambda: conv(x), reps, warmup)
    out = conv(x)
    grad = torch.randn_like(out)
    bwd = timer.median_ms(lambda: torch.autograd.grad(out, (x, conv.weight), grad, retain_graph=True),
                          reps, warmup)
    return fwd, bwd


def reference_loop_ms(timer: Timer) -> float:
    """The PyTorch reference loop, forward, at the paper's shape (fp32, one direction)."""
    s = make_inputs(GPU_CASES[0], 'cuda', seed=0)
    with torch.no_grad():
        return timer.median_ms(lambda: gspn_scan_ref(s['x'], s['gates'][:, 0], s['lam'][:, 0],
                                                     'top_down'), 3, 1)


def sdpa_sweep(ext, sizes: Sequence[int], timer: Timer, bandwidth: float, C: int = 32) -> List[Dict]:
    """The fused op (4 directions, G=1, C channels, bf16, one image, forward) and SDPA
    (bf16, 8 heads x 64) at equal tokens; SDPA is skipped where flash attention at about
    500 TFLOP/s would take more than about 3 s."""
    import torch.nn.functional as F
    rows = []
    for side in sizes:
        case = OpCase(f'{side}^2', 1, C, side, side, DIRS4, 1, torch.bfloat16)
        tokens = side * side
        s = make_inputs(case, 'cuda', seed=side)
        entry = dict(side=side, tokens=tokens, op_floor_ms=case_bytes(case)[0] / bandwidth * 1e3,
                     op_fwd_ms=timer.median_ms(lambda: ext.forward(
                         s['x'], s['gates'], s['lam'], s['u'], list(DIRS4), 0, True, True, False), 20, 3),
                     sdpa_ms=None)
        del s
        if 4 * tokens * tokens * 512 / 5e14 < 3.0:
            try:
                q = torch.randn(1, 8, tokens, 64, device='cuda', dtype=torch.bfloat16)
                entry['sdpa_ms'] = timer.median_ms(lambda: F.scaled_dot_product_attention(q, q, q),
                                                   20 if tokens <= 128 * 128 else 3, 1)
                del q
            except torch.OutOfMemoryError:
                pass
        torch.cuda.empty_cache()
        rows.append(entry)
    return rows


def run_gpu(cases: Sequence[OpCase] = GPU_CASES, reference: bool = True,
            sdpa_sizes: Sequence[int] = (64, 128, 256, 512, 1024, 2048), reps: int = 20,
            warmup: int = 3, commit: Optional[str] = None, command: str = '',
            on_case: Callable[[Dict], None] = lambda row: None) -> Dict:
    """The GPU benchmark's record; ``on_case`` sees each case's row as it is measured."""
    ext = load_extension('cuda')
    timer = Timer('cuda')
    props = torch.cuda.get_device_properties(0)
    bandwidth = copy_bandwidth(timer, reps=max(2, min(10, reps)))
    result = dict(run_stamp('cuda', commit), command=command, bandwidth_tbs=bandwidth / 1e12, copy_gib=2.0,
                  reps=reps, warmup=warmup, cases=[])
    for case in cases:
        row = run_gpu_case(ext, case, bandwidth, props.L2_cache_size, timer, reps, warmup)
        on_case(row)
        result['cases'].append(row)
        torch.cuda.empty_cache()
    if reference:
        result['reference_loop_ms'] = reference_loop_ms(timer)
    result['sdpa'] = sdpa_sweep(ext, sdpa_sizes, timer, bandwidth)
    return result


def _pct(value: float) -> str:
    return f'{value:.0%}'


def _launches(row: Dict) -> str:
    """The plan's launches of a row: forward, then backward where it differs."""
    fwd, bwd = row.get('fwd_plan'), row.get('bwd_plan')
    if not fwd:
        return '-'
    return '; '.join(fwd) + ('' if bwd == fwd else ' / bwd: ' + '; '.join(bwd))


def gpu_markdown(result: Dict) -> str:
    lines = [f"# GSPN-2 fused op on {result['device']}", '',
             f"{report.stamp_line(result)}; copy bandwidth {result['bandwidth_tbs']:.2f} TB/s "
             f"(bytes read + written of a {result['copy_gib']} GiB D2D copy). Medians of "
             f"{result['reps']} runs after {result['warmup']} warm-ups, CUDA events, rotating "
             'input sets exceeding 4x the L2; floor = the bytes a call must move at that '
             'bandwidth, eff = floor / time. "launches": what the launch plan picks '
             '(csrc/cuda/launch_plan.h, docs/ops.md), forward then backward where they differ.'
             + (f" Produced by `{result['command']}`." if result.get('command') else ''), '']
    header = ['case', 'B', 'C', 'HxW', 'dirs', 'G', 'dtype', 'chunk', 'fwd ms', 'floor', 'eff',
              'bwd ms', 'floor', 'eff', 'peak fwd+bwd GiB', 'dw-conv 3x3 fwd / bwd ms',
              'launches']
    lines.append(report.table(header, (
        [r['name'], r['B'], r['C'], f"{r['H']}x{r['W']}", len(r['directions']), r['G'], r['dtype'],
         r.get('chunk', 0) or '-',
         f"{r['fwd_ms']:.3f}", f"{r['fwd_floor_ms']:.3f}", _pct(r['fwd_eff']),
         f"{r['bwd_ms']:.3f}", f"{r['bwd_floor_ms']:.3f}", _pct(r['bwd_eff']),
         f"{r['peak_fwd_bwd_gib']:.2f}",
         f"{r['dwconv_fwd_ms']:.3f} / {r['dwconv_bwd_ms']:.3f}" if 'dwconv_fwd_ms' in r else '-',
         _launches(r)]
        for r in result['cases'])))
    if result.get('reference_loop_ms'):
        lines += ['', 'PyTorch reference loop, paper shape (fp32, 1 direction, B=16, C=8, 1024^2), '
                      f"forward: {result['reference_loop_ms']:.1f} ms."]
    if result.get('sdpa'):
        lines += ['', 'Fused op (4 directions, G=1, C=32, bf16, B=1, forward) vs SDPA '
                      '(bf16, 8 heads x 64, B=1) at equal tokens:', '',
                  report.table(['side', 'tokens', 'op fwd ms', 'SDPA ms', 'SDPA / op'], (
                      [e['side'], e['tokens'], f"{e['op_fwd_ms']:.3f}",
                       '-' if e['sdpa_ms'] is None else f"{e['sdpa_ms']:.3f}",
                       '-' if e['sdpa_ms'] is None else f"{e['sdpa_ms'] / e['op_fwd_ms']:.1f}x"]
                      for e in result['sdpa']))]
    return '\n'.join(lines) + '\n'


def plot(result: Dict, stem) -> List[Path]:
    """``<stem>_efficiency.png`` (forward and backward efficiency per case) and, with an SDPA
    sweep, ``<stem>_time_vs_resolution.png``."""
    title = f"{result['device']}, torch {result['torch']}, {result['date']}, {result['commit']}"
    cases = result['cases']
    paths = [report.plot_bars(f'{stem}_efficiency.png', [r['name'] for r in cases],
                              {'forward': [r['fwd_eff'] for r in cases],
                               'backward': [r['bwd_eff'] for r in cases]},
                              'efficiency (bytes floor / time)', title)]
    if result.get('sdpa'):
        rows = result['sdpa']
        series = {'GSPN-2 fused fwd (C=32, 4 dirs)': [(e['tokens'], e['op_fwd_ms']) for e in rows],
                  'floor (bytes)': [(e['tokens'], e['op_floor_ms']) for e in rows],
                  'SDPA bf16 8x64': [(e['tokens'], e['sdpa_ms']) for e in rows if e['sdpa_ms']]}
        paths.append(report.plot_lines(f'{stem}_time_vs_resolution.png', series,
                                       'tokens (H x W)', 'ms', title))
    return paths
