"""A short multi-task CPU training run beats chance on every task; tools/train.py and tools/test.py run a
multi-task config."""
import json
import os.path as osp

import cv2
import pytest

import gspn2_dense  # noqa: F401
from gspn2_dense.demo.multitask import chance_predictions, make_multitask_demo_data, run_multitask_demo
from gspn2_dense.engine.launch import prepare_test_config, prepare_train_config, run_runner
from gspn2_dense.evaluation.multitask_metric import HEADLINE
from gspn2_dense.probe import CONFIG_DIR

ALL_TASKS = {'nyud-mt': {'semseg', 'depth', 'normals', 'edge'},
             'pascal-mt': {'semseg', 'human_parts', 'sal', 'normals', 'edge'}}


def test_multitask_demo_beats_chance_on_every_task(tmp_path):
    lines = []
    results = run_multitask_demo(work_dir=str(tmp_path / 'work'), data_root=str(tmp_path / 'data'), tiny=True,
                                 single_task=False, num_panels=2, log=lines.append)
    assert set(results) == set(ALL_TASKS)
    for name, result in results.items():
        assert set(result['beats_chance']) == ALL_TASKS[name]
        for task in ALL_TASKS[name]:
            metric, higher = HEADLINE[task]
            key = f'{task}/{metric}'
            ours, chance = result['multitask'][key], result['chance'][key]
            assert (ours > chance) if higher else (ours < chance), (name, key, ours, chance)
            assert result['beats_chance'][task]
        panel = cv2.imread(result['panels'][0])
        assert panel is not None and panel.shape[1] > panel.shape[0]
        assert any(f'{name} semseg/mIoU' in line and 'vs chance' in line for line in lines)
    table = json.load(open(tmp_path / 'work' / 'multitask_results.json'))
    assert set(table) == set(ALL_TASKS)
    assert '| nyud-mt chance |' in open(tmp_path / 'work' / 'multitask_results.md').read()


def test_chance_predictions_by_hand():
    import torch
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


def test_train_and_test_tools_on_a_multitask_config(tmp_path):
    root = make_multitask_demo_data(str(tmp_path / 'data'), datasets=['nyud-mt'], splits={'train': 8, 'val': 4})
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
