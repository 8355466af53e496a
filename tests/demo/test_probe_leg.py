"""The demo's probe leg, reduced to gspn2_test and a few dozen iterations, beats the chance baseline."""
import json

import cv2
import numpy as np
import pytest

import gspn2_dense  # noqa: F401
from gspn2_dense.demo.probe_leg import run_probe_leg
from gspn2_dense.demo.probe_leg import (_colour_depth, _colour_seg, compose_panel, depth_colour_bar,
                                  seg_chance_baseline, seg_legend)
from gspn2_dense.evaluation.depth_metric import MonoDepthMetric
from gspn2_dense.engine.probe import write_results_table


def test_run_demo_beats_chance(tmp_path):
    lines = []
    results = run_probe_leg(work_dir=str(tmp_path / 'work'), data_root=str(tmp_path / 'data'), tiny=True,
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
        # image | gt | prediction, upscaled 3x, under a title row, above a legend / colour bar
        assert panel.shape[1] == 3 * 3 * 96 and panel.shape[0] > 20 + 3 * 72
        assert (panel[:20] < 128).any() and (panel[20 + 3 * 72:] < 128).any()
    markdown = open(tmp_path / 'work' / 'results.md').read()
    assert all(name in markdown for name in MonoDepthMetric.METRICS)


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
        run_probe_leg(work_dir=str(tmp_path), tasks=['kitti'])


def _count(image, bgr):
    return int((image == np.array(bgr, dtype=np.uint8)).all(-1).sum())


def _title_pixels(panel, column, columns=3, band=20):
    width = panel.shape[1] // columns
    return int((panel[:band, column * width:(column + 1) * width] < 128).any(-1).sum())


def test_segmentation_panel_has_titles_and_a_legend_of_the_classes_shown():
    palette = np.array([(200, 40, 40), (40, 170, 40), (40, 60, 210), (220, 200, 40)], np.uint8)
    names = ['wall', 'tree', 'sky', 'road']
    gt = np.zeros((8, 10), np.uint8)
    gt[:, 5:] = 2
    pred = gt.copy()
    pred[0, 0] = 3
    pred[1, 1] = 255  # ignored: no legend entry
    image = np.full((8, 10, 3), 128, np.uint8)
    legend = seg_legend([gt, pred], palette, names, width=3 * 10 * 3)
    panel = compose_panel([image, _colour_seg(gt, palette), _colour_seg(pred, palette)],
                          ('image', 'ground truth', 'prediction'), legend, scale=3)
    assert panel.shape[1] == 90 and panel.shape[0] == 20 + 24 + legend.shape[0]
    assert all(_title_pixels(panel, c) > 10 for c in range(3))
    below = panel[20 + 24:]
    for present in (0, 2, 3):   # a 12x12 swatch of each class in the gt or the prediction
        assert _count(below, palette[present][::-1]) == 12 * 12, names[present]
    assert _count(below, palette[1][::-1]) == 0  # 'tree' occurs in neither
    # the legend lists the most frequent class first
    first = [tuple(below[r, 4]) for r in range(below.shape[0]) if (below[r, 4] != 255).any()][0]
    assert first in (tuple(palette[0][::-1]), tuple(palette[2][::-1]))


def test_legend_wraps_and_counts_what_it_leaves_out():
    palette = np.random.default_rng(0).integers(0, 255, (30, 3)).astype(np.uint8)
    label = np.arange(30, dtype=np.uint8).reshape(5, 6)
    legend = seg_legend([label], palette, [f'class {i}' for i in range(30)], width=200)
    assert legend.shape[0] > 2 * 20  # 12 entries do not fit on one 200 px row, plus the '+18' row
    assert (legend[-20:] < 128).any()


def test_depth_panel_has_a_colour_bar_of_the_depth_colours():
    depth = np.linspace(0.5, 9.5, 80).reshape(8, 10)
    image = np.full((8, 10, 3), 128, np.uint8)
    bar = depth_colour_bar(10.0, width=90)
    panel = compose_panel([image, _colour_depth(depth, 10.0), _colour_depth(depth, 10.0)],
                          ('image', 'ground truth depth', 'predicted depth'), bar, scale=3)
    assert panel.shape == (20 + 24 + bar.shape[0], 90, 3)
    assert all(_title_pixels(panel, c) > 10 for c in range(3))
    row = bar[6]
    coloured = np.flatnonzero((row != 255).any(-1))
    # left end: the colour of (almost) 0 m; right end: the colour of the maximum depth
    assert (row[coloured[0]] == _colour_depth(np.array([[1e-6]]), 10.0)[0, 0]).all()
    assert (row[coloured[-1]] == _colour_depth(np.array([[10.0]]), 10.0)[0, 0]).all()
    assert len(coloured) > 40
    bar_rows = np.flatnonzero((bar[:, coloured[len(coloured) // 4]] != 255).any(-1))
    assert (bar[bar_rows[-1] + 1:] < 128).any()  # ticks and labels ('0 m', '10 m') below the bar


def test_results_table_has_every_depth_metric(tmp_path):
    metric = MonoDepthMetric()
    values = {name: float(i) for i, name in enumerate(metric.METRICS)}
    paths = write_results_table({'nyu-depth': values, 'ade20k': {'mIoU': 1.0, 'aAcc': 2.0,
                                                                  'mAcc': 3.0}}, str(tmp_path))
    header_lines = [line for line in open(paths['markdown']) if line.startswith('| task')]
    depth_header = [h for h in header_lines if 'rmse' in h][0]
    seg_header = [h for h in header_lines if 'mIoU' in h][0]
    assert [c.strip() for c in depth_header.split('|')[2:-1]] == [
        'rmse', 'abs_rel', 'd1', 'sq_rel', 'rmse_log', 'log10', 'silog', 'd2', 'd3']
    assert set(metric.METRICS) <= set(c.strip() for c in depth_header.split('|'))
    assert 'mAcc' in seg_header
