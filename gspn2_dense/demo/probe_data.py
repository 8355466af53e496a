"""Small synthetic datasets in the exact folder layouts of the real probe datasets.

Every image is drawn from a fixed seed and has structure a linear probe can learn:

* segmentation: textured shapes on a textured background; each class has its own colour and
  stripe texture, so the class of a pixel is visible in its neighbourhood;
* depth: an indoor-like scene (floor receding to a back wall, boxes standing in front) lit by a
  light at the camera, so brightness falls with depth and texture frequency grows with depth.

Layouts written under ``root`` (see ``docs/datasets.md`` for the real ones)::

    ade/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*.{jpg,png}
    VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,SegmentationClassAug,ImageSets/Segmentation}
    VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext,ImageSets/SegmentationContext}
    nyu/{images,annotations}/{train,test}/<scene>_<n>.{jpg,png}      depth: uint16 millimetres
    nyuv2_40/{images,annotations}/{train,test}/<id>.png
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

# Well separated base colours (RGB); the i-th class of a demo dataset gets the i-th colour.
_COLOURS = np.array([
    (200, 40, 40), (40, 170, 40), (40, 60, 210), (220, 200, 40), (190, 50, 190), (40, 190, 200),
    (240, 140, 30), (120, 70, 20), (150, 150, 150), (20, 20, 20), (250, 250, 250), (90, 20, 120),
], dtype=np.float32)

SIZE = (72, 96)  # (H, W): the 3:4 aspect of NYUv2 / most VOC and ADE images, kept tiny


@dataclass(frozen=True)
class SegSpec:
    """One synthetic segmentation dataset: which label values are drawn and how many images."""
    labels: Tuple[int, ...]       # label values written into the annotation PNGs; [0] = background
    splits: Dict[str, int]        # split name -> number of images


def _texture(rng: np.random.Generator, shape: Tuple[int, int], index: int) -> np.ndarray:
    """Stripes whose orientation and period are fixed by the class index, in [-1, 1]."""
    h, w = shape
    angle = np.pi * (index * 0.37 % 1.0)
    period = 3.0 + (index * 1.7) % 5.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)


def _draw_seg_scene(rng: np.random.Generator, labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image and its (H, W) label map with 2-4 shapes of random foreground classes."""
    h, w = SIZE
    label = np.full((h, w), labels[0], dtype=np.uint8)
    index = np.zeros((h, w), dtype=np.int64)
    for _ in range(rng.integers(2, 5)):
        k = int(rng.integers(1, len(labels)))
        mask = np.zeros((h, w), dtype=np.uint8)
        cy, cx = int(rng.integers(8, h - 8)), int(rng.integers(8, w - 8))
        ry, rx = int(rng.integers(8, h // 2)), int(rng.integers(8, w // 2))
        if rng.random() < 0.5:
            cv2.ellipse(mask, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            cv2.rectangle(mask, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, -1)
        label[mask > 0] = labels[k]
        index[mask > 0] = k
    image = np.empty((h, w, 3), dtype=np.float32)
    for k in np.unique(index):
        sel = index == k
        colour = _COLOURS[k % len(_COLOURS)] * rng.uniform(0.85, 1.15)
        tex = _texture(rng, (h, w), int(k))[sel][:, None]
        image[sel] = colour + 35.0 * tex
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def _draw_depth_scene(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image and its depth map in metres (0 = invalid) of a floor, a wall and boxes."""
    h, w = SIZE
    horizon = int(rng.integers(h // 4, h // 2))
    wall = rng.uniform(6.0, 9.5)
    rows = np.arange(h, dtype=np.float32)[:, None]
    # Floor: depth ~ 1 / (row below the horizon), capped by the back wall.
    floor = np.minimum(wall, 1.6 * h / np.maximum(rows - horizon, 1e-3))
    depth = np.where(rows > horizon, floor, wall) * np.ones((1, w), dtype=np.float32)
    for _ in range(rng.integers(1, 4)):
        bh, bw = int(rng.integers(10, h // 2)), int(rng.integers(10, w // 3))
        bottom = int(rng.integers(horizon + 4, h))
        x0 = int(rng.integers(0, w - bw))
        box_depth = float(floor[bottom, 0])
        region = depth[max(bottom - bh, 0):bottom, x0:x0 + bw]
        np.minimum(region, box_depth, out=region)
    albedo = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    texture = np.sin(2 * np.pi * (xx + 0.5 * yy) * depth / 12.0)
    shade = 255.0 * np.clip(1.15 - depth / 9.0, 0.05, 1.0) * (0.85 + 0.15 * texture)
    image = shade[..., None] * albedo[None, None] + rng.normal(0, 4, (h, w, 3))
    depth = depth.astype(np.float32)
    holes = rng.random((h, w)) < 0.01
    depth[holes] = 0.0
    return np.clip(image, 0, 255).astype(np.uint8), depth


def _write_rgb(path: str, image: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _write_gray(path: str, array: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array):
        raise OSError(f'could not write {path}')


def _voc_palette() -> List[int]:
    """The PASCAL VOC colour map (bit-interleaved label index), as a flat 768-entry list."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _boundary(label: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within ``width`` of a label change (VOC marks them 255)."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, kernel)
    return edges > 0


ADE_SPEC = SegSpec(labels=(1, 3, 4, 13, 15, 20, 24), splits={'training': 48, 'validation': 12})
VOC_SPEC = SegSpec(labels=(0, 1, 5, 8, 12, 15), splits={'train': 24, 'aug': 24, 'val': 12})
CONTEXT_SPEC = SegSpec(labels=(0, 2, 9, 15, 22, 33, 41), splits={'train': 32, 'val': 12})
NYU40_SPEC = SegSpec(labels=(0, 1, 2, 4, 5, 7, 14), splits={'train': 40, 'test': 12})
NYU_DEPTH_SPLITS = {'train': 48, 'test': 12}


def _make_ade(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, 'ade', 'ADEChallengeData2016')
    for split, count in ADE_SPEC.splits.items():
        tag = 'train' if split == 'training' else 'val'
        for n in range(count):
            image, label = _draw_seg_scene(rng, ADE_SPEC.labels)
            name = f'ADE_{tag}_{n + 1:08d}'
            _write_rgb(osp.join(base, 'images', split, name + '.jpg'), image)
            _write_gray(osp.join(base, 'annotations', split, name + '.png'), label)


def _make_voc(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, 'VOCdevkit', 'VOC2012')
    palette = _voc_palette()
    ids: Dict[str, List[str]] = {}
    for split, count in VOC_SPEC.splits.items():
        ids[split] = []
        for n in range(count):
            image, label = _draw_seg_scene(rng, VOC_SPEC.labels)
            name = f'2012_{split}_{n:06d}'
            ids[split].append(name)
            _write_rgb(osp.join(base, 'JPEGImages', name + '.jpg'), image)
            # SBD-converted labels (SegmentationClassAug) have no boundary band.
            _write_gray(osp.join(base, 'SegmentationClassAug', name + '.png'), label)
            if split != 'aug':
                voc = label.copy()
                voc[_boundary(label)] = 255
                png = Image.fromarray(voc, mode='P')
                png.putpalette(palette)
                os.makedirs(osp.join(base, 'SegmentationClass'), exist_ok=True)
                png.save(osp.join(base, 'SegmentationClass', name + '.png'))
    sets = osp.join(base, 'ImageSets', 'Segmentation')
    os.makedirs(sets, exist_ok=True)
    for split, names in ids.items():
        with open(osp.join(sets, f'{split}.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')


def _make_context(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, 'VOCdevkit', 'VOC2010')
    sets = osp.join(base, 'ImageSets', 'SegmentationContext')
    os.makedirs(sets, exist_ok=True)
    for split, count in CONTEXT_SPEC.splits.items():
        names = []
        for n in range(count):
            image, label = _draw_seg_scene(rng, CONTEXT_SPEC.labels)
            name = f'2008_{split}_{n:06d}'
            names.append(name)
            _write_rgb(osp.join(base, 'JPEGImages', name + '.jpg'), image)
            _write_gray(osp.join(base, 'SegmentationClassContext', name + '.png'), label)
        with open(osp.join(sets, f'{split}.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')


def _make_nyu_depth(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, 'nyu')
    scenes = ('bedroom', 'kitchen', 'living_room', 'office')
    for split, count in NYU_DEPTH_SPLITS.items():
        for n in range(count):
            image, depth = _draw_depth_scene(rng)
            name = f'{scenes[n % len(scenes)]}_{n:04d}'
            _write_rgb(osp.join(base, 'images', split, name + '.jpg'), image)
            millimetres = np.round(depth * 1000.0).astype(np.uint16)
            _write_gray(osp.join(base, 'annotations', split, name + '.png'), millimetres)


def _make_nyu40(root: str, rng: np.random.Generator) -> None:
    base = osp.join(root, 'nyuv2_40')
    for split, count in NYU40_SPEC.splits.items():
        for n in range(count):
            image, label = _draw_seg_scene(rng, NYU40_SPEC.labels)
            name = f'{n + 1:06d}'
            _write_rgb(osp.join(base, 'images', split, name + '.png'), image)
            _write_gray(osp.join(base, 'annotations', split, name + '.png'), label)


DEMO_DATASETS = {
    'ade20k': _make_ade,
    'voc': _make_voc,
    'pascal-context-59': _make_context,
    'nyu-depth': _make_nyu_depth,
    'nyu40': _make_nyu40,
}

# The folder (relative to the demo root) that each demo dataset writes; its presence marks it done.
DEMO_ROOTS = {
    'ade20k': 'ade/ADEChallengeData2016',
    'voc': 'VOCdevkit/VOC2012',
    'pascal-context-59': 'VOCdevkit/VOC2010',
    'nyu-depth': 'nyu',
    'nyu40': 'nyuv2_40',
}


def make_probe_data(root: str = 'data/demo', datasets: Sequence[str] = tuple(DEMO_DATASETS),
                   seed: int = 0, overwrite: bool = False) -> Dict[str, str]:
    """Write the demo datasets under ``root``; return ``{name: data_root}``.

    A dataset whose folder already exists is kept unless ``overwrite``. Each dataset draws from its
    own generator seeded by ``seed`` and its position in :data:`DEMO_DATASETS`, so the output does
    not depend on which other datasets are written.
    """
    unknown = [name for name in datasets if name not in DEMO_DATASETS]
    if unknown:
        raise ValueError(f'unknown demo datasets {unknown}; expected names from {list(DEMO_DATASETS)}')
    written = {}
    for name in datasets:
        data_root = osp.join(root, DEMO_ROOTS[name])
        if overwrite or not osp.isdir(data_root):
            rng = np.random.default_rng([seed, list(DEMO_DATASETS).index(name)])
            DEMO_DATASETS[name](root, rng)
        written[name] = data_root
    return written
