"""Multi-task dense-prediction metrics and the multi-task gain Delta_m (mmseg ``METRICS``).

One :class:`MultiTaskMetric` evaluates every task of a data sample (``gt_<field>`` against
``pred_<field>``, see :data:`~gspn2_dense.datasets.multitask.TASK_FIELDS`) and reports one flat
table ``{'<task>/<metric>': value}``:

==========  ===================================================================================
semseg,     ``mIoU`` (percent) from the confusion matrix accumulated over the dataset; classes
human_parts absent from both ground truth and prediction are left out of the mean.
depth       ``rmse`` = sqrt(sum of squared errors / valid pixels) and ``abs_rel`` over every valid
            pixel (gt in (min_depth, max_depth]) of the dataset, predictions clipped to the range.
normals     angular error in degrees between unit vectors over valid pixels (label norm > 0.5):
            ``mean``, ``rmse``, ``median`` (from a 0.05-degree histogram, so exact to 0.025 deg)
            and ``11.25`` / ``22.5`` / ``30`` (percent of pixels within that many degrees).
sal         per image and threshold t: precision, recall and foreground Jaccard of ``pred >= t``
            against ``gt == 1``; averaged over images; ``maxF`` = max over t of
            (1 + b2) P R / (b2 P + R) with b2 = 0.3, ``mIoU`` = max over t of the mean Jaccard
            (percent; the evaluation of Multi-Task-Learning-PyTorch / ATRC / InvPT).
edge        ``odsF`` (and ``oisF``), percent: predictions binarised at each threshold, thinned
            to one pixel, and matched one-to-one to ground-truth edge pixels within
            ``max_dist * image diagonal`` pixels (see :func:`match_edges`).
==========  ===================================================================================

``Delta_m`` (Vandenhende et al., TPAMI 2021): the mean over tasks of
``s_t * (M_t - B_t) / B_t * 100`` on each task's headline metric (:data:`HEADLINE`), where B_t
is the single-task baseline and ``s_t = -1`` for lower-is-better metrics.
"""
import json
import logging
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from gspn2_dense.datasets.multitask import IGNORE_INDEX, TASK_FIELDS

# task -> (headline metric, higher is better), the metric Delta_m uses.
HEADLINE = OrderedDict(semseg=('mIoU', True), human_parts=('mIoU', True), sal=('maxF', True),
                       depth=('rmse', False), normals=('mean', False), edge=('odsF', True))
LOWER_IS_BETTER = {'depth/rmse', 'depth/abs_rel', 'normals/mean', 'normals/median', 'normals/rmse'}
NORMALS_BIN_DEG = 0.05
SAL_BETA2 = 0.3


# --------------------------------------------------------------------------- per-task statistics


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction."""
    valid = gt != ignore_index
    gt, pred = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
    if gt.size and (gt.max() >= num_classes or gt.min() < 0):
        raise ValueError(f'ground-truth labels must be in [0, {num_classes}) or {ignore_index}, got '
                         f'values {np.unique(gt)[:10]}')
    if pred.size and (pred.max() >= num_classes or pred.min() < 0):
        raise ValueError(f'predicted labels must be in [0, {num_classes}), got values {np.unique(pred)[:10]}')
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU in percent over classes present in the ground truth or the prediction."""
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return 100.0 * float((inter[present] / union[present]).mean()) if present.any() else float('nan')


def normal_angles(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Angles in degrees between (3, H, W) normals at pixels where ``|gt| > 0.5``."""
    if pred.shape != gt.shape or pred.shape[0] != 3:
        raise ValueError(f'normals must be (3, H, W) arrays of the same shape, got {pred.shape} and {gt.shape}')
    valid = np.linalg.norm(gt, axis=0) > 0.5
    p = pred[:, valid] / np.maximum(np.linalg.norm(pred[:, valid], axis=0), 1e-12)
    g = gt[:, valid] / np.linalg.norm(gt[:, valid], axis=0)
    return np.degrees(np.arccos(np.clip((p * g).sum(0), -1.0, 1.0)))


# Neighbours p2..p9 of Zhang & Suen (north, then clockwise) as (row, column) offsets.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _zhang_suen_tables() -> Tuple[np.ndarray, np.ndarray]:
    """For every 8-bit neighbourhood code (bit k = neighbour p(k+2)): is the pixel removed in the
    first / second sub-iteration? B = foreground neighbours, A = 0->1 transitions around the ring."""
    codes = np.arange(256)
    p = [(codes >> k) & 1 for k in range(8)]  # p[0] = p2 ... p[7] = p9
    count = sum(p)
    transitions = sum((p[k] == 0) & (p[(k + 1) % 8] == 1) for k in range(8))
    base = (count >= 2) & (count <= 6) & (transitions == 1)
    p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
    first = base & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    second = base & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return first, second


_THIN_TABLES = _zhang_suen_tables()


def thin(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide skeleton of a binary mask (Zhang & Suen, CACM 1984).

    Each sub-iteration decides, for all boundary pixels at once, from the 8-bit code of their
    neighbourhood; only pixels next to a removed one need a new look, so a sub-iteration costs
    the length of the boundary, not the area of the image.
    """
    img = np.pad(mask.astype(bool), 1).astype(np.uint8)
    width = img.shape[1]
    flat = img.ravel()
    offsets = np.array([dy * width + dx for dy, dx in _RING])
    weights = (1 << np.arange(8)).astype(np.int32)

    def codes(pixels: np.ndarray) -> np.ndarray:
        return flat[pixels[:, None] + offsets] @ weights

    def unique(pixels: np.ndarray) -> np.ndarray:  # without sorting: one slot per pixel
        order = np.arange(len(pixels))
        slot[pixels] = order
        return pixels[slot[pixels] == order]

    slot = np.zeros(flat.size, dtype=np.int64)
    pixels = np.flatnonzero(flat)
    candidates = pixels[codes(pixels) != 255]  # foreground with a background neighbour
    while True:
        changed = False
        for table in _THIN_TABLES:
            if not len(candidates):
                break
            removed = candidates[table[codes(candidates)]]
            if not len(removed):
                continue
            flat[removed] = 0
            changed = True
            around = (removed[:, None] + offsets).ravel()
            candidates = unique(np.concatenate([candidates[flat[candidates] == 1], around[flat[around] == 1]]))
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def max_bipartite_matching(indptr: np.ndarray, indices: np.ndarray, num_right: int) -> int:
    """Size of a maximum matching of a bipartite graph (left vertex i adjacent to the right
    vertices ``indices[indptr[i]:indptr[i + 1]]``): Hopcroft & Karp (SIAM J. Comput. 1973) after a
    greedy start. (scipy's ``maximum_bipartite_matching`` takes minutes on some edge maps.)"""
    indptr, indices = indptr.tolist(), indices.tolist()
    num_left = len(indptr) - 1
    adjacency = [indices[indptr[i]:indptr[i + 1]] for i in range(num_left)]
    match_left, match_right = [-1] * num_left, [-1] * num_right
    for u, neighbours in enumerate(adjacency):
        for v in neighbours:
            if match_right[v] < 0:
                match_left[u], match_right[v] = v, u
                break
    unreached = num_left + 1
    while True:
        # Layers of alternating paths from the free left vertices.
        layer = [unreached] * num_left
        queue = [u for u in range(num_left) if match_left[u] < 0]
        for u in queue:
            layer[u] = 0
        reaches_free = False
        for u in queue:  # the queue grows while it is read
            for v in adjacency[u]:
                w = match_right[v]
                if w < 0:
                    reaches_free = True
                elif layer[w] == unreached:
                    layer[w] = layer[u] + 1
                    queue.append(w)
        if not reaches_free:
            return num_left - match_left.count(-1)
        # Vertex-disjoint shortest augmenting paths along the layers (iterative depth-first search).
        cursor = [0] * num_left
        for root in range(num_left):
            if match_left[root] >= 0:
                continue
            stack = [root]
            while stack:
                u = stack[-1]
                neighbours = adjacency[u]
                step = None
                while cursor[u] < len(neighbours):
                    v = neighbours[cursor[u]]
                    cursor[u] += 1
                    w = match_right[v]
                    if w < 0 or layer[w] == layer[u] + 1:
                        step = (v, w)
                        break
                if step is None:  # a dead end for the rest of this phase
                    layer[u] = unreached
                    stack.pop()
                elif step[1] < 0:  # a free right vertex: flip the path
                    v = step[0]
                    while stack:
                        x = stack.pop()
                        match_left[x], match_right[v], v = v, x, match_left[x]
                else:
                    stack.append(step[1])


def match_edges(pred: np.ndarray, gt: np.ndarray, radius: float) -> Tuple[int, int]:
    """Numbers of matched predicted and ground-truth edge pixels (equal: the matching is one-to-one).

    Predicted pixel p and ground-truth pixel g may be matched when their Euclidean distance is at
    most ``radius``; the largest one-to-one matching is found (:func:`max_bipartite_matching`).
    The BSDS / SEISM ``correspondPixels`` solves a min-cost assignment in the same radius graph
    whose outlier cost makes it maximise the number of matches first; see docs/multitask.md.
    """
    pred, gt = pred.astype(bool), gt.astype(bool)
    if not pred.any() or not gt.any():
        return 0, 0
    # Only pixels within the radius of the other map can be matched.
    near_gt = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius + 1e-3
    near_pred = cv2.distanceTransform((~pred).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius + 1e-3
    pred_pts, gt_pts = np.argwhere(pred & near_gt), np.argwhere(gt & near_pred)
    if not len(pred_pts) or not len(gt_pts):
        return 0, 0
    pairs = cKDTree(pred_pts).sparse_distance_matrix(cKDTree(gt_pts), radius + 1e-9, output_type='coo_matrix')
    graph = csr_matrix((np.ones(pairs.nnz, dtype=np.int8), (pairs.row, pairs.col)), shape=pairs.shape)
    matched = max_bipartite_matching(graph.indptr, graph.indices, len(gt_pts))
    return matched, matched


def edge_counts(prob: np.ndarray, gt: np.ndarray, thresholds: Sequence[float], max_dist: float,
                ignore_index: int = IGNORE_INDEX, thinning: bool = True) -> np.ndarray:
    """Per threshold: (matched predicted, predicted, matched gt, gt) pixel counts, shape (T, 4).

    Ground-truth pixels equal to ``ignore_index`` and predictions on them are left out.
    """
    valid = gt != ignore_index
    gt_edges = (gt == 1) & valid
    radius = max_dist * float(np.hypot(*gt.shape))
    out = np.zeros((len(thresholds), 4), dtype=np.int64)
    for i, t in enumerate(thresholds):
        binary = (prob >= t) & valid
        if thinning:
            binary = thin(binary)
        matched_pred, matched_gt = match_edges(binary, gt_edges, radius)
        out[i] = (matched_pred, binary.sum(), matched_gt, gt_edges.sum())
    return out


def _f_measure(p: np.ndarray, r: np.ndarray, beta2: float = 1.0) -> np.ndarray:
    with np.errstate(invalid='ignore', divide='ignore'):
        f = (1 + beta2) * p * r / (beta2 * p + r)
    return np.nan_to_num(f, nan=0.0)


def edge_scores(counts: np.ndarray) -> Dict[str, float]:
    """``odsF`` and ``oisF`` (percent) from per-image counts of shape (N, T, 4)."""
    total = counts.sum(0).astype(np.float64)
    precision = total[:, 0] / np.maximum(total[:, 1], 1)
    recall = total[:, 2] / np.maximum(total[:, 3], 1)
    ods = float(_f_measure(precision, recall).max())
    per_p = counts[..., 0] / np.maximum(counts[..., 1], 1)
    per_r = counts[..., 2] / np.maximum(counts[..., 3], 1)
    best = _f_measure(per_p, per_r).argmax(1)
    chosen = counts[np.arange(len(counts)), best].sum(0).astype(np.float64)
    ois = float(_f_measure(np.array([chosen[0] / max(chosen[1], 1)]), np.array([chosen[2] / max(chosen[3], 1)]))[0])
    return OrderedDict(odsF=100.0 * ods, oisF=100.0 * ois)


def saliency_stats(prob: np.ndarray, gt: np.ndarray, thresholds: Sequence[float],
                   ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Per threshold: (precision, recall, foreground Jaccard) of one image, shape (T, 3).

    Empty denominators: precision is 1 if the image has no foreground pixel (else 0), recall
    and Jaccard are 1.
    """
    valid = gt != ignore_index
    fg = (gt == 1) & valid
    out = np.zeros((len(thresholds), 3))
    for i, t in enumerate(thresholds):
        pred = (prob >= t) & valid
        tp, fp, fn = (pred & fg).sum(), (pred & ~fg).sum(), (~pred & fg).sum()
        out[i, 0] = tp / (tp + fp) if tp + fp else float(fg.sum() == 0)
        out[i, 1] = tp / (tp + fn) if tp + fn else 1.0
        out[i, 2] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    return out


# --------------------------------------------------------------------------- Delta_m and result files


def _get(results: Mapping, task: str, metric: str) -> Optional[float]:
    key = f'{task}/{metric}'
    if key in results:
        return float(results[key])
    inner = results.get(task)
    if isinstance(inner, Mapping) and metric in inner:
        return float(inner[metric])
    return None


def delta_m(results: Mapping, baselines: Mapping, tasks: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Per-task relative gains (percent) and their mean ``'delta_m'``.

    ``results`` and ``baselines`` are flat ``{'<task>/<metric>': value}`` or nested
    ``{task: {metric: value}}`` tables; each task's headline metric (:data:`HEADLINE`) is used.
    """
    tasks = [t for t in HEADLINE if _get(results, t, HEADLINE[t][0]) is not None] if tasks is None else tasks
    gains = OrderedDict()
    for task in tasks:
        if task not in HEADLINE:
            raise KeyError(f'no headline metric for task {task!r}; expected one of {list(HEADLINE)}')
        metric, higher = HEADLINE[task]
        value, base = _get(results, task, metric), _get(baselines, task, metric)
        if value is None or base is None:
            raise KeyError(f'Delta_m needs {task}/{metric} in both tables; results has '
                           f'{value is not None}, baseline has {base is not None}')
        if base == 0:
            raise ValueError(f'the single-task baseline of {task}/{metric} is 0; Delta_m is undefined')
        gains[task] = (1.0 if higher else -1.0) * (value - base) / abs(base) * 100.0
    if not gains:
        raise ValueError('Delta_m needs at least one task with a headline metric')
    gains['delta_m'] = float(np.mean(list(gains.values())))
    return gains


def load_results(path: str) -> Dict[str, float]:
    """A results table: a JSON object, or the last JSON line of an mmengine log / scalars file.

    Nested ``{task: {metric: value}}`` tables are flattened to ``'<task>/<metric>'`` keys; entries
    that are not numbers are dropped. A missing file raises ``FileNotFoundError``, one that holds
    no JSON object ``ValueError``, both naming the file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'results file {path!r} does not exist (run the test of that config '
                                'first; its MultiTaskMetric writes results_file)')
    with open(path) as f:
        text = f.read()
    try:
        table = json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError(f'results file {path!r} is empty') from None
        try:
            table = json.loads(lines[-1])
        except json.JSONDecodeError as err:
            raise ValueError(f'results file {path!r} is not JSON: expected a JSON object or a last line that '
                             f'is one, got {lines[-1][:60]!r} ({err.msg})') from None
    if not isinstance(table, dict):
        raise ValueError(f'results file {path!r} must hold a JSON object, got {type(table).__name__}')
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update({f'{key}/{k}': v for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            flat[key] = value
    return flat


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def save_results(path: str, table: Mapping[str, float]) -> str:
    """Write a flat ``{'<task>/<metric>': value}`` table as JSON (folders created); return ``path``."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump({k: float(v) for k, v in table.items()}, f, indent=2)
    return path


# --------------------------------------------------------------------------- the metric


def _array(sample: dict, key: str) -> np.ndarray:
    data = sample[key]['data']
    return data.detach().cpu().float().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)


@METRICS.register_module()
class MultiTaskMetric(BaseMetric):
    """Every task's metrics in one table, and Delta_m against single-task baselines.

    Args:
        tasks: the evaluated tasks (keys of ``TASK_FIELDS``).
        num_classes: ``{task: classes}`` for ``semseg`` / ``human_parts``.
        min_depth, max_depth: evaluated depth range in metres.
        edge_max_dist: matching tolerance as a fraction of the image diagonal (0.011 NYUD,
            0.0075 PASCAL, as in the multi-task codebases' SEISM evaluation).
        edge_thresholds: number of thresholds ``k / (n + 1)``, k = 1..n (99 as BSDS / SEISM).
        edge_thinning: thin the binarised predictions (as SEISM does) before matching.
        sal_thresholds: saliency thresholds (default ``linspace(0.2, 0.9, 15)``).
        baselines: ``{task: results file}`` of the single-task runs; when every file exists,
            ``multitask/delta_m`` (and each task's gain) is reported; a missing file is logged.
        results_file: where to write this evaluation's table as JSON (for Delta_m of other runs).
        output_dir: as ``results_file``, as ``<output_dir>/multitask_results.json`` (set by
            ``tools/test.py --out``).
        keep_results: accepted for ``tools/test.py --out``; predictions are not stored.
    """

    default_prefix: Optional[str] = None

    def __init__(self, tasks: Sequence[str], num_classes: Optional[Dict[str, int]] = None,
                 min_depth: float = 1e-3, max_depth: float = 10.0, edge_max_dist: float = 0.011,
                 edge_thresholds: int = 99, edge_thinning: bool = True,
                 sal_thresholds: Optional[Sequence[float]] = None,
                 baselines: Optional[Dict[str, str]] = None, results_file: Optional[str] = None,
                 output_dir: Optional[str] = None, keep_results: bool = False,
                 collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in TASK_FIELDS]
        if not tasks or unknown:
            raise ValueError(f'tasks must be a non-empty list of {tuple(TASK_FIELDS)}, got {tasks}')
        num_classes = dict(num_classes or {})
        for task in ('semseg', 'human_parts'):
            if task in tasks and task not in num_classes:
                raise ValueError(f'MultiTaskMetric needs num_classes[{task!r}] for task {task!r}')
        if not 0 <= min_depth < max_depth:
            raise ValueError(f'need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}')
        if edge_thresholds < 1 or not 0 < edge_max_dist < 1:
            raise ValueError(f'need edge_thresholds >= 1 and 0 < edge_max_dist < 1, got {edge_thresholds} '
                             f'and {edge_max_dist}')
        unknown = [t for t in (baselines or {}) if t not in tasks]
        if unknown:
            raise ValueError(f'baselines names tasks that are not evaluated: {unknown}; tasks: {tasks}')
        self.tasks, self.num_classes = tasks, num_classes
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.edge_max_dist, self.edge_thinning = float(edge_max_dist), edge_thinning
        self.edge_thresholds = np.arange(1, edge_thresholds + 1) / (edge_thresholds + 1)
        self.sal_thresholds = np.asarray(sal_thresholds if sal_thresholds is not None
                                         else np.linspace(0.2, 0.9, 15), dtype=np.float64)
        self.baselines = dict(baselines or {})
        self.results_file = results_file or (osp.join(output_dir, 'multitask_results.json') if output_dir else None)

    # ---- per sample
    def sample_stats(self, task: str, pred: np.ndarray, gt: np.ndarray) -> dict:
        """The statistics of one image for one task (what :meth:`process` stores)."""
        if pred.shape[-2:] != gt.shape[-2:]:
            raise ValueError(f'{task}: prediction is {pred.shape[-2:]} but ground truth is {gt.shape[-2:]}')
        if task in ('semseg', 'human_parts'):
            return dict(confusion=confusion_matrix(pred[0].astype(np.int64), gt[0].astype(np.int64),
                                                   self.num_classes[task]))
        if task == 'depth':
            gt, pred = gt[0], np.clip(pred[0], self.min_depth, self.max_depth)
            valid = (gt > self.min_depth) & (gt <= self.max_depth)
            err = pred[valid].astype(np.float64) - gt[valid]
            return dict(sq=float((err**2).sum()), rel=float((np.abs(err) / gt[valid]).sum()), n=int(valid.sum()))
        if task == 'normals':
            angles = normal_angles(pred, gt)
            bins = np.minimum((angles / NORMALS_BIN_DEG).astype(np.int64), int(180 / NORMALS_BIN_DEG) - 1)
            return dict(sum=float(angles.sum()), sq=float((angles.astype(np.float64)**2).sum()), n=angles.size,
                        within=np.array([(angles < t).sum() for t in (11.25, 22.5, 30.0)]),
                        hist=np.bincount(bins, minlength=int(180 / NORMALS_BIN_DEG)).astype(np.int32))
        if task == 'sal':
            return dict(prc=saliency_stats(pred[0], gt[0].astype(np.int64), self.sal_thresholds))
        if task == 'edge':
            return dict(counts=edge_counts(pred[0], gt[0].astype(np.int64), self.edge_thresholds,
                                           self.edge_max_dist, thinning=self.edge_thinning))
        raise KeyError(f'unknown task {task!r}')

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            stats = {}
            for task in self.tasks:
                field = TASK_FIELDS[task]
                if 'pred_' + field not in sample:
                    raise KeyError(f'MultiTaskMetric: task {task!r} has no pred_{field} in the model output; '
                                   f'output fields: {sorted(k for k in sample if k.startswith("pred_"))}')
                if 'gt_' + field not in sample:
                    raise KeyError(f'MultiTaskMetric: task {task!r} has no gt_{field} in the data sample; is '
                                   "it in the dataset's tasks?")
                stats[task] = self.sample_stats(task, _array(sample, 'pred_' + field), _array(sample, 'gt_' + field))
            self.results.append(stats)

    # ---- over the dataset
    def compute_from_stats(self, results: Sequence[dict]) -> Dict[str, float]:
        out = OrderedDict()
        for task in self.tasks:
            stats = [r[task] for r in results]
            if task in ('semseg', 'human_parts'):
                out[f'{task}/mIoU'] = mean_iou(sum(s['confusion'] for s in stats))
            elif task == 'depth':
                n = sum(s['n'] for s in stats)
                if n == 0:
                    raise RuntimeError(f'MultiTaskMetric: no valid depth pixel in ({self.min_depth}, {self.max_depth}]')
                out['depth/rmse'] = float(np.sqrt(sum(s['sq'] for s in stats) / n))
                out['depth/abs_rel'] = float(sum(s['rel'] for s in stats) / n)
            elif task == 'normals':
                n = sum(s['n'] for s in stats)
                if n == 0:
                    raise RuntimeError('MultiTaskMetric: no valid normal (no label with norm > 0.5)')
                hist = sum(s['hist'].astype(np.int64) for s in stats)
                median_bin = int(np.searchsorted(np.cumsum(hist), (n + 1) / 2.0))
                within = sum(s['within'] for s in stats)
                out['normals/mean'] = sum(s['sum'] for s in stats) / n
                out['normals/median'] = (median_bin + 0.5) * NORMALS_BIN_DEG
                out['normals/rmse'] = float(np.sqrt(sum(s['sq'] for s in stats) / n))
                for t, count in zip(('11.25', '22.5', '30'), within):
                    out[f'normals/{t}'] = 100.0 * float(count) / n
            elif task == 'sal':
                prc = np.mean([s['prc'] for s in stats], axis=0)
                out['sal/maxF'] = 100.0 * float(_f_measure(prc[:, 0], prc[:, 1], SAL_BETA2).max())
                out['sal/mIoU'] = 100.0 * float(prc[:, 2].max())
            elif task == 'edge':
                for name, value in edge_scores(np.stack([s['counts'] for s in stats])).items():
                    out[f'edge/{name}'] = value
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        if not results:
            raise RuntimeError('MultiTaskMetric: no sample was evaluated')
        out = self.compute_from_stats(results)
        if self.baselines:
            missing = {t: p for t, p in self.baselines.items() if not osp.isfile(p)}
            if missing:
                print_log(f'MultiTaskMetric: Delta_m skipped, single-task result files missing: {missing}',
                          logger='current', level=logging.WARNING)
            else:
                base = {}
                for task, path in self.baselines.items():
                    base.update({k: v for k, v in load_results(path).items() if k.startswith(task + '/')})
                for task, gain in delta_m(out, base, tasks=list(self.baselines)).items():
                    out['multitask/delta_m' if task == 'delta_m' else f'multitask/gain_{task}'] = gain
        print_log('multi-task metrics over %d images: %s' % (
            len(results), ', '.join(f'{k}={v:.4f}' for k, v in out.items())), logger='current')
        if self.results_file:
            save_results(self.results_file, out)
        return out
