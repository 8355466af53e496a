"""Saving and resuming an mmengine run under torch >= 2.6 (weights-only ``torch.load``)."""
import copy

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import gspn2_dense  # noqa: F401  (registers the checkpoint loader)
from gspn2_dense.engine import load_local_checkpoint


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
