"""The demo's multi-task leg: multi-task linear probes on the demo NYUD-MT / PASCAL-MT folders.

:func:`run_multitask_leg` trains and tests the multi-task linear probe on each, prints every
task's metric next to its chance baseline (and Delta_m over single-task probes when asked), and
saves one panel per test image; the demo pipeline runs it on the CLIP-trained tower.
"""

import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

from .multitask_data import make_multitask_data
from .probe_data import _COLOURS


MULTITASK_DEMO_CONFIGS = {
    'nyud-mt': 'multitask-linear_gspn2-nano_1xb8-120_nyud-mt-demo-64x64.py',
    'pascal-mt': 'multitask-linear_gspn2-nano_1xb8-120_pascal-mt-demo-64x64.py',
}
MULTITASK_TEST_CONFIGS = {
    'nyud-mt': 'multitask-linear_gspn2-test_1xb4-80_nyud-mt-demo-64x64.py',
    'pascal-mt': 'multitask-linear_gspn2-test_1xb4-80_pascal-mt-demo-64x64.py',
}


def single_task_config(cfg, task: str, work_dir: str, results_file: Optional[str] = None):
    """A copy of multi-task config ``cfg`` reduced to ``task`` alone (its single-task baseline),
    testing into ``results_file``."""
    from mmengine.config import Config

    single = Config(cfg.to_dict())
    single.model.heads = {task: cfg.model.heads[task]}
    single.model.loss_weights = None
    for key in ('train_dataloader', 'test_dataloader'):
        single[key].dataset.tasks = (task, )
    single.test_evaluator = dict(cfg.test_evaluator, tasks=(task, ), baselines=None, results_file=results_file)
    single.work_dir = work_dir
    return single


def save_multitask_panels(runner, out_dir: str, num: int = 4, max_depth: float = 10.0) -> List[str]:
    """One PNG per test image: the input, then per task its ground truth (top) and prediction
    (bottom), with class legends and colour bars."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from gspn2_dense.datasets.multitask import IGNORE_INDEX, TASK_FIELDS

    os.makedirs(out_dir, exist_ok=True)
    model = runner.model
    model.eval()
    meta = runner.test_dataloader.dataset.metainfo
    names = {'semseg': list(meta['classes']), 'human_parts': list(meta.get('part_classes', ()))}
    palette = np.array(meta['palette'], dtype=np.float32) / 255.0
    paths: List[str] = []
    with torch.no_grad():
        for batch in runner.test_dataloader:
            for sample in model.test_step(batch):
                tasks = [t for t in TASK_FIELDS if 'pred_' + TASK_FIELDS[t] in sample]
                fig = Figure(figsize=(2.6 * (len(tasks) + 1), 5.6))
                FigureCanvasAgg(fig)
                axes = fig.subplots(2, len(tasks) + 1, squeeze=False)
                image = cv2.imread(sample.img_path)[..., ::-1]
                axes[0, 0].imshow(image)
                axes[0, 0].set_title('input', fontsize=8)
                for row, prefix in enumerate(('gt_', 'pred_')):
                    for col, task in enumerate(tasks, 1):
                        ax = axes[row, col]
                        data = sample.get(prefix + TASK_FIELDS[task]).data.cpu().numpy()
                        title = f'{task} ({"truth" if row == 0 else "prediction"})'
                        if task in ('semseg', 'human_parts'):
                            label = data[0].astype(np.int64)
                            num_classes = len(names[task])
                            colours = palette[:num_classes] if task == 'semseg' else \
                                np.array(_COLOURS[:num_classes]) / 255.0
                            shown = np.ma.masked_where(label == IGNORE_INDEX, label)
                            ax.imshow(shown, cmap=ListedColormap(colours), vmin=-0.5, vmax=num_classes - 0.5,
                                      interpolation='nearest')
                            present = [int(c) for c in np.unique(label) if c != IGNORE_INDEX][:8]
                            ax.legend(handles=[Patch(color=colours[c], label=names[task][c]) for c in present],
                                      fontsize=5, loc='upper center', bbox_to_anchor=(0.5, -0.02), ncol=2,
                                      frameon=False)
                        elif task == 'normals':
                            valid = np.linalg.norm(data, axis=0) > 0.5
                            ax.imshow(np.where(valid[..., None], (data.transpose(1, 2, 0) + 1) / 2, 0).clip(0, 1))
                            title += '\nRGB = (n + 1) / 2'
                        else:
                            values = data[0].astype(np.float32)
                            if task == 'depth':
                                shown = np.ma.masked_where(values <= 0, values)
                                im = ax.imshow(shown, cmap='magma', vmin=0, vmax=max_depth)
                                label_text = 'metres'
                            else:
                                shown = np.ma.masked_where(values == IGNORE_INDEX, values)
                                im = ax.imshow(shown, cmap='gray', vmin=0, vmax=1)
                                label_text = 'probability' if row else 'label'
                            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                            bar.ax.tick_params(labelsize=5)
                            bar.set_label(label_text, fontsize=5)
                        ax.set_title(title, fontsize=7)
                for ax in axes.ravel():
                    ax.set_xticks([])
                    ax.set_yticks([])
                axes[1, 0].axis('off')
                fig.tight_layout()
                path = osp.join(out_dir, f'{sample.metainfo.get("sample_id", len(paths))}.png')
                fig.savefig(path, dpi=110)
                paths.append(path)
                if len(paths) == num:
                    return paths
    return paths




def _set_iters(cfg, iters: int) -> None:
    """Train ``iters`` iterations: warm-up of a tenth (at most the config's), then the decay."""
    cfg.train_cfg.max_iters = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.param_scheduler[0].end = min(cfg.param_scheduler[0].end, max(iters // 10, 1))
    cfg.param_scheduler[-1].begin = cfg.param_scheduler[0].end
    cfg.param_scheduler[-1].end = iters


def run_multitask_leg(work_dir: str = 'work_dirs/demo/multitask', data_root: str = 'data/demo',
                       backbone_ckpt: Optional[str] = None,
                       datasets: Sequence[str] = tuple(MULTITASK_DEMO_CONFIGS), iters: Optional[int] = None,
                       tiny: bool = False, single_task: Sequence[str] = tuple(MULTITASK_DEMO_CONFIGS),
                       num_panels: int = 4,
                       log: Callable[[str], None] = lambda msg: print(msg, flush=True)) -> Dict[str, dict]:
    """Train and test the multi-task linear probes on the demo data; compare with chance and Delta_m.

    Per dataset the runs write their result files under ``<work_dir>/<dataset>/results/``
    (``multitask.json``, ``chance.json``, ``<task>.json`` of each single-task probe) and the table
    is built from them as ``tools/multitask_eval.py`` builds it
    (:func:`~gspn2_dense.evaluation.multitask_report.report_from_files`). All tables go to
    ``<work_dir>/multitask_results.{md,json}``, the panels to ``<work_dir>/vis/<dataset>/``.

    Returns ``{dataset: dict(multitask=metrics, chance=metrics, single_task=metrics, gains={task: %,
    'delta_m': %} (empty without single-task probes), beats_chance={task: bool}, panels=[paths],
    seconds=float)}``.

    Args:
        work_dir: logs, checkpoints, result files, tables and panels go here.
        data_root: the demo data root (the folders are written when absent).
        backbone_ckpt: a backbone checkpoint (the CLIP leg's tower); ``None``: random init.
        datasets: keys of :data:`MULTITASK_DEMO_CONFIGS`.
        iters: training iterations of every run (default: the config's).
        tiny: the ``gspn2_test`` test-suite configs.
        single_task: the datasets whose tasks are also probed one by one, for Delta_m.
    """
    import json
    import time

    from gspn2_dense.evaluation.multitask_metric import HEADLINE, save_results
    from gspn2_dense.evaluation.multitask_report import chance_metrics, report_from_files
    from gspn2_dense.engine.probe import CONFIG_DIR, prepare_probe_config, run_probe

    unknown = [d for d in list(datasets) + list(single_task) if d not in MULTITASK_DEMO_CONFIGS]
    if unknown:
        raise ValueError(f'unknown multi-task demo datasets {unknown}; expected names from '
                         f'{list(MULTITASK_DEMO_CONFIGS)}')
    roots = make_multitask_data(data_root, datasets)
    results: Dict[str, dict] = {}
    reports = []
    for name in datasets:
        start = time.time()
        config = str(CONFIG_DIR / 'demo' / (MULTITASK_TEST_CONFIGS if tiny else MULTITASK_DEMO_CONFIGS)[name])
        files = osp.join(work_dir, name, 'results')
        cfg = prepare_probe_config(config, osp.join(work_dir, name, 'multitask'), backbone_ckpt=backbone_ckpt,
                                   random_init=backbone_ckpt is None, data_root=roots[name])
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # tested once after training
        cfg.test_evaluator.results_file = osp.join(files, 'multitask.json')
        if iters is not None:
            _set_iters(cfg, iters)
        tasks = tuple(cfg.model.heads)
        log(f'[multi-task demo] {name}: {cfg.train_cfg.max_iters} iterations of the {"/".join(tasks)} '
            f'probes ({osp.basename(config)})')
        panels = []
        run_probe(cfg, inspect=lambda runner: panels.extend(
            save_multitask_panels(runner, osp.join(work_dir, 'vis', name), num=num_panels)))
        chance = save_results(osp.join(files, 'chance.json'), chance_metrics(cfg))
        baselines = {}
        if name in single_task:
            for task in tasks:
                log(f'[multi-task demo] {name}: single-task probe of {task}, for Delta_m')
                baselines[task] = osp.join(files, f'{task}.json')
                run_probe(single_task_config(cfg, task, osp.join(work_dir, name, task), baselines[task]))
        report = report_from_files(cfg, baselines=baselines, chance=chance, use_baselines=bool(baselines),
                                   title=f'{name}: multi-task linear probes on the demo data')
        beats, gains = report.beats_chance(), report.gains()
        for task in tasks:
            metric, higher = HEADLINE[task]
            key = f'{task}/{metric}'
            log(f'[multi-task demo] {name} {key} ({"higher" if higher else "lower"} is better): '
                f'{report.multitask[key]:.3f} vs chance {report.chance[key]:.3f}'
                + (f', single-task {report.single_task[key]:.3f}' if key in report.single_task else '')
                + (' -> beats chance' if beats[task] else ' -> does NOT beat chance'))
        if gains:
            log(f'[multi-task demo] {name} Delta_m = {gains["delta_m"]:+.2f} % over the single-task probes '
                '(frozen backbone, independent heads: 0 up to training noise)')
        results[name] = dict(multitask=report.multitask, chance=report.chance, single_task=report.single_task,
                             gains=gains, beats_chance=beats, panels=panels, seconds=time.time() - start)
        log(f'[multi-task demo] {name}: {results[name]["seconds"]:.0f} s; panels in {osp.join(work_dir, "vis", name)}')
        reports.append(report)
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'multitask_results.json'), 'w') as f:
        json.dump({name: dict(report.to_json(), panels=results[name]['panels'])
                   for name, report in zip(datasets, reports)}, f, indent=2)
    markdown = '\n'.join(report.to_markdown() for report in reports)
    with open(osp.join(work_dir, 'multitask_results.md'), 'w') as f:
        f.write(markdown)
    log(markdown)
    return results
