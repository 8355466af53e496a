"""The demo main job, reduced to gspn2_test and a few dozen iterations, beats the chance baseline."""
import json
import os.path as osp

import cv2
import pytest

import gspn2_dense  # noqa: F401
from gspn2_dense.demo import run_demo
from gspn2_dense.demo.job import seg_chance_baseline


def test_run_demo_beats_chance(tmp_path):
    lines = []
    results = run_demo(work_dir=str(tmp_path / 'work'), data_root=str(tmp_path / 'data'), tiny=True,
                       iters=30, log=lines.append)
    assert set(results) == {'ade20k', 'nyu-depth'}
    seg, depth = results['ade20k'], results['nyu-depth']
    assert seg['probe']['mIoU'] > seg['chance']['mIoU'] and seg['beats_chance']
    assert depth['probe']['rmse'] < depth['chance']['rmse'] and depth['beats_chance']
    assert depth['probe']['d1'] > depth['chance']['d1']
    # Progress lines, the results table and the panels.
    assert any('training 30 iterations' in line for line in lines)
    table = json.load(open(tmp_path / 'work' / 'results.json'))
    assert set(table) == {'ade20k', 'ade20k chance', 'nyu-depth', 'nyu-depth chance'}
    for task in results:
        panel = cv2.imread(results[task]['visualisations'][0])
        assert panel.shape == (3 * 72, 3 * 3 * 96, 3)  # image | gt | prediction, upscaled 3x
    assert osp.isfile(tmp_path / 'work' / 'results.md')


def test_seg_chance_baseline_by_hand():
    import numpy as np
    train = [np.array([[0, 0, 1]]), np.array([[0, 255, 2]])]  # class 0 is the majority
    test = [np.array([[0, 1, 1, 255]])]
    out = seg_chance_baseline(train, test, num_classes=3)
    # class 0: inter 1, union 3 (all valid pixels predicted 0) -> 1/3; class 1: inter 0, union 2 -> 0
    assert out['mIoU'] == pytest.approx(100 * (1 / 3 + 0) / 2)
    assert out['aAcc'] == pytest.approx(100 / 3)


def test_unknown_demo_task(tmp_path):
    with pytest.raises(ValueError, match=r"unknown demo tasks \['kitti'\]"):
        run_demo(work_dir=str(tmp_path), tasks=['kitti'])
