"""Backbone speed and memory: GSPN-2 next to timm's Swin-T, ConvNeXt-T and ViT-S.

Three parts, every model measured in the same process:

1. **Throughput** at ``img_size`` (224), batch ``batch`` (128), bfloat16 autocast: images/s and
   peak memory of inference (``torch.no_grad``) and of a training step (forward,
   cross-entropy, backward, AdamW step), eager and ``torch.compile``-d side by side.
2. **Batch-1 latency** against input size (224 .. 4096 px), eager and replayed as a CUDA graph
   (captured from the eager model: no launch overhead), with the log-log slope of time
   against pixels between consecutive sizes (1 = linear in pixels, 2 = quadratic).
3. **Dense prediction**: mmseg's ``EncoderDecoder`` with the linear segmentation probe
   (``LinearSegHead`` on the last stage, 150 classes) on GSPN-2-T (``type='GSPN2'``) and on
   Swin-T / ConvNeXt-T (``type='TimmFeatures'``), forward + backward of the loss at 512, 1024
   and 2048 px, batch 2: ``probe`` (frozen backbone, the probe protocol) and ``finetune``
   (everything trained). Out-of-memory is reported as such. Modes: ``eager``, ``compiled``
   (the loss through ``torch.compile``) and ``graphed`` (probe only: the frozen backbone
   replayed from CUDA graphs, the backbones' ``cuda_graph=True``, the head eager).
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F

from . import report
from ..models.graphs import FrozenForwardGraphs
from ..models.variants import BASELINES, PAPER_VARIANTS, VARIANTS, timm_size_kwargs
from .timing import Timer, fmt, run_stamp

OURS = VARIANTS['gspn2_tiny'].name
SWIN, CONVNEXT, VIT = BASELINES['swin_t'], BASELINES['convnext_t'], BASELINES['vit_s']
MODELS = [v.name for v in PAPER_VARIANTS] + [SWIN, CONVNEXT, VIT]
COMPILED_MODELS = [OURS, SWIN, CONVNEXT]
LATENCY_MODELS = [OURS, CONVNEXT, VIT]
LATENCY_MODES = ('eager', 'cuda_graph', 'compiled_cuda_graph')  # (the graph ones need CUDA)
LATENCY_SIZES = [224, 512, 1024, 2048, 4096]
DENSE_MODELS = [OURS, SWIN, CONVNEXT]
DENSE_SIZES = [512, 1024, 2048]
DENSE_MODES = ('eager', 'compiled', 'graphed')
DENSE_REGIMES = ('probe', 'finetune')


def create(name: str, device: torch.device, memory_format=torch.contiguous_format,
           img_size: int = 224) -> torch.nn.Module:
    """A randomly initialised timm model for ``img_size`` inputs (ViTs take any size)."""
    return timm.create_model(name, **timm_size_kwargs(name, img_size)).to(device, memory_format=memory_format)


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def prepare(device: torch.device) -> None:
    """What every timing of this module assumes of its process: on CUDA the op's extension is
    built (a build on first use is not timed) and cuDNN's autotuner is on. The full benchmark
    and the one-process A/B tools (``swapped_throughput``, ``tools/device/*_ab.py``) call it,
    so that their figures are measured the same way."""
    if device.type == 'cuda':
        from ..ops._build import load_extension
        load_extension('cuda')
        torch.backends.cudnn.benchmark = True


def _release(device: torch.device) -> None:
    torch._dynamo.reset()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def _measure(row: dict, key: str, fn: Callable, timer: Timer, iters: int, warmup: int,
             batch: int) -> None:
    try:
        ms = timer.median_ms(fn, iters, warmup)
        row[f'{key}_ms'], row[f'{key}_img_s'] = ms, batch / ms * 1e3
        row[f'{key}_peak_gib'] = timer.peak_gib(fn)
    except torch.OutOfMemoryError:
        row[f'{key}_ms'] = row[f'{key}_img_s'] = row[f'{key}_peak_gib'] = None
        row[f'{key}_error'] = 'out of memory'


def throughput(name: str, mode: str, device: torch.device, dtype: torch.dtype, timer: Timer,
               img_size: int = 224, batch: int = 128, iters: int = 20, warmup: int = 3,
               memory_format=torch.contiguous_format) -> dict:
    """Inference and training-step images/s and peak memory; ``mode`` is eager or compiled."""
    torch.manual_seed(0)
    model = create(name, device, memory_format, img_size)
    row = dict(model=name, mode=mode, params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    run = torch.compile(model) if mode == 'compiled' else model
    x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=memory_format)
    target = torch.randint(0, model.num_classes, (batch,), device=device)

    def infer():
        with torch.no_grad(), _autocast(device, dtype):
            run(x)

    def train_step():
        with _autocast(device, dtype):
            loss = F.cross_entropy(run(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    # Compilation happens in the warm-up: at least two calls per graph (train and eval differ).
    warm = max(warmup, 3) if mode == 'compiled' else warmup
    for key, fn in (('infer', infer), ('train', train_step)):
        model.train(key == 'train')
        _measure(row, key, fn, timer, iters, warm, batch)
        optimizer.zero_grad(set_to_none=True)
    del run, model, optimizer, x
    _release(device)
    return row


def swapped_throughput(module, attr: str, variants: Sequence[Tuple[str, Optional[Callable], str]],
                       device: torch.device, dtype: torch.dtype, timer: Timer, batch: int = 128,
                       iters: int = 20, img_size: int = 224,
                       on_row: Callable[[dict], None] = lambda row: None) -> List[dict]:
    """Eager :func:`throughput` of each ``(label, replacement, model)`` in turn, with
    ``module.<attr>`` swapped for ``replacement`` during its run (None: the original), restored
    afterwards: an A/B of one function of the model in one process. Rows carry ``variant``."""
    prepare(device)
    original = getattr(module, attr)
    rows = []
    try:
        for label, replacement, model in variants:
            setattr(module, attr, original if replacement is None else replacement)
            row = throughput(model, 'eager', device, dtype, timer, img_size=img_size, batch=batch,
                             iters=iters)
            row['variant'] = label
            rows.append(row)
            on_row(row)
    finally:
        setattr(module, attr, original)
    return rows


def variant_table(rows: Sequence[dict]) -> str:
    """The markdown table of :func:`swapped_throughput`'s rows."""
    return report.table(['variant', 'infer img/s', 'train img/s', 'train peak GiB'],
                        [[r['variant'], f"{r['infer_img_s']:.0f}", f"{r['train_img_s']:.0f}",
                          fmt(r['train_peak_gib'], '.2f')] for r in rows])


def _cuda_graph(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> Callable[[], None]:
    """One inference of ``model`` on ``x`` captured into a CUDA graph the way the probes' frozen
    backbones are (:class:`~gspn2_dense.models.graphs.FrozenForwardGraphs`: the input copied in,
    the output copied out); returns its replay."""
    graphs = FrozenForwardGraphs(model, lambda t: (model(t),), max_graphs=1, warmup=3)

    def replay():
        with torch.no_grad(), _autocast(x.device, dtype):
            graphs(x)

    replay()  # (the capture)
    return replay


def latency(name: str, sizes: Sequence[int], mode: str, device: torch.device, dtype: torch.dtype,
            timer: Timer, iters: int = 10, warmup: int = 3) -> dict:
    """Batch-1 inference latency (ms) per size; ``mode`` is eager, cuda_graph (the eager model's
    kernels captured once and replayed) or compiled_cuda_graph (the same for the
    ``torch.compile``-d model, static shapes, one compilation per size: inductor's fused kernels,
    what ``mode="reduce-overhead"`` replays)."""
    if mode not in LATENCY_MODES:
        raise ValueError(f'mode must be one of {LATENCY_MODES}, got {mode!r}')
    points = []
    for size in sizes:
        torch.manual_seed(0)
        model = create(name, device, img_size=size).eval()  # (Swin's patch embedding fixes its size)
        x = torch.randn(1, 3, size, size, device=device)
        point = dict(size=size)
        try:
            if mode == 'compiled_cuda_graph':  # (_release below resets dynamo after each size)
                fn = _cuda_graph(torch.compile(model, dynamic=False), x, dtype)
            elif mode == 'cuda_graph':
                fn = _cuda_graph(model, x, dtype)
            else:
                def fn():
                    with torch.no_grad(), _autocast(device, dtype):
                        model(x)
            point['ms'] = timer.median_ms(fn, iters, warmup)
        except torch.OutOfMemoryError:
            point.update(ms=None, error='out of memory')
        except RuntimeError as err:  # e.g. an op that cannot be captured
            point.update(ms=None, error=str(err).splitlines()[0][:120])
        points.append(point)
        fn = model = None
        _release(device)
    for prev, cur in zip(points, points[1:]):
        if prev['ms'] and cur['ms']:
            cur['slope'] = math.log(cur['ms'] / prev['ms']) / math.log((cur['size'] / prev['size']) ** 2)
    return dict(model=name, mode=mode, points=points)


def probe_segmentor(name: str, img_size: int, num_classes: int = 150,
                    cuda_graph: bool = False) -> torch.nn.Module:
    """mmseg ``EncoderDecoder`` + ``LinearSegHead`` on the last stage of ``name``
    (``cuda_graph``: the backbone's option of that name)."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    import gspn2_dense.models.openmmlab  # noqa: F401  (registers GSPN2, TimmFeatures, heads)
    init_default_scope('mmseg')
    if name in VARIANTS:
        backbone = dict(type='GSPN2', arch=VARIANTS[name].arch, out_indices=(3,),
                        cuda_graph=cuda_graph)
        channels = timm.create_model(name, pretrained=False).num_features
    else:
        extra = timm_size_kwargs(name, img_size)
        backbone = dict(type='TimmFeatures', model_name=name, out_indices=(3,),
                        cuda_graph=cuda_graph, **extra)
        channels = timm.create_model(name, pretrained=False, **extra).num_features
    return MODELS.build(dict(
        type='EncoderDecoder', backbone=backbone,
        decode_head=dict(type='LinearSegHead', in_channels=channels, in_index=0,
                         num_classes=num_classes, norm_cfg=dict(type='BN', requires_grad=True),
                         align_corners=False,
                         loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0,
                                          avg_non_ignore=True)),
        train_cfg=dict(), test_cfg=dict(mode='whole')))


def dense(name: str, sizes: Sequence[int], device: torch.device, dtype: torch.dtype, timer: Timer,
          batch: int = 2, iters: int = 5, warmup: int = 2, mode: str = 'eager',
          regimes: Sequence[str] = DENSE_REGIMES) -> dict:
    """Forward + backward of the probe segmentor's loss, frozen (probe) and trained (finetune).

    ``mode='compiled'``: ``model.loss`` through ``torch.compile`` (static shapes: one compilation
    per size and regime, not timed; the warm-up runs it), what mmengine's ``compile`` option does
    to a training step, so that compiled models are compared with compiled ones.
    ``mode='graphed'``: the probe with the frozen backbone replayed from CUDA graphs (its
    capture happens in the warm-up); it has no finetune regime (nothing to replay there)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    if mode not in DENSE_MODES:
        raise ValueError(f'mode must be one of {DENSE_MODES}, got {mode!r}')
    unknown = [r for r in regimes if r not in DENSE_REGIMES]
    if unknown or not regimes:
        raise ValueError(f'regimes must be a non-empty selection of {DENSE_REGIMES}, got {list(regimes)}')
    if mode == 'graphed' and (list(regimes) != ['probe'] or device.type != 'cuda'):
        raise ValueError(f"mode='graphed' replays a frozen backbone on CUDA: it needs regimes=['probe'] "
                         f'and a CUDA device, got regimes={list(regimes)} on {device}')
    points = []
    for size in sizes:
        torch.manual_seed(0)
        model = probe_segmentor(name, size, cuda_graph=mode == 'graphed').to(device).train()
        loss_fn = torch.compile(model.loss, dynamic=False) if mode == 'compiled' else model.loss
        x = torch.randn(batch, 3, size, size, device=device)
        samples = []
        for _ in range(batch):
            sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                                 pad_shape=(size, size)))
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, size, size), device=device))
            samples.append(sample)

        def step():
            with _autocast(device, dtype):
                losses = loss_fn(x, samples)
            sum(v for k, v in losses.items() if 'loss' in k).backward()
            model.zero_grad(set_to_none=True)

        point = dict(size=size)
        for regime in regimes:
            model.backbone.requires_grad_(regime == 'finetune')
            model.backbone.train(regime == 'finetune')
            _measure(point, regime, step, timer, iters, warmup, batch)
        points.append(point)
        del model, loss_fn, x, samples
        _release(device)
    return dict(model=name, mode=mode, points=points)


def _ratio(rows: Dict[str, dict], key: str, num: str, den: str) -> Optional[float]:
    a, b = rows.get(num, {}).get(key), rows.get(den, {}).get(key)
    return a / b if a and b else None


def run(device: torch.device, dtype: torch.dtype, models: Sequence[str] = MODELS,
        compiled_models: Sequence[str] = COMPILED_MODELS,
        latency_models: Sequence[str] = LATENCY_MODELS,
        latency_modes: Sequence[str] = ('eager', 'cuda_graph'),
        sizes: Sequence[int] = LATENCY_SIZES, dense_models: Sequence[str] = DENSE_MODELS,
        dense_sizes: Sequence[int] = DENSE_SIZES, dense_batch: int = 2,
        dense_modes: Sequence[str] = ('eager',), dense_regimes: Sequence[str] = DENSE_REGIMES,
        img_size: int = 224,
        batch: int = 128, iters: int = 20, latency_iters: int = 10, warmup: int = 3,
        memory_format=torch.contiguous_format, commit: Optional[str] = None, command: str = '',
        on_row: Callable[[str, dict], None] = lambda part, row: None,
        on_result: Callable[[dict], None] = lambda result: None) -> dict:
    """The three parts in one process; ``on_row`` sees each row (``part``: throughput,
    latency or dense) as it is measured, and ``on_result`` the record so far after each one (the
    tool rewrites its report there, so that a run cut short by a time limit or a crash keeps
    what it measured). CUDA graphs are skipped on the CPU; the dense part
    needs mmseg and is skipped without it (the record says so)."""
    import importlib.util
    device = torch.device(device)
    prepare(device)
    timer = Timer(device)
    result = dict(run_stamp(device, commit), dtype=str(dtype).removeprefix('torch.'),
                  img_size=img_size, batch=batch, dense_batch=dense_batch,
                  memory_format='channels_last' if memory_format == torch.channels_last else 'NCHW',
                  command=command, throughput=[], latency=[], dense=[], skipped=[])

    def add(part, row):
        on_row(part, row)
        result[part].append(row)
        on_result(result)

    for mode, names in (('eager', models), ('compiled', compiled_models)):
        for name in names:
            add('throughput', throughput(name, mode, device, dtype, timer, img_size, batch, iters,
                                         warmup, memory_format))
    for name in latency_models:
        for mode in latency_modes:
            if mode != 'eager' and device.type != 'cuda':
                continue
            add('latency', latency(name, sizes, mode, device, dtype, timer, latency_iters, warmup))
    if dense_models and importlib.util.find_spec('mmseg') is None:
        result['skipped'].append('dense prediction: mmseg is not installed')
    else:
        for mode in dense_modes:
            # (graphed: the probe regime on CUDA only, what a replayed frozen backbone is)
            regimes = [r for r in dense_regimes if r == 'probe'] if mode == 'graphed' else dense_regimes
            if mode == 'graphed' and (device.type != 'cuda' or not regimes):
                result['skipped'].append('dense prediction, graphed: needs CUDA and the probe regime')
                continue
            for name in dense_models:
                add('dense', dense(name, dense_sizes, device, dtype, timer, dense_batch, mode=mode,
                                   regimes=regimes))
    return result


def markdown(result: dict) -> str:
    """The report: one table per part, ratios GSPN-2-T / Swin-T."""
    lines = [f"# Backbone throughput on {result['device']}", '',
             f"{report.stamp_line(result)}. Random init, {result['dtype']} autocast, "
             f"{result['memory_format']} input. Produced by `{result['command']}`."]
    lines += [f'Skipped: {reason}.' for reason in result.get('skipped', [])]
    if result['throughput']:
        lines += ['', f"## {result['img_size']}x{result['img_size']}, batch {result['batch']}", '',
                  report.table(['model', 'mode', 'params (M)', 'infer img/s', 'infer peak GiB',
                                'train img/s', 'train peak GiB'], (
                      [r['model'], r['mode'], f"{r['params_m']:.1f}",
                       fmt(r.get('infer_img_s'), '.0f', 'OOM'), fmt(r.get('infer_peak_gib'), '.2f'),
                       fmt(r.get('train_img_s'), '.0f', 'OOM'), fmt(r.get('train_peak_gib'), '.2f')]
                      for r in result['throughput']))]
    for mode in ('eager', 'compiled'):
        rows = {r['model']: r for r in result['throughput'] if r['mode'] == mode}
        if OURS in rows and SWIN in rows:
            cells = [f"{k} {fmt(_ratio(rows, f'{k}_img_s', OURS, SWIN), '.2f')}x"
                     for k in ('infer', 'train')]
            mem = _ratio(rows, 'train_peak_gib', OURS, SWIN)
            lines.append(f"\n{mode}: GSPN-2-T / Swin-T images/s: {', '.join(cells)}; "
                         f"training peak memory {fmt(mem, '.2f')}x.")
    if result['latency']:
        sizes = [p['size'] for p in result['latency'][0]['points']]

        def cell(p):
            text = fmt(p.get('ms'), '.2f', p.get('error', 'failed'))
            return text + (f" ({p['slope']:.2f})" if p.get('slope') is not None else '')

        lines += ['', '## Batch-1 inference latency (ms) against input size', '',
                  report.table(['model', 'mode'] + [f'{s} px' for s in sizes], (
                      [e['model'], e['mode']] + [cell(p) for p in e['points']]
                      for e in result['latency'])),
                  '', 'In brackets: log-log slope of time against pixels from the previous size '
                      '(1 = linear in pixels, 2 = quadratic).']
    if result['dense']:
        lines += ['', f"## Dense prediction: linear-probe EncoderDecoder, batch {result['dense_batch']}, "
                      'forward + backward of the loss', '',
                  report.table(['backbone', 'mode', 'size', 'probe ms', 'probe peak GiB', 'finetune ms',
                                'finetune peak GiB'], (
                      [e['model'], e.get('mode', 'eager'), p['size'], _dense_cell(p, 'probe', 'ms', '.1f'),
                       _dense_cell(p, 'probe', 'peak_gib', '.2f'), _dense_cell(p, 'finetune', 'ms', '.1f'),
                       _dense_cell(p, 'finetune', 'peak_gib', '.2f')]
                      for e in result['dense'] for p in e['points']))]
        for mode in DENSE_MODES:
            rows = {e['model']: e for e in result['dense'] if e.get('mode', 'eager') == mode}
            if OURS in rows and SWIN in rows:
                ours = {p['size']: p.get('probe_ms') for p in rows[OURS]['points']}
                swin = {p['size']: p.get('probe_ms') for p in rows[SWIN]['points']}
                cells = [f"{size} px {ours[size] / swin[size]:.2f}x" for size in ours
                         if ours[size] and swin.get(size)]
                if cells:
                    lines.append(f"\n{mode}: GSPN-2-T / Swin-T probe step time: {', '.join(cells)}.")
    return '\n'.join(lines) + '\n'


def _dense_cell(point: dict, regime: str, key: str, spec: str) -> str:
    if f'{regime}_ms' not in point:
        return '-'  # (a regime not measured)
    return fmt(point.get(f'{regime}_{key}'), spec, 'OOM')


def plot(result: dict, stem) -> List:
    """``<stem>_latency.png``: batch-1 latency against pixels, log-log, per model and mode."""
    if not result['latency']:
        return []
    series = {f"{e['model']} {e['mode']}": [(p['size'] ** 2, p['ms']) for p in e['points'] if p.get('ms')]
              for e in result['latency']}
    title = f"{result['device']}, torch {result['torch']}, {result['date']}, {result['commit']}"
    return [report.plot_lines(f'{stem}_latency.png', series, 'pixels (H x W)', 'ms, batch 1', title)]
