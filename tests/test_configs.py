"""Every config under configs/ (CLIP configs aside) builds its model and datasets on demo data."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import gspn2_dense  # noqa: F401
from gspn2_dense.datasets import check_config
from gspn2_dense.demo import DEMO_ROOTS, make_probe_data
from gspn2_dense.engine.probe import set_data_root

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
# Multi-task configs (configs/multitask, configs/demo/multitask-*) have their own test:
# tests/test_multitask_configs.py.
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py')
                 if '_base_' not in p.parts and 'clip' not in p.relative_to(CONFIG_DIR).parts
                 and 'multitask' not in p.relative_to(CONFIG_DIR).parts and 'multitask' not in p.name)
DEMO_ROOT_OF_TYPE = {
    'ADE20KDataset': 'ade20k', 'PascalVOCDataset': 'voc', 'PascalContextDataset59': 'pascal-context-59',
    'NYUDataset': 'nyu-depth', 'NYUv2Seg40Dataset': 'nyu40',
}

init_default_scope('mmseg')


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    make_probe_data(root)
    return root


def _dataset_type(dataset_cfg):
    inner = dataset_cfg.get('datasets')
    return inner[0]['type'] if inner else dataset_cfg['type']


def test_config_inventory():
    names = {p.name for p in CONFIGS}
    for arch in 'tsb':
        for variant in ('linear', 'ms-linear'):
            for ds in ('ade20k-512x512', 'voc12aug-512x512', 'pascal-context-59-480x480',
                       'nyu40-480x480', 'nyu-depth-480x480'):
                assert f'{variant}_gspn2-{arch}_8xb2-40k_{ds}.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds(path, demo_root):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports['imports'] == ['gspn2_dense']
    if 'linear_probe' in path.parts:
        assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 1e-3
        assert cfg.train_cfg.max_iters == 40000 and cfg.train_dataloader.batch_size == 2
        assert cfg.param_scheduler[0].end == 1500 and cfg.param_scheduler[1].type == 'PolyLR'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset_cfg = cfg[key].dataset
        set_data_root(dataset_cfg, f'{demo_root}/{DEMO_ROOTS[DEMO_ROOT_OF_TYPE[_dataset_type(dataset_cfg)]]}')
        assert len(DATASETS.build(dataset_cfg)) > 0
    check_config(cfg)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    # The head reads exactly the channels the backbone gives at its in_index.
    head = cfg.model.decode_head
    index = head.in_index
    given = ([model.backbone.num_features[i] for i in index] if isinstance(index, (list, tuple))
             else model.backbone.num_features[index])
    assert head.in_channels == given, (head.in_channels, given)
    # The whole backbone is frozen: only the head (BN + 1x1 conv) trains.
    trainable = {n.split('.')[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'decode_head'}
    assert {n.split('.')[1] for n, p in model.named_parameters() if p.requires_grad} == {'bn', 'conv_seg'}
