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


def test_seg_loss_layout_runs_on_the_cpu(tmp_path):
    out = tmp_path / 'sll'
    printed = _tool('tools/device/seg_loss_layout.py', '--device', 'cpu', '--size', '64',
                    '--channels', '8', '--classes', '5', '--iters', '1', '--resize', 'both',
                    '--commit', 'abc1234', '--out', str(out))
    rows = [json.loads(line) for line in printed.splitlines()]
    assert [(r['layout'], r['resize']) for r in rows] == [
        (layout, resize) for layout in ('contiguous', 'channels_last') * 2
        for resize in ('interpolate', 'resize_bilinear')]
    record = json.loads(out.with_suffix('.json').read_text())
    assert record['commit'] == 'abc1234' and len(record['rows']) == 8
