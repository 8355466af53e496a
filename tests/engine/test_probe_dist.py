"""tools/train.py + tools/test.py on the demo configs, and a two-process CPU run of dist_train.sh."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gspn2_dense.demo import DEMO_ROOTS, make_probe_data

ROOT = Path(__file__).resolve().parents[2]
SEG = 'configs/demo/ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py'
DEPTH = 'configs/demo/ms-linear_gspn2-test_1xb2-4_nyu-depth-demo-64x64.py'


def roots_options(data_root):
    return [f'{key}.dataset.data_root={data_root}'
            for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def run(cmd, **env):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHON': sys.executable, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    return make_probe_data(root, datasets=['ade20k', 'nyu-depth'])


def test_dist_train_two_processes_with_frozen_backbone(demo, tmp_path):
    out = run(['bash', 'tools/dist_train.sh', DEPTH, '2', '--work-dir', str(tmp_path),
               '--cfg-options', *roots_options(demo['nyu-depth']), 'train_cfg.max_iters=2',
               'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2'],
              PORT='29531', OMP_NUM_THREADS='1')
    assert 'Iter(train) [2/2]' in out and 'rmse' in out
    assert (tmp_path / 'iter_2.pth').is_file()


def test_train_then_test_segmentation(demo, tmp_path):
    out = run([sys.executable, 'tools/train.py', SEG, '--work-dir', str(tmp_path),
               '--cfg-options', *roots_options(demo['ade20k'])])
    assert 'Iter(train) [4/4]' in out and 'mIoU' in out
    out = run([sys.executable, 'tools/test.py', SEG, str(tmp_path / 'iter_4.pth'), '--work-dir',
               str(tmp_path), '--cfg-options', *roots_options(demo['ade20k'])])
    assert 'Iter(test)' in out and 'mIoU' in out
