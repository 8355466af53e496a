"""The demo's multi-task leg: a short CPU multi-task run beats chance on every task, writes its result
files, Delta_m and one panel per image; the pipeline hands it the CLIP tower; tools/train.py and
tools/test.py run a multi-task config."""
import json
import os.path as osp

import cv2
import pytest

import gspn2_dense  # noqa: F401
from gspn2_dense.demo import pipeline
from gspn2_dense.demo.multitask_data import make_multitask_data
from gspn2_dense.demo.multitask_leg import run_multitask_leg
from gspn2_dense.engine.launch import load_config, prepare_test_config, prepare_train_config, run_runner
from gspn2_dense.evaluation.multitask_metric import HEADLINE
from gspn2_dense.evaluation.multitask_report import report_from_files
from gspn2_dense.engine.probe import CONFIG_DIR

ALL_TASKS = {'nyud-mt': {'semseg', 'depth', 'normals', 'edge'},
             'pascal-mt': {'semseg', 'human_parts', 'sal', 'normals', 'edge'}}


def test_multitask_demo_beats_chance_on_every_task(tmp_path):
    lines = []
    work = tmp_path / 'work'
    results = run_multitask_leg(work_dir=str(work), data_root=str(tmp_path / 'data'), tiny=True,
                                 single_task=('nyud-mt', ), num_panels=2, log=lines.append)
    assert set(results) == set(ALL_TASKS)
    for name, result in results.items():
        assert set(result['beats_chance']) == ALL_TASKS[name]
        for task in ALL_TASKS[name]:
            metric, higher = HEADLINE[task]
            key = f'{task}/{metric}'
            ours, chance = result['multitask'][key], result['chance'][key]
            assert (ours > chance) if higher else (ours < chance), (name, key, ours, chance)
            assert result['beats_chance'][task]
            assert any(line.startswith(f'[multi-task demo] {name} {key} ') and f'vs chance {chance:.3f}' in line
                       for line in lines)
        # One panel per image: the input, then each task's truth above its prediction.
        assert len(result['panels']) == 2
        for path in result['panels']:
            panel = cv2.imread(path)
            assert panel is not None and panel.shape[1] > 2 * panel.shape[0]
        assert sorted(osp.basename(p) for p in result['panels']) == \
            sorted(osp.basename(p) for p in (work / 'vis' / name).iterdir())
    # Delta_m over the single-task probes of NYUD-MT, from the result files the runs wrote.
    gains = results['nyud-mt']['gains']
    assert set(gains) == ALL_TASKS['nyud-mt'] | {'delta_m'}
    assert gains['delta_m'] == pytest.approx(sum(gains[t] for t in ALL_TASKS['nyud-mt']) / 4)
    assert results['pascal-mt']['gains'] == {} and results['pascal-mt']['single_task'] == {}
    files = work / 'nyud-mt' / 'results'
    assert sorted(p.name for p in files.iterdir()) == ['chance.json', 'depth.json', 'edge.json', 'multitask.json',
                                                       'normals.json', 'semseg.json']
    cfg = load_config(str(CONFIG_DIR / 'demo' / 'multitask-linear_gspn2-test_1xb4-80_nyud-mt-demo-64x64.py'))
    report = report_from_files(cfg, results=str(files / 'multitask.json'), chance=str(files / 'chance.json'),
                               baselines={t: str(files / f'{t}.json') for t in ALL_TASKS['nyud-mt']})
    assert report.gains() == pytest.approx(gains)
    assert any(f'nyud-mt Delta_m = {gains["delta_m"]:+.2f} %' in line for line in lines)
    table = json.load(open(work / 'multitask_results.json'))
    assert set(table) == set(ALL_TASKS) and table['nyud-mt']['delta_m'] == pytest.approx(gains['delta_m'])
    assert table['pascal-mt']['panels'] == results['pascal-mt']['panels']
    markdown = open(work / 'multitask_results.md').read()
    assert '# nyud-mt: multi-task linear probes' in markdown and '| semseg | mIoU * | higher |' in markdown
    assert 'Delta_m = ' in markdown and 'Delta_m: not computed' in markdown  # PASCAL-MT has no single-task runs


def test_pipeline_hands_the_clip_tower_to_the_multitask_leg(tmp_path, monkeypatch):
    """The wiring of the legs (each replaced by a stand-in): the converted tower reaches the multi-task
    leg, and its results have the shape tools/demo.py checks (a ``beats_chance`` bool per entry)."""
    import gspn2_dense.demo.clip_leg
    calls = {}
    tower = str(tmp_path / 'tower.pth')
    monkeypatch.setattr(gspn2_dense.demo.clip_leg, 'run_clip_leg', lambda work_dir, minutes, log: tower)
    monkeypatch.setattr(pipeline, 'run_probe_leg', lambda **kwargs: {'ade20k': dict(beats_chance=True)})

    def multitask_leg(**kwargs):
        calls.update(kwargs)
        return {'nyud-mt': dict(beats_chance=dict(semseg=True, normals=False)),
                'pascal-mt': dict(beats_chance=dict(sal=True))}

    monkeypatch.setattr(pipeline, 'run_multitask_leg', multitask_leg)
    lines = []
    results = pipeline.run_pipeline(work_dir=str(tmp_path / 'demo'), log=lines.append)
    assert calls['backbone_ckpt'] == tower and calls['iters'] == pipeline.MULTITASK_ITERS
    assert list(calls['datasets']) == ['nyud-mt', 'pascal-mt'] and list(calls['single_task']) == ['nyud-mt']
    assert calls['work_dir'] == osp.join(str(tmp_path / 'demo'), 'multitask')
    assert results['multitask']['beats_chance'] is False and results['multitask']['failed'] == ['nyud-mt normals']
    assert all(isinstance(r['beats_chance'], bool) for task, r in results.items() if task != 'clip')
    assert any('multi-task leg' in line and 'CLIP-trained tower' in line for line in lines)
    assert any("did NOT beat chance: ['nyud-mt normals']" in line for line in lines)
    calls.clear()
    results = pipeline.run_pipeline(work_dir=str(tmp_path / 'demo'), clip=False, multitask=(), log=lines.append)
    assert not calls and 'multitask' not in results


def test_nyud_demo_edges_are_surface_boundaries():
    """Edges lie between surfaces only: none inside the smoothly receding floor or left wall."""
    import numpy as np
    from gspn2_dense.demo.multitask_data import NYUD_FLOOR, draw_nyud_scene
    scene = draw_nyud_scene(np.random.default_rng(3))
    edge, semseg = scene['edge'].astype(bool), scene['semseg']
    floor = semseg == NYUD_FLOOR
    interior = floor.copy()  # floor pixels whose four neighbours are floor too
    interior[1:-1, 1:-1] &= floor[:-2, 1:-1] & floor[2:, 1:-1] & floor[1:-1, :-2] & floor[1:-1, 2:]
    interior[[0, -1]] = interior[:, [0, -1]] = False
    assert edge.any() and not (edge & interior).any()


def test_train_and_test_tools_on_a_multitask_config(tmp_path):
    root = make_multitask_data(str(tmp_path / 'data'), datasets=['nyud-mt'], splits={'train': 8, 'val': 4})
    config = str(CONFIG_DIR / 'demo' / 'multitask-linear_gspn2-test_1xb4-80_nyud-mt-demo-64x64.py')
    options = {f'{key}.dataset.data_root': root['nyud-mt']
               for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    options.update({'train_cfg.max_iters': 4, 'train_cfg.val_interval': 4, 'default_hooks.checkpoint.interval': 4,
                    'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=False)]})
    work_dir = str(tmp_path / 'work')
    run_runner(prepare_train_config(config, work_dir=work_dir, cfg_options=options), 'train')
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))
    out = str(tmp_path / 'out')
    run_runner(prepare_test_config(config, osp.join(work_dir, 'iter_4.pth'), work_dir=str(tmp_path / 'test'),
                                   cfg_options=options, out=out), 'test')
    metrics = json.load(open(osp.join(out, 'multitask_results.json')))
    assert {'semseg/mIoU', 'depth/rmse', 'normals/mean', 'edge/odsF'} <= set(metrics)
