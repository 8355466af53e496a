"""Synthetic NYUD-MT / PASCAL-MT folders for the demo and the tests.

:func:`make_multitask_data` writes small copies of both datasets in their real layouts
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

"""
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import scipy.io

from gspn2_dense.datasets.multitask_transforms import PERSON_PART_GROUPS, label_boundaries

from .probe_data import _COLOURS, _texture, _write_gray, _write_rgb

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


def make_multitask_data(root: str = 'data/demo', datasets: Sequence[str] = tuple(MULTITASK_DEMO_DATASETS),
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
