"""The backbone benchmark's parts run on the CPU and its report states what it measured."""
import pytest
import torch

import gspn2_dense  # noqa: F401
from gspn2_dense.benchmarks import backbones as bench
from gspn2_dense.benchmarks.timing import Timer, run_stamp


def test_parts_and_report():
    device, timer = torch.device('cpu'), Timer('cpu')
    rows = [bench.throughput('gspn2_test', mode, device, torch.float32, timer, img_size=32,
                             batch=2, iters=1, warmup=1) for mode in ('eager', 'compiled')]
    for row in rows:
        assert row['infer_ms'] > 0 and row['train_ms'] > 0 and row['infer_peak_gib'] is None
    lat = bench.latency('gspn2_test', [32, 64], 'eager', device, torch.float32, timer, iters=1, warmup=1)
    assert 'slope' in lat['points'][1]
    result = dict(run_stamp(device, 'abc1234'), dtype='float32', img_size=32, batch=2, dense_batch=2,
                  memory_format='NCHW', command='python x', throughput=rows, latency=[lat], dense=[])
    text = bench.markdown(result)
    assert 'commit abc1234' in text and '| gspn2_test | compiled |' in text and '| gspn2_test | eager |' in text


def test_latency_builds_fixed_size_models_per_size():
    # Swin's patch embedding asserts the size it was built for: one model per size.
    lat = bench.latency(bench.SWIN, [64, 96], 'eager', torch.device('cpu'), torch.float32, Timer('cpu'),
                        iters=1, warmup=1)
    assert [p['size'] for p in lat['points']] == [64, 96]
    assert all(p['ms'] > 0 and 'error' not in p for p in lat['points'])


def test_run_report_and_plot(tmp_path):
    seen, sizes = [], []
    result = bench.run('cpu', torch.float32, models=['gspn2_test'], compiled_models=[],
                       latency_models=['gspn2_test'], latency_modes=bench.LATENCY_MODES,
                       sizes=[32, 48], dense_models=[],
                       img_size=32, batch=2, iters=1, latency_iters=1, warmup=1, commit='abc1234',
                       command='python x', on_row=lambda part, row: seen.append(part),
                       on_result=lambda partial: sizes.append(
                           (len(partial['throughput']), len(partial['latency']))))
    assert seen == ['throughput', 'latency']  # no CUDA graph, compiled or not, on the CPU
    assert sizes == [(1, 0), (1, 1)]  # the record so far, after each row
    assert result['commit'] == 'abc1234' and result['skipped'] == [] and result['dense'] == []
    text = bench.markdown(result)
    assert '## 32x32, batch 2' in text and '| gspn2_test | eager | ' in text
    assert 'goal' not in text and 'target' not in text.lower()
    paths = bench.plot(result, tmp_path / 'backbones')
    assert [p.name for p in paths] == ['backbones_latency.png']


def test_swapped_throughput_runs_each_variant_and_restores():
    from gspn2_dense.models import gspn2 as gspn2_module
    original, calls = gspn2_module.layer_norm, []

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    rows = bench.swapped_throughput(
        gspn2_module, 'layer_norm', (('A', None, 'gspn2_test'), ('B', counting, 'gspn2_test')),
        torch.device('cpu'), torch.float32, Timer('cpu'), batch=1, iters=1, img_size=32)
    assert [r['variant'] for r in rows] == ['A', 'B'] and calls
    assert gspn2_module.layer_norm is original
    assert '| B |' in bench.variant_table(rows)


def test_latency_mode_is_checked():
    with pytest.raises(ValueError, match=r"mode must be one of \('eager', 'cuda_graph', "
                                         r"'compiled_cuda_graph'\), got 'graph'"):
        bench.latency('gspn2_test', [32], 'graph', torch.device('cpu'), torch.float32, Timer('cpu'))


def test_dense_eager_and_compiled_report():
    pytest.importorskip('mmseg')
    device, timer = torch.device('cpu'), Timer('cpu')
    eager = bench.dense('gspn2_test', [64], device, torch.float32, timer, iters=1, warmup=1)
    assert eager['mode'] == 'eager'
    (point,) = eager['points']
    assert point['size'] == 64 and point['probe_ms'] > 0 and point['finetune_ms'] > 0
    compiled = bench.dense('gspn2_test', [64], device, torch.float32, timer, iters=1, warmup=1,
                           mode='compiled', regimes=['probe'])
    assert compiled['mode'] == 'compiled' and compiled['points'][0]['probe_ms'] > 0
    assert 'finetune_ms' not in compiled['points'][0]
    result = dict(run_stamp(device, 'abc1234'), dtype='float32', img_size=32, batch=2, dense_batch=2,
                  memory_format='NCHW', command='python x', throughput=[], latency=[],
                  dense=[eager, compiled])
    text = bench.markdown(result)
    assert '| gspn2_test | eager | 64 |' in text
    assert '| gspn2_test | compiled | 64 |' in text and text.rstrip().endswith('| - | - |')
    with pytest.raises(ValueError, match=r"mode must be one of \('eager', 'compiled', 'graphed'\), "
                                         r"got 'graph'"):
        bench.dense('gspn2_test', [64], device, torch.float32, timer, mode='graph')
    with pytest.raises(ValueError, match=r"mode='graphed' replays a frozen backbone on CUDA: it needs "
                                         r"regimes=\['probe'\] and a CUDA device, got regimes=\['probe'\] on cpu"):
        bench.dense('gspn2_test', [64], device, torch.float32, timer, mode='graphed', regimes=['probe'])
    # run() leaves the graphed mode out on the CPU, and says so
    skipped = bench.run(device, torch.float32, models=[], compiled_models=[], latency_models=[],
                        dense_models=['gspn2_test'], dense_sizes=[64], dense_modes=['graphed'])
    assert skipped['dense'] == [] and any('graphed' in s for s in skipped['skipped'])
    with pytest.raises(ValueError, match=r"regimes must be a non-empty selection of \('probe', 'finetune'\), "
                                         r"got \['linear'\]"):
        bench.dense('gspn2_test', [64], device, torch.float32, timer, regimes=['linear'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_latency_graph_modes_replay():
    """The graph modes capture through FrozenForwardGraphs (what the probes replay)."""
    device = torch.device('cuda')
    for mode in ('cuda_graph', 'compiled_cuda_graph'):
        row = bench.latency('gspn2_test', [64], mode, device, torch.bfloat16, Timer(device), iters=2,
                            warmup=1)
        assert row['points'][0]['ms'] > 0, row
