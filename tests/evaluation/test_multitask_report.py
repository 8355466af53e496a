"""tools/multitask_eval.py and gspn2_dense.evaluation.multitask_report on result files written here:
the table and JSON by hand, Delta_m, chance, and the messages for missing and mismatched files."""
import json
import os.path as osp
import runpy
import subprocess
import sys

import pytest
import torch

import gspn2_dense  # noqa: F401
from gspn2_dense.evaluation.multitask_report import (MultiTaskReport, ResultsFileError, chance_metrics,
                                                     chance_predictions, evaluate_run, parse_baselines,
                                                     report_from_files)
from gspn2_dense.engine.probe import CONFIG_DIR

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NYUD_CONFIG = str(CONFIG_DIR / 'multitask' / 'multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py')
TASKS = ('semseg', 'depth', 'normals', 'edge')
MULTITASK = {'semseg/mIoU': 44.0, 'depth/rmse': 0.55, 'depth/abs_rel': 0.2, 'normals/mean': 20.0,
             'normals/11.25': 40.0, 'edge/odsF': 50.0, 'edge/oisF': 51.0, 'multitask/delta_m': 99.0}
SINGLE = {'semseg': {'semseg/mIoU': 40.0}, 'depth': {'depth/rmse': 0.5, 'depth/abs_rel': 0.25},
          'normals': {'normals/mean': 25.0, 'normals/11.25': 32.0}, 'edge': {'edge/odsF': 50.0}}
CHANCE = {'semseg/mIoU': 3.0, 'depth/rmse': 1.5, 'normals/mean': 45.0, 'edge/odsF': 60.0}


def _write(path, table):
    with open(path, 'w') as f:
        json.dump(table, f)
    return str(path)


@pytest.fixture
def run_files(tmp_path):
    """A config naming a results file and four single-task baselines, all written here."""
    files = dict(results=_write(tmp_path / 'mt.json', MULTITASK),
                 chance=_write(tmp_path / 'chance.json', CHANCE),
                 baselines={t: _write(tmp_path / f'{t}.json', table) for t, table in SINGLE.items()})
    config = tmp_path / 'multitask-linear_test_nyud-mt.py'
    config.write_text(f'_base_ = {NYUD_CONFIG!r}\n'
                      f'test_evaluator = dict(results_file={files["results"]!r}, baselines={files["baselines"]!r})\n')
    files['config'] = str(config)
    return files


def _report(files, **kwargs):
    from mmengine.config import Config
    return report_from_files(Config.fromfile(files['config']), **kwargs)


def test_report_by_hand(run_files, tmp_path):
    lines = []
    report = evaluate_run(run_files['config'], chance=run_files['chance'], log=lines.append)
    gains = report.gains()
    # semseg +10 %, depth -10 % (a larger RMSE is a loss), normals +20 %, edge 0 %.
    assert gains['semseg'] == pytest.approx(10.0) and gains['depth'] == pytest.approx(-10.0)
    assert gains['normals'] == pytest.approx(20.0) and gains['edge'] == pytest.approx(0.0)
    assert gains['delta_m'] == pytest.approx(5.0)
    table = lines[0]
    assert '| task | metric | better | multi-task | single-task | gain % | chance |' in table
    assert '| semseg | mIoU * | higher | 44 | 40 | +10.00 | 3 |' in table
    assert '| depth | rmse * | lower | 0.55 | 0.5 | -10.00 | 1.5 |' in table
    assert '| depth | abs_rel | lower | 0.2 | 0.25 | +20.00 | - |' in table  # every metric, not only the headline
    assert '| normals | 11.25 | higher | 40 | 32 | +25.00 | - |' in table
    assert '| edge | oisF | higher | 51 | - | - | - |' in table  # no baseline value for that metric
    assert 'Delta_m = +5.00 %' in table and 'multitask' not in table.split('\n', 3)[3]  # the file's own Delta_m
    # The JSON lands beside the results file and says what beat chance (edges did not: 50 < 60).
    out = json.load(open(tmp_path / 'multitask_eval.json'))
    assert out['delta_m'] == pytest.approx(5.0) and out['gains']['normals'] == pytest.approx(20.0)
    assert out['beats_chance'] == dict(semseg=True, depth=True, normals=True, edge=False)
    assert out['files']['baselines'] == run_files['baselines'] and out['files']['chance'] == run_files['chance']
    assert out['headline'] == {'semseg': 'semseg/mIoU', 'depth': 'depth/rmse', 'normals': 'normals/mean',
                               'edge': 'edge/odsF'}


def test_report_without_baselines_or_chance(run_files):
    report = _report(run_files, use_baselines=False)
    table = report.to_markdown()
    assert '| task | metric | better | multi-task |\n' in table
    assert 'Delta_m: not computed (no single-task baselines)' in table
    assert report.to_json()['delta_m'] is None and report.beats_chance() == {}
    # A baseline on the command line replaces the config's entry for that task.
    other = _write(osp.join(osp.dirname(run_files['results']), 'semseg-other.json'), {'semseg/mIoU': 55.0})
    assert _report(run_files, baselines=dict(semseg=other)).gains()['semseg'] == pytest.approx(-20.0)


def test_missing_files_are_named_together(run_files, tmp_path):
    absent = str(tmp_path / 'absent.json')
    with pytest.raises(FileNotFoundError, match=r"the multi-task results: '.*absent.json'; single-task baseline "
                                                r"of depth: '.*nowhere.json'; the chance table: '.*absent.json'"):
        _report(run_files, results=absent, baselines=dict(depth=str(tmp_path / 'nowhere.json')), chance=absent)


@pytest.mark.parametrize('case, message', [
    ('other dataset', r"expected metrics of the tasks \['semseg', 'depth', 'normals', 'edge'\], got metrics of "
                      r"\['semseg', 'human_parts', 'sal'\]; \['human_parts', 'sal'\] are not evaluated"),
    ('no headline', r"the multi-task results '.*mt.json': expected \['edge/odsF'\], got the keys \[.*'edge/oisF'"),
    ('not json', r"results file '.*mt.json' is not JSON: expected a JSON object"),
    ('not an object', r'must hold a JSON object, got list'),
])
def test_mismatched_multitask_results(run_files, case, message):
    path = run_files['results']
    if case == 'other dataset':
        _write(path, {'semseg/mIoU': 70.0, 'human_parts/mIoU': 60.0, 'sal/maxF': 80.0})
    elif case == 'no headline':
        _write(path, {k: v for k, v in MULTITASK.items() if k != 'edge/odsF'})
    elif case == 'not json':
        open(path, 'w').write('semseg/mIoU = 44\n')
    else:
        _write(path, [44.0])
    with pytest.raises(ResultsFileError, match=message):
        _report(run_files)


def test_mismatched_baselines(run_files, tmp_path):
    # The depth probe's file given as the semseg baseline.
    with pytest.raises(ResultsFileError, match=r"single-task baseline of semseg '.*depth.json': expected the "
                                               r"metrics of task 'semseg' alone .*got metrics of tasks \['depth'\]"):
        _report(run_files, baselines=dict(semseg=run_files['baselines']['depth']))
    # A multi-task results file given as a baseline.
    with pytest.raises(ResultsFileError, match=r"expected the metrics of task 'depth' alone \(a single-task run\), "
                                               r"got metrics of tasks \['semseg', 'depth', 'normals', 'edge'\]"):
        _report(run_files, baselines=dict(depth=run_files['results']))
    with pytest.raises(ResultsFileError, match=r"baselines were given for tasks \['sal'\], but .* evaluates"):
        _report(run_files, baselines=dict(sal=run_files['results']))
    with pytest.raises(ResultsFileError, match=r"a baseline is TASK=FILE, e.g. .*; got 'depth.json'"):
        parse_baselines(['depth.json'])
    assert parse_baselines(['depth=a=b.json']) == {'depth': 'a=b.json'}


def test_config_must_name_files(run_files, tmp_path):
    from mmengine.config import Config
    partial = Config.fromfile(NYUD_CONFIG)  # baselines under work_dirs/results/, no results_file
    with pytest.raises(ResultsFileError, match=r'names no test_evaluator.results_file: pass the multi-task results '
                                               r'file \(tools/test.py CONFIG CKPT --out DIR writes'):
        report_from_files(partial)
    partial.test_evaluator.baselines = dict(semseg=run_files['baselines']['semseg'])
    with pytest.raises(ResultsFileError, match=r"needs a single-task baseline for every task .* none is named for "
                                               r"\['depth', 'normals', 'edge'\]"):
        report_from_files(partial, results=run_files['results'])
    probe = Config.fromfile(str(CONFIG_DIR / 'linear_probe' / 'linear_gspn2-t_8xb2-40k_ade20k-512x512.py'))
    with pytest.raises(ResultsFileError, match="expected a multi-task config .*got a test_evaluator of type 'IoUMetric'"):
        report_from_files(probe, results=run_files['results'])
    with pytest.raises(ValueError, match='tasks must be names from'):
        MultiTaskReport(['segm'], {})


def test_command_line(run_files, tmp_path, monkeypatch, capsys):
    tool = osp.join(REPO, 'tools', 'multitask_eval.py')
    out = str(tmp_path / 'eval' / 'table.json')
    done = subprocess.run([sys.executable, tool, run_files['config'], '--chance', run_files['chance'], '--out', out],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert '| semseg | mIoU * | higher | 44 | 40 | +10.00 | 3 |' in done.stdout and 'Delta_m = +5.00 %' in done.stdout
    assert json.load(open(out))['delta_m'] == pytest.approx(5.0)
    # A missing baseline stops the tool with one line naming it, exit status 1.
    monkeypatch.setattr(sys, 'argv', [tool, run_files['config'], '--baseline', 'edge=' + str(tmp_path / 'no.json')])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(tool, run_name='__main__')
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(
        "multitask_eval.py: error: missing results files: single-task baseline of edge: '")


def test_chance_predictions_by_hand():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[1, 1, 0, 255]]]))
    sample.gt_depth_map = PixelData(data=torch.tensor([[[2.0, 4.0, 0.0, 0.0]]]))
    sample.gt_edge_map = PixelData(data=torch.tensor([[[1, 0, 0, 255]]]))
    sample.gt_normals = PixelData(data=torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]],
                                                     [[0.0, 0.0, 0.0, 0.0]]]))
    out = chance_predictions([sample], ['semseg', 'depth', 'edge', 'normals'], dict(semseg=3))
    assert int(out['semseg']) == 1 and float(out['depth']) == pytest.approx(3.0)
    assert float(out['edge']) == pytest.approx(1 / 3)
    assert torch.allclose(out['normals'], torch.tensor([1.0, 1.0, 0.0]) / 2 ** 0.5)


def test_chance_from_data(tmp_path):
    """--chance-from-data on a small generated NYUD-MT: the chance table is written and used."""
    from gspn2_dense.demo.multitask_data import make_multitask_data
    from gspn2_dense.engine.launch import load_config
    root = make_multitask_data(str(tmp_path / 'data'), datasets=['nyud-mt'],
                                    splits={'train': 4, 'val': 2})['nyud-mt']
    config = str(CONFIG_DIR / 'demo' / 'multitask-linear_gspn2-test_1xb4-80_nyud-mt-demo-64x64.py')
    options = {f'{key}.dataset.data_root': root for key in ('train_dataloader', 'test_dataloader')}
    chance = chance_metrics(load_config(config, options))
    assert chance['semseg/mIoU'] < 50 and chance['normals/mean'] > 0
    (tmp_path / 'run').mkdir()
    results = _write(tmp_path / 'run' / 'multitask_results.json', {k: v * 0.5 for k, v in chance.items()})
    report = evaluate_run(config, results=results, chance_from_data=True, cfg_options=options, log=lambda msg: None)
    assert json.load(open(tmp_path / 'run' / 'chance.json')) == pytest.approx(chance)
    assert report.chance == pytest.approx(chance)
    # Halved metrics: worse than chance where higher is better, better where lower is.
    assert report.beats_chance() == dict(semseg=False, depth=True, normals=True, edge=False)
