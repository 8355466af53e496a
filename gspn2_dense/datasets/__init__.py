"""Dataset classes that mmseg lacks, and data-layout checks (mmseg ``DATASETS``)."""
from .layouts import LAYOUTS, check_config, check_data_layout, check_dataset_config, check_num_classes
from .nyu40 import NYU40_CLASSES, NYUv2Seg40Dataset

__all__ = ['LAYOUTS', 'NYU40_CLASSES', 'NYUv2Seg40Dataset', 'check_config', 'check_data_layout',
           'check_dataset_config', 'check_num_classes']
from .multitask import NYUDMultiTaskDataset, PascalMultiTaskDataset  # noqa: E402
from . import multitask_transforms  # noqa: E402,F401  (registers the multi-task transforms)

__all__ += ['NYUDMultiTaskDataset', 'PascalMultiTaskDataset']
