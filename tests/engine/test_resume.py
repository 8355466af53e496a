"""Saving and resuming an mmengine run under torch >= 2.6 (weights-only ``torch.load``).

mmengine's own loader cannot read its checkpoints under torch >= 2.6; the toolkit's runners
(``build_runner``, hence ``tools/train.py``) install the weights-only one, and
``import gspn2_dense`` leaves mmengine's loader alone.
"""
import copy
import glob
import os
import pickle
import runpy
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner
from mmengine.runner.checkpoint import load_from_local
from torch.utils.data import Dataset

import gspn2_dense  # noqa: F401  (registers the GSPN-2 modules)
from gspn2_dense.demo import make_probe_data
from gspn2_dense.engine import load_checkpoint_file, load_local_checkpoint, register_checkpoint_loader

ROOT = Path(__file__).resolve().parents[2]
SEG = str(ROOT / 'configs/demo/ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py')
TORCH_2_6 = tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 6)


def _local_loader():
    return CheckpointLoader._get_checkpoint_loader('work_dirs/run/iter_2.pth')


@pytest.fixture
def mmengine_default_loader(monkeypatch):
    """Put mmengine's own loader for local paths back, as ``import gspn2_dense`` leaves it; the
    fixture does it once, the test calls it to do it again; the schemes are restored after."""
    def reset():
        schemes = OrderedDict(CheckpointLoader._schemes)
        schemes[''] = load_from_local
        monkeypatch.setattr(CheckpointLoader, '_schemes', schemes)
    reset()
    return reset


def test_importing_the_package_leaves_mmengines_loader_alone():
    code = ('import gspn2_dense, gspn2_dense.engine, gspn2_dense.models.openmmlab\n'
            'from mmengine.runner.checkpoint import CheckpointLoader, load_from_local\n'
            'loader = CheckpointLoader._get_checkpoint_loader("iter_2.pth")\n'
            'assert loader is load_from_local, loader\n')
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))
    result = subprocess.run([sys.executable, '-c', code], env=dict(os.environ, PYTHONPATH=path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_registering_the_loader_is_idempotent(mmengine_default_loader):
    register_checkpoint_loader()
    after_one = dict(CheckpointLoader._schemes)
    register_checkpoint_loader()
    assert dict(CheckpointLoader._schemes) == after_one
    assert _local_loader() is load_local_checkpoint
    assert CheckpointLoader._get_checkpoint_loader('https://x/y.pth') is not load_local_checkpoint


def _train_tool(argv, monkeypatch):
    """Run ``tools/train.py *argv`` in this process; return its exit code."""
    monkeypatch.setattr(sys, 'argv', [str(ROOT / 'tools/train.py'), *map(str, argv)])
    try:
        runpy.run_path(str(ROOT / 'tools/train.py'), run_name='__main__')
    except SystemExit as exc:
        return exc.code or 0
    return 0


def test_train_then_resume_through_the_tool(tmp_path, monkeypatch, mmengine_default_loader):
    data_root = make_probe_data(str(tmp_path / 'data'), datasets=['ade20k'])['ade20k']
    work_dir = tmp_path / 'work'
    options = [f'{key}.dataset.data_root={data_root}'
               for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += ['default_hooks.checkpoint.interval=2', 'train_cfg.val_interval=100']
    assert _train_tool([SEG, '--work-dir', work_dir, '--cfg-options', *options,
                        'train_cfg.max_iters=2'], monkeypatch) == 0
    first = work_dir / 'iter_2.pth'
    before = first.read_bytes()
    if TORCH_2_6:  # why the tools install a loader: mmengine's own cannot read the checkpoint
        with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
            load_from_local(str(first), map_location='cpu')
    mmengine_default_loader()  # the resuming run must install the loader itself
    assert _train_tool([SEG, '--work-dir', work_dir, '--resume', '--cfg-options', *options],
                       monkeypatch) == 0
    assert _local_loader() is load_local_checkpoint
    assert first.read_bytes() == before  # not re-saved: the second run started at iteration 2
    logs = ''.join(Path(p).read_text() for p in glob.glob(str(work_dir / '*' / '*.log')))
    assert 'resumed epoch: 0, iter: 2' in logs
    saved = load_checkpoint_file(str(first))
    final = load_checkpoint_file(str(work_dir / 'iter_4.pth'))
    assert final['meta']['iter'] == 4
    before_state, after_state = saved['optimizer']['state'], final['optimizer']['state']
    assert before_state and before_state.keys() == after_state.keys()
    for key, state in before_state.items():
        assert after_state[key]['step'].item() == state['step'].item() + 2


class _ToyData(Dataset):
    def __init__(self, n: int = 32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], target=self.y[i])


class _ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, target=None, mode='tensor'):
        pred = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((pred - target) ** 2).mean())
        return pred


def _runner(work_dir, max_iters, resume):
    return Runner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=_ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                             end=max_iters),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmengine',
        experiment_name=f'resume_{max_iters}_{resume}',
    )


def test_train_stop_resume_continues_iteration_and_optimizer(tmp_path):
    """A Runner of one's own resumes once the loader is registered (build_runner does it)."""
    register_checkpoint_loader()
    first = _runner(tmp_path, max_iters=3, resume=False)
    first.train()
    ckpt_path = tmp_path / 'iter_3.pth'
    assert ckpt_path.is_file()
    saved = load_local_checkpoint(str(ckpt_path), map_location='cpu')
    assert saved['meta']['iter'] == 3
    saved_state = copy.deepcopy(saved['optimizer']['state'])
    saved_lr = saved['param_schedulers'][0]['last_step']

    second = _runner(tmp_path, max_iters=6, resume=True)
    resumed_at = {}

    def record(runner):
        # after resume, before the first new iteration
        resumed_at['iter'] = runner.iter
        opt = runner.optim_wrapper.optimizer
        resumed_at['state'] = {k: copy.deepcopy(v) for k, v in opt.state_dict()['state'].items()}
        resumed_at['sched'] = runner.param_schedulers[0].last_step

    second.register_hook(_Probe(record), priority='VERY_HIGH')
    second.train()
    assert resumed_at['iter'] == 3
    assert resumed_at['sched'] == saved_lr
    for key, value in saved_state.items():
        assert torch.equal(resumed_at['state'][key]['exp_avg'], value['exp_avg'])
        assert torch.equal(resumed_at['state'][key]['step'], value['step'])
    assert second.iter == 6
    final = load_local_checkpoint(str(tmp_path / 'iter_6.pth'))
    for key, value in saved_state.items():
        assert final['optimizer']['state'][key]['step'].item() == value['step'].item() + 3


from mmengine.hooks import Hook  # noqa: E402


class _Probe(Hook):
    def __init__(self, fn):
        self.fn = fn

    def before_train(self, runner):
        self.fn(runner)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_local_checkpoint(str(tmp_path / 'nope.pth'))
