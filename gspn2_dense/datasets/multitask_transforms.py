"""Multi-task data pipeline: label loading, consistent geometric augmentation, packing (mmseg ``TRANSFORMS``).

Every geometric transform is applied to the image and to every task's label in
``results['gt_maps']`` with the same parameters:

* resizing uses bilinear interpolation for the image and nearest neighbour for every label, so
  class maps keep valid indices, unit normals stay unit vectors and depth is never interpolated
  across invalid (zero) pixels;
* a horizontal flip also negates the x component of the normals;
* padding (crops larger than the image) fills each label with its ignore value
  (:data:`~gspn2_dense.datasets.multitask.IGNORE_VALUES`).

Photometric transforms that touch only ``results['img']`` (mmseg's ``PhotoMetricDistortion``)
can be used as they are.
"""
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import scipy.io
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.registry import TRANSFORMS
from mmseg.structures import SegDataSample

from .multitask import IGNORE_INDEX, IGNORE_VALUES, TASK_FIELDS

# PASCAL-Part person parts grouped into the six human-part classes of the multi-task benchmark
# (1 head, 2 torso, 3 upper arm, 4 lower arm, 5 upper leg, 6 lower leg).
PERSON_PART_GROUPS = {
    **{name: 1 for name in ('head', 'hair', 'leye', 'reye', 'lear', 'rear', 'lebrow', 'rebrow',
                            'nose', 'mouth')},
    'torso': 2, 'neck': 2,
    'luarm': 3, 'ruarm': 3,
    'llarm': 4, 'rlarm': 4, 'lhand': 4, 'rhand': 4,
    'luleg': 5, 'ruleg': 5,
    'llleg': 6, 'rlleg': 6, 'lfoot': 6, 'rfoot': 6,
}
PERSON_CLASS_INDEX = 15  # 'person' in PASCAL-Part's class_ind


def label_boundaries(label_map: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a label map: pixels whose right or lower neighbour has another label."""
    edges = np.zeros(label_map.shape, dtype=np.uint8)
    edges[:, :-1] |= label_map[:, :-1] != label_map[:, 1:]
    edges[:-1, :] |= label_map[:-1, :] != label_map[1:, :]
    return edges


def _mat_field(record, name: str):
    if name not in (record.dtype.names or ()):
        raise KeyError(f'expected field {name!r} in the PASCAL-Part struct, found {record.dtype.names}')
    return record[name]


def load_human_parts(path: str, shape: Tuple[int, int]) -> np.ndarray:
    """Human-part index map (0 background, 1..6 parts) of a PASCAL-Part ``anno`` .mat file.

    Parts of every object with ``class_ind == 15`` (person) are painted with their group of
    :data:`PERSON_PART_GROUPS`; a part name outside it raises ``KeyError``.
    """
    anno = scipy.io.loadmat(path)
    if 'anno' not in anno:
        raise KeyError(f"{path}: expected a PASCAL-Part file with an 'anno' struct, found keys "
                       f"{sorted(k for k in anno if not k.startswith('__'))}")
    objects = _mat_field(anno['anno'][0, 0], 'objects').ravel()
    target = np.zeros(shape, dtype=np.uint8)
    for obj in objects:
        if int(np.asarray(_mat_field(obj, 'class_ind')).ravel()[0]) != PERSON_CLASS_INDEX:
            continue
        parts = np.asarray(_mat_field(obj, 'parts')).ravel()
        for part in parts:
            name = str(np.asarray(_mat_field(part, 'part_name')).ravel()[0])
            if name not in PERSON_PART_GROUPS:
                raise KeyError(f'{path}: unknown person part {name!r}; expected one of '
                               f'{sorted(PERSON_PART_GROUPS)}')
            mask = np.asarray(_mat_field(part, 'mask')).astype(bool)
            if mask.shape != shape:
                raise ValueError(f'{path}: part mask {name!r} is {mask.shape}, the image is {shape}')
            target[mask] = PERSON_PART_GROUPS[name]
    return target


def _read(path: str, flag: int) -> np.ndarray:
    array = cv2.imread(path, flag)
    if array is None:
        raise OSError(f'could not read {path!r}')
    return array


def decode_label(task: str, path: str, label_format: str, shape: Tuple[int, int]) -> np.ndarray:
    """Decode one task's label file into the arrays described in :mod:`.multitask`."""
    if task == 'semseg':
        label = _read(path, cv2.IMREAD_UNCHANGED)
        if label.ndim != 2:
            raise ValueError(f'{path}: semseg labels must be single-channel, got shape {label.shape}')
        if label_format == 'nyud':  # 1..40 -> 0..39, 0 (unlabelled) -> ignore
            label = label.astype(np.int32) - 1
            label[label < 0] = IGNORE_INDEX
        return label.astype(np.uint8)
    if task == 'depth':
        depth = np.squeeze(np.load(path)).astype(np.float32)  # (H, W), (1, H, W) or (H, W, 1)
        if depth.ndim != 2:
            raise ValueError(f'{path}: depth must be an (H, W) array of metres, got shape {depth.shape}')
        return depth
    if task == 'normals':
        rgb = _read(path, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
        return 2.0 * rgb / 255.0 - 1.0
    if task == 'edge':
        if path.endswith('.mat'):
            mat = scipy.io.loadmat(path)
            if 'LabelMap' not in mat:
                raise KeyError(f"{path}: expected a PASCAL-Context file with 'LabelMap'")
            return label_boundaries(mat['LabelMap'])
        return (_read(path, cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    if task == 'sal':
        return (_read(path, cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    if task == 'human_parts':
        return load_human_parts(path, shape)
    raise KeyError(f'unknown task {task!r}; expected one of {tuple(TASK_FIELDS)}')


def ignore_label(task: str, shape: Tuple[int, int]) -> np.ndarray:
    """A label of ``shape`` where every pixel is ignored."""
    if task == 'normals':
        return np.zeros(shape + (3, ), dtype=np.float32)
    if task == 'depth':
        return np.zeros(shape, dtype=np.float32)
    return np.full(shape, IGNORE_INDEX, dtype=np.uint8)


@TRANSFORMS.register_module()
class LoadMultiTaskAnnotations(BaseTransform):
    """Load every task's label of a multi-task sample into ``results['gt_maps'][task]``.

    Needs ``results['img']`` (run ``LoadImageFromFile`` first) and the dataset's ``label_paths``;
    a task whose path is ``None`` gets a label that is ignored everywhere.
    """

    def transform(self, results: dict) -> dict:
        shape = results['img'].shape[:2]
        gt_maps = {}
        for task, path in results['label_paths'].items():
            label = ignore_label(task, shape) if path is None else \
                decode_label(task, path, results['label_format'], shape)
            if label.shape[:2] != shape:
                raise ValueError(f'{path}: {task} label is {label.shape[:2]} (H, W) but its image '
                                 f'{results["img_path"]} is {shape}')
            gt_maps[task] = label
        results['gt_maps'] = gt_maps
        return results


def _resize_label(label: np.ndarray, size_wh: Tuple[int, int]) -> np.ndarray:
    out = cv2.resize(label, size_wh, interpolation=cv2.INTER_NEAREST)
    return out.reshape(size_wh[::-1] + label.shape[2:])


@TRANSFORMS.register_module()
class MultiTaskRandomResize(BaseTransform):
    """Rescale the image and every label by a factor drawn uniformly from ``ratio_range``.

    Args:
        ratio_range: (low, high) factor relative to the current size (the multi-task codebases'
            random scaling, 0.5-2.0 for NYUD-MT and PASCAL-MT).
    """

    def __init__(self, ratio_range: Tuple[float, float] = (0.5, 2.0)) -> None:
        low, high = ratio_range
        if not 0 < low <= high:
            raise ValueError(f'ratio_range must be (low, high) with 0 < low <= high, got {ratio_range}')
        self.ratio_range = (float(low), float(high))

    def transform(self, results: dict) -> dict:
        ratio = float(np.random.uniform(*self.ratio_range))
        h, w = results['img'].shape[:2]
        size_wh = (max(int(round(w * ratio)), 1), max(int(round(h * ratio)), 1))
        results['img'] = cv2.resize(results['img'], size_wh, interpolation=cv2.INTER_LINEAR)
        results['gt_maps'] = {t: _resize_label(m, size_wh) for t, m in results['gt_maps'].items()}
        results['img_shape'] = results['img'].shape[:2]
        results['scale_factor'] = (size_wh[0] / w, size_wh[1] / h)
        return results


@TRANSFORMS.register_module()
class MultiTaskRandomCrop(BaseTransform):
    """Crop a random ``crop_size`` (h, w) window; smaller images are padded first (bottom, right).

    The image is padded with 0 and every label with its ignore value.
    """

    def __init__(self, crop_size: Tuple[int, int]) -> None:
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f'crop_size must be (h, w) with positive entries, got {crop_size}')
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))

    @staticmethod
    def _pad(array: np.ndarray, pad_h: int, pad_w: int, value: float) -> np.ndarray:
        widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, widths, mode='constant', constant_values=value)

    def transform(self, results: dict) -> dict:
        crop_h, crop_w = self.crop_size
        h, w = results['img'].shape[:2]
        pad_h, pad_w = max(crop_h - h, 0), max(crop_w - w, 0)
        img, gt_maps = results['img'], results['gt_maps']
        if pad_h or pad_w:
            img = self._pad(img, pad_h, pad_w, 0)
            gt_maps = {t: self._pad(m, pad_h, pad_w, IGNORE_VALUES[t]) for t, m in gt_maps.items()}
            h, w = img.shape[:2]
        y0 = int(np.random.randint(0, h - crop_h + 1))
        x0 = int(np.random.randint(0, w - crop_w + 1))
        window = (slice(y0, y0 + crop_h), slice(x0, x0 + crop_w))
        results['img'] = np.ascontiguousarray(img[window])
        results['gt_maps'] = {t: np.ascontiguousarray(m[window]) for t, m in gt_maps.items()}
        results['img_shape'] = results['img'].shape[:2]
        return results


@TRANSFORMS.register_module()
class MultiTaskRandomFlip(BaseTransform):
    """Flip the image and every label horizontally with probability ``prob``.

    The normals' x component (pointing right) changes sign; every other label is mirrored only.
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        flip = bool(np.random.rand() < self.prob)
        if flip:
            results['img'] = np.ascontiguousarray(results['img'][:, ::-1])
            gt_maps = {}
            for task, label in results['gt_maps'].items():
                label = np.ascontiguousarray(label[:, ::-1])
                if task == 'normals':
                    label[..., 0] *= -1.0
                gt_maps[task] = label
            results['gt_maps'] = gt_maps
        results['flip'] = flip
        results['flip_direction'] = 'horizontal' if flip else None
        return results


def _label_tensor(task: str, label: np.ndarray) -> torch.Tensor:
    if task == 'normals':
        return torch.from_numpy(np.ascontiguousarray(label.transpose(2, 0, 1))).float()
    if task == 'depth':
        return torch.from_numpy(label[None].copy()).float()
    return torch.from_numpy(label[None].astype(np.int64))


@TRANSFORMS.register_module()
class PackMultiTaskInputs(BaseTransform):
    """Pack the image as a (3, H, W) tensor and the labels into one ``SegDataSample``.

    Each task's label becomes ``gt_<field>`` (:data:`~gspn2_dense.datasets.multitask.TASK_FIELDS`):
    class maps (1, H, W) int64, depth (1, H, W) float32 metres, normals (3, H, W) float32.
    """

    META_KEYS = ('img_path', 'sample_id', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor',
                 'flip', 'flip_direction')

    def __init__(self, meta_keys: Optional[Sequence[str]] = None) -> None:
        self.meta_keys = tuple(meta_keys) if meta_keys is not None else self.META_KEYS

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = SegDataSample()
        gt_maps: Dict[str, np.ndarray] = results.get('gt_maps', {})
        for task, label in gt_maps.items():
            setattr(sample, 'gt_' + TASK_FIELDS[task], PixelData(data=_label_tensor(task, label)))
        meta = {key: results[key] for key in self.meta_keys if key in results}
        meta.setdefault('img_shape', img.shape[:2])
        meta.setdefault('pad_shape', img.shape[:2])
        meta['tasks'] = tuple(gt_maps)
        sample.set_metainfo(meta)
        return dict(inputs=inputs, data_samples=sample)
