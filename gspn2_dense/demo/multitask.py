"""Multi-task demo: synthetic NYUD-MT / PASCAL-MT folders and the demo's multi-task leg.

:func:`make_multitask_demo_data` writes small copies of both datasets in their real layouts
(:mod:`gspn2_dense.datasets.multitask`). Every label of an image comes from one synthetic scene,
so the tasks agree with each other and with the pixels:

* NYUD-MT: a room seen from inside -- floor receding to a back wall, a slanted left wall and
  boxes standing on the floor. Depth follows the geometry, normals are the surfaces' normals
  (x right, y up, z towards the camera), semantic classes are the surfaces' NYU-40 classes and
  edges are the boundaries between surfaces (class, depth and orientation discontinuities; a
  surface receding smoothly, such as the floor, has none inside). The image is the classes' colours and stripe
  textures, lit by a light at the camera (brightness falls with depth) and shaded by the
  normals (Lambert), plus noise.
* PASCAL-MT: textured objects of VOC classes and people (head, torso, arms, legs as separate
  parts) on a two-region background. Objects are salient, bulge towards the camera (normals of
  an ellipsoid) and are Lambert-shaded; edges come from the context label map; people's parts
  are written as PASCAL-Part ``anno`` structs.

:func:`run_multitask_demo` trains and tests the multi-task linear probe on each, prints every
task's metric next to its chance baseline (and Delta_m over single-task probes when asked), and
saves one panel per test image; the demo main job runs it on the CLIP-trained tower.
"""
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import scipy.io

from gspn2_dense.datasets.multitask_transforms import PERSON_PART_GROUPS, label_boundaries

from .data import _COLOURS, _texture, _write_gray, _write_rgb

NYUD_DEMO_ROOT = 'NYUD_MT'
PASCAL_DEMO_ROOT = 'PASCALContext'
DEMO_SIZE = (72, 96)  # (H, W)
DEMO_SPLITS = {'train': 48, 'val': 12}

# NYU-40 label values (1-based, as in segmentation/*.png) of the synthetic room's surfaces.
NYUD_WALL, NYUD_FLOOR = 1, 2
NYUD_BOX_LABELS = (3, 7, 29)  # cabinet, table, box
NYUD_LABELS = (NYUD_WALL, NYUD_FLOOR) + NYUD_BOX_LABELS
# VOC label values of the synthetic PASCAL objects; 15 is person (drawn with parts).
PASCAL_OBJECT_LABELS = (7, 8, 12)  # car, cat, dog
PASCAL_PERSON = 15
_LIGHT = np.array([0.35, 0.45, 0.82], dtype=np.float32) / np.linalg.norm([0.35, 0.45, 0.82])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) in [-1, 1] -> RGB uint8 with ``v = (n + 1) * 255 / 2``."""
    return np.clip(np.round((normals + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _shade(rng: np.random.Generator, index: np.ndarray, normals: np.ndarray,
           brightness: np.ndarray) -> np.ndarray:
    """RGB uint8 image: class colour + stripe texture, times Lambert shading and ``brightness``."""
    h, w = index.shape
    image = np.zeros((h, w, 3), dtype=np.float32)
    for k in np.unique(index):
        sel = index == k
        colour = _COLOURS[k % len(_COLOURS)] * rng.uniform(0.9, 1.1)
        image[sel] = colour + 30.0 * _texture(rng, (h, w), int(k))[sel][:, None]
    lambert = np.clip(normals @ _LIGHT, 0.0, 1.0)
    image = image * ((0.45 + 0.55 * lambert) * brightness)[..., None]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_nyud_scene(rng: np.random.Generator, size: Tuple[int, int] = DEMO_SIZE) -> Dict[str, np.ndarray]:
    """One synthetic room: ``image`` (RGB uint8), ``semseg`` (NYU-40 values, 0 = unlabelled),
    ``depth`` (metres, 0 = invalid), ``normals`` (unit, (H, W, 3)) and ``edge`` ({0, 1}: the
    boundaries between surfaces, where the class, the depth or the orientation jumps)."""
    h, w = size
    horizon = int(rng.integers(h // 4, h // 2))
    wall_depth = float(rng.uniform(6.0, 9.0))
    rows = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), dtype=np.float32)
    cols = np.ones((h, 1), dtype=np.float32) * np.arange(w, dtype=np.float32)[None]
    floor_depth = 1.6 * h / np.maximum(rows - horizon, 1e-3)
    is_floor = (rows > horizon) & (floor_depth < wall_depth)
    depth = np.where(is_floor, floor_depth, wall_depth).astype(np.float32)
    semseg = np.where(is_floor, NYUD_FLOOR, NYUD_WALL).astype(np.uint8)
    index = np.where(is_floor, 1, 0)  # texture of each surface
    surface = index.copy()  # one id per surface: back wall, floor, left wall, each box
    normals = np.zeros((h, w, 3), dtype=np.float32)
    normals[:] = _unit([0, 0, 1])
    normals[is_floor] = _unit([0, 1, 0])
    # Left wall: receding from 1.5 m at the image border to the back wall.
    left = int(rng.integers(w // 8, w // 4))
    side_depth = 1.5 + (wall_depth - 1.5) * cols / left
    side = (cols < left) & (side_depth < depth)
    depth[side] = side_depth[side]
    semseg[side] = NYUD_WALL
    index[side] = 2
    surface[side] = 2
    normals[side] = _unit([0.8, 0, 0.6])
    for box in range(int(rng.integers(1, 4))):
        bh, bw = int(rng.integers(h // 6, h // 2)), int(rng.integers(w // 8, w // 3))
        bottom = int(rng.integers(horizon + 4, h))
        x0 = int(rng.integers(left, w - bw))
        box_depth = float(floor_depth[bottom, 0])
        window = (slice(max(bottom - bh, 0), bottom), slice(x0, x0 + bw))
        front = depth[window] > box_depth
        k = int(rng.integers(len(NYUD_BOX_LABELS)))
        depth[window][front] = box_depth
        semseg[window][front] = NYUD_BOX_LABELS[k]
        index[window][front] = 3 + k
        surface[window][front] = 3 + box
        normals[window][front] = _unit([0, 0, 1])
    brightness = np.clip(1.2 - depth / 9.0, 0.1, 1.0)
    image = _shade(rng, index, normals, brightness)
    edge = label_boundaries(surface)
    holes = rng.random((h, w)) < 0.01
    depth[holes] = 0.0
    semseg[rng.random((h, w)) < 0.01] = 0
    return dict(image=image, semseg=semseg, depth=depth, normals=normals, edge=edge)


def _person(rng: np.random.Generator, canvas: Tuple[int, int]) -> Dict[str, np.ndarray]:
    """Masks of one upright person's parts (PASCAL-Part names), at a random place and size."""
    h, w = canvas
    height = int(rng.integers(h // 2, h - 4))
    cx, top = int(rng.integers(w // 6, w - w // 6)), int(rng.integers(0, h - height))
    u = height / 8.0

    def box(x0, y0, x1, y1):
        mask = np.zeros(canvas, dtype=np.uint8)
        cv2.rectangle(mask, (int(cx + x0 * u), int(top + y0 * u)), (int(cx + x1 * u), int(top + y1 * u)), 1, -1)
        return mask

    head = np.zeros(canvas, dtype=np.uint8)
    cv2.ellipse(head, (cx, int(top + 0.6 * u)), (max(int(0.5 * u), 1), max(int(0.6 * u), 1)), 0, 0, 360, 1, -1)
    parts = dict(head=head, torso=box(-0.8, 1.2, 0.8, 4.2),
                 luarm=box(-1.4, 1.3, -0.85, 2.8), ruarm=box(0.85, 1.3, 1.4, 2.8),
                 llarm=box(-1.4, 2.85, -0.85, 4.3), rlarm=box(0.85, 2.85, 1.4, 4.3),
                 luleg=box(-0.75, 4.25, -0.1, 6.0), ruleg=box(0.1, 4.25, 0.75, 6.0),
                 llleg=box(-0.75, 6.05, -0.1, 7.9), rlleg=box(0.1, 6.05, 0.75, 7.9))
    return parts


def _bulge_normals(mask: np.ndarray) -> np.ndarray:
    """Normals of an ellipsoid fitted to a mask's bounding box, (H, W, 3)."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    ry, rx = max((ys.max() - ys.min()) / 2.0, 1.0), max((xs.max() - xs.min()) / 2.0, 1.0)
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]].astype(np.float32)
    dx, dy = (xx - cx) / rx * 0.8, -(yy - cy) / ry * 0.8  # y up
    dz = np.sqrt(np.clip(1.0 - dx**2 - dy**2, 0.05, 1.0))
    n = np.stack([dx, dy, dz], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def draw_pascal_scene(rng: np.random.Generator, size: Tuple[int, int] = DEMO_SIZE,
                      with_person: bool = True) -> Dict[str, object]:
    """One synthetic PASCAL-Context image: ``image``, ``semseg`` (0..20), ``context`` (context
    label map), ``sal`` ({0, 1}), ``normals``, ``human_parts`` (0..6) and ``objects`` (for the
    PASCAL-Part struct)."""
    h, w = size
    split_row = int(rng.integers(h // 3, 2 * h // 3))
    context = np.where(np.arange(h)[:, None] < split_row, 360, 284) * np.ones((1, w), dtype=np.int32)
    index = np.where(context == 360, 0, 1)  # sky-like / ground-like background
    semseg = np.zeros((h, w), dtype=np.uint8)
    normals = np.zeros((h, w, 3), dtype=np.float32)
    normals[:] = _unit([0, 0, 1])
    normals[context == 284] = _unit([0, 0.8, 0.6])
    parts_map = np.zeros((h, w), dtype=np.uint8)
    objects: List[dict] = []
    for _ in range(int(rng.integers(1, 3))):
        label = PASCAL_OBJECT_LABELS[int(rng.integers(len(PASCAL_OBJECT_LABELS)))]
        mask = np.zeros((h, w), dtype=np.uint8)
        cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 5, 4 * w // 5))
        ry, rx = int(rng.integers(h // 8, h // 4)), int(rng.integers(w // 8, w // 4))
        cv2.ellipse(mask, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        objects.append(dict(class_ind=label, mask=mask, parts={}))
    if with_person:
        parts = _person(rng, size)
        body = np.zeros((h, w), dtype=np.uint8)
        for mask in parts.values():
            body |= mask
        objects.append(dict(class_ind=PASCAL_PERSON, mask=body, parts=parts))
    for obj in objects:
        sel = obj['mask'] > 0
        label = obj['class_ind']
        semseg[sel] = label
        context[sel] = 1000 + label
        parts_map[sel] = 0
        if obj['parts']:
            for name, mask in obj['parts'].items():
                group = PERSON_PART_GROUPS[name]
                part_sel = mask > 0
                parts_map[part_sel] = group
                index[part_sel] = 20 + group
        else:
            index[sel] = 2 + PASCAL_OBJECT_LABELS.index(label)
        normals[sel] = _bulge_normals(obj['mask'])[sel]
    sal = (semseg > 0).astype(np.uint8)
    image = _shade(rng, index, normals, np.full((h, w), 0.95, dtype=np.float32))
    return dict(image=image, semseg=semseg, context=context, sal=sal, normals=normals,
                human_parts=parts_map, objects=objects)


def write_pascal_part_mat(path: str, image_id: str, objects: Sequence[dict]) -> None:
    """Write PASCAL-Part's ``anno`` struct (``imname``, ``objects`` with ``class``, ``class_ind``,
    ``mask`` and ``parts`` of ``part_name`` / ``mask``)."""
    part_dtype = [('part_name', 'O'), ('mask', 'O')]
    obj_dtype = [('class', 'O'), ('class_ind', 'O'), ('mask', 'O'), ('parts', 'O')]
    objs = np.zeros((1, len(objects)), dtype=obj_dtype)
    for i, obj in enumerate(objects):
        parts = np.zeros((1, len(obj['parts'])), dtype=part_dtype)
        for j, (name, mask) in enumerate(obj['parts'].items()):
            parts[0, j]['part_name'] = name
            parts[0, j]['mask'] = mask.astype(np.uint8)
        objs[0, i]['class'] = 'person' if obj['class_ind'] == PASCAL_PERSON else 'object'
        objs[0, i]['class_ind'] = np.array([[obj['class_ind']]], dtype=np.float64)
        objs[0, i]['mask'] = obj['mask'].astype(np.uint8)
        objs[0, i]['parts'] = parts
    anno = np.zeros((1, 1), dtype=[('imname', 'O'), ('objects', 'O')])
    anno[0, 0]['imname'] = image_id
    anno[0, 0]['objects'] = objs
    os.makedirs(osp.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {'anno': anno})


def _write_ids(path: str, ids: Sequence[str]) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(ids) + '\n')


def make_nyud_mt(root: str, rng: np.random.Generator, splits: Dict[str, int] = DEMO_SPLITS,
                 size: Tuple[int, int] = DEMO_SIZE) -> str:
    """Write a NYUD-MT folder under ``root``; return it."""
    base = osp.join(root, NYUD_DEMO_ROOT)
    n = 0
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            n += 1
            scene = draw_nyud_scene(rng, size)
            sample_id = f'{n:04d}'
            ids.append(sample_id)
            _write_rgb(osp.join(base, 'images', sample_id + '.png'), scene['image'])
            _write_gray(osp.join(base, 'segmentation', sample_id + '.png'), scene['semseg'])
            os.makedirs(osp.join(base, 'depth'), exist_ok=True)
            np.save(osp.join(base, 'depth', sample_id + '.npy'), scene['depth'])
            _write_rgb(osp.join(base, 'normals', sample_id + '.png'), _encode_normals(scene['normals']))
            _write_gray(osp.join(base, 'edge', sample_id + '.png'), scene['edge'] * 255)
        _write_ids(osp.join(base, 'gt_sets', f'{split}.txt'), ids)
    return base


def make_pascal_mt(root: str, rng: np.random.Generator, splits: Dict[str, int] = DEMO_SPLITS,
                   size: Tuple[int, int] = DEMO_SIZE) -> str:
    """Write a PASCAL-MT folder under ``root`` (about 3 in 4 images with a person); return it."""
    base = osp.join(root, PASCAL_DEMO_ROOT)
    for split, count in splits.items():
        ids, with_parts = [], []
        for n in range(count):
            sample_id = f'2008_{split}_{n:06d}'
            scene = draw_pascal_scene(rng, size, with_person=n % 4 != 3)
            ids.append(sample_id)
            _write_rgb(osp.join(base, 'JPEGImages', sample_id + '.jpg'), scene['image'])
            _write_gray(osp.join(base, 'semseg', 'pascal-context', sample_id + '.png'), scene['semseg'])
            _write_gray(osp.join(base, 'sal_distill', sample_id + '.png'), scene['sal'] * 255)
            _write_rgb(osp.join(base, 'normals_distill', sample_id + '.png'),
                       _encode_normals(scene['normals']))
            os.makedirs(osp.join(base, 'pascal-context', 'trainval'), exist_ok=True)
            scipy.io.savemat(osp.join(base, 'pascal-context', 'trainval', sample_id + '.mat'),
                             {'LabelMap': scene['context'].astype(np.uint16)})
            if any(obj['parts'] for obj in scene['objects']):
                with_parts.append(sample_id)
                write_pascal_part_mat(osp.join(base, 'human_parts', sample_id + '.mat'), sample_id,
                                      scene['objects'])
        _write_ids(osp.join(base, 'ImageSets', 'Context', f'{split}.txt'), ids)
        _write_ids(osp.join(base, 'ImageSets', 'Parts', f'{split}.txt'), with_parts)
    os.makedirs(osp.join(base, 'human_parts'), exist_ok=True)
    return base


MULTITASK_DEMO_DATASETS = {'nyud-mt': (make_nyud_mt, NYUD_DEMO_ROOT),
                           'pascal-mt': (make_pascal_mt, PASCAL_DEMO_ROOT)}


def make_multitask_demo_data(root: str = 'data/demo', datasets: Sequence[str] = tuple(MULTITASK_DEMO_DATASETS),
                             seed: int = 0, overwrite: bool = False,
                             splits: Dict[str, int] = DEMO_SPLITS,
                             size: Tuple[int, int] = DEMO_SIZE) -> Dict[str, str]:
    """Write the multi-task demo folders under ``root`` (kept if present); return ``{name: data_root}``."""
    unknown = [name for name in datasets if name not in MULTITASK_DEMO_DATASETS]
    if unknown:
        raise ValueError(f'unknown multi-task demo datasets {unknown}; expected names from '
                         f'{list(MULTITASK_DEMO_DATASETS)}')
    written = {}
    for name in datasets:
        make, folder = MULTITASK_DEMO_DATASETS[name]
        data_root = osp.join(root, folder)
        if overwrite or not osp.isdir(data_root):
            make(root, np.random.default_rng([seed, list(MULTITASK_DEMO_DATASETS).index(name)]),
                 splits=splits, size=size)
        written[name] = data_root
    return written


# --------------------------------------------------------------------------- the demo leg

MULTITASK_DEMO_CONFIGS = {
    'nyud-mt': 'multitask-linear_gspn2-nano_1xb8-300_nyud-mt-demo-64x64.py',
    'pascal-mt': 'multitask-linear_gspn2-nano_1xb8-300_pascal-mt-demo-64x64.py',
}
MULTITASK_TEST_CONFIGS = {
    'nyud-mt': 'multitask-linear_gspn2-test_1xb4-80_nyud-mt-demo-64x64.py',
    'pascal-mt': 'multitask-linear_gspn2-test_1xb4-80_pascal-mt-demo-64x64.py',
}


def single_task_config(cfg, task: str, work_dir: str, results_file: Optional[str] = None):
    """A copy of multi-task config ``cfg`` reduced to ``task`` alone (its single-task baseline),
    testing into ``results_file``."""
    from mmengine.config import Config

    single = Config(cfg.to_dict())
    single.model.heads = {task: cfg.model.heads[task]}
    single.model.loss_weights = None
    for key in ('train_dataloader', 'test_dataloader'):
        single[key].dataset.tasks = (task, )
    single.test_evaluator = dict(cfg.test_evaluator, tasks=(task, ), baselines=None, results_file=results_file)
    single.work_dir = work_dir
    return single


def save_multitask_panels(runner, out_dir: str, num: int = 4, max_depth: float = 10.0) -> List[str]:
    """One PNG per test image: the input, then per task its ground truth (top) and prediction
    (bottom), with class legends and colour bars."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from gspn2_dense.datasets.multitask import IGNORE_INDEX, TASK_FIELDS

    os.makedirs(out_dir, exist_ok=True)
    model = runner.model
    model.eval()
    meta = runner.test_dataloader.dataset.metainfo
    names = {'semseg': list(meta['classes']), 'human_parts': list(meta.get('part_classes', ()))}
    palette = np.array(meta['palette'], dtype=np.float32) / 255.0
    paths: List[str] = []
    with torch.no_grad():
        for batch in runner.test_dataloader:
            for sample in model.test_step(batch):
                tasks = [t for t in TASK_FIELDS if 'pred_' + TASK_FIELDS[t] in sample]
                fig = Figure(figsize=(2.6 * (len(tasks) + 1), 5.6))
                FigureCanvasAgg(fig)
                axes = fig.subplots(2, len(tasks) + 1, squeeze=False)
                image = cv2.imread(sample.img_path)[..., ::-1]
                axes[0, 0].imshow(image)
                axes[0, 0].set_title('input', fontsize=8)
                for row, prefix in enumerate(('gt_', 'pred_')):
                    for col, task in enumerate(tasks, 1):
                        ax = axes[row, col]
                        data = sample.get(prefix + TASK_FIELDS[task]).data.cpu().numpy()
                        title = f'{task} ({"truth" if row == 0 else "prediction"})'
                        if task in ('semseg', 'human_parts'):
                            label = data[0].astype(np.int64)
                            num_classes = len(names[task])
                            colours = palette[:num_classes] if task == 'semseg' else \
                                np.array(_COLOURS[:num_classes]) / 255.0
                            shown = np.ma.masked_where(label == IGNORE_INDEX, label)
                            ax.imshow(shown, cmap=ListedColormap(colours), vmin=-0.5, vmax=num_classes - 0.5,
                                      interpolation='nearest')
                            present = [int(c) for c in np.unique(label) if c != IGNORE_INDEX][:8]
                            ax.legend(handles=[Patch(color=colours[c], label=names[task][c]) for c in present],
                                      fontsize=5, loc='upper center', bbox_to_anchor=(0.5, -0.02), ncol=2,
                                      frameon=False)
                        elif task == 'normals':
                            valid = np.linalg.norm(data, axis=0) > 0.5
                            ax.imshow(np.where(valid[..., None], (data.transpose(1, 2, 0) + 1) / 2, 0).clip(0, 1))
                            title += '\nRGB = (n + 1) / 2'
                        else:
                            values = data[0].astype(np.float32)
                            if task == 'depth':
                                shown = np.ma.masked_where(values <= 0, values)
                                im = ax.imshow(shown, cmap='magma', vmin=0, vmax=max_depth)
                                label_text = 'metres'
                            else:
                                shown = np.ma.masked_where(values == IGNORE_INDEX, values)
                                im = ax.imshow(shown, cmap='gray', vmin=0, vmax=1)
                                label_text = 'probability' if row else 'label'
                            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
                            bar.ax.tick_params(labelsize=5)
                            bar.set_label(label_text, fontsize=5)
                        ax.set_title(title, fontsize=7)
                for ax in axes.ravel():
                    ax.set_xticks([])
                    ax.set_yticks([])
                axes[1, 0].axis('off')
                fig.tight_layout()
                path = osp.join(out_dir, f'{sample.metainfo.get("sample_id", len(paths))}.png')
                fig.savefig(path, dpi=110)
                paths.append(path)
                if len(paths) == num:
                    return paths
    return paths




def _set_iters(cfg, iters: int) -> None:
    """Train ``iters`` iterations: warm-up of a tenth (at most the config's), then the decay."""
    cfg.train_cfg.max_iters = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.param_scheduler[0].end = min(cfg.param_scheduler[0].end, max(iters // 10, 1))
    cfg.param_scheduler[-1].begin = cfg.param_scheduler[0].end
    cfg.param_scheduler[-1].end = iters


def run_multitask_demo(work_dir: str = 'work_dirs/demo/multitask', data_root: str = 'data/demo',
                       backbone_ckpt: Optional[str] = None,
                       datasets: Sequence[str] = tuple(MULTITASK_DEMO_CONFIGS), iters: Optional[int] = None,
                       tiny: bool = False, single_task: Sequence[str] = tuple(MULTITASK_DEMO_CONFIGS),
                       num_panels: int = 4,
                       log: Callable[[str], None] = lambda msg: print(msg, flush=True)) -> Dict[str, dict]:
    """Train and test the multi-task linear probes on the demo data; compare with chance and Delta_m.

    Per dataset the runs write their result files under ``<work_dir>/<dataset>/results/``
    (``multitask.json``, ``chance.json``, ``<task>.json`` of each single-task probe) and the table
    is built from them as ``tools/multitask_eval.py`` builds it
    (:func:`~gspn2_dense.evaluation.multitask_report.report_from_files`). All tables go to
    ``<work_dir>/multitask_results.{md,json}``, the panels to ``<work_dir>/vis/<dataset>/``.

    Returns ``{dataset: dict(multitask=metrics, chance=metrics, single_task=metrics, gains={task: %,
    'delta_m': %} (empty without single-task probes), beats_chance={task: bool}, panels=[paths],
    seconds=float)}``.

    Args:
        work_dir: logs, checkpoints, result files, tables and panels go here.
        data_root: the demo data root (the folders are written when absent).
        backbone_ckpt: a backbone checkpoint (the CLIP leg's tower); ``None``: random init.
        datasets: keys of :data:`MULTITASK_DEMO_CONFIGS`.
        iters: training iterations of every run (default: the config's).
        tiny: the ``gspn2_test`` test-suite configs.
        single_task: the datasets whose tasks are also probed one by one, for Delta_m.
    """
    import json
    import time

    from gspn2_dense.evaluation.multitask_metric import HEADLINE, save_results
    from gspn2_dense.evaluation.multitask_report import chance_metrics, report_from_files
    from gspn2_dense.engine.probe import CONFIG_DIR, prepare_probe_config, run_probe

    unknown = [d for d in list(datasets) + list(single_task) if d not in MULTITASK_DEMO_CONFIGS]
    if unknown:
        raise ValueError(f'unknown multi-task demo datasets {unknown}; expected names from '
                         f'{list(MULTITASK_DEMO_CONFIGS)}')
    roots = make_multitask_demo_data(data_root, datasets)
    results: Dict[str, dict] = {}
    reports = []
    for name in datasets:
        start = time.time()
        config = str(CONFIG_DIR / 'demo' / (MULTITASK_TEST_CONFIGS if tiny else MULTITASK_DEMO_CONFIGS)[name])
        files = osp.join(work_dir, name, 'results')
        cfg = prepare_probe_config(config, osp.join(work_dir, name, 'multitask'), backbone_ckpt=backbone_ckpt,
                                   random_init=backbone_ckpt is None, data_root=roots[name])
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # tested once after training
        cfg.test_evaluator.results_file = osp.join(files, 'multitask.json')
        if iters is not None:
            _set_iters(cfg, iters)
        tasks = tuple(cfg.model.heads)
        log(f'[multi-task demo] {name}: {cfg.train_cfg.max_iters} iterations of the {"/".join(tasks)} '
            f'probes ({osp.basename(config)})')
        panels = []
        run_probe(cfg, inspect=lambda runner: panels.extend(
            save_multitask_panels(runner, osp.join(work_dir, 'vis', name), num=num_panels)))
        chance = save_results(osp.join(files, 'chance.json'), chance_metrics(cfg))
        baselines = {}
        if name in single_task:
            for task in tasks:
                log(f'[multi-task demo] {name}: single-task probe of {task}, for Delta_m')
                baselines[task] = osp.join(files, f'{task}.json')
                run_probe(single_task_config(cfg, task, osp.join(work_dir, name, task), baselines[task]))
        report = report_from_files(cfg, baselines=baselines, chance=chance, use_baselines=bool(baselines),
                                   title=f'{name}: multi-task linear probes on the demo data')
        beats, gains = report.beats_chance(), report.gains()
        for task in tasks:
            metric, higher = HEADLINE[task]
            key = f'{task}/{metric}'
            log(f'[multi-task demo] {name} {key} ({"higher" if higher else "lower"} is better): '
                f'{report.multitask[key]:.3f} vs chance {report.chance[key]:.3f}'
                + (f', single-task {report.single_task[key]:.3f}' if key in report.single_task else '')
                + (' -> beats chance' if beats[task] else ' -> does NOT beat chance'))
        if gains:
            log(f'[multi-task demo] {name} Delta_m = {gains["delta_m"]:+.2f} % over the single-task probes '
                '(frozen backbone, independent heads: 0 up to training noise)')
        results[name] = dict(multitask=report.multitask, chance=report.chance, single_task=report.single_task,
                             gains=gains, beats_chance=beats, panels=panels, seconds=time.time() - start)
        log(f'[multi-task demo] {name}: {results[name]["seconds"]:.0f} s; panels in {osp.join(work_dir, "vis", name)}')
        reports.append(report)
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'multitask_results.json'), 'w') as f:
        json.dump({name: dict(report.to_json(), panels=results[name]['panels'])
                   for name, report in zip(datasets, reports)}, f, indent=2)
    markdown = '\n'.join(report.to_markdown() for report in reports)
    with open(osp.join(work_dir, 'multitask_results.md'), 'w') as f:
        f.write(markdown)
    log(markdown)
    return results
