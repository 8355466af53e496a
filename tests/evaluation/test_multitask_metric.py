"""Multi-task metrics against hand-computed values: mIoU, depth, normals, saliency, edge odsF, Delta_m."""
import json
import math

import numpy as np
import pytest
import torch

import gspn2_dense  # noqa: F401
from gspn2_dense.evaluation.multitask_metric import (MultiTaskMetric, confusion_matrix, delta_m, edge_counts,
                                                     edge_scores, load_results, match_edges,
                                                     mean_iou, thin)


def test_mean_iou_by_hand():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.sum() == 5  # the ignored pixel is left out
    # class 0: 1 / (2 + 1 - 1); class 1: 2 / (2 + 3 - 2); class 2: 1 / 1
    assert mean_iou(conf) == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3)
    # A class in neither ground truth nor prediction does not count.
    assert mean_iou(confusion_matrix(pred, gt, 5)) == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3)
    with pytest.raises(ValueError, match=r'ground-truth labels must be in \[0, 3\)'):
        confusion_matrix(pred, np.array([[0, 0, 7], [1, 1, 2]]), 3)


def _metric(tasks, **kwargs):
    return MultiTaskMetric(tasks=tasks, num_classes=dict(semseg=3, human_parts=3), **kwargs)


def _run(metric, pairs):
    """pairs: list of {task: (pred, gt)} per image, arrays with the channel dimension."""
    from gspn2_dense.datasets.multitask import TASK_FIELDS
    for pair in pairs:
        sample = {}
        for task, (pred, gt) in pair.items():
            sample['pred_' + TASK_FIELDS[task]] = dict(data=torch.as_tensor(pred))
            sample['gt_' + TASK_FIELDS[task]] = dict(data=torch.as_tensor(gt))
        metric.process({}, [sample])
    return metric.compute_metrics(metric.results)


def test_depth_by_hand():
    gt = np.array([[[1.0, 2.0], [0.0, 4.0]]], np.float32)  # 0 is invalid
    pred = np.array([[[1.5, 2.0], [3.0, 2.0]]], np.float32)
    other_gt, other_pred = np.array([[[2.0]]], np.float32), np.array([[[1.0]]], np.float32)
    out = _run(_metric(['depth']), [dict(depth=(pred, gt)), dict(depth=(other_pred, other_gt))])
    # Pixels of the whole set: errors 0.5, 0, -2 and -1.
    assert out['depth/rmse'] == pytest.approx(math.sqrt((0.25 + 0 + 4 + 1) / 4))
    assert out['depth/abs_rel'] == pytest.approx((0.5 + 0 + 0.5 + 0.5) / 4)


def test_normals_by_hand():
    gt = np.zeros((3, 1, 4), np.float32)
    gt[2, 0, :3] = 1.0  # the fourth pixel has no label (zero vector)
    pred = np.array([[0, 1, 0, 1], [0, 0, 1, 0], [2, 1, 0, 0]], np.float32).reshape(3, 1, 4)
    out = _run(_metric(['normals']), [dict(normals=(pred, gt))])
    # Angles: 0 (length does not matter), 45 and 90 degrees.
    assert out['normals/mean'] == pytest.approx(45.0)
    assert out['normals/median'] == pytest.approx(45.0, abs=0.03)
    assert out['normals/rmse'] == pytest.approx(math.sqrt((0 + 45**2 + 90**2) / 3))
    assert out['normals/11.25'] == pytest.approx(100 / 3)
    assert out['normals/30'] == pytest.approx(100 / 3)


def test_saliency_by_hand():
    first = (np.array([[[0.1, 0.5, 0.9, 0.3]]]), np.array([[[0, 1, 1, 0]]]))
    second = (np.array([[[0.9, 0.9, 0.0]]]), np.array([[[0, 1, 255]]]))
    out = _run(_metric(['sal'], sal_thresholds=[0.4, 0.8]), [dict(sal=first), dict(sal=second)])
    # t=0.4: image 1 P=1 R=1 J=1, image 2 P=.5 R=1 J=.5 -> P=.75 R=1 J=.75
    # t=0.8: image 1 P=1 R=.5 J=.5, image 2 P=.5 R=1 J=.5 -> P=.75 R=.75 J=.5
    f = [1.3 * 0.75 * 1 / (0.3 * 0.75 + 1), 0.75]
    assert out['sal/maxF'] == pytest.approx(100 * max(f))
    assert out['sal/mIoU'] == pytest.approx(75.0)


def _line(shape, col, rows=(2, 18)):
    img = np.zeros(shape, np.float32)
    img[rows[0]:rows[1], col] = 1.0
    return img


def test_edge_matching_by_hand():
    shape = (20, 20)
    diag = math.hypot(*shape)
    gt = _line(shape, 5).astype(np.int64)
    # Tolerance 1.5 px: a line one column off is matched entirely, three columns off not at all.
    assert match_edges(_line(shape, 6) > 0, gt > 0, 1.5) == (16, 16)
    assert match_edges(_line(shape, 8) > 0, gt > 0, 1.5) == (0, 0)
    # One-to-one: two predicted lines on either side match only the 16 ground-truth pixels.
    double = (_line(shape, 4) + _line(shape, 6)) > 0
    assert match_edges(double, gt > 0, 1.5) == (16, 16)
    counts = edge_counts(double.astype(np.float32), gt, [0.5], max_dist=1.5 / diag)
    np.testing.assert_array_equal(counts, [[16, 32, 16, 16]])
    assert edge_scores(counts[None])['odsF'] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)


def test_edge_ods_picks_the_best_common_threshold():
    shape = (20, 20)
    diag = math.hypot(*shape)
    gt = _line(shape, 5).astype(np.int64)
    prob = 0.9 * _line(shape, 5) + 0.3 * _line(shape, 15)  # a true edge and a weak false one
    counts = edge_counts(prob, gt, [0.2, 0.5], max_dist=1.5 / diag)
    np.testing.assert_array_equal(counts, [[16, 32, 16, 16], [16, 16, 16, 16]])
    # Second image: only the weak false edge -> precision 0 at 0.2, nothing predicted at 0.5.
    other = edge_counts(0.3 * _line(shape, 15), gt, [0.2, 0.5], max_dist=1.5 / diag)
    scores = edge_scores(np.stack([counts, other]))
    # t=0.2: P = 16/48, R = 16/32; t=0.5: P = 16/16, R = 16/32 -> ODS at 0.5: F = 2/3
    assert scores['odsF'] == pytest.approx(100 * 2 / 3)
    # OIS: image 1 at 0.5 (16, 16, 16, 16), image 2 at its best (all F = 0: the first, 0.2).
    assert scores['oisF'] == pytest.approx(100 * 2 * (16 / 32) * (16 / 32) / (16 / 32 + 16 / 32))
    # Ignored ground-truth pixels (255) drop predictions on them.
    ignored = gt.copy()
    ignored[:, 15] = 255
    np.testing.assert_array_equal(edge_counts(prob, ignored, [0.2], 1.5 / diag), [[16, 16, 16, 16]])


def test_thinning():
    bar = np.zeros((12, 9), bool)
    bar[2:10, 3:6] = True  # three pixels wide
    thinned = thin(bar)
    assert thinned.any() and (thinned <= bar).all()
    assert thinned[3:9].sum(axis=1).max() == 1  # one pixel per row inside the bar
    line = _line((20, 20), 5) > 0
    np.testing.assert_array_equal(thin(line), line)  # a one-pixel line is kept whole


def test_delta_m_by_hand():
    results = {'semseg/mIoU': 44.0, 'depth/rmse': 0.55, 'normals/mean': 20.0}
    base = {'semseg': {'mIoU': 40.0}, 'depth': {'rmse': 0.5}, 'normals': {'mean': 25.0}}
    gains = delta_m(results, base)
    assert gains['semseg'] == pytest.approx(10.0)
    assert gains['depth'] == pytest.approx(-10.0)  # lower is better: a larger RMSE is a loss
    assert gains['normals'] == pytest.approx(20.0)
    assert gains['delta_m'] == pytest.approx(20.0 / 3)
    with pytest.raises(KeyError, match='Delta_m needs edge/odsF in both tables'):
        delta_m(results, base, tasks=['edge'])


def test_metric_delta_m_from_result_files(tmp_path):
    gt = np.array([[[0, 1, 2, 2]]])
    pred = np.array([[[0, 1, 2, 1]]])
    depth = (np.array([[[2.0]]]), np.array([[[1.0]]]))
    files = dict(semseg=str(tmp_path / 'semseg.json'), depth=str(tmp_path / 'depth.log'))
    json.dump({'semseg': {'mIoU': 50.0}}, open(files['semseg'], 'w'))  # nested table
    with open(files['depth'], 'w') as f:  # mmengine-style: one JSON object per line, the last counts
        f.write(json.dumps({'depth/rmse': 9.0}) + '\n' + json.dumps({'depth/rmse': 2.0}) + '\n')
    out_file = tmp_path / 'out' / 'mt.json'
    metric = _metric(['semseg', 'depth'], baselines=files, results_file=str(out_file))
    out = _run(metric, [dict(semseg=(pred, gt), depth=depth)])
    miou = 100 * (1 + 1 / 2 + 1 / 2) / 3
    assert out['semseg/mIoU'] == pytest.approx(miou)
    expected = ((miou - 50) / 50 * 100 + -(1.0 - 2.0) / 2.0 * 100) / 2
    assert out['multitask/delta_m'] == pytest.approx(expected)
    assert load_results(str(out_file))['multitask/delta_m'] == pytest.approx(expected)
    # A missing single-task file: no Delta_m, and the log says which file.
    metric = _metric(['semseg'], baselines=dict(semseg=str(tmp_path / 'absent.json')))
    out = _run(metric, [dict(semseg=(pred, gt))])
    assert 'multitask/delta_m' not in out
    with pytest.raises(FileNotFoundError, match='absent.json'):
        load_results(str(tmp_path / 'absent.json'))


def test_bad_metric_arguments():
    with pytest.raises(ValueError, match=r"tasks must be a non-empty list of .*got \('segm',\)"):
        MultiTaskMetric(tasks=['segm'])
    with pytest.raises(ValueError, match=r"needs num_classes\['semseg'\]"):
        MultiTaskMetric(tasks=['semseg'])
    with pytest.raises(ValueError, match="baselines names tasks that are not evaluated: \\['edge'\\]"):
        MultiTaskMetric(tasks=['depth'], baselines=dict(edge='x.json'))
    metric = _metric(['depth'])
    with pytest.raises(KeyError, match="task 'depth' has no pred_depth_map"):
        metric.process({}, [dict(gt_depth_map=dict(data=torch.ones(1, 2, 2)))])


def _thin_reference(mask):
    """Zhang & Suen with every sub-iteration over the whole image (independent of the fast version)."""
    img = np.pad(mask.astype(bool), 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
            p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
            p8, p9 = img[1:-1, :-2], img[:-2, :-2]
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            neighbours = sum(r.astype(np.int32) for r in ring[:-1])
            transitions = sum(((a == 0) & (b == 1)).astype(np.int32) for a, b in zip(ring[:-1], ring[1:]))
            if step == 0:
                side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (img[1:-1, 1:-1] == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & side
            if remove.any():
                img[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


@pytest.mark.parametrize('seed', range(6))
def test_thinning_agrees_with_the_whole_image_reference(seed):
    import cv2
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 50)))
    if seed % 2:  # noise
        mask = rng.random(shape) < rng.uniform(0.2, 0.9)
    else:  # blurred blobs, thresholded: thick shapes that take many sub-iterations
        mask = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 3) > 0.5
    mask[0] |= seed == 4  # a full first row touching the border
    np.testing.assert_array_equal(thin(mask), _thin_reference(mask))
    full = np.ones((37, 53), bool)
    np.testing.assert_array_equal(thin(full), _thin_reference(full))


@pytest.mark.parametrize('seed', range(8))
def test_matching_agrees_with_scipy(seed):
    """Maximum one-to-one matching of two random point sets within a radius vs scipy's matcher."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching
    from scipy.spatial import cKDTree
    from gspn2_dense.evaluation.multitask_metric import max_bipartite_matching
    rng = np.random.default_rng(seed)
    shape = (30, 40)
    pred, gt = rng.random(shape) < rng.uniform(0.02, 0.3), rng.random(shape) < rng.uniform(0.02, 0.3)
    radius = float(rng.uniform(0.5, 4.0))
    p, g = np.argwhere(pred), np.argwhere(gt)
    pairs = cKDTree(p).sparse_distance_matrix(cKDTree(g), radius + 1e-9, output_type='coo_matrix')
    graph = csr_matrix((np.ones(pairs.nnz, np.int8), (pairs.row, pairs.col)), shape=pairs.shape)
    expected = int((maximum_bipartite_matching(graph, perm_type='column') >= 0).sum())
    assert max_bipartite_matching(graph.indptr, graph.indices, len(g)) == expected
    assert match_edges(pred, gt, radius) == (expected, expected)
