"""NYUD-MT / PASCAL-MT loaders on generated data, label decoding, augmentation consistency, bad layouts."""
import os
import shutil

import cv2
import numpy as np
import pytest
from mmseg.registry import DATASETS, TRANSFORMS

import gspn2_dense  # noqa: F401
from gspn2_dense.datasets.multitask_transforms import label_boundaries, load_human_parts
from gspn2_dense.demo.multitask_data import make_multitask_data, write_pascal_part_mat

SIZE = (24, 32)
LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadMultiTaskAnnotations')]


@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('mt'))
    return make_multitask_data(root, splits={'train': 8, 'val': 4}, size=SIZE)


def _copy(roots, name, tmp_path):
    dst = str(tmp_path / name)
    shutil.copytree(roots[name], dst)
    return dst


def _build(type_, root, split='train', pipeline=LOAD, **kwargs):
    return DATASETS.build(dict(type=type_, data_root=root, split=split, pipeline=pipeline,
                               serialize_data=False, **kwargs))


def test_nyud_loader(roots):
    ds = _build('NYUDMultiTaskDataset', roots['nyud-mt'])
    assert len(ds) == 8 and len(_build('NYUDMultiTaskDataset', roots['nyud-mt'], 'val')) == 4
    assert ds.metainfo['tasks'] == ('semseg', 'depth', 'normals', 'edge')
    assert len(ds.metainfo['classes']) == 40
    sample = ds[0]
    maps = sample['gt_maps']
    assert maps['semseg'].shape == SIZE and maps['depth'].dtype == np.float32
    assert maps['normals'].shape == SIZE + (3, )
    # Labels 1..40 become 0..39 and 0 (unlabelled) becomes 255.
    raw = cv2.imread(ds.get_data_info(0)['label_paths']['semseg'], cv2.IMREAD_UNCHANGED)
    assert (raw == 0).any()
    np.testing.assert_array_equal(maps['semseg'], np.where(raw == 0, 255, raw.astype(np.int64) - 1))
    # Normals: 2 v / 255 - 1 of the RGB png, unit length up to quantisation.
    norms = np.linalg.norm(maps['normals'], axis=-1)
    assert np.allclose(norms, 1.0, atol=0.02)
    assert set(np.unique(maps['edge'])) <= {0, 1} and maps['edge'].any()
    np.testing.assert_array_equal(maps['depth'], np.load(ds.get_data_info(0)['label_paths']['depth']))


def test_pascal_loader_and_missing_people(roots):
    ds = _build('PascalMultiTaskDataset', roots['pascal-mt'])
    assert ds.metainfo['tasks'] == ('semseg', 'human_parts', 'sal', 'normals', 'edge')
    with_parts = set(open(os.path.join(roots['pascal-mt'], 'ImageSets', 'Parts', 'train.txt')).read().split())
    assert 0 < len(with_parts) < len(ds)
    assert ds.missing_labels['human_parts'] == len(ds) - len(with_parts)
    for i in range(len(ds)):
        sample = ds[i]
        parts = sample['gt_maps']['human_parts']
        if sample['sample_id'] in with_parts:
            assert set(np.unique(parts)) <= set(range(7)) and parts.max() > 0
        else:
            assert (parts == 255).all()  # no annotated person: ignored for that task
        assert set(np.unique(sample['gt_maps']['sal'])) <= {0, 1}
        # Edges are the boundaries of the context label map.
        assert set(np.unique(sample['gt_maps']['edge'])) <= {0, 1}


def test_human_parts_struct_by_hand(tmp_path):
    shape = (6, 8)
    head, arm, car = (np.zeros(shape, np.uint8) for _ in range(3))
    head[0:2, 3:5] = 1
    arm[2:4, 1:2] = 1
    car[4:6, 5:8] = 1
    objects = [dict(class_ind=15, mask=head | arm, parts=dict(hair=head, ruarm=arm)),
               dict(class_ind=7, mask=car, parts={})]
    path = str(tmp_path / 'x.mat')
    write_pascal_part_mat(path, 'x', objects)
    expected = np.zeros(shape, np.uint8)
    expected[head > 0] = 1  # hair -> head
    expected[arm > 0] = 3   # right upper arm -> upper arm
    np.testing.assert_array_equal(load_human_parts(path, shape), expected)
    write_pascal_part_mat(path, 'x', [dict(class_ind=15, mask=head, parts=dict(tail=head))])
    with pytest.raises(KeyError, match="unknown person part 'tail'"):
        load_human_parts(path, shape)


def test_label_boundaries_by_hand():
    label = np.array([[1, 1, 2],
                      [1, 1, 2],
                      [3, 3, 3]])
    np.testing.assert_array_equal(label_boundaries(label), [[0, 1, 0], [1, 1, 1], [0, 0, 0]])


def test_missing_label_is_ignored_and_counted(roots, tmp_path):
    root = _copy(roots, 'nyud-mt', tmp_path)
    ids = open(os.path.join(root, 'gt_sets', 'train.txt')).read().split()
    os.remove(os.path.join(root, 'normals', ids[1] + '.png'))
    ds = _build('NYUDMultiTaskDataset', root)
    assert ds.missing_labels == {'semseg': 0, 'depth': 0, 'normals': 1, 'edge': 0}
    assert (ds[1]['gt_maps']['normals'] == 0).all()  # all-zero normals are ignored pixels
    assert (np.linalg.norm(ds[0]['gt_maps']['normals'], axis=-1) > 0.5).all()


def _pipeline_sample(root, steps, seed=0):
    np.random.seed(seed)
    ds = _build('NYUDMultiTaskDataset', root, pipeline=LOAD + steps)
    return ds[2]


def test_flip_is_consistent_across_tasks(roots):
    plain = _pipeline_sample(roots['nyud-mt'], [dict(type='MultiTaskRandomFlip', prob=0.0)])
    flipped = _pipeline_sample(roots['nyud-mt'], [dict(type='MultiTaskRandomFlip', prob=1.0)])
    assert flipped['flip'] and not plain['flip']
    np.testing.assert_array_equal(flipped['img'], plain['img'][:, ::-1])
    for task in ('semseg', 'depth', 'edge'):
        np.testing.assert_array_equal(flipped['gt_maps'][task], plain['gt_maps'][task][:, ::-1])
    n, n_flip = plain['gt_maps']['normals'], flipped['gt_maps']['normals']
    np.testing.assert_array_equal(n_flip[..., 0], -n[:, ::-1, 0])  # x points the other way
    np.testing.assert_array_equal(n_flip[..., 1:], n[:, ::-1, 1:])
    assert (n[..., 0] != 0).any()  # the slanted wall: the check is not vacuous


def test_resize_and_crop_keep_labels_valid(roots):
    sample = _pipeline_sample(roots['nyud-mt'], [])
    resized = _pipeline_sample(roots['nyud-mt'], [dict(type='MultiTaskRandomResize', ratio_range=(1.7, 1.7))])
    assert resized['img'].shape[:2] == (41, 54)
    assert all(m.shape[:2] == (41, 54) for m in resized['gt_maps'].values())
    # Nearest neighbour: no depth is interpolated (across invalid pixels or otherwise).
    assert set(np.unique(resized['gt_maps']['depth'])) <= set(np.unique(sample['gt_maps']['depth']))
    assert set(np.unique(resized['gt_maps']['semseg'])) <= set(np.unique(sample['gt_maps']['semseg']))
    assert np.allclose(np.linalg.norm(resized['gt_maps']['normals'], axis=-1), 1.0, atol=0.02)
    # A crop larger than the image pads every label with its ignore value.
    padded = _pipeline_sample(roots['nyud-mt'], [dict(type='MultiTaskRandomCrop', crop_size=(30, 40))])
    maps = padded['gt_maps']
    assert padded['img'].shape == (30, 40, 3) and (padded['img'][24:] == 0).all()
    assert (maps['semseg'][24:] == 255).all() and (maps['edge'][:, 32:] == 255).all()
    assert (maps['depth'][24:] == 0).all() and (maps['normals'][:, 32:] == 0).all()
    np.testing.assert_array_equal(maps['depth'][:24, :32], sample['gt_maps']['depth'])


def test_pack_multitask_inputs(roots):
    ds = _build('PascalMultiTaskDataset', roots['pascal-mt'], pipeline=LOAD + [dict(type='PackMultiTaskInputs')])
    packed = ds[0]
    sample = packed['data_samples']
    assert packed['inputs'].shape == (3, ) + SIZE
    assert sample.gt_sem_seg.data.shape == (1, ) + SIZE and sample.gt_normals.data.shape == (3, ) + SIZE
    assert {'gt_human_parts', 'gt_saliency', 'gt_edge_map'} <= set(sample.keys())
    assert sample.metainfo['tasks'] == ds.metainfo['tasks']


def test_bad_layouts_name_what_is_missing(roots, tmp_path):
    with pytest.raises(FileNotFoundError, match="data root '/nonexistent/NYUD_MT' does not exist"):
        _build('NYUDMultiTaskDataset', '/nonexistent/NYUD_MT')
    root = _copy(roots, 'nyud-mt', tmp_path)
    shutil.rmtree(os.path.join(root, 'depth'))
    with pytest.raises(FileNotFoundError, match=r"label folder of task 'depth' '.*/depth' does not exist"):
        _build('NYUDMultiTaskDataset', root)
    assert len(_build('NYUDMultiTaskDataset', root, tasks=('semseg', 'edge'))) == 8  # depth not asked for
    os.remove(os.path.join(root, 'gt_sets', 'val.txt'))
    with pytest.raises(FileNotFoundError, match=r"split file of 'val' '.*gt_sets/val.txt' does not exist"):
        _build('NYUDMultiTaskDataset', root, 'val', tasks=('semseg', ))
    ids = open(os.path.join(root, 'gt_sets', 'train.txt')).read().split()
    os.remove(os.path.join(root, 'images', ids[0] + '.png'))
    with pytest.raises(FileNotFoundError, match=f"image of id '{ids[0]}' listed in .*train.txt"):
        _build('NYUDMultiTaskDataset', root, tasks=('semseg', ))
    with pytest.raises(ValueError, match=r"tasks must be a non-empty subset of .*got \('sal',\)"):
        _build('NYUDMultiTaskDataset', root, tasks=('sal', ))
    with pytest.raises(ValueError, match="split must be one of"):
        _build('NYUDMultiTaskDataset', root, split='test')
    pascal = _copy(roots, 'pascal-mt', tmp_path)
    os.remove(os.path.join(pascal, 'ImageSets', 'Parts', 'train.txt'))
    with pytest.raises(FileNotFoundError, match=r"human-parts split file of 'train' '.*Parts/train.txt'"):
        _build('PascalMultiTaskDataset', pascal)


def test_label_of_other_size_is_an_error(roots, tmp_path):
    root = _copy(roots, 'nyud-mt', tmp_path)
    ids = open(os.path.join(root, 'gt_sets', 'train.txt')).read().split()
    np.save(os.path.join(root, 'depth', ids[0] + '.npy'), np.ones((5, 5), np.float32))
    ds = _build('NYUDMultiTaskDataset', root)
    with pytest.raises(ValueError, match=r'depth label is \(5, 5\) \(H, W\) but its image .* is \(24, 32\)'):
        TRANSFORMS.build(dict(type='LoadMultiTaskAnnotations'))(dict(
            ds.get_data_info(0), img=np.zeros(SIZE + (3, ), np.uint8)))
