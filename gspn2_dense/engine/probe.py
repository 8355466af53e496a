"""Linear-probe evaluation of a backbone checkpoint: train + test one config per task, one table.

``tools/linear_probe.py CKPT --tasks ade20k,voc,nyu-depth`` calls :func:`run_linear_probe`; the
demo pipeline (:mod:`gspn2_dense.demo.probe_leg`) calls :func:`run_probe` on the demo configs.
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.config import Config

from ..models.variants import PAPER_VARIANTS
from ..ops._build import shipped_tree
from .launch import adapt_for_cpu, load_config, run_runner

# configs/ inside an installed wheel, or beside the package in a source checkout
CONFIG_DIR = shipped_tree('configs')

# task -> (dataset part of the leaf config name, metrics reported in the table)
SEG_METRICS = ('mIoU', 'aAcc')
DEPTH_METRICS = ('rmse', 'abs_rel', 'd1', 'sq_rel', 'rmse_log', 'log10', 'silog', 'd2', 'd3')
TASKS = {
    'ade20k': ('ade20k-512x512', SEG_METRICS),
    'voc': ('voc12aug-512x512', SEG_METRICS),
    'pascal-context-59': ('pascal-context-59-480x480', SEG_METRICS),
    'nyu40': ('nyu40-480x480', SEG_METRICS),
    'nyu-depth': ('nyu-depth-480x480', DEPTH_METRICS),
}
ARCHS = tuple(v.short for v in PAPER_VARIANTS)  # the paper's sizes, spelled as in config names
VARIANTS = ('linear', 'ms-linear')


def parse_tasks(tasks: str) -> List[str]:
    """``'ade20k,voc'`` -> ``['ade20k', 'voc']``, with unknown names rejected."""
    names = [t.strip() for t in tasks.split(',') if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if not names or unknown:
        raise ValueError(f'--tasks must be a comma-separated list of {list(TASKS)}, got {tasks!r}')
    return names


def probe_config(task: str, arch: str = 't', variant: str = 'linear') -> str:
    """Path of the leaf config ``configs/linear_probe/{variant}_gspn2-{arch}_8xb2-40k_{dataset}.py``."""
    if task not in TASKS:
        raise ValueError(f'task must be one of {list(TASKS)}, got {task!r}')
    if arch not in ARCHS:
        raise ValueError(f'arch must be one of {ARCHS}, got {arch!r}')
    if variant not in VARIANTS:
        raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    path = CONFIG_DIR / 'linear_probe' / f'{variant}_gspn2-{arch}_8xb2-40k_{TASKS[task][0]}.py'
    if not path.is_file():
        raise FileNotFoundError(f'probe config {path} does not exist')
    return str(path)


def prepare_probe_config(config: str, work_dir: str, backbone_ckpt: Optional[str] = None,
                         random_init: bool = False, data_root: Optional[str] = None,
                         cfg_options: Optional[dict] = None, launcher: str = 'none') -> Config:
    """Load a probe config, point its backbone at ``backbone_ckpt`` and check it before training.

    ``random_init=True`` removes the backbone's ``init_cfg`` (a randomly initialised backbone,
    for the demo's "no checkpoint" leg); it cannot be combined with ``backbone_ckpt``.
    """
    from ..datasets import check_config

    if backbone_ckpt is not None and random_init:
        raise ValueError('pass either backbone_ckpt or random_init=True, not both')
    cfg = load_config(config, cfg_options)
    if backbone_ckpt is not None:
        if not osp.isfile(backbone_ckpt):
            raise FileNotFoundError(f'backbone checkpoint {backbone_ckpt!r} does not exist')
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=backbone_ckpt)
    elif random_init:
        cfg.model.backbone.init_cfg = None
    if data_root is not None:
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            set_data_root(cfg[key].dataset, data_root)
    cfg.work_dir = work_dir
    cfg.launcher = launcher
    adapt_for_cpu(cfg)
    check_config(cfg)
    return cfg


def set_data_root(dataset_cfg: dict, data_root: str) -> None:
    """Set ``data_root`` of a dataset config, and of every dataset a wrapper holds."""
    for key in ('datasets', 'dataset'):
        if key in dataset_cfg:
            inner = dataset_cfg[key]
            for cfg in inner if isinstance(inner, (list, tuple)) else [inner]:
                set_data_root(cfg, data_root)
            return
    dataset_cfg['data_root'] = data_root


def run_probe(cfg: Config, inspect: Optional[Callable] = None) -> Dict[str, float]:
    """Train then test one probe config (:func:`~.launch.run_runner`'s ``'train_test'``);
    returns the test metrics. ``inspect(runner)`` runs before the runner is freed."""
    return run_runner(cfg, 'train_test', inspect=inspect)


def _short(name: str) -> str:
    """``'mIoU'`` from ``'mIoU'`` and ``'rmse'`` from a prefixed ``'depth/rmse'``."""
    return name.rsplit('/', 1)[-1]


def write_results_table(results: Dict[str, Dict[str, float]], out_dir: str,
                        title: str = 'Linear-probe results') -> Dict[str, str]:
    """Write ``results.md`` and ``results.json`` (``{task: {metric: value}}``) under ``out_dir``.

    The table has a column for every metric in ``results``; a task without one shows ``-``.
    """
    os.makedirs(out_dir, exist_ok=True)
    json_path = osp.join(out_dir, 'results.json')
    with open(json_path, 'w') as f:
        json.dump(results, f, indent=2)
    lines = [f'# {title}', '']
    seg = {t: m for t, m in results.items() if any(_short(k) == 'mIoU' for k in m)}
    depth = {t: m for t, m in results.items() if t not in seg}
    for group, names in ((seg, SEG_METRICS), (depth, DEPTH_METRICS)):
        if not group:
            continue
        # Every reported metric gets a column: the usual ones in their order, then the others.
        extra = [n for m in group.values() for n in map(_short, m) if n not in names]
        names = tuple(names) + tuple(dict.fromkeys(extra))
        lines += ['| task | ' + ' | '.join(names) + ' |', '|---' * (len(names) + 1) + '|']
        for task, metrics in group.items():
            values = {_short(k): v for k, v in metrics.items()}
            lines.append(f'| {task} | ' + ' | '.join(
                f'{values[n]:.4g}' if n in values else '-' for n in names) + ' |')
        lines.append('')
    md_path = osp.join(out_dir, 'results.md')
    with open(md_path, 'w') as f:
        f.write('\n'.join(lines))
    return dict(markdown=md_path, json=json_path)


def run_linear_probe(checkpoint: str, tasks: Sequence[str], work_dir: str, arch: str = 't',
                     variant: str = 'linear', cfg_options: Optional[dict] = None,
                     launcher: str = 'none') -> Dict[str, Dict[str, float]]:
    """Train and test the linear probe of ``checkpoint`` on each task; write the results table."""
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'backbone checkpoint {checkpoint!r} does not exist')
    # Check every task's config and data before the first (long) training starts.
    cfgs = {task: prepare_probe_config(probe_config(task, arch, variant), osp.join(work_dir, task),
                                       backbone_ckpt=checkpoint, cfg_options=cfg_options,
                                       launcher=launcher)
            for task in tasks}
    results = {}
    for task, cfg in cfgs.items():
        results[task] = run_probe(cfg)
        write_results_table(results, work_dir, title=f'Linear probe ({variant}, GSPN-2-{arch.upper()}) '
                                                    f'of {checkpoint}')
    return results
