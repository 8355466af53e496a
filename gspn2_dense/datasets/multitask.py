"""Multi-task dense-prediction datasets: NYUD-MT and PASCAL-MT (mmseg ``DATASETS``).

Both read the folder layouts of the multi-task codebases (Multi-Task-Learning-PyTorch, ATRC,
InvPT / TaskPrompter, MTMamba), so an existing download works unchanged; ``docs/multitask.md``
has the preparation steps. A data sample carries one image and, per task, the path of its label
(``None`` where the file is missing: that task is ignored on that sample, and the dataset logs how
many samples miss each task). :class:`~gspn2_dense.datasets.multitask_transforms.LoadMultiTaskAnnotations`
decodes the labels.

Task names (the ones the segmentor's heads and the metric use):

============  ================================================  ==============================
task          label                                             ignored pixels
============  ================================================  ==============================
semseg        class index map, (H, W) uint8                     255
depth         metres, (H, W) float32                            0
normals       unit vectors, (H, W, 3) float32, x right, y, z    all-zero vectors
edge          {0, 1}, (H, W) uint8                              255
human_parts   part index map, (H, W) uint8 (0 = background)     255
sal           {0, 1}, (H, W) uint8                              255
============  ================================================  ==============================
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from mmseg.registry import DATASETS

from .nyu40 import NYU40_CLASSES, _palette

IGNORE_INDEX = 255

PASCAL_MT_CLASSES = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor')
HUMAN_PART_CLASSES = ('background', 'head', 'torso', 'upper arm', 'lower arm', 'upper leg', 'lower leg')

NYUD_MT_LAYOUT = '''data/NYUD_MT/                            (data_root)
  images/<id>.png              RGB (or img_suffix)
  segmentation/<id>.png        uint8, 0 = unlabelled, 1..40 = NYU-40 classes   (semseg)
  depth/<id>.npy               float32 metres, 0 = invalid                      (depth)
  normals/<id>.png             RGB, normal = 2 * v / 255 - 1                    (normals)
  edge/<id>.png                uint8, > 127 = edge                             (edge)
  gt_sets/{train,val}.txt      one id per line (795 train / 654 val)'''

PASCAL_MT_LAYOUT = '''data/PASCALContext/                      (data_root)
  JPEGImages/<id>.jpg
  semseg/pascal-context/<id>.png     uint8, 0..20 (background + 20 VOC classes), 255 = ignore (semseg)
  human_parts/<id>.mat               PASCAL-Part 'anno' struct                         (human_parts)
  sal_distill/<id>.png               uint8 saliency, binarised at 0.5                  (sal)
  normals_distill/<id>.png           RGB, normal = 2 * v / 255 - 1                     (normals)
  pascal-context/trainval/<id>.mat   'LabelMap' of the 459 context classes; edges = its boundaries (edge)
  ImageSets/Context/{train,val}.txt  ids of the split (4998 train / 5105 val)
  ImageSets/Parts/{train,val}.txt    ids whose people have part annotations (others: human_parts ignored)'''


def layout_error(dataset: str, layout: str, what: str, path: str) -> FileNotFoundError:
    """The error for a missing folder or file, naming the expected layout."""
    return FileNotFoundError(f'{dataset}: {what} {path!r} does not exist. Expected layout:\n{layout}\n'
                             'See docs/multitask.md for the preparation steps '
                             '(gspn2_dense.demo.multitask_data.make_multitask_data writes small copies).')


def read_id_list(path: str) -> List[str]:
    """Ids of a split file (one per line, blank lines skipped)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class MultiTaskDataset(BaseDataset):
    """Base of the multi-task datasets: ids from a split file, one label file per task.

    Subclasses define ``TASKS`` (task -> (folder, suffix) relative to ``data_root``), ``LAYOUT``,
    ``IMG_DIR`` and :meth:`split_file`.

    Args:
        data_root: the dataset folder.
        split: ``'train'`` or ``'val'``.
        tasks: which tasks to load, a subset of ``TASKS`` (default: all).
        img_suffix: suffix of the image files.
        **kwargs: the remaining arguments of mmengine's ``BaseDataset`` (``pipeline``,
            ``test_mode``, ``indices``, ``metainfo``...).
    """

    TASKS: Dict[str, tuple] = {}
    LAYOUT = ''
    IMG_DIR = ''
    SPLITS = ('train', 'val')

    def __init__(self, data_root: str, split: str = 'train', tasks: Optional[Sequence[str]] = None,
                 img_suffix: str = '.png', **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f'{type(self).__name__}: split must be one of {self.SPLITS}, got {split!r}')
        tasks = tuple(self.TASKS) if tasks is None else tuple(tasks)
        unknown = [t for t in tasks if t not in self.TASKS]
        if not tasks or unknown:
            raise ValueError(f'{type(self).__name__}: tasks must be a non-empty subset of '
                             f'{tuple(self.TASKS)}, got {tasks}')
        self.split = split
        self.tasks = tasks
        self.img_suffix = img_suffix
        self.missing_labels: Dict[str, int] = {}
        super().__init__(data_root=data_root, **kwargs)
        self._metainfo['tasks'] = tasks

    def split_file(self) -> str:
        raise NotImplementedError

    def _check(self, what: str, path: str) -> None:
        if not osp.exists(path):
            raise layout_error(type(self).__name__, self.LAYOUT, what, path)

    def task_path(self, task: str, sample_id: str) -> Optional[str]:
        """The label file of ``task`` for ``sample_id``, or ``None`` where none is expected."""
        folder, suffix = self.TASKS[task]
        return osp.join(self.data_root, folder, sample_id + suffix)

    def extra_info(self, sample_id: str) -> dict:
        """Further per-sample fields (e.g. whether an image has human-part annotations)."""
        return {}

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        self._check('data root', self.data_root)
        self._check('image folder', osp.join(self.data_root, self.IMG_DIR))
        for task in self.tasks:
            self._check(f'label folder of task {task!r}', osp.join(self.data_root, self.TASKS[task][0]))
        split_file = self.split_file()
        self._check(f'split file of {self.split!r}', split_file)
        ids = read_id_list(split_file)
        if not ids:
            raise ValueError(f'{name}: split file {split_file!r} lists no image id')
        missing = {task: 0 for task in self.tasks}
        data_list = []
        for sample_id in ids:
            img_path = osp.join(self.data_root, self.IMG_DIR, sample_id + self.img_suffix)
            if not osp.isfile(img_path):
                raise layout_error(name, self.LAYOUT, f'image of id {sample_id!r} listed in {split_file}',
                                   img_path)
            label_paths = {}
            for task in self.tasks:
                path = self.task_path(task, sample_id)
                if path is not None and osp.isfile(path):
                    label_paths[task] = path
                else:
                    label_paths[task] = None
                    missing[task] += 1
            data_list.append(dict(img_path=img_path, sample_id=sample_id, label_paths=label_paths,
                                  label_format=self.label_format(), **self.extra_info(sample_id)))
        self.missing_labels = missing
        summary = ', '.join(f'{t}: {n}' for t, n in missing.items())
        print_log(f'{name} {self.split}: {len(data_list)} images from {self.data_root}; samples '
                  f'without a label file (ignored for that task): {summary}', logger='current')
        return data_list

    def label_format(self) -> str:
        """How :class:`LoadMultiTaskAnnotations` decodes this dataset's labels."""
        raise NotImplementedError


@DATASETS.register_module()
class NYUDMultiTaskDataset(MultiTaskDataset):
    """NYUD-v2 multi-task (795 train / 654 val): semseg (40 classes), depth, normals, edges.

    Layout (``data_root``, default ``data/NYUD_MT``)::

        images/<id>.png, segmentation/<id>.png, depth/<id>.npy, normals/<id>.png, edge/<id>.png,
        gt_sets/{train,val}.txt

    Segmentation labels 1..40 become classes 0..39 and 0 becomes the ignore index 255.
    """

    METAINFO = dict(classes=NYU40_CLASSES, palette=_palette(len(NYU40_CLASSES)))
    TASKS = {'semseg': ('segmentation', '.png'), 'depth': ('depth', '.npy'),
             'normals': ('normals', '.png'), 'edge': ('edge', '.png')}
    LAYOUT = NYUD_MT_LAYOUT
    IMG_DIR = 'images'

    def split_file(self) -> str:
        return osp.join(self.data_root, 'gt_sets', f'{self.split}.txt')

    def label_format(self) -> str:
        return 'nyud'


@DATASETS.register_module()
class PascalMultiTaskDataset(MultiTaskDataset):
    """PASCAL-Context multi-task (4998 train / 5105 val): semseg (21), human parts (6 + background),
    saliency, normals, edges.

    Layout (``data_root``, default ``data/PASCALContext``): see :data:`PASCAL_MT_LAYOUT`. Images
    not listed in ``ImageSets/Parts/<split>.txt`` have no human-part annotation: their
    ``human_parts`` label is all ignore (as in the multi-task codebases) and they are counted in
    the log line as missing that task.
    """

    METAINFO = dict(classes=PASCAL_MT_CLASSES, palette=_palette(len(PASCAL_MT_CLASSES)),
                    part_classes=HUMAN_PART_CLASSES)
    TASKS = {'semseg': ('semseg/pascal-context', '.png'), 'human_parts': ('human_parts', '.mat'),
             'sal': ('sal_distill', '.png'), 'normals': ('normals_distill', '.png'),
             'edge': ('pascal-context/trainval', '.mat')}
    LAYOUT = PASCAL_MT_LAYOUT
    IMG_DIR = 'JPEGImages'

    def __init__(self, data_root: str, split: str = 'train', tasks: Optional[Sequence[str]] = None,
                 img_suffix: str = '.jpg', **kwargs) -> None:
        self._with_parts: Optional[set] = None
        super().__init__(data_root=data_root, split=split, tasks=tasks, img_suffix=img_suffix, **kwargs)

    def split_file(self) -> str:
        return osp.join(self.data_root, 'ImageSets', 'Context', f'{self.split}.txt')

    def label_format(self) -> str:
        return 'pascal'

    def load_data_list(self) -> List[dict]:
        if 'human_parts' in self.tasks:
            parts_file = osp.join(self.data_root, 'ImageSets', 'Parts', f'{self.split}.txt')
            self._check(f'human-parts split file of {self.split!r}', parts_file)
            self._with_parts = set(read_id_list(parts_file))
        return super().load_data_list()

    def task_path(self, task: str, sample_id: str) -> Optional[str]:
        if task == 'human_parts' and sample_id not in self._with_parts:
            return None  # no annotated person: ignored for this task
        return super().task_path(task, sample_id)

# Data-sample field of each task: ``gt_<field>`` holds the label, ``pred_<field>`` the prediction.
# semseg and depth use mmseg's own names, so mmseg's visualiser draws them.
TASK_FIELDS = {'semseg': 'sem_seg', 'depth': 'depth_map', 'normals': 'normals', 'edge': 'edge_map',
               'human_parts': 'human_parts', 'sal': 'saliency'}
# Value of an ignored (padded or unlabelled) pixel of each task's label.
IGNORE_VALUES = {'semseg': IGNORE_INDEX, 'depth': 0.0, 'normals': 0.0, 'edge': IGNORE_INDEX,
                 'human_parts': IGNORE_INDEX, 'sal': IGNORE_INDEX}
