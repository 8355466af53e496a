"""The benchmark entry points in tools/ parse their arguments and call the package."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool(*args):
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_cpu_benchmark_writes_its_report(tmp_path):
    out = tmp_path / 'op_cpu'
    printed = _tool('tools/benchmark_op_cpu.py', '--batch', '1', '--channels', '2', '--size', '8',
                    '--repeats', '1', '--ref-repeats', '1', '--threads', '1', '--commit', 'abc1234',
                    '--out', str(out))
    assert printed.startswith('1 torch thread(s):\n| case |')
    record = json.loads(out.with_suffix('.json').read_text())
    assert record['shape'] == dict(B=1, C=2, H=8, W=8, G=1) and record['commit'] == 'abc1234'
    assert record['command'].startswith('python tools/benchmark_op_cpu.py --batch 1')
    assert '## 1 torch thread(s)' in out.with_suffix('.md').read_text()


def test_gpu_benchmark_redraws_the_published_plots(tmp_path):
    shutil.copy(ROOT / 'docs' / 'benchmarks' / 'op.json', tmp_path / 'op.json')
    printed = _tool('tools/benchmark_op.py', '--plot', str(tmp_path / 'op.json'))
    assert printed.split() == [str(tmp_path / 'op_efficiency.png'),
                               str(tmp_path / 'op_time_vs_resolution.png')]


def test_seg_loss_layout_resize_by_products_is_bilinear_interpolation():
    """The device A/B's candidate resize (tools/device/seg_loss_layout.py) computes what mmseg's
    bilinear resize does, values and gradients, up- and downsampling."""
    import runpy
    import torch
    import torch.nn.functional as F
    resize_by_products = runpy.run_path(str(ROOT / 'tools/device/seg_loss_layout.py'))['resize_by_products']
    for h, w, size in [(16, 16, (512, 512)), (7, 9, (50, 61)), (5, 4, (5, 4)), (8, 8, (4, 4)),
                       (1, 3, (6, 2))]:
        x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
        want = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        got = resize_by_products(x, size)
        assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-12)
        grad = torch.randn_like(want)
        (want_grad,), (got_grad,) = (torch.autograd.grad(y, x, grad) for y in (want, got))
        assert torch.allclose(got_grad, want_grad, rtol=0, atol=1e-12), (h, w, size)


def test_seg_loss_layout_runs_on_the_cpu(tmp_path):
    out = tmp_path / 'sll'
    printed = _tool('tools/device/seg_loss_layout.py', '--device', 'cpu', '--size', '64',
                    '--channels', '8', '--classes', '5', '--iters', '1', '--resize', 'both',
                    '--commit', 'abc1234', '--out', str(out))
    rows = [json.loads(line) for line in printed.splitlines()]
    assert [(r['layout'], r['resize']) for r in rows] == [
        (layout, resize) for layout in ('contiguous', 'channels_last') * 2
        for resize in ('interpolate', 'products')]
    record = json.loads(out.with_suffix('.json').read_text())
    assert record['commit'] == 'abc1234' and len(record['rows']) == 8
