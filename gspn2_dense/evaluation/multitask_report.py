"""The results table of a multi-task run: its metrics, its single-task baselines, chance and Delta_m.

A multi-task config names what a report reads (``test_evaluator`` of ``configs/multitask/*``):

* ``tasks`` -- the tasks the run is judged on;
* ``results_file`` -- where its test writes the metrics (``tools/test.py --out DIR`` writes
  ``DIR/multitask_results.json`` instead);
* ``baselines`` -- ``{task: results file}`` of the single-task runs that Delta_m compares with.

:func:`report_from_files` reads those files, checks that each one holds what it should (every
task's headline metric, no task of another dataset, one task per single-task file) and returns a
:class:`MultiTaskReport`: one row per task and metric with the multi-task value, the single-task
value and gain, and the chance value where a chance table is given; then Delta_m.
``tools/multitask_eval.py`` prints it and writes it as JSON; the demo's multi-task leg builds the
same report from the files its runs write.

:func:`chance_metrics` computes a chance table from a config's data: the metrics of the best
predictor that never looks at the image (:func:`chance_predictions`).
"""
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional, Sequence

import numpy as np

from .multitask_metric import HEADLINE, LOWER_IS_BETTER, delta_m, load_results

# Keys of a results table that belong to no task (the metric's own Delta_m).
_RUN_PREFIX = 'multitask'


class ResultsFileError(ValueError):
    """A results file that cannot be read, or that does not hold what the config expects."""


def table_tasks(table: Mapping[str, float]) -> list:
    """The tasks a flat results table has metrics of, in order of appearance."""
    return list(dict.fromkeys(k.split('/', 1)[0] for k in table if '/' in k
                              and k.split('/', 1)[0] != _RUN_PREFIX))


def _headline_key(task: str) -> str:
    return f'{task}/{HEADLINE[task][0]}'


def read_results(path: str, tasks: Sequence[str], what: str, single_task: bool = False) -> Dict[str, float]:
    """Load a results file and check it against the ``tasks`` it should cover.

    ``what`` names the file in messages (e.g. ``"the multi-task results"``). Every task needs its
    headline metric; a task the config does not evaluate means the file is of another run (another
    dataset, say); ``single_task=True`` also refuses a file with more than the one task.
    """
    try:
        table = load_results(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f'{what}: {err}') from None
    except ValueError as err:
        raise ResultsFileError(f'{what}: {err}') from None
    found = table_tasks(table)
    foreign = [t for t in found if t not in tasks]
    if foreign and single_task:
        raise ResultsFileError(f'{what} {path!r}: expected the metrics of task {tasks[0]!r} alone (a single-task '
                               f'run), got metrics of tasks {found} -- is it the results file of another run?')
    if foreign:
        raise ResultsFileError(f'{what} {path!r}: expected metrics of the tasks {list(tasks)}, got metrics of '
                               f'{found}; {foreign} are not evaluated by this config (a results file of another '
                               'dataset or config?)')
    missing = [_headline_key(t) for t in tasks if _headline_key(t) not in table]
    if missing:
        raise ResultsFileError(f'{what} {path!r}: expected {missing}, got the keys {sorted(table)}')
    return {k: float(v) for k, v in table.items() if k.split('/', 1)[0] in tasks}


def evaluator_files(cfg) -> dict:
    """``tasks``, ``results_file`` and ``baselines`` of a config's ``test_evaluator``."""
    evaluator = cfg.get('test_evaluator')
    if not isinstance(evaluator, Mapping) or evaluator.get('type') != 'MultiTaskMetric':
        kind = evaluator.get('type') if isinstance(evaluator, Mapping) else type(evaluator).__name__
        raise ResultsFileError(f'expected a multi-task config (test_evaluator of type MultiTaskMetric), got a '
                               f'test_evaluator of type {kind!r}')
    return dict(tasks=tuple(evaluator['tasks']), results_file=evaluator.get('results_file'),
                baselines=dict(evaluator.get('baselines') or {}))


class MultiTaskReport:
    """One multi-task run against its single-task baselines and chance.

    Args:
        tasks: the tasks, in the order of the table.
        multitask: the multi-task run's flat ``{'<task>/<metric>': value}`` table.
        single_task: the single-task runs' tables merged (empty: no Delta_m).
        chance: a chance table (empty: no chance column).
        title: the heading of the markdown table.
        files: the files the tables came from (kept in the JSON).
    """

    def __init__(self, tasks: Sequence[str], multitask: Mapping[str, float],
                 single_task: Optional[Mapping[str, float]] = None, chance: Optional[Mapping[str, float]] = None,
                 title: str = 'Multi-task results', files: Optional[dict] = None) -> None:
        unknown = [t for t in tasks if t not in HEADLINE]
        if unknown:
            raise ValueError(f'tasks must be names from {list(HEADLINE)}, got {list(tasks)}')
        self.tasks = tuple(tasks)
        self.multitask = {k: float(v) for k, v in multitask.items()}
        self.single_task = {k: float(v) for k, v in (single_task or {}).items()}
        self.chance = {k: float(v) for k, v in (chance or {}).items()}
        self.title = title
        self.files = dict(files or {})

    def metrics(self, task: str) -> list:
        """The metric names of ``task`` in the multi-task table, the headline first."""
        names = [k.split('/', 1)[1] for k in self.multitask if k.split('/', 1)[0] == task]
        headline = HEADLINE[task][0]
        return [headline] + [n for n in names if n != headline]

    def gains(self) -> Dict[str, float]:
        """Per-task gains (percent) and ``'delta_m'``; empty without single-task baselines."""
        if not self.single_task:
            return {}
        return delta_m(self.multitask, self.single_task, tasks=list(self.tasks))

    def beats_chance(self) -> Dict[str, bool]:
        """Per task whose chance value is known: does the headline metric beat it?"""
        out = {}
        for task in self.tasks:
            key = _headline_key(task)
            if key in self.chance:
                higher = HEADLINE[task][1]
                value, chance = self.multitask[key], self.chance[key]
                out[task] = bool(value > chance if higher else value < chance)
        return out

    def rows(self) -> Iterable[dict]:
        """One dict per task and metric: task, metric, headline, higher, multitask, single_task,
        gain (percent, sign flipped where lower is better), chance (absent values are ``None``)."""
        for task in self.tasks:
            for name in self.metrics(task):
                key = f'{task}/{name}'
                higher = key not in LOWER_IS_BETTER
                value, base = self.multitask.get(key), self.single_task.get(key)
                gain = None
                if value is not None and base:
                    gain = (1.0 if higher else -1.0) * (value - base) / abs(base) * 100.0
                yield dict(task=task, metric=name, headline=name == HEADLINE[task][0], higher=higher,
                           multitask=value, single_task=base, gain=gain, chance=self.chance.get(key))

    def to_markdown(self) -> str:
        """The table (``*`` marks the headline metric Delta_m uses) and the Delta_m line."""
        columns = ['multi-task']
        if self.single_task:
            columns += ['single-task', 'gain %']
        if self.chance:
            columns.append('chance')
        lines = [f'# {self.title}', '', '| task | metric | better | ' + ' | '.join(columns) + ' |',
                 '|---' * (len(columns) + 3) + '|']
        for row in self.rows():
            cells = [_number(row['multitask'])]
            if self.single_task:
                cells += [_number(row['single_task']),
                          '-' if row['gain'] is None else f'{row["gain"]:+.2f}']
            if self.chance:
                cells.append(_number(row['chance']))
            name = row['metric'] + (' *' if row['headline'] else '')
            lines.append(f'| {row["task"]} | {name} | {"higher" if row["higher"] else "lower"} | '
                         + ' | '.join(cells) + ' |')
        lines.append('')
        gains = self.gains()
        if gains:
            lines.append(f'Delta_m = {gains["delta_m"]:+.2f} % (mean over {len(self.tasks)} tasks of the gain of '
                         'the * metric over its single-task baseline; the sign is flipped where lower is better)')
        else:
            lines.append('Delta_m: not computed (no single-task baselines)')
        return '\n'.join(lines) + '\n'

    def to_json(self) -> dict:
        gains = self.gains()
        return OrderedDict(
            title=self.title, tasks=list(self.tasks), files=self.files,
            headline={t: _headline_key(t) for t in self.tasks},
            multitask=self.multitask, single_task=self.single_task, chance=self.chance,
            gains={t: g for t, g in gains.items() if t != 'delta_m'}, delta_m=gains.get('delta_m'),
            beats_chance=self.beats_chance())

    def write_json(self, path: str) -> str:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(self.to_json(), f, indent=2)
        return path


def _number(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.4g}'


def report_from_files(cfg, results: Optional[str] = None, baselines: Optional[Mapping[str, str]] = None,
                      chance: Optional[str] = None, use_baselines: bool = True,
                      title: Optional[str] = None) -> MultiTaskReport:
    """Read a multi-task run's results, the single-task baselines and a chance table.

    Args:
        cfg: the multi-task config (an mmengine ``Config``; its ``filename`` titles the table).
        results: the multi-task results file (default: ``test_evaluator.results_file``).
        baselines: ``{task: file}`` replacing the config's entries for those tasks.
        chance: a chance results file (:func:`chance_metrics` output), or ``None``.
        use_baselines: ``False`` ignores every baseline (a report without Delta_m).
        title: the table's heading (default: the config's file name).

    Raises ``FileNotFoundError`` naming every missing file, and :class:`ResultsFileError` for a
    file that does not fit the config.
    """
    named = evaluator_files(cfg)
    tasks = named['tasks']
    config_name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
    results = results or named['results_file']
    if not results:
        raise ResultsFileError(f'{config_name} names no test_evaluator.results_file: pass the multi-task results '
                               'file (tools/test.py CONFIG CKPT --out DIR writes DIR/multitask_results.json)')
    chosen = dict(named['baselines'], **(baselines or {})) if use_baselines else {}
    unknown = [t for t in chosen if t not in tasks]
    if unknown:
        raise ResultsFileError(f'baselines were given for tasks {unknown}, but {config_name} evaluates {list(tasks)}')
    if chosen:
        lacking = [t for t in tasks if t not in chosen]
        if lacking:
            raise ResultsFileError(f'Delta_m needs a single-task baseline for every task of {config_name} '
                                   f'{list(tasks)}; none is named for {lacking} (test_evaluator.baselines or '
                                   '--baseline TASK=FILE)')
    missing = [(what, path) for what, path in [('the multi-task results', results)]
               + [(f'single-task baseline of {t}', p) for t, p in chosen.items()]
               + ([('the chance table', chance)] if chance else []) if not osp.isfile(path)]
    if missing:
        raise FileNotFoundError('missing results files: ' + '; '.join(f'{what}: {path!r}' for what, path in missing)
                                + '. Each is written by testing its config (tools/test.py CONFIG CKPT; '
                                'test_evaluator.results_file or --out DIR); the chance table by '
                                'tools/multitask_eval.py --chance-from-data.')
    multitask = read_results(results, tasks, 'the multi-task results')
    single = {}
    for task, path in chosen.items():
        single.update(read_results(path, (task, ), f'the single-task baseline of {task}', single_task=True))
    chance_table = read_results(chance, tasks, 'the chance table') if chance else {}
    files = dict(config=cfg.filename, multitask=results, baselines=chosen, chance=chance)
    return MultiTaskReport(tasks, multitask, single, chance_table, title=title or config_name, files=files)


# --------------------------------------------------------------------------- chance


def _samples(dataloader) -> Iterable:
    for batch in dataloader:
        yield from batch['data_samples']


def chance_predictions(train_samples: Iterable, tasks: Sequence[str], num_classes: Mapping[str, int]) -> dict:
    """What a predictor without the image can do best, from the training labels: the most frequent
    class (semseg, human_parts), the mean valid depth, the mean normal (normalised) and the
    positive rate as a constant probability (saliency, edges)."""
    import torch

    from gspn2_dense.datasets.multitask import IGNORE_INDEX, TASK_FIELDS

    counts = {t: np.zeros(num_classes[t], dtype=np.int64) for t in tasks if t in num_classes}
    sums = {t: [0.0, 0] for t in tasks}
    normal_sum = np.zeros(3)
    for sample in train_samples:
        for task in tasks:
            gt = sample.get('gt_' + TASK_FIELDS[task]).data.numpy()
            if task in counts:
                valid = gt[gt != IGNORE_INDEX]
                counts[task] += np.bincount(valid.ravel(), minlength=num_classes[task])[:num_classes[task]]
            elif task == 'depth':
                valid = gt[gt > 0]
                sums[task][0] += float(valid.sum())
                sums[task][1] += valid.size
            elif task == 'normals':
                valid = np.linalg.norm(gt, axis=0) > 0.5
                normal_sum += gt[:, valid].sum(axis=1)
            else:
                valid = gt[gt != IGNORE_INDEX]
                sums[task][0] += float((valid == 1).sum())
                sums[task][1] += valid.size
    out = {}
    for task in tasks:
        if task in counts:
            out[task] = torch.tensor(int(counts[task].argmax()))
        elif task == 'normals':
            out[task] = torch.from_numpy(normal_sum / max(np.linalg.norm(normal_sum), 1e-12)).float()
        else:
            total, n = sums[task]
            out[task] = torch.tensor(total / max(n, 1))
    return out


def chance_metrics(cfg) -> Dict[str, float]:
    """The test metrics of :func:`chance_predictions` fitted on the training split.

    Reads the config's training set through the test pipeline, then evaluates the constant
    predictions on the test set with the config's ``test_evaluator`` (no model is built).
    """
    import torch
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import METRICS

    from gspn2_dense.datasets.multitask import TASK_FIELDS

    init_default_scope(cfg.get('default_scope', 'mmseg'))
    metric = METRICS.build(dict(cfg.test_evaluator, baselines=None, results_file=None, output_dir=None))
    train_loader = Runner.build_dataloader(dict(cfg.test_dataloader, dataset=dict(
        cfg.train_dataloader.dataset, pipeline=cfg.test_dataloader.dataset.pipeline)))
    constant = chance_predictions(_samples(train_loader), metric.tasks, metric.num_classes)
    for sample in _samples(Runner.build_dataloader(cfg.test_dataloader)):
        record = sample.to_dict()
        for task in metric.tasks:
            gt = sample.get('gt_' + TASK_FIELDS[task]).data
            value = constant[task]
            if task == 'normals':
                pred = value.view(3, 1, 1).expand(3, *gt.shape[1:])
            else:
                pred = torch.full((1, *gt.shape[1:]), float(value))
            record['pred_' + TASK_FIELDS[task]] = dict(data=pred)
        metric.process({}, [record])
    return metric.compute_metrics(metric.results)


# --------------------------------------------------------------------------- tools/multitask_eval.py


def parse_baselines(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """``['depth=a.json', 'edge=b.json']`` -> ``{'depth': 'a.json', 'edge': 'b.json'}``."""
    out = {}
    for item in items or ():
        task, sep, path = item.partition('=')
        if not sep or not task or not path:
            raise ResultsFileError(f'a baseline is TASK=FILE, e.g. depth=work_dirs/results/depth.json; got {item!r}')
        out[task] = path
    return out


def evaluate_run(config: str, results: Optional[str] = None, baselines: Optional[Mapping[str, str]] = None,
                 use_baselines: bool = True, chance: Optional[str] = None, chance_from_data: bool = False,
                 out: Optional[str] = None, cfg_options: Optional[dict] = None, log=print) -> MultiTaskReport:
    """What ``tools/multitask_eval.py`` does: build the report of a run, print it, write its JSON.

    ``chance_from_data`` computes the chance table from the config's data (:func:`chance_metrics`)
    and writes it as ``chance.json`` beside ``out``. ``out`` defaults to ``multitask_eval.json``
    beside the results file.
    """
    from gspn2_dense.engine.launch import load_config

    from .multitask_metric import save_results

    if chance and chance_from_data:
        raise ResultsFileError('pass either a chance file or chance_from_data, not both')
    cfg = load_config(config, cfg_options)
    named = evaluator_files(cfg)
    results = results or named['results_file']
    if out is None and results:
        out = osp.join(osp.dirname(osp.abspath(results)), 'multitask_eval.json')
    if chance_from_data:
        report_from_files(cfg, results, baselines, use_baselines=use_baselines)  # the files, before the long pass
        chance = osp.join(osp.dirname(osp.abspath(out)), 'chance.json')
        log(f'chance table of {osp.basename(config)} from its training labels -> {chance}')
        save_results(chance, chance_metrics(cfg))
    report = report_from_files(cfg, results, baselines, chance=chance, use_baselines=use_baselines)
    log(report.to_markdown())
    log(f'written: {report.write_json(out)}')
    return report
