"""A wheel of the package works without the checkout: the op builds from the csrc/ it carries,
the configs are found inside it, and one probe config trains from it.

The wheel is installed with ``--target`` into a temporary folder and run from another one,
with that folder first on ``PYTHONPATH``: the checkout's editable install sits behind it.
"""
import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (ROOT / 'setup.py').is_file(), reason='needs the source checkout')

RUN_FROM_WHEEL = r'''
import sys
from pathlib import Path
import torch
import gspn2_dense
site = Path(sys.argv[1]).resolve()
assert Path(gspn2_dense.__file__).resolve().is_relative_to(site), gspn2_dense.__file__

from gspn2_dense.ops import _build, gspn_propagate, gspn_propagate_ref
assert _build.CSRC == site / 'gspn2_dense' / 'csrc', _build.CSRC
torch.manual_seed(0)
x, gates = torch.randn(2, 4, 9, 7), torch.randn(2, 4, 1, 3, 9, 7)
lam, u = torch.rand(2, 4, 4, 9, 7), torch.randn(2, 4, 4, 9, 7)
torch.testing.assert_close(gspn_propagate(x, gates, lam, u), gspn_propagate_ref(x, gates, lam, u))
assert _build.load_extension('cpu').__file__.startswith(sys.argv[2]), 'not the fresh build'

from gspn2_dense.engine.probe import CONFIG_DIR
assert CONFIG_DIR == site / 'gspn2_dense' / 'configs', CONFIG_DIR
from gspn2_dense.demo import make_probe_data
from gspn2_dense.engine.launch import prepare_train_config, run_runner
data_root = make_probe_data('data', datasets=['ade20k'])['ade20k']
options = {f'{k}.dataset.data_root': data_root
           for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
cfg = prepare_train_config(str(CONFIG_DIR / 'demo' / 'ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py'),
                           work_dir='work', cfg_options=options)
run_runner(cfg, 'train')
assert Path('work/iter_4.pth').is_file()
print('wheel ok')
'''


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                    '-w', str(out), str(ROOT)], check=True, cwd=out)
    (path,) = out.glob('gspn2_dense-*.whl')
    return path


def test_wheel_carries_csrc_and_configs_and_declares_extras(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith('.dist-info/METADATA')]
        meta = email.message_from_bytes(archive.read(metadata))
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / 'csrc').rglob('*') if p.is_file()}
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')}
    missing = sorted(f for f in sources | configs if f'gspn2_dense/{f}' not in names)
    assert not missing, f'the wheel lacks {missing[:5]}'
    assert 'gspn2_dense/clip/model_configs/GSPN2-T.json' in names
    assert {'mmseg', 'clip', 'dev'} <= set(meta.get_all('Provides-Extra'))
    core = [r for r in meta.get_all('Requires-Dist') if 'extra ==' not in r]
    assert not [r for r in core if r.split('=')[0].split('<')[0].split('[')[0].strip()
                in ('mmcv', 'mmsegmentation', 'mmengine', 'open_clip_torch')], core


def test_installed_wheel_builds_the_op_and_trains_a_probe_config(wheel, tmp_path):
    site, ext, work = tmp_path / 'site', tmp_path / 'ext', tmp_path / 'run'
    work.mkdir()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(site),
                    str(wheel)], check=True)
    env = dict(os.environ, PYTHONPATH=str(site), GSPN2_EXT_DIR=str(ext))
    result = subprocess.run([sys.executable, '-c', RUN_FROM_WHEEL, str(site), str(ext)], cwd=work,
                            env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert 'wheel ok' in result.stdout
