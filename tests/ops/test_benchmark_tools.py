"""The CPU benchmark's pieces on tiny shapes (what they report, not how fast anything is)."""
import json

import pytest
import torch

from gspn2_dense.ops._build import load_extension
from gspn2_dense.ops.benchmark import (compare_builds, cpu_extension_at, run_benchmark,
                                       write_report)

SHAPE = dict(B=1, C=2, H=8, W=6, G=1)
TIMED = dict(B=1, C=4, H=48, W=40, G=1)  # calls of 0.05 ms and more: rounding to 1 us is small


def test_compare_builds_times_every_case_for_both_builds():
    rows = compare_builds(load_extension('cpu'), **TIMED, dtype=torch.float32, repeats=3)
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
        cpu_extension_at('no-such-rev', tmp_path)


def test_report_holds_runs_comparison_and_machine(tmp_path, monkeypatch):
    monkeypatch.setenv('THP_MEM_ALLOC_ENABLE', '1')
    rows = run_benchmark(**SHAPE, repeats=2, ref_repeats=1)
    assert {r['case'] for r in rows} == {'gspn_propagate', 'gspn_scan(top_down)',
                                         'gspn_scan(left_right)'}
    comparison = dict(against='abc1234', threads=1,
                      rows=compare_builds(load_extension('cpu'), **SHAPE, dtype=torch.float32,
                                          repeats=2))
    runs = [dict(torch_threads=1, results=rows, load_average_after=[0.0, 0.0, 0.0])]
    write_report(tmp_path / 'op_cpu', SHAPE, runs, dtype='float32', repeats=2, ref_repeats=1,
                 command='cmd', comparison=comparison)
    record = json.loads((tmp_path / 'op_cpu.json').read_text())
    assert record['comparison']['against'] == 'abc1234'
    assert record['machine']['kernel_isa'] in ('x86-64-v3', 'baseline')
    assert record['machine']['environment']['THP_MEM_ALLOC_ENABLE'] == '1'
    assert "environment {'THP_MEM_ALLOC_ENABLE': '1'" in (tmp_path / 'op_cpu.md').read_text()
    text = (tmp_path / 'op_cpu.md').read_text()
    assert '## Against the kernel of abc1234' in text and '4 directions merged' in text
    assert f"kernel loops built for {record['machine']['kernel_isa']}" in text
