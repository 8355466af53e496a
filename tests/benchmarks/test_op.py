"""The op benchmark on tiny shapes, its GPU report from a made-up record, the timer, the stamp
and the writer (what they report, not how fast anything is)."""
import json
import time

import pytest
import torch

from gspn2_dense.benchmarks import op, report
from gspn2_dense.benchmarks.timing import TIMING_ENVIRONMENT, Timer, git_commit, run_stamp
from gspn2_dense.ops._build import load_extension

SHAPE = dict(B=1, C=2, H=8, W=6, G=1)
TIMED = dict(B=1, C=4, H=48, W=40, G=1)  # calls of 0.05 ms and more: rounding to 1 us is small


def test_timer_warms_up_then_takes_medians():
    calls = []

    def nap():
        calls.append(None)
        time.sleep(0.003)

    timing = Timer('cpu').measure(nap, iters=5, warmup=2)
    assert len(calls) == 7
    assert 3 <= timing.ms < 300
    assert timing.cpu_ms < timing.ms / 2  # a sleep takes wall time, not CPU time
    assert Timer('cpu').median_ms(nap, 1, 0) >= 3


def test_timer_on_the_cpu_has_no_peak_memory():
    timer = Timer('cpu')
    one = timer.once(lambda: sum(range(10000)))
    assert one.ms > 0 and one.cpu_ms is not None
    assert timer.peak_gib(lambda: torch.empty(1000)) is None


def test_stamp_names_machine_environment_and_commit(monkeypatch):
    for name in TIMING_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('THP_MEM_ALLOC_ENABLE', '1')
    stamp = run_stamp('cpu', 'abc1234')
    assert stamp['commit'] == 'abc1234' and stamp['environment'] == {'THP_MEM_ALLOC_ENABLE': '1'}
    assert stamp['cores'] >= 1 and stamp['device'] and stamp['torch'] == torch.__version__
    line = report.stamp_line(stamp)
    assert line.startswith(f'torch {torch.__version__}, CUDA ')
    assert 'environment THP_MEM_ALLOC_ENABLE=1' in line and line.endswith(', commit abc1234')
    commit = git_commit()
    assert commit == 'unknown' or int(commit, 16) >= 0


def test_writer_tables_files_and_plots(tmp_path):
    assert report.table(['a', 'b'], [[1, 'x'], [2.5, None]]).splitlines() == [
        '| a | b |', '|---|---|', '| 1 | x |', '| 2.5 | None |']
    assert report.records_table([dict(a=1, b=2)]) == '| a | b |\n|---|---|\n| 1 | 2 |'
    json_path, md_path = report.write(tmp_path / 'sub' / 'r.v1', dict(x=1), '# r\n')
    assert json_path.name == 'r.v1.json' and report.read(json_path) == dict(x=1)
    assert md_path.read_text() == '# r\n'
    lines = report.plot_lines(tmp_path / 'l.png', {'a': [(1, 1), (10, 5)], 'floor': [(1, 0.5), (10, 2)],
                                                   'empty': []}, 'x', 'y', 'title')
    bars = report.plot_bars(tmp_path / 'b.png', ['p', 'q'], {'fwd': [0.5, 0.2], 'bwd': [0.3, 0.1]},
                            'eff', 'title')
    for path in (lines, bars):
        assert path.read_bytes().startswith(b'\x89PNG')


def test_floors_match_the_published_table():
    """The bytes model gives the floors of docs/benchmarks/op.md at its 3.01 TB/s."""
    by_name = {c.name: c for c in op.GPU_CASES}
    for name, fwd_ms, bwd_ms in (('paper fp32 1dir', 1.070, 2.141),
                                 ('4dir G1 bf16 1024^2', 0.926, 2.119),
                                 ('4dir G1 bf16 56^2', 0.067, 0.154)):
        fwd, bwd = op.case_bytes(by_name[name])
        assert fwd / 3.01e9 == pytest.approx(fwd_ms, rel=0.01), name
        assert bwd / 3.01e9 == pytest.approx(bwd_ms, rel=0.01), name


def test_every_direction_is_timed_alone():
    """The paper's shape (per-channel gates, fp32 and bf16) and the channel-shared 1024^2 case
    are timed in each direction alone, so that one slow direction shows."""
    for prefix, groups in (('paper fp32', None), ('paper bf16', None), ('1dir G1 bf16 1024^2', 1)):
        cases = [c for c in op.GPU_CASES if c.name.startswith(prefix) and len(c.directions) == 1]
        assert sorted(c.directions[0] for c in cases) == [0, 1, 2, 3], prefix
        assert all(c.G == groups and (c.H, c.W) == (1024, 1024) for c in cases), prefix


def test_cases_are_selected_by_name_and_carry_no_targets():
    assert [c.name for c in op.select_cases(['4dir G1 bf16 1024^2', 'small'])] == [
        '4dir G1 bf16 1024^2', 'small batch fp32 1dir']
    assert op.select_cases([]) == op.GPU_CASES
    assert all(len(c) == 9 for c in op.GPU_CASES)  # no target field
    assert [c.chunk for c in op.select_cases(['GSPN2-T'])] == [2, 2, 0, 0, 0, 0, 2, 2, 0, 0]
    s = op.make_inputs(op.GPU_CASES[0]._replace(B=1, H=4, W=5), 'cpu', seed=0)
    assert s['gates'].shape == (1, 1, 8, 3, 4, 5) and s['lam'].shape == (1, 1, 8, 4, 5)
    assert 0 <= s['lam'].min() and s['lam'].max() < 1


def test_compare_builds_times_every_case_for_both_builds():
    rows = op.compare_builds(load_extension('cpu'), **TIMED, dtype=torch.float32, repeats=3)
    assert [r['case'] for r in rows] == ['4 directions merged', 'top_down (one direction)',
                                         'left_right (one direction)']
    for row in rows:
        for mode in ('fwd', 'bwd'):
            assert row[f'{mode} ms'] > 0 and row[f'{mode} ms, other'] > 0
            # (from the unrounded medians: the ms are rounded to 1 us)
            ratio = row[f'{mode} ms, other'] / row[f'{mode} ms']
            assert row[f'{mode} speed-up'] == pytest.approx(ratio, rel=0.2, abs=0.01)


def test_unknown_revision_is_named(tmp_path):
    with pytest.raises(ValueError, match="cannot read csrc/ at git revision 'no-such-rev'"):
        op.cpu_extension_at('no-such-rev', tmp_path)


def test_cpu_report_holds_runs_comparison_and_machine(tmp_path, monkeypatch):
    monkeypatch.setenv('THP_MEM_ALLOC_ENABLE', '1')
    threads = torch.get_num_threads()
    runs = list(op.run_thread_counts([1], SHAPE, torch.float32, repeats=2, ref_repeats=1))
    assert torch.get_num_threads() == threads
    rows = runs[0]['results']
    assert [r['case'] for r in rows] == ['gspn_propagate', 'gspn_scan(top_down)',
                                         'gspn_scan(left_right)']
    assert all(r['fwd kernel ms'] >= 0 and r['fwd+bwd reference ms'] > 0 for r in rows)
    comparison = dict(against='abc1234', threads=1,
                      rows=op.compare_builds(load_extension('cpu'), **SHAPE, dtype=torch.float32,
                                             repeats=2))
    record = op.cpu_record(SHAPE, runs, 'float32', 2, 1, 'cmd', comparison, commit='def5678')
    report.write(tmp_path / 'op_cpu', record, op.cpu_markdown(record))
    saved = json.loads((tmp_path / 'op_cpu.json').read_text())
    assert saved['comparison']['against'] == 'abc1234' and saved['commit'] == 'def5678'
    assert saved['kernel_isa'] in ('x86-64-v3', 'baseline')
    assert saved['environment']['THP_MEM_ALLOC_ENABLE'] == '1'
    text = (tmp_path / 'op_cpu.md').read_text()
    assert '`cmd`: B=1, C=2, H=8, W=6, G=1, float32; median of 2 (kernel) / 1 (reference)' in text
    assert '## 1 torch thread(s)' in text and '| gspn_scan(left_right) |' in text
    assert '## Against the kernel of abc1234' in text and '4 directions merged' in text
    assert f"kernel loops built for {saved['kernel_isa']}" in text
    assert 'THP_MEM_ALLOC_ENABLE=1' in text and text.rstrip().endswith('commit def5678.')


def _gpu_record():
    """What op.run_gpu returns, made up: two cases, the reference loop and an SDPA sweep."""
    cases = []
    for i, case in enumerate(op.GPU_CASES[:2]):
        fwd_floor, bwd_floor = (b / 3e9 for b in op.case_bytes(case))
        cases.append(dict(name=case.name, B=case.B, C=case.C, H=case.H, W=case.W,
                          directions=list(case.directions), G=case.groups, dtype='float32',
                          n_input_sets=1, fwd_ms=2.0 + i, bwd_ms=4.0, peak_fwd_bwd_gib=1.5, fwd_floor_ms=fwd_floor,
                          bwd_floor_ms=bwd_floor, fwd_eff=fwd_floor / (2.0 + i),
                          bwd_eff=bwd_floor / 4.0, chunk=0,
                          **(dict(dwconv_fwd_ms=0.1, dwconv_bwd_ms=0.3,
                                  fwd_plan=['cta kc2 x2ch, entries 0,1'],
                                  bwd_plan=['plane x4ch, entries 0,1']) if i else {})))
    sdpa = [dict(side=64, tokens=4096, op_floor_ms=0.01, op_fwd_ms=0.05, sdpa_ms=0.1),
            dict(side=2048, tokens=2048 ** 2, op_floor_ms=1.0, op_fwd_ms=5.0, sdpa_ms=None)]
    return dict(run_stamp('cpu', 'abc1234'), device='Some GPU', command='python tools/benchmark_op.py',
                bandwidth_tbs=3.0, copy_gib=2.0,
                reps=20, warmup=3, cases=cases,
                reference_loop_ms=135.0, sdpa=sdpa)


def test_gpu_report_and_plots(tmp_path):
    record = _gpu_record()
    text = op.gpu_markdown(record)
    lines = text.splitlines()
    assert lines[0] == '# GSPN-2 fused op on Some GPU'
    assert 'commit abc1234; copy bandwidth 3.00 TB/s' in lines[2]
    assert 'Medians of 20 runs after 3 warm-ups' in lines[2]
    assert lines[2].endswith('Produced by `python tools/benchmark_op.py`.')
    header = lines[4]
    assert 'target' not in header and header.count('|') == 18
    assert lines[6].startswith('| paper fp32 1dir | 16 | 8 | 1024x1024 | 1 | 8 | float32 | - | 2.000 |')
    assert lines[6].endswith('| - | - |')
    assert lines[7].endswith('| 0.100 / 0.300 | cta kc2 x2ch, entries 0,1 / bwd: plane x4ch, '
                             'entries 0,1 |')
    assert 'forward: 135.0 ms.' in text
    assert '| 64 | 4096 | 0.050 | 0.100 | 2.0x |' in text and '| 2048 | 4194304 | 5.000 | - | - |' in text
    paths = op.plot(record, tmp_path / 'op')
    assert [p.name for p in paths] == ['op_efficiency.png', 'op_time_vs_resolution.png']
    assert all(p.stat().st_size > 1000 for p in paths)
