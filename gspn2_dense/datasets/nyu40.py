"""NYUv2 40-class semantic segmentation (Gupta et al., CVPR 2013 mapping of the 894 raw labels)."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .layouts import LAYOUTS, check_data_layout

NYU40_CLASSES = (
    'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window', 'bookshelf',
    'picture', 'counter', 'blinds', 'desk', 'shelves', 'curtain', 'dresser', 'pillow', 'mirror',
    'floor mat', 'clothes', 'ceiling', 'books', 'refrigerator', 'television', 'paper', 'towel',
    'shower curtain', 'box', 'whiteboard', 'person', 'night stand', 'toilet', 'sink', 'lamp',
    'bathtub', 'bag', 'otherstructure', 'otherfurniture', 'otherprop')


def _palette(num: int):
    """A fixed, well-spread colour per class (for visualisation only)."""
    return [[(37 * i) % 256, (97 * i + 61) % 256, (173 * i + 127) % 256] for i in range(num)]


@DATASETS.register_module()
class NYUv2Seg40Dataset(BaseSegDataset):
    """NYUv2 semantic segmentation with the 40-class mapping: 795 train / 654 test images.

    Layout (``data_root``, default ``data/nyuv2_40``)::

        images/{train,test}/<id>.png          RGB, 640x480
        annotations/{train,test}/<id>.png     uint8: 0 = unlabelled, 1..40 = the NYU-40 classes

    Label 0 becomes the ignore index (255) and classes 1..40 become 0..39
    (``reduce_zero_label=True``), so ``num_classes=40``.
    """

    METAINFO = dict(classes=NYU40_CLASSES, palette=_palette(len(NYU40_CLASSES)))

    def __init__(self, img_suffix: str = '.png', seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = True, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

    def load_data_list(self):
        check_data_layout(type(self).__name__, self.data_root,
                          [self.data_prefix.get('img_path'), self.data_prefix.get('seg_map_path')])
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(
                f"{type(self).__name__} found no '*{self.img_suffix}' image in "
                f"{self.data_prefix.get('img_path')}; expected layout:\n{LAYOUTS[type(self).__name__]}")
        return data_list
