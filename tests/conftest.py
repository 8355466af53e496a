"""Shared test set-up: mmseg's default scope, running tools in-process, CLIP demo shards, test ids."""
import importlib.util
import os
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_make_parametrize_id(config, val, argname):
    """torch dtypes by name in test ids (``[bfloat16]``, not ``[dtype3]``), so that ``-k
    bfloat16`` selects them (the device scripts shard the CUDA tests that way)."""
    import torch
    if isinstance(val, torch.dtype):
        return str(val).removeprefix('torch.')
    return None


@pytest.fixture(autouse=True)
def _mmseg_default_scope():
    """Resolve registry look-ups in mmseg's scope in every test.

    An mmengine ``Runner`` makes its ``default_scope`` the process-wide current scope and
    leaves it so; without this, a test's ``MODELS.build(dict(type='GSPN2'))`` would depend on
    which Runner an earlier test happened to build.
    """
    if importlib.util.find_spec('mmseg') is None:
        yield
        return
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture
def run_tool(monkeypatch):
    """``run_tool(name, argv)`` runs ``tools/<name>`` in this process as ``python tools/<name>
    *argv`` and returns its exit code."""
    def run(name, argv):
        monkeypatch.setattr(sys, 'argv', [str(ROOT / 'tools' / name), *map(str, argv)])
        try:
            runpy.run_path(str(ROOT / 'tools' / name), run_name='__main__')
        except SystemExit as exc:
            return exc.code or 0
        return 0
    return run


@pytest.fixture
def tool_env():
    """Environment for a subprocess that imports gspn2_dense from this checkout."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), env.get('PYTHONPATH')]))
    return env


@pytest.fixture
def demo(tmp_path):
    """CLIP demo data: four shards of eight 32 px samples, and a 12-class validation folder of 2 images each."""
    from gspn2_dense.demo.clip_data import make_clip_shards
    return make_clip_shards(str(tmp_path / 'demo'), num_shards=4, samples_per_shard=8,
                            val_per_class=2, image_size=32, seed=1)


@pytest.fixture
def truncate():
    """``truncate(path)`` cuts a file to half its size (a shard whose download broke off)."""
    def cut(path, fraction=0.5):
        with open(path, 'r+b') as f:
            f.truncate(int(os.path.getsize(path) * fraction))
    return cut
