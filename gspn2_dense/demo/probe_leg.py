"""The demo's probe leg: linear probes for segmentation and depth on CPU, against chance.

:func:`run_probe_leg` writes the synthetic data if absent, trains and tests a multi-scale linear probe
on a frozen backbone for each task, prints the metrics next to a chance baseline computed on the
same test images, and saves ``image | ground truth | prediction`` panels under the work dir
(titled, with a class legend or a depth colour bar).

The backbone is a randomly initialised ``gspn2_nano`` unless ``backbone_ckpt`` names a converted
tower checkpoint (the hook for the CLIP leg: ``run_probe_leg(backbone_ckpt=run_clip_leg(...))``).
"""
import os
import os.path as osp
import time
from typing import Callable, Dict, Optional, Sequence

import cv2
import numpy as np
import torch

from ..evaluation.depth_metric import MonoDepthMetric
from ..engine.probe import CONFIG_DIR, prepare_probe_config, run_probe, write_results_table
from .probe_data import DEMO_ROOTS, make_probe_data

DEMO_CONFIGS = {
    'ade20k': 'ms-linear_gspn2-nano_1xb8-150_ade20k-demo-64x64.py',
    'nyu-depth': 'ms-linear_gspn2-nano_1xb8-150_nyu-depth-demo-64x64.py',
}
TEST_CONFIGS = {
    'ade20k': 'ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py',
    'nyu-depth': 'ms-linear_gspn2-test_1xb2-4_nyu-depth-demo-64x64.py',
}
# (metric, higher is better) compared against the chance baseline.
HEADLINE = {'ade20k': ('mIoU', True), 'nyu-depth': ('rmse', False)}


def _loader_gt(runner, dataloader) -> list:
    """Ground-truth arrays of a dataloader's samples (after its pipeline)."""
    out = []
    for batch in dataloader:
        for sample in batch['data_samples']:
            if 'gt_depth_map' in sample:
                out.append(sample.gt_depth_map.data[0].numpy())
            else:
                out.append(sample.gt_sem_seg.data[0].numpy())
    return out


def seg_chance_baseline(train_labels: Sequence[np.ndarray], test_labels: Sequence[np.ndarray],
                        num_classes: int, ignore_index: int = 255) -> Dict[str, float]:
    """mIoU / aAcc (percent, as mmseg's IoUMetric) of predicting the most frequent training class."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for label in train_labels:
        valid = label[label != ignore_index]
        counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    majority = int(counts.argmax())
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    correct = total = 0
    for label in test_labels:
        valid = label != ignore_index
        gt = label[valid]
        for c in np.unique(gt):
            union[c] += (gt == c).sum() if c != majority else 0
        inter[majority] += (gt == majority).sum()
        union[majority] += valid.sum()
        correct += (gt == majority).sum()
        total += valid.sum()
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = inter / union
    return dict(mIoU=100.0 * float(np.nanmean(iou[union > 0])), aAcc=100.0 * correct / max(total, 1))


def depth_chance_baseline(train_depths: Sequence[np.ndarray], test_depths: Sequence[np.ndarray],
                          metric: MonoDepthMetric) -> Dict[str, float]:
    """Metrics of predicting the mean valid training depth everywhere."""
    valid = np.concatenate([d[(d > metric.min_depth) & (d < metric.max_depth)] for d in train_depths])
    mean_depth = float(valid.mean())
    metric.results.clear()
    for gt in test_depths:
        gt = torch.from_numpy(gt)
        errors, count = metric.image_errors(gt, torch.full_like(gt, mean_depth))
        if count:
            metric.results.append(errors)
    out = metric.compute_metrics(metric.results)
    metric.results.clear()
    return out


def _colour_depth(depth: np.ndarray, max_depth: float) -> np.ndarray:
    scaled = np.clip(depth / max_depth * 255.0, 0, 255).astype(np.uint8)
    out = cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA)
    out[depth <= 0] = 0
    return out


def _colour_seg(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    out = np.zeros(label.shape + (3, ), dtype=np.uint8)
    valid = label < len(palette)
    out[valid] = palette[label[valid]][:, ::-1]  # RGB palette -> BGR for cv2
    return out


# Panel layout (pixels of the saved PNG): white bands with black text above and below the tiles.
_FONT, _FONT_SCALE, _TEXT = cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0)
_BAND = 20          # height of a title / legend row
_SWATCH = 12        # legend colour square
_BAR = 12           # colour-bar height
_MAX_LEGEND = 12    # classes named in a legend (the most frequent ones)


def _band(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, dtype=np.uint8)


def _put_text(canvas: np.ndarray, text: str, x: int, y: int) -> int:
    """Write ``text`` with its baseline at ``y``; return its width."""
    cv2.putText(canvas, text, (x, y), _FONT, _FONT_SCALE, _TEXT, 1, cv2.LINE_AA)
    return cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0]


def seg_legend(labels: Sequence[np.ndarray], palette: np.ndarray, class_names: Sequence[str],
               width: int) -> np.ndarray:
    """A white strip naming the classes that occur in ``labels``, each after a swatch of its
    palette colour (RGB ``palette``; BGR output), most frequent first, wrapped to ``width``."""
    counts = np.zeros(len(palette), dtype=np.int64)
    for label in labels:
        valid = label[label < len(palette)]
        counts += np.bincount(valid.ravel(), minlength=len(palette))[:len(palette)]
    present = [int(c) for c in np.argsort(-counts, kind='stable') if counts[c] > 0]
    entries = [(c, class_names[c] if c < len(class_names) else str(c))
               for c in present[:_MAX_LEGEND]]
    rows, row, x = [], [], 4
    for c, name in entries:
        entry = _SWATCH + 4 + cv2.getTextSize(name, _FONT, _FONT_SCALE, 1)[0][0] + 12
        if row and x + entry > width:
            rows.append(row)
            row, x = [], 4
        row.append((c, name, x))
        x += entry
    rows.append(row)
    more = len(present) - len(entries)
    strip = _band(_BAND * len(rows) + (_BAND if more > 0 else 0), width)
    for i, row in enumerate(rows):
        top = i * _BAND + (_BAND - _SWATCH) // 2
        for c, name, x in row:
            strip[top:top + _SWATCH, x:x + _SWATCH] = palette[c][::-1]
            _put_text(strip, name, x + _SWATCH + 4, top + _SWATCH - 1)
    if more > 0:
        _put_text(strip, f'+{more} more classes', 4, len(rows) * _BAND + _BAND - 6)
    return strip


def depth_colour_bar(max_depth: float, width: int) -> np.ndarray:
    """A white strip with the depth colour map from 0 to ``max_depth`` metres and its ticks."""
    labels = [f'{v:g} m' for v in (0.0, max_depth / 2, max_depth)]
    margin = 8 + cv2.getTextSize(labels[-1], _FONT, _FONT_SCALE, 1)[0][0] // 2
    length = width - 2 * margin
    strip = _band(_BAR + _BAND + 4, width)
    ramp = np.linspace(0.0, max_depth, length)[None, :].repeat(_BAR, axis=0)
    strip[2:2 + _BAR, margin:margin + length] = _colour_depth(np.maximum(ramp, 1e-6), max_depth)
    for label, frac in zip(labels, (0.0, 0.5, 1.0)):
        x = margin + int(round(frac * (length - 1)))
        strip[2 + _BAR:6 + _BAR, x] = 0  # tick
        text_w = cv2.getTextSize(label, _FONT, _FONT_SCALE, 1)[0][0]
        _put_text(strip, label, x - text_w // 2, _BAR + _BAND)
    return strip


def compose_panel(tiles: Sequence[np.ndarray], titles: Sequence[str], footer: Optional[np.ndarray] = None,
                  scale: int = 3) -> np.ndarray:
    """``tiles`` (BGR, same size) side by side, upscaled ``scale`` x, each under its title,
    above ``footer`` (a legend or colour bar as wide as the row, or ``None``)."""
    if len(tiles) != len(titles):
        raise ValueError(f'need one title per tile, got {len(tiles)} tiles and {len(titles)} titles')
    columns = []
    for tile, title in zip(tiles, titles):
        tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        band = _band(_BAND, tile.shape[1])
        text_w = cv2.getTextSize(title, _FONT, _FONT_SCALE, 1)[0][0]
        _put_text(band, title, max(2, (tile.shape[1] - text_w) // 2), _BAND - 6)
        columns.append(np.concatenate([band, tile], axis=0))
    panel = np.concatenate(columns, axis=1)
    return panel if footer is None else np.concatenate([panel, footer], axis=0)


def save_visualisations(runner, out_dir: str, num: int = 4, max_depth: float = 10.0,
                        scale: int = 3) -> list:
    """Write ``image | ground truth | prediction`` PNGs of the first ``num`` test images.

    Each panel has titles; segmentation panels a legend of the classes in the ground truth and
    the prediction, depth panels a colour bar in metres.
    """
    os.makedirs(out_dir, exist_ok=True)
    model = runner.model
    model.eval()
    meta = runner.test_dataloader.dataset.metainfo
    palette = np.array(meta.get('palette') or [], dtype=np.uint8).reshape(-1, 3)
    class_names = list(meta.get('classes') or [])
    paths = []
    with torch.no_grad():
        for batch in runner.test_dataloader:
            for sample in model.test_step(batch):
                image = cv2.imread(sample.img_path)
                if 'pred_depth_map' in sample:
                    gt = _colour_depth(sample.gt_depth_map.data[0].cpu().numpy(), max_depth)
                    pred = _colour_depth(sample.pred_depth_map.data[0].cpu().numpy(), max_depth)
                    titles = ('image', 'ground truth depth', 'predicted depth')
                    footer = depth_colour_bar(max_depth, 3 * image.shape[1] * scale)
                else:
                    gt_label = sample.gt_sem_seg.data[0].cpu().numpy()
                    pred_label = sample.pred_sem_seg.data[0].cpu().numpy()
                    gt, pred = _colour_seg(gt_label, palette), _colour_seg(pred_label, palette)
                    titles = ('image', 'ground truth', 'prediction')
                    footer = seg_legend([gt_label, pred_label], palette, class_names,
                                        3 * image.shape[1] * scale)
                panel = compose_panel([image, gt, pred], titles, footer, scale=scale)
                path = osp.join(out_dir, osp.splitext(osp.basename(sample.img_path))[0] + '.png')
                cv2.imwrite(path, panel)
                paths.append(path)
                if len(paths) == num:
                    return paths
    return paths


def run_probe_leg(work_dir: str = 'work_dirs/demo', data_root: str = 'data/demo',
             backbone_ckpt: Optional[str] = None, tasks: Sequence[str] = ('ade20k', 'nyu-depth'),
             iters: Optional[int] = None, tiny: bool = False,
             log: Callable[[str], None] = lambda msg: print(msg, flush=True)) -> Dict[str, dict]:
    """Run the probe leg; return ``{task: dict(probe=metrics, chance=metrics, beats_chance=bool)}``.

    Args:
        work_dir: where logs, checkpoints, ``results.md/json`` and ``vis/<task>/*.png`` go.
        data_root: the demo data root (written by :func:`make_probe_data` when absent).
        backbone_ckpt: a backbone checkpoint for ``init_cfg`` (e.g. the CLIP leg's converted tower);
            ``None`` probes a randomly initialised backbone.
        tasks: demo tasks, keys of :data:`DEMO_CONFIGS`.
        iters: training iterations per task (default: the config's).
        tiny: use the ``gspn2_test`` test-suite configs (for tests).
    """
    unknown = [t for t in tasks if t not in DEMO_CONFIGS]
    if unknown:
        raise ValueError(f'unknown demo tasks {unknown}; expected names from {list(DEMO_CONFIGS)}')
    start = time.time()
    def log_step(msg: str) -> None:
        log(f'[demo {time.time() - start:5.0f} s] {msg}')

    log_step(f'data: {data_root} (written if absent)')
    make_probe_data(data_root, datasets=tasks)
    log_step(f'backbone: {backbone_ckpt or "randomly initialised (no checkpoint)"}')
    results = {}
    for i, task in enumerate(tasks, 1):
        config = str(CONFIG_DIR / 'demo' / (TEST_CONFIGS if tiny else DEMO_CONFIGS)[task])
        task_dir = osp.join(work_dir, task)
        cfg = prepare_probe_config(config, task_dir, backbone_ckpt=backbone_ckpt,
                                   random_init=backbone_ckpt is None,
                                   data_root=osp.join(data_root, DEMO_ROOTS[task]))
        # The job tests once after training; a validation pass on the same images would repeat it.
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        if iters is not None:
            cfg.train_cfg.max_iters = iters
            cfg.default_hooks.checkpoint.interval = iters
            cfg.param_scheduler[-1].end = iters
            cfg.param_scheduler[0].end = min(cfg.param_scheduler[0].end, max(iters // 10, 1))
            cfg.param_scheduler[-1].begin = cfg.param_scheduler[0].end
        log_step(f'({i}/{len(tasks)}) {task}: training {cfg.train_cfg.max_iters} iterations '
            f'of a linear probe ({osp.basename(config)})')
        max_depth = cfg.model.decode_head.max_depth if task == 'nyu-depth' else 10.0
        seen = {}

        def inspect(runner):
            # ground truth of both splits (for the chance baseline) and the panels, from the
            # trained runner before run_probe frees it
            seen['train_gt'] = _loader_gt(runner, runner.build_dataloader(dict(
                cfg.test_dataloader, dataset=dict(cfg.train_dataloader.dataset,
                                                  pipeline=cfg.test_dataloader.dataset.pipeline))))
            seen['test_gt'] = _loader_gt(runner, runner.test_dataloader)
            seen['vis'] = save_visualisations(runner, osp.join(work_dir, 'vis', task), max_depth=max_depth)

        metrics = run_probe(cfg, inspect=inspect)
        log_step(f'({i}/{len(tasks)}) {task}: chance baseline and visualisations')
        if task == 'nyu-depth':
            evaluator = cfg.test_evaluator
            chance = depth_chance_baseline(seen['train_gt'], seen['test_gt'], MonoDepthMetric(
                min_depth=evaluator.min_depth, max_depth=evaluator.max_depth,
                eigen_crop=evaluator.eigen_crop))
        else:
            chance = seg_chance_baseline(seen['train_gt'], seen['test_gt'],
                                         cfg.model.decode_head.num_classes)
        vis = seen['vis']
        name, higher = HEADLINE[task]
        beats = metrics[name] > chance[name] if higher else metrics[name] < chance[name]
        results[task] = dict(probe=metrics, chance=chance, beats_chance=bool(beats), visualisations=vis)
        log_step(f'{task}: {name} probe {metrics[name]:.4f} vs chance {chance[name]:.4f} '
            f'-> {"beats" if beats else "does NOT beat"} chance; panels in {osp.dirname(vis[0])}')
    paths = _write_demo_table(results, work_dir)
    log_step(f'done; results: {paths["markdown"]}')
    log(open(paths['markdown']).read())
    return results


def _write_demo_table(results: Dict[str, dict], work_dir: str) -> Dict[str, str]:
    flat = {}
    for task, r in results.items():
        flat[task] = r['probe']
        flat[f'{task} chance'] = r['chance']
    return write_results_table(flat, work_dir, title='Demo: linear probes vs chance baseline')
