"""Timing the compiled propagation op against its pure-PyTorch reference, and the GPU cases.

Used by ``tools/benchmark_op_cpu.py``; the figures land in ``docs/benchmarks/op_cpu.{md,json}``.
``GPU_CASES`` and ``make_gpu_inputs`` are the cases of the GPU benchmark and profile
(``tools/benchmark_op.py``, ``tools/profile_op.py``, issue 4).
Each case is timed as the median of several runs after a warm-up run, forward alone (under
``torch.no_grad``) and forward + backward (``torch.autograd.grad`` for every input, so no
gradient accumulation is timed). Wall-clock time is what a user waits; the process CPU time
(all threads) is recorded too, as it is less disturbed by other processes on a shared machine.
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ._build import REPO_ROOT, build_cpu_variant, load_extension
from .propagate import gspn_propagate, gspn_scan
from .reference import gspn_propagate_ref, gspn_scan_ref


DIRS4 = [0, 1, 2, 3]

# name, B, C, H, W, directions, G (None = C), dtype, targets (fwd, bwd efficiency)
GPU_CASES = [
    ('paper fp32 1dir', 16, 8, 1024, 1024, [0], None, torch.float32, (0.90, 0.75)),
    ('paper bf16 1dir', 16, 8, 1024, 1024, [0], None, torch.bfloat16, (None, None)),
    ('4dir G1 bf16 56^2', 128, 24, 56, 56, DIRS4, 1, torch.bfloat16, (None, None)),
    ('4dir G1 bf16 28^2', 128, 48, 28, 28, DIRS4, 1, torch.bfloat16, (None, None)),
    ('4dir G1 bf16 14^2', 128, 96, 14, 14, DIRS4, 1, torch.bfloat16, (None, None)),
    ('4dir G1 bf16 7^2', 128, 192, 7, 7, DIRS4, 1, torch.bfloat16, (None, None)),
    ('4dir G1 fp32 28^2', 128, 48, 28, 28, DIRS4, 1, torch.float32, (None, None)),
    ('4dir G1 bf16 1024^2', 4, 32, 1024, 1024, DIRS4, 1, torch.bfloat16, (0.85, 0.70)),
    ('4dir G1 bf16 2048^2', 1, 32, 2048, 2048, DIRS4, 1, torch.bfloat16, (0.85, 0.70)),
    ('small batch fp32 1dir', 1, 8, 1024, 1024, [0], None, torch.float32, (None, None)),
]


def make_gpu_inputs(B: int, C: int, H: int, W: int, D: int, G: int, dtype: torch.dtype,
                    seed: int) -> Dict[str, torch.Tensor]:
    """Random x, gates, lam, u of one case on the current CUDA device."""
    gen = torch.Generator(device='cuda').manual_seed(seed)
    kw = dict(device='cuda', dtype=dtype, generator=gen)
    return dict(x=torch.randn(B, C, H, W, **kw), gates=torch.randn(B, D, G, 3, H, W, **kw),
                lam=torch.rand(B, D, C, H, W, **kw), u=torch.randn(B, D, C, H, W, **kw))


def _median_ms(fn: Callable[[], object], repeats: int) -> Tuple[float, float]:
    """Median wall-clock and process CPU time of ``fn()``, in ms."""
    fn()  # warm-up: extension loading, allocator, caches
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start_wall) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def _forward(fn, inputs, kwargs):
    def run():
        with torch.no_grad():
            return fn(*inputs, **kwargs)
    return run


def _forward_backward(fn, inputs, kwargs):
    grad_out = torch.randn_like(fn(*inputs, **kwargs).detach())

    def run():
        out = fn(*inputs, **kwargs)
        return torch.autograd.grad(out, inputs, grad_out)
    return run


def benchmark_cases(B: int, C: int, H: int, W: int, G: int, dtype: torch.dtype,
                    device: str) -> List[Dict]:
    """The benchmarked calls: ``gspn_propagate`` (merged) and ``gspn_scan`` in two directions."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    x = rand(B, C, H, W)
    gates, lam, u = rand(B, 4, G, 3, H, W), rand(B, 4, C, H, W), rand(B, 4, C, H, W)
    cases = [dict(name='gspn_propagate', op=gspn_propagate, ref=gspn_propagate_ref,
                  inputs=(x, gates, lam, u), kwargs={})]
    for direction in ('top_down', 'left_right'):
        g1 = gates[:, 0].detach().requires_grad_()
        l1 = lam[:, 0].detach().requires_grad_()
        cases.append(dict(name=f'gspn_scan({direction})', op=gspn_scan, ref=gspn_scan_ref,
                          inputs=(x, g1, l1), kwargs=dict(direction=direction)))
    return cases


def run_benchmark(B: int = 2, C: int = 16, H: int = 128, W: int = 128, G: int = 1,
                  dtype: torch.dtype = torch.float32, device: str = 'cpu',
                  repeats: int = 15, ref_repeats: int = 5) -> List[Dict]:
    """Median wall times (ms) of kernel and reference, forward and forward + backward, per
    case, with the speed-ups in wall-clock and in process CPU time."""
    rows = []
    for case in benchmark_cases(B, C, H, W, G, dtype, device):
        row = dict(case=case['name'])
        for mode, wrap in (('fwd', _forward), ('fwd+bwd', _forward_backward)):
            kernel, kernel_cpu = _median_ms(wrap(case['op'], case['inputs'], case['kwargs']),
                                            repeats)
            ref, ref_cpu = _median_ms(wrap(case['ref'], case['inputs'], case['kwargs']),
                                      ref_repeats)
            row[f'{mode} kernel ms'] = round(kernel, 2)
            row[f'{mode} reference ms'] = round(ref, 2)
            row[f'{mode} speed-up'] = round(ref / kernel, 1)
            row[f'{mode} CPU-time speed-up'] = round(ref_cpu / kernel_cpu, 1)
        rows.append(row)
    return rows


def cpu_extension_at(rev: str, build_dir: Path):
    """The CPU extension built from ``csrc/`` of git revision ``rev`` (for A/B timings), in
    ``build_dir``."""
    src = build_dir / 'src'
    src.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(['git', 'archive', rev, 'csrc'], cwd=REPO_ROOT, capture_output=True)
    if archive.returncode != 0:
        raise ValueError(f'cannot read csrc/ at git revision {rev!r}: '
                         f'{archive.stderr.decode().strip()}')
    subprocess.run(['tar', '-x', '-C', str(src)], input=archive.stdout, check=True)
    name = 'gspn2_dense_cpu_at_' + ''.join(c if c.isalnum() else '_' for c in rev)
    return build_cpu_variant(src / 'csrc', name, build_dir)


def compare_builds(other, B: int, C: int, H: int, W: int, G: int, dtype: torch.dtype,
                   repeats: int) -> List[Dict]:
    """Forward and backward of this checkout's CPU extension and of ``other`` (an extension
    module, e.g. :func:`cpu_extension_at`) on the same inputs, timed alternately in this
    process (medians of ``repeats``); speed-up = other's time / this one's."""
    this = load_extension('cpu')
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    x = rand(B, C, H, W)
    gates, lam, u = rand(B, 4, G, 3, H, W), rand(B, 4, C, H, W).sigmoid(), rand(B, 4, C, H, W)
    cases = [('4 directions merged', [0, 1, 2, 3], True)]
    cases += [(f'{name} (one direction)', [d], False)
              for name, d in (('top_down', 0), ('left_right', 2))]
    rows = []
    for name, directions, merge in cases:
        D = len(directions)
        args = (x, gates[:, :D].contiguous(), lam[:, :D].contiguous(),
                u[:, :D].contiguous() if merge else None)
        grad_out = rand(B, C, H, W) if merge else rand(B, D, C, H, W)
        times = {}
        for label, ext in (('this', this), ('other', other)):
            out, hidden = ext.forward(*args, directions, 0, True, merge, True)
            saved = hidden if merge else out
            times[label] = dict(
                fwd=lambda ext=ext: ext.forward(*args, directions, 0, True, merge, True),
                bwd=lambda ext=ext, saved=saved: ext.backward(grad_out, *args, saved, directions,
                                                              0, True, merge))
        samples = {(label, mode): [] for label in times for mode in ('fwd', 'bwd')}
        for _ in range(repeats):
            for label, fns in times.items():
                for mode, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    samples[label, mode].append((time.perf_counter() - start) * 1e3)
        row = dict(case=name)
        for mode in ('fwd', 'bwd'):
            mine, theirs = (statistics.median(samples[label, mode]) for label in ('this', 'other'))
            row[f'{mode} ms'] = round(mine, 3)
            row[f'{mode} ms, other'] = round(theirs, 3)
            row[f'{mode} speed-up'] = round(theirs / mine, 2)
        rows.append(row)
    return rows


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def load_average() -> List[float]:
    """The 1, 5 and 15 minute load averages: how busy the machine was."""
    return [round(v, 2) for v in os.getloadavg()]


# Environment variables that change CPU timings (THP_MEM_ALLOC_ENABLE=1: PyTorch's CPU
# allocator asks for transparent huge pages for large tensors, docs/ops.md).
TIMING_ENVIRONMENT = ('THP_MEM_ALLOC_ENABLE', 'OMP_NUM_THREADS')


def machine_info() -> Dict:
    """What the figures were measured on (``kernel_isa``: which build of the CPU kernel's hot
    loops ran, 'x86-64-v3' or 'baseline'; ``environment``: the TIMING_ENVIRONMENT set)."""
    return dict(cpu=_cpu_model(), cores=os.cpu_count(), torch=torch.__version__,
                kernel_isa=load_extension('cpu').kernel_isa(),
                environment={k: os.environ[k] for k in TIMING_ENVIRONMENT if k in os.environ},
                python=platform.python_version(),
                date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                git_commit=_git_commit())


def markdown_table(rows: Sequence[Dict]) -> str:
    keys = list(rows[0])
    lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
    lines += ['| ' + ' | '.join(str(r[k]) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


def run_thread_counts(threads: Sequence[int], shape: Dict, dtype: str, repeats: int,
                      ref_repeats: int) -> List[Dict]:
    """:func:`run_benchmark` once per torch thread count; prints each table as it comes."""
    runs = []
    for n in threads:
        torch.set_num_threads(n)
        rows = run_benchmark(**shape, dtype=getattr(torch, dtype), device='cpu',
                             repeats=repeats, ref_repeats=ref_repeats)
        runs.append(dict(torch_threads=n, results=rows, load_average_after=load_average()))
        print(f'{n} torch thread(s):\n{markdown_table(rows)}\n', flush=True)
    return runs


def write_report(out: Path, shape: Dict, runs: Sequence[Dict], dtype: str, repeats: int,
                 ref_repeats: int, command: str, comparison: Optional[Dict] = None) -> None:
    """``<out>.json`` (figures and machine) and ``<out>.md`` (one table per thread count, and
    the comparison with another build: ``dict(against=rev, threads=n, rows=compare_builds())``)."""
    machine = machine_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    record = dict(shape=shape, dtype=dtype, repeats=repeats, ref_repeats=ref_repeats,
                  runs=list(runs), comparison=comparison, machine=machine)
    out.with_suffix('.json').write_text(json.dumps(record, indent=2) + '\n')
    shape_text = ', '.join(f'{k}={v}' for k, v in shape.items())
    sections = [
        f"## {r['torch_threads']} torch thread(s)\n\n{markdown_table(r['results'])}\n\n"
        f"Load average (1, 5, 15 min) after the run: {r['load_average_after']}.\n"
        for r in runs]
    if comparison is not None:
        sections.append(
            f"## Against the kernel of {comparison['against']}\n\nThe raw extension calls "
            f"(`forward` / `backward`, normalised gates, G={shape['G']}) of this checkout and of "
            f"`csrc/` at {comparison['against']}, built alike and timed alternately in one process "
            f"with {comparison['threads']} torch thread(s); speed-up = the other build's time / "
            f"this one's.\n\n{markdown_table(comparison['rows'])}\n")
    out.with_suffix('.md').write_text(
        f'# CPU kernel vs pure-PyTorch reference\n\n'
        f'`{command}`: {shape_text}, {dtype}; median of {repeats} (kernel) / {ref_repeats} '
        f'(reference) runs after a warm-up; fwd+bwd = `torch.autograd.grad` for every input. '
        f'Speed-up = reference time / kernel time, in wall-clock and in process CPU time '
        f'(all threads). On a machine shared with other jobs (see the load averages), '
        f'multi-threaded timings mostly measure waits for descheduled threads at the end of '
        f'each parallel region; the one-thread figures are the stable ones.\n\n'
        + '\n'.join(sections)
        + f"\nMachine: {machine['cpu']}, {machine['cores']} cores, kernel loops built for "
        f"{machine['kernel_isa']}, environment {machine['environment'] or 'as is'}, "
        f"torch {machine['torch']}, "
        f"Python {machine['python']}, commit {machine['git_commit']}, {machine['date']}.\n")
