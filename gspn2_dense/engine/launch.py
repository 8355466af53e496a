"""Config preparation behind ``tools/train.py`` and ``tools/test.py`` (mmseg's tools' behaviour).

The tools parse arguments and call :func:`prepare_train_config` / :func:`prepare_test_config`,
which also check data roots and ``num_classes`` before anything is built, then
:func:`build_runner`. On a machine without CUDA the distributed set-up is adapted so the
same configs run under ``torchrun`` on CPU: the gloo process group is started here (mmengine's
own start-up for ``--launcher pytorch`` selects a CUDA device), a DDP wrapper without
``device_ids`` is used, and plain BatchNorm replaces SyncBN (which needs CUDA).

Checkpoints (all read through :mod:`gspn2_dense.engine.checkpoint`; :func:`build_runner` makes
mmengine's own loading go through it too, which ``import gspn2_dense`` leaves alone):

* ``tools/test.py`` loads its checkpoint strictly: a file of another kind (a backbone or CLIP
  checkpoint) or one that does not fit the config's model stops the run with a message that
  says what the file is and what to do, instead of evaluating a partly random model;
* ``--resume`` resumes from the newest *readable* checkpoint of the work dir, with a warning
  for each newer one that cannot be read;
* a run without ``--resume`` into a work dir that holds checkpoints says in the log that it
  starts over (mmseg's behaviour) and how to resume instead.
"""
import gc
import itertools
import logging
import os.path as osp
import uuid
from typing import Callable, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from gspn2_dense.datasets import check_config

from .checkpoint import (CheckpointError, check_state_dict_fits, checkpoint_kind, describe_kind,
                         find_resume_checkpoint, list_checkpoints, load_checkpoint_file,
                         register_checkpoint_loader, state_dict_of)

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _set_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    # Priority as in mmseg: command line > config file > ./work_dirs/<config name>.
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def _replace_sync_bn(node) -> int:
    """Replace ``SyncBN`` norm configs by ``BN`` in place; returns how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _replace_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_sync_bn(value)
    return count


def adapt_for_cpu(cfg: Config) -> None:
    """Let a GPU config run on CPU processes (single or distributed)."""
    if torch.cuda.is_available():
        return
    replaced = _replace_sync_bn(cfg.model)
    if replaced:
        print_log(f'no CUDA device: {replaced} SyncBN layer config(s) use BN instead',
                  logger='current', level=logging.WARNING)
    if cfg.get('launcher', 'none') != 'none':
        env_cfg = cfg.setdefault('env_cfg', ConfigDict())
        env_cfg.setdefault('dist_cfg', ConfigDict())['backend'] = 'gloo'
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(
                type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                find_unused_parameters=cfg.get('find_unused_parameters', False))


def prepare_train_config(config: str, work_dir: Optional[str] = None, resume: bool = False,
                         amp: bool = False, cfg_options: Optional[dict] = None,
                         launcher: str = 'none') -> Config:
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    _set_work_dir(cfg, config, work_dir)
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in the config', logger='current',
                      level=logging.WARNING)
        elif wrapper != 'OptimWrapper':
            raise ValueError(
                f'--amp needs optim_wrapper.type OptimWrapper (or AmpOptimWrapper), got {wrapper!r}')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = resume
    _check_work_dir_checkpoints(cfg)
    adapt_for_cpu(cfg)
    check_config(cfg)
    return cfg


def _check_work_dir_checkpoints(cfg: Config) -> None:
    """Resume from the newest readable checkpoint; say so when a run starts over next to some."""
    if cfg.get('load_from') is not None:
        return  # an explicit checkpoint: mmengine loads (or, with resume, resumes from) it
    if cfg.resume:
        latest = find_resume_checkpoint(cfg.work_dir)
        if latest is not None:
            cfg.load_from = latest  # mmengine resumes from load_from when resume is set
        return
    existing = list_checkpoints(cfg.work_dir)
    if existing:
        print_log(f'work dir {cfg.work_dir} already holds {len(existing)} checkpoint(s) (newest: '
                  f'{osp.basename(existing[0])}); this run starts over from iteration 0 without '
                  f'them and overwrites those of the same name. Pass --resume to continue the '
                  f'earlier run instead, or --work-dir to keep both', logger='current',
                  level=logging.WARNING)


def prepare_test_config(config: str, checkpoint: str, work_dir: Optional[str] = None,
                        cfg_options: Optional[dict] = None, launcher: str = 'none',
                        out: Optional[str] = None, show_dir: Optional[str] = None,
                        show_interval: int = 1) -> Config:
    """The test config of ``config`` for ``checkpoint`` (loaded strictly by :func:`run_runner`).

    ``show_dir``: draw the test predictions (mmseg's ``SegLocalVisualizer``) into
    ``show_dir/vis_data/vis_image/``, the images of every ``show_interval`` -th test batch.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file {checkpoint!r} does not exist')
    cfg = load_config(config, cfg_options)
    cfg.launcher = launcher
    _set_work_dir(cfg, config, work_dir)
    cfg.load_from = checkpoint
    if out is not None:
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    if show_dir is not None:
        # As mmseg's tools/test.py: the hook draws, the visualizer's backends save to show_dir.
        hook = cfg.get('default_hooks', {}).get('visualization')
        if hook is None or cfg.get('visualizer') is None:
            raise ValueError('--show-dir needs a `visualization` hook in default_hooks and a '
                             '`visualizer` in the config (configs/_base_/default_runtime.py)')
        if not isinstance(show_interval, int) or show_interval < 1:
            raise ValueError(f'show_interval must be a positive int, got {show_interval!r}')
        hook['draw'] = True
        hook['interval'] = show_interval
        cfg.visualizer['save_dir'] = show_dir
        # mmengine hands out an existing visualizer of the same name and ignores save_dir, so
        # a process that built a runner before (a notebook, the tests) needs a name of its own.
        cfg.visualizer['name'] = f'show_dir_{uuid.uuid4().hex[:8]}'
    adapt_for_cpu(cfg)
    check_config(cfg)
    return cfg


_OWNED_GROUPS: list = []


def release_process_group() -> None:
    """Destroy the process group :func:`build_runner` started, if any.

    Call it once nothing holds the group any more (see :func:`run_runner`). Left to the
    interpreter's exit, the gloo group's threads are torn down in an order that can abort the
    process ("terminate called without an active exception") after a run that otherwise
    succeeded.
    """
    if _OWNED_GROUPS and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _OWNED_GROUPS.clear()


STAGES = ('train', 'test', 'train_test')


def run_runner(cfg: Config, stage: str, inspect: Optional[Callable] = None) -> Optional[dict]:
    """Build the runner for ``cfg`` and run ``stage``: ``'train'``, ``'test'``, or
    ``'train_test'`` (train, then test the trained model: the probe protocol).

    Returns the test metrics of the stages that test (else None). ``inspect(runner)`` is
    called after the stage, before the runner goes (the demo draws its panels there). Then
    the runner is freed (its DDP wrapper holds the process group) and the group
    :func:`build_runner` started is destroyed, so that the group's last reference goes while
    the interpreter is whole rather than at its exit, where gloo aborts the process now and
    then (1 of 22 two-process CPU runs under load; 0 of 60 since). When the stage fails, the
    error propagates untouched: a barrier there would wait for peers that may be inside a
    collective, and ``torchrun`` stops them once this process has exited.
    """
    if stage not in STAGES:
        raise ValueError(f'stage must be one of {STAGES}, got {stage!r}')
    runner = build_runner(cfg)
    if stage == 'test' and cfg.get('load_from'):
        load_test_checkpoint(runner, cfg['load_from'])
    if stage in ('train', 'train_test'):
        runner.train()
    metrics = None
    if stage in ('test', 'train_test'):
        metrics = {k: float(v) for k, v in (runner.test() or {}).items()}
    if inspect is not None:
        inspect(runner)
    del runner
    gc.collect()  # the runner's loops and hooks refer back to it
    release_process_group()
    return metrics


def load_test_checkpoint(runner: Runner, filename: str) -> None:
    """Load the segmentor checkpoint to evaluate into ``runner``'s model, strictly.

    Refuses the toolkit's other checkpoint kinds (backbone, CLIP) with what to do with them,
    and a segmentor checkpoint that does not fit the model with a summary of the mismatch.
    """
    expected = ('a segmentor checkpoint written by tools/train.py for this config '
                '(e.g. work_dirs/<config>/iter_N.pth)')
    checkpoint = load_checkpoint_file(filename, map_location='cpu', expected=expected)
    kind = checkpoint_kind(checkpoint)
    if kind in ('backbone', 'clip'):
        what, advice = describe_kind(kind)
        raise CheckpointError(f'{filename} is {what}, not a segmentor checkpoint: tools/test.py '
                              f'evaluates {expected}. {advice}')
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    check_state_dict_fits(model, state_dict_of(checkpoint), filename, expected,
                          advice='check that the config is the one the checkpoint was trained with')
    del checkpoint
    runner.load_checkpoint(filename, map_location='cpu', strict=True)


_RUNNER_NUMBERS = itertools.count(1)  # of the runners this process builds


def _name_experiment(cfg: Config) -> None:
    """Give each runner of this process its own experiment name.

    mmengine names a run's logger, message hub and visualizer ``<config>_<timestamp>`` (to the
    second) and hands back an existing instance of that name: a second runner built in the
    same second (train then test in one process, a sweep) would log into the first run's
    handlers and files. The first runner keeps mmengine's name; later ones get ``-run<N>``.
    """
    number = next(_RUNNER_NUMBERS)
    if cfg.get('experiment_name') is None and number > 1:
        stem = osp.splitext(osp.basename(cfg.filename or 'run'))[0]
        cfg.experiment_name = f'{stem}-run{number}'


def build_runner(cfg: Config) -> Runner:
    """The runner of ``cfg``; from here on mmengine loads local checkpoints, resuming included,
    through :func:`~gspn2_dense.engine.checkpoint.load_local_checkpoint` (its own loader cannot
    read its checkpoints under torch >= 2.6)."""
    register_checkpoint_loader()
    _name_experiment(cfg)
    if (cfg.get('launcher', 'none') == 'pytorch' and not torch.cuda.is_available()
            and not dist.is_initialized()):
        # torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) describes the group;
        # once it exists, the runner uses it instead of starting its own.
        dist.init_process_group(backend='gloo')
        _OWNED_GROUPS.append(dist.group.WORLD)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
