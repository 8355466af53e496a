"""Expected folder layouts of the probe datasets, and checks that run before anything is built.

mmseg's datasets fail on a missing folder with a bare ``AssertionError`` or an empty dataset;
:func:`check_config` turns that into an error that names the expected layout, and checks that the
decode head's ``num_classes`` matches the dataset. ``docs/datasets.md`` holds the same layouts
with the preparation steps.
"""
import os.path as osp
from typing import Iterable, Optional

from mmengine.config import Config, ConfigDict
from mmseg.registry import DATASETS

LAYOUTS = {
    'ADE20KDataset': '''data/ade/ADEChallengeData2016/            (data_root)
  images/{training,validation}/ADE_*.jpg
  annotations/{training,validation}/ADE_*.png   uint8, 0 = other, 1..150 = classes''',
    'PascalVOCDataset': '''data/VOCdevkit/VOC2012/                  (data_root)
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png      palette PNG, 0..20, 255 = boundary
  SegmentationClassAug/<id>.png   SBD labels converted to uint8 PNG (tools/dataset_converters/voc_aug.py)
  ImageSets/Segmentation/{train,val,aug}.txt   ids; aug.txt = SBD train+val minus VOC val''',
    'PascalContextDataset59': '''data/VOCdevkit/VOC2010/                  (data_root)
  JPEGImages/<id>.jpg
  SegmentationClassContext/<id>.png   uint8, 0 = background, 1..59 = classes
  ImageSets/SegmentationContext/{train,val}.txt''',
    'NYUDataset': '''data/nyu/                                (data_root)
  images/{train,test}/<scene>_<n>.jpg         RGB, 640x480
  annotations/{train,test}/<scene>_<n>.png    uint16 depth in millimetres, 0 = invalid''',
    'NYUv2Seg40Dataset': '''data/nyuv2_40/                           (data_root)
  images/{train,test}/<id>.png                RGB, 640x480 (795 train / 654 test)
  annotations/{train,test}/<id>.png           uint8, 0 = unlabelled, 1..40 = NYU-40 classes''',
}

_WRAPPERS = {'ConcatDataset': 'datasets', 'RepeatDataset': 'dataset', 'ClassBalancedDataset': 'dataset'}


def _layout_error(dataset_type: str, what: str, path: str) -> FileNotFoundError:
    layout = LAYOUTS.get(dataset_type, '(see the dataset class docstring)')
    return FileNotFoundError(f'{dataset_type}: {what} {path!r} does not exist. Expected layout:\n'
                             f'{layout}\nSee docs/datasets.md for the preparation steps '
                             f'(tools/make_demo_data.py writes small demo copies).')


def check_data_layout(dataset_type: str, data_root: Optional[str], paths: Iterable[Optional[str]]) -> None:
    """Raise ``FileNotFoundError`` naming the expected layout if ``data_root`` or a path is missing.

    ``paths`` are absolute or relative to ``data_root``; ``None`` and ``''`` are skipped.
    """
    if data_root and not osp.isdir(data_root):
        raise _layout_error(dataset_type, 'data root', data_root)
    for path in paths:
        if not path:
            continue
        full = path if osp.isabs(path) or not data_root else osp.join(data_root, path)
        if not osp.exists(full):
            raise _layout_error(dataset_type, 'path', full)


def check_dataset_config(dataset_cfg: dict) -> None:
    """Check the folders named by a dataset config (wrappers such as ``ConcatDataset`` included)."""
    dataset_type = dataset_cfg.get('type')
    if dataset_type in _WRAPPERS:
        inner = dataset_cfg[_WRAPPERS[dataset_type]]
        for cfg in inner if isinstance(inner, (list, tuple)) else [inner]:
            check_dataset_config(cfg)
        return
    prefix = dataset_cfg.get('data_prefix') or {}
    check_data_layout(str(dataset_type), dataset_cfg.get('data_root'),
                      [*prefix.values(), dataset_cfg.get('ann_file')])


def dataset_num_classes(dataset_cfg: dict) -> int:
    """Number of classes a dataset config yields (``metainfo.classes`` overrides the class's)."""
    dataset_type = dataset_cfg.get('type')
    if dataset_type in _WRAPPERS:
        inner = dataset_cfg[_WRAPPERS[dataset_type]]
        return dataset_num_classes(inner[0] if isinstance(inner, (list, tuple)) else inner)
    metainfo = dataset_cfg.get('metainfo') or {}
    if 'classes' in metainfo:
        return len(metainfo['classes'])
    cls = DATASETS.get(dataset_type)
    if cls is None:
        raise KeyError(f'dataset type {dataset_type!r} is not registered in mmseg DATASETS; '
                       "add custom_imports=dict(imports=['gspn2_dense'])")
    return len(cls.METAINFO['classes'])


def check_num_classes(cfg: Config) -> None:
    """``model.decode_head.num_classes`` must equal the train dataset's number of classes.

    Depth heads (no ``num_classes`` in the config) are skipped.
    """
    head = cfg.model.get('decode_head') or {}
    num_classes = head.get('num_classes')
    if num_classes is None or 'train_dataloader' not in cfg or cfg.train_dataloader is None:
        return
    expected = dataset_num_classes(cfg.train_dataloader.dataset)
    if num_classes != expected:
        raise ValueError(f'model.decode_head.num_classes is {num_classes} but the training dataset '
                         f'({cfg.train_dataloader.dataset.get("type")}) has {expected} classes; '
                         f'set model.decode_head.num_classes={expected}')


def check_config(cfg: Config) -> None:
    """Run every check on a full mmseg config before a runner is built."""
    check_num_classes(cfg)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if isinstance(loader, (dict, ConfigDict)) and loader.get('dataset'):
            check_dataset_config(loader['dataset'])
