"""Where the GPU time goes, kernel by kernel (``tools/profile_op.py``).

Op cases (:data:`~gspn2_dense.benchmarks.op.GPU_CASES`) run forward (``save_hidden`` off, as
the op benchmark times it) and backward; a backbone runs a training step (bfloat16 autocast,
cross-entropy, backward, AdamW step), its kernels also grouped by what they do. Each is called
``reps`` times under ``torch.profiler`` after a warm-up, and every CUDA kernel's device time is
summed by name and divided by ``reps``: ms per call, launches per call and share of the call.
"""
import re
from collections import defaultdict
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..ops._build import load_extension
from ..ops.propagate import recomputes_hidden
from . import report
from .op import OpCase, make_inputs
from .timing import run_stamp

KernelTimes = Dict[str, Tuple[float, float]]  # kernel name -> (device us, launches) per call

# kernel-name pattern -> category, first match wins (backbone profiles)
CATEGORIES = [
    # (first: inductor names its generated kernels after every op they fuse, e.g.
    # triton_red_fused__to_copy_add_convolution_native_layer_norm_permute, which the patterns
    # below would file under one of those ops)
    ('inductor-fused (triton)', r'^triton_'),
    ('gspn2 transpose', r'transpose_planes|TransposeParams'),
    ('fused layer norm', r'gspn2::cuda::.*(layer_norm|sum_partial_rows)'),
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


def kernel_times(fn: Callable[[], object], reps: int) -> KernelTimes:
    """Device time and launches per call of every CUDA kernel of ``fn`` (after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile
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


def op_times(fn: Callable[[], object], reps: int, top: int = 30,
             device: str = 'cuda') -> List[Tuple[str, str, float, float]]:
    """The PyTorch operators of ``fn`` whose own kernels take the most time on ``device``
    ('cuda': device time; 'cpu': CPU time), grouped by input shapes: (operator, shapes, us per
    call, calls per call), slowest first. Says which call of the model a kernel of
    :func:`kernel_times` comes from."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(reps):
            fn()
        sync()
    rows = []
    for avg in prof.key_averages(group_by_input_shape=True):
        us = (getattr(avg, 'self_device_time_total', None) if cuda else avg.self_cpu_time_total)
        if us is None:
            us = avg.self_cuda_time_total
        if us > 0:
            shapes = ', '.join(str(tuple(s)) for s in avg.input_shapes if s)
            rows.append((avg.key, shapes, us / reps, avg.count / reps))
    return sorted(rows, key=lambda r: -r[2])[:top]


def grouped(times: KernelTimes) -> KernelTimes:
    """Kernel times summed by :data:`CATEGORIES` ('other' for the rest)."""
    groups = defaultdict(lambda: [0.0, 0])
    for name, (t, n) in times.items():
        category = next((c for c, pattern in CATEGORIES if re.search(pattern, name, re.I)), 'other')
        groups[category][0] += t
        groups[category][1] += n
    return {k: tuple(v) for k, v in groups.items()}


def _short(name: str, width: int = 90) -> str:
    name = re.sub(r'\s+', ' ', name)
    return name if len(name) <= width else name[:width - 3] + '...'


def kernel_table(times: KernelTimes, title: str, top: int = None) -> Tuple[str, float]:
    """The kernels by time, slowest first (the ``top`` ones), and the total us per call."""
    total = sum(t for t, _ in times.values())
    rows = sorted(times.items(), key=lambda kv: -kv[1][0])[:top]
    body = report.table(['kernel', 'ms', 'launches', 'share'], (
        [f'`{_short(k)}`', f'{t / 1e3:.3f}', f'{n:g}', f'{t / max(total, 1e-9):.0%}']
        for k, (t, n) in rows))
    return f'**{title}**: {total / 1e3:.3f} ms of kernels per call\n\n{body}\n', total


def profile_op_case(ext, case: OpCase, reps: int) -> Tuple[str, Dict]:
    """The markdown section and the record of one op case."""
    dirs, merge, chunk = list(case.directions), len(case.directions) > 1, case.chunk
    s = make_inputs(case, 'cuda', seed=0)
    u = s['u'] if merge else None
    # (local scans and small planes save no hidden state: their backward recomputes it)
    out, hidden = ext.forward(s['x'], s['gates'], s['lam'], u, dirs, chunk, True, merge,
                              not recomputes_hidden(chunk, case.H, case.W))
    grad, saved = torch.randn_like(out), hidden if merge else out
    fwd = kernel_times(lambda: ext.forward(s['x'], s['gates'], s['lam'], u, dirs, chunk, True,
                                           merge, False), reps)
    bwd = kernel_times(lambda: ext.backward(grad, s['x'], s['gates'], s['lam'], u, saved, dirs,
                                            chunk, True, merge), reps)
    head = (f'### {case.name} (B={case.B}, C={case.C}, {case.H}x{case.W}, {len(dirs)} dirs, '
            f"G={case.groups}, {str(case.dtype).removeprefix('torch.')}"
            + (f', chunk {chunk}' if chunk else '') + ')\n')
    section = '\n'.join([head, kernel_table(fwd, 'forward')[0], kernel_table(bwd, 'backward')[0]])
    return section, dict(name=case.name, forward_us=fwd, backward_us=bwd)


def profile_backbone(model_name: str, batch: int, img_size: int, reps: int,
                     compile: bool = False) -> Tuple[str, Dict]:
    """The markdown section and the record of a timm model's training step (with
    ``compile``, of the ``torch.compile``-d model, profiled after the compiling step)."""
    import timm
    import gspn2_dense  # noqa: F401  (registers the models)
    model = timm.create_model(model_name).to('cuda').train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if compile:
        model = torch.compile(model)
    images = torch.randn(batch, 3, img_size, img_size, device='cuda')
    labels = torch.randint(0, model.num_classes, (batch,), device='cuda')

    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    times = kernel_times(step, reps)
    head = (f'### {model_name} {"compiled " if compile else ""}training step (batch {batch}, '
            f'{img_size} px, bfloat16 autocast, AdamW)\n')
    parts = [head, kernel_table(grouped(times), 'by category')[0],
             kernel_table(times, 'top kernels', top=25)[0]]
    record = dict(name=model_name, batch=batch, img_size=img_size, compiled=compile,
                  kernels_us=times)
    if not compile:  # (a compiled step's operators are its graphs)
        ops = op_times(step, reps)
        parts.append('**operators by own device time** (input shapes; the model call each '
                     'kernel comes from)\n\n' + report.table(
                         ['operator', 'input shapes', 'ms', 'calls'],
                         ([f'`{name}`', _short(shapes, 110), f'{t / 1e3:.3f}', f'{n:g}']
                          for name, shapes, t, n in ops)) + '\n')
        record['operators_us'] = [dict(op=name, shapes=shapes, us=t, calls=n)
                                  for name, shapes, t, n in ops]
    return '\n'.join(parts), record


def markdown(result: Dict, sections: Sequence[str]) -> str:
    return (f"# Kernel time breakdown on {result['device']}\n\n{report.stamp_line(result)}; "
            f"`{result['command']}`; device time per call summed by kernel (torch.profiler, "
            f"{result['reps']} calls after a warm-up). Kernels on concurrent streams overlap "
            '(the op runs the vertical half of a transposed split on a side stream), so a sum '
            "can exceed the call's time.\n\n" + '\n'.join(sections))


def run(cases: Sequence[OpCase] = (), backbone: str = None, batch: int = 128, img_size: int = 224,
        reps: int = 5, commit: str = None, command: str = '', compile: bool = False,
        on_section: Callable[[str], None] = lambda text: None) -> Tuple[Dict, str]:
    """Profile ``backbone`` when given, else the op ``cases``; returns the record and its
    markdown; ``on_section`` sees each section as it is done."""
    ext = load_extension('cuda')
    sections: List[str] = []
    result = dict(run_stamp('cuda', commit), command=command, reps=reps, results=[])
    jobs = ([lambda: profile_backbone(backbone, batch, img_size, reps, compile)] if backbone else
            [lambda case=case: profile_op_case(ext, case, reps) for case in cases])
    for job in jobs:
        section, record = job()
        on_section(section)
        sections.append(section)
        result['results'].append(record)
    return result, markdown(result, sections)
