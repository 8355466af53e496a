"""The checkpoints of a real (tiny) demo-config run: weights-only loading, clear refusals,
resume fallback, and ``tools/test.py`` loading strictly and drawing with ``--show-dir``."""
import argparse
import glob
import logging
import os
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger

import gspn2_dense  # noqa: F401  (registers the modules and the checkpoint loader)
from gspn2_dense.demo import make_probe_data
from gspn2_dense.engine import CheckpointError, load_checkpoint_file
from gspn2_dense.engine.launch import (build_runner, prepare_test_config, prepare_train_config,
                                       run_runner)

ROOT = Path(__file__).resolve().parents[2]
SEG = str(ROOT / 'configs/demo/ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py')


def _options(data_root, **extra):
    options = {f'{key}.dataset.data_root': data_root
               for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    return {**options, **extra}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A 4-iteration run of the tiny demo segmentation config, checkpointing every 2 iterations."""
    root = tmp_path_factory.mktemp('ckpt')
    data_root = make_probe_data(str(root / 'data'), datasets=['ade20k'])['ade20k']
    work_dir = root / 'work'
    cfg = prepare_train_config(SEG, work_dir=str(work_dir), cfg_options=_options(
        data_root, **{'default_hooks.checkpoint.interval': 2, 'train_cfg.val_interval': 100}))
    run_runner(cfg, 'train')
    return argparse.Namespace(work_dir=work_dir, data_root=data_root)


@pytest.fixture
def log_lines():
    """Messages that reach mmengine's current logger during the test."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def _copy_run(run, tmp_path):
    """A copy of the run's work dir whose ``last_checkpoint`` points into the copy."""
    work_dir = tmp_path / 'work'
    os.makedirs(work_dir)
    for name in ('iter_2.pth', 'iter_4.pth'):
        shutil.copy(run.work_dir / name, work_dir / name)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_4.pth'))
    return work_dir


def _truncate(path):
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)


def test_linear_probe_configs_keep_two_checkpoints(run):
    assert (run.work_dir / 'iter_2.pth').is_file() and (run.work_dir / 'iter_4.pth').is_file()
    for config in sorted([*(ROOT / 'configs/linear_probe').glob('*.py'),
                          *(ROOT / 'configs/demo').glob('*.py')]):
        hooks = Config.fromfile(str(config)).get('default_hooks') or {}
        if 'checkpoint' in hooks:
            assert hooks['checkpoint'].get('max_keep_ckpts', -1) != 1, config


def test_own_checkpoints_load_in_weights_only_mode(run, monkeypatch, log_lines):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', recording_load)
    checkpoint = load_checkpoint_file(str(run.work_dir / 'iter_4.pth'))
    assert checkpoint['meta']['iter'] == 4
    # the message hub's HistoryBuffer comes back with its statistics methods
    loss = checkpoint['message_hub']['log_scalars']['train/loss']
    assert loss.statistics('mean') == pytest.approx(float(np.mean(loss.data[0])))
    assert calls == [True]
    assert not [line for line in log_lines if 'weights_only' in line]


def test_a_foreign_object_is_refused_not_unpickled(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'args': argparse.Namespace(lr=0.1), 'weight': torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r'foreign.pth holds a Python object outside the '
                       r'weights-only allow-list \(GLOBAL argparse.Namespace\).*Load only files '
                       r'you trust') as info:
        load_checkpoint_file(str(path))
    assert 'weights_only=False' not in str(info.value)


class _GetattrOnNumpy:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')``: a getattr beyond HistoryBuffer's."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_getattr_is_allowed_for_history_buffer_statistics_only(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrOnNumpy()}, path)
    with pytest.raises(CheckpointError, match=r'outside the weights-only allow-list '
                                              r'\(GLOBAL builtins.getattr\)'):
        load_checkpoint_file(str(path))


@pytest.mark.parametrize('damage, message', [
    ('truncate', r'half.pth \([\d,]+ bytes\) is truncated or corrupt and cannot be read '
                 r'\(RuntimeError: .*central directory\)\. Expected a segmentor'),
    ('empty', r'is empty \(0 bytes\).*Expected a segmentor'),
    ('random', r'is not a PyTorch checkpoint: it is neither a torch.save zip archive nor a legacy '
               r'torch.save pickle.*Expected a segmentor'),
    ('pickle', r'is corrupt: its pickled data does not decode.*Expected a segmentor'),
])
def test_damaged_files_get_a_message_saying_what_they_are(run, tmp_path, damage, message):
    path = tmp_path / 'half.pth'
    shutil.copy(run.work_dir / 'iter_4.pth', path)
    if damage == 'truncate':
        _truncate(path)
    elif damage == 'empty':
        path.write_bytes(b'')
    elif damage == 'random':
        path.write_bytes(np.random.default_rng(0).integers(1, 127, 4096, dtype=np.uint8).tobytes())
    else:  # a pickle opcode stream that is not a checkpoint's
        path.write_bytes(b'\x80\x02' + np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint_file(str(path), expected='a segmentor checkpoint')
    assert 'weights_only=False' not in str(info.value)


def test_resume_falls_back_to_the_newest_readable_checkpoint(run, tmp_path, log_lines):
    work_dir = _copy_run(run, tmp_path)
    _truncate(work_dir / 'iter_4.pth')
    cfg = prepare_train_config(SEG, work_dir=str(work_dir), resume=True,
                               cfg_options=_options(run.data_root, **{'train_cfg.val_interval': 100}))
    assert cfg.load_from == str(work_dir / 'iter_2.pth') and cfg.resume
    assert any('skipping' in line and 'iter_4.pth' in line and 'truncated' in line
               for line in log_lines)
    assert any('resuming from the newest readable one' in line and 'iter_2.pth' in line
               for line in log_lines)
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 4
    assert load_checkpoint_file(str(work_dir / 'iter_4.pth'))['meta']['iter'] == 4


def test_resume_with_no_readable_checkpoint_stops(run, tmp_path):
    work_dir = _copy_run(run, tmp_path)
    _truncate(work_dir / 'iter_4.pth')
    (work_dir / 'iter_2.pth').write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'cannot resume: none of the 2 checkpoint\(s\) in '
                                              r'.* can be read'):
        prepare_train_config(SEG, work_dir=str(work_dir), resume=True,
                             cfg_options=_options(run.data_root))


def test_a_new_run_next_to_old_checkpoints_says_so(run, tmp_path, log_lines):
    work_dir = _copy_run(run, tmp_path)
    cfg = prepare_train_config(SEG, work_dir=str(work_dir), cfg_options=_options(run.data_root))
    assert cfg.load_from is None and not cfg.resume
    assert any('already holds 2 checkpoint(s) (newest: iter_4.pth); this run starts over' in line
               and '--resume' in line for line in log_lines)


def _tool(argv, monkeypatch):
    """Run ``tools/test.py *argv`` in this process; return its exit code."""
    monkeypatch.setattr(sys, 'argv', [str(ROOT / 'tools/test.py'), *map(str, argv)])
    try:
        runpy.run_path(str(ROOT / 'tools/test.py'), run_name='__main__')
    except SystemExit as exc:
        return exc.code
    return 0


def _test_argv(run, checkpoint, *extra):
    return [SEG, checkpoint, '--work-dir', run.work_dir / 'test', *extra, '--cfg-options',
            *[f'{k}={v}' for k, v in _options(run.data_root).items()]]


def test_show_dir_writes_one_panel_per_test_image(run, tmp_path, monkeypatch):
    show = tmp_path / 'show'
    assert _tool(_test_argv(run, run.work_dir / 'iter_4.pth', '--show-dir', show), monkeypatch) == 0
    panels = sorted(glob.glob(str(show / 'vis_data' / 'vis_image' / 'test_*.png')))
    images = glob.glob(os.path.join(run.data_root, 'images', 'validation', '*.jpg'))
    assert len(panels) == len(images) > 0


def _backbone_file(run, tmp_path):
    state = load_checkpoint_file(str(run.work_dir / 'iter_4.pth'))['state_dict']
    trunk = {k[len('backbone.trunk.'):]: v for k, v in state.items() if k.startswith('backbone.trunk.')}
    path = tmp_path / 'tower.pth'
    torch.save({'state_dict': trunk, 'meta': {'converted_from': 'open_clip visual.trunk'}}, path)
    return path


def _clip_file(run, tmp_path):
    state = load_checkpoint_file(str(run.work_dir / 'iter_4.pth'))['state_dict']
    clip = {'module.visual.' + k[len('backbone.'):]: v for k, v in state.items()
            if k.startswith('backbone.')}
    clip['module.logit_scale'] = torch.zeros(())
    path = tmp_path / 'epoch_1.pt'
    torch.save({'epoch': 1, 'state_dict': clip}, path)
    return path


def _foreign_head_file(run, tmp_path):
    checkpoint = load_checkpoint_file(str(run.work_dir / 'iter_4.pth'))
    state = checkpoint['state_dict']
    state['decode_head.conv_seg.weight'] = state['decode_head.conv_seg.weight'][:40]
    state['decode_head.conv_seg.bias'] = state['decode_head.conv_seg.bias'][:40]
    del state['backbone.trunk.stem.0.weight']
    path = tmp_path / 'nyu40.pth'
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize('make, message', [
    (_backbone_file, r'tower.pth is a backbone checkpoint \(a GSPN-2 trunk.*not a segmentor '
                     r'checkpoint.*Use it as `model.backbone.init_cfg.checkpoint`'),
    (_clip_file, r'epoch_1.pt is a CLIP checkpoint.*tools/convert_clip_to_backbone.py'),
    (_foreign_head_file, r'nyu40.pth does not fit the model: 1 of the model\'s \d+ tensors are '
                         r'missing from it \(backbone.trunk.stem.0.weight\); 2 have another shape '
                         r'\(decode_head.conv_seg.weight: checkpoint \(40, 120, 1, 1\), model '
                         r'\(150, 120, 1, 1\).*check that the config is the one'),
])
def test_test_tool_refuses_checkpoints_that_do_not_fit(run, tmp_path, monkeypatch, capsys, make,
                                                       message):
    path = make(run, tmp_path)
    with pytest.raises(CheckpointError, match=message):
        run_runner(prepare_test_config(SEG, str(path), work_dir=str(tmp_path / 'test'),
                                       cfg_options=_options(run.data_root)), 'test')
    # the tool itself stops with that message, one line, and exit code 1 (not a 0.00 mIoU)
    capsys.readouterr()
    assert _tool(_test_argv(run, path), monkeypatch) == 1
    err = capsys.readouterr().err
    assert 'error: ' in err and len(err.strip().splitlines()) == 1
    assert 'mIoU' not in err


def test_test_tool_refuses_a_truncated_checkpoint(run, tmp_path, monkeypatch, capsys):
    path = tmp_path / 'iter_4.pth'
    shutil.copy(run.work_dir / 'iter_4.pth', path)
    _truncate(path)
    assert _tool(_test_argv(run, path), monkeypatch) == 1
    assert 'is truncated or corrupt and cannot be read' in capsys.readouterr().err

