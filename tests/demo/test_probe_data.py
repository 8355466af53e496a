"""Each probe dataset class loads the synthetic demo data with correctly shaped, scaled targets."""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

import gspn2_dense  # noqa: F401  (registers NYUv2Seg40Dataset)
from gspn2_dense.datasets import check_config, check_dataset_config
from gspn2_dense.demo import make_probe_data
from gspn2_dense.demo.probe_data import ADE_SPEC, CONTEXT_SPEC, NYU40_SPEC, SIZE, VOC_SPEC

init_default_scope('mmseg')
SEG_TEST = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
REDUCED_TEST = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
                dict(type='PackSegInputs')]


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    return make_probe_data(str(tmp_path_factory.mktemp('demo')), seed=0)


def check_seg_sample(sample, allowed):
    assert tuple(sample['inputs'].shape) == (3, ) + SIZE
    gt = sample['data_samples'].gt_sem_seg.data
    assert tuple(gt.shape) == (1, ) + SIZE
    values = set(np.unique(gt.numpy()).tolist())
    assert values <= set(allowed) | {255}, values
    assert len(values - {255}) >= 2  # background and at least one shape


def test_ade20k(roots):
    ds = DATASETS.build(dict(type='ADE20KDataset', data_root=roots['ade20k'], pipeline=REDUCED_TEST,
                             data_prefix=dict(img_path='images/validation',
                                              seg_map_path='annotations/validation')))
    assert len(ds) == ADE_SPEC.splits['validation']
    # reduce_zero_label: ADE label k is class k - 1.
    check_seg_sample(ds[0], [v - 1 for v in ADE_SPEC.labels])


def test_voc_aug_concat(roots):
    common = dict(type='PascalVOCDataset', data_root=roots['voc'], pipeline=SEG_TEST)
    ds = DATASETS.build(dict(type='ConcatDataset', datasets=[
        dict(common, data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
             ann_file='ImageSets/Segmentation/train.txt'),
        dict(common, data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
             ann_file='ImageSets/Segmentation/aug.txt')]))
    assert len(ds) == VOC_SPEC.splits['train'] + VOC_SPEC.splits['aug']
    check_seg_sample(ds[0], VOC_SPEC.labels)  # palette PNG with 255 boundaries
    check_seg_sample(ds[len(ds) - 1], VOC_SPEC.labels)  # SBD-converted PNG
    assert 255 in ds[0]['data_samples'].gt_sem_seg.data


def test_pascal_context_59(roots):
    ds = DATASETS.build(dict(
        type='PascalContextDataset59', data_root=roots['pascal-context-59'], pipeline=REDUCED_TEST,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt'))
    assert len(ds) == CONTEXT_SPEC.splits['val']
    check_seg_sample(ds[0], [v - 1 for v in CONTEXT_SPEC.labels if v])


def test_nyu40(roots):
    ds = DATASETS.build(dict(type='NYUv2Seg40Dataset', data_root=roots['nyu40'], pipeline=REDUCED_TEST,
                             data_prefix=dict(img_path='images/train', seg_map_path='annotations/train')))
    assert len(ds) == NYU40_SPEC.splits['train']
    assert len(ds.metainfo['classes']) == 40 and ds.metainfo['classes'][0] == 'wall'
    check_seg_sample(ds[0], [v - 1 for v in NYU40_SPEC.labels if v])


def test_nyu_depth_in_metres(roots):
    import cv2
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
                dict(type='PackSegInputs')]
    ds = DATASETS.build(dict(type='NYUDataset', data_root=roots['nyu-depth'], pipeline=pipeline,
                             data_prefix=dict(img_path='images/test', depth_map_path='annotations/test')))
    assert len(ds) == 12
    sample = ds[0]
    depth = sample['data_samples'].gt_depth_map.data
    assert tuple(depth.shape) == (1, ) + SIZE
    raw = cv2.imread(ds.get_data_info(0)['depth_map_path'], cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.max() > 1000  # millimetres on disk
    np.testing.assert_allclose(depth[0].numpy(), raw / 1000.0, rtol=1e-6)
    valid = depth[depth > 0]
    assert 0.3 < valid.min() and valid.max() <= 10.0
    assert (depth == 0).any()  # invalid pixels exist and are 0


def test_demo_data_is_deterministic(tmp_path):
    a = make_probe_data(str(tmp_path / 'a'), datasets=['nyu40'], seed=3)['nyu40']
    b = make_probe_data(str(tmp_path / 'b'), datasets=['nyu40'], seed=3)['nyu40']
    name = osp.join('annotations', 'test', '000001.png')
    assert open(osp.join(a, name), 'rb').read() == open(osp.join(b, name), 'rb').read()
    with pytest.raises(ValueError, match=r"unknown demo datasets \['kitti'\]"):
        make_probe_data(str(tmp_path), datasets=['kitti'])


def test_missing_data_root_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)NYUv2Seg40Dataset: data root .*nope.* does not "
                                                r"exist.*annotations/\{train,test\}/<id>.png"):
        DATASETS.build(dict(type='NYUv2Seg40Dataset', data_root=str(tmp_path / 'nope'),
                            data_prefix=dict(img_path='images/train', seg_map_path='annotations/train')))
    with pytest.raises(FileNotFoundError, match=r"(?s)PascalVOCDataset: path .*aug.txt' does not exist.*"
                                                r"SegmentationClassAug/<id>.png"):
        (tmp_path / 'VOC2012').mkdir()
        check_dataset_config(dict(type='ConcatDataset', datasets=[dict(
            type='PascalVOCDataset', data_root=str(tmp_path / 'VOC2012'),
            ann_file='ImageSets/Segmentation/aug.txt', data_prefix=dict())]))


def test_unreadable_image_names_the_file(roots, tmp_path):
    bad = tmp_path / 'images' / 'test'
    bad.mkdir(parents=True)
    (bad / '000001.png').write_bytes(b'not an image')
    ann = tmp_path / 'annotations' / 'test'
    ann.mkdir(parents=True)
    ds = DATASETS.build(dict(type='NYUv2Seg40Dataset', data_root=str(tmp_path), pipeline=REDUCED_TEST,
                             data_prefix=dict(img_path='images/test', seg_map_path='annotations/test')))
    with pytest.raises(Exception, match=r'failed to load image: .*images/test/000001.png'):
        ds[0]


def test_num_classes_mismatch_is_an_error_before_training(roots):
    cfg = Config(dict(
        model=dict(decode_head=dict(type='LinearSegHead', num_classes=21)),
        train_dataloader=dict(dataset=dict(
            type='ADE20KDataset', data_root=roots['ade20k'],
            data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))))
    with pytest.raises(ValueError, match=r'num_classes is 21 but the training dataset \(ADE20KDataset\) '
                                         r'has 150 classes'):
        check_config(cfg)
    cfg.model.decode_head.num_classes = 150
    check_config(cfg)
