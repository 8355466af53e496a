"""Every multi-task config (configs/multitask, configs/demo/multitask-*) builds its datasets and model."""
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import gspn2_dense  # noqa: F401
from gspn2_dense.datasets import check_config
from gspn2_dense.demo.multitask_data import make_multitask_data
from gspn2_dense.engine.probe import set_data_root

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted([*(CONFIG_DIR / 'multitask').glob('*.py'), *(CONFIG_DIR / 'demo').glob('multitask-*.py')])
DEMO_OF_TYPE = {'NYUDMultiTaskDataset': 'nyud-mt', 'PascalMultiTaskDataset': 'pascal-mt'}
TASKS = {'nyud-mt': ('semseg', 'depth', 'normals', 'edge'),
         'pascal-mt': ('semseg', 'human_parts', 'sal', 'normals', 'edge')}

init_default_scope('mmseg')


_CHANNELS = {}


def _backbone_channels(backbone_cfg) -> list:
    """Stage channels of a backbone config (built once per distinct config, on the meta device)."""
    key = repr(sorted(backbone_cfg.items()))
    if key not in _CHANNELS:
        with torch.device('meta'):
            _CHANNELS[key] = list(MODELS.build(backbone_cfg).num_features)
    return _CHANNELS[key]


@pytest.fixture(scope='module')
def demo_roots(tmp_path_factory):
    return make_multitask_data(str(tmp_path_factory.mktemp('mt')), splits={'train': 4, 'val': 2},
                                    size=(32, 32))


def test_config_inventory():
    names = {p.name for p in CONFIGS}
    for dataset, crop in (('nyud-mt', '448x576'), ('pascal-mt', '512x512')):
        for arch in 'tsb':
            for method in ('multitask-linear', 'multitask-fpn'):
                assert f'{method}_gspn2-{arch}_8xb2-40k_{dataset}-{crop}.py' in names
        for baseline in ('swin-t', 'convnext-t'):
            assert f'multitask-linear_{baseline}_8xb2-40k_{dataset}-{crop}.py' in names
        for task in TASKS[dataset]:
            assert f'singletask-linear_gspn2-t_8xb2-40k_{dataset}-{task.replace("_", "-")}-{crop}.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds(path, demo_roots):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports['imports'] == ['gspn2_dense']
    dataset_type = cfg.train_dataloader.dataset.type
    tasks = tuple(cfg.train_dataloader.dataset.tasks)
    assert tuple(cfg.model.heads) == tasks == tuple(cfg.test_evaluator.tasks) == tuple(cfg.val_evaluator.tasks)
    # The name's schedule is the config's: <gpus>xb<batch>-<iterations>.
    gpus, batch, iters = re.search(r'_(\d+)xb(\d+)-(\d+k?)_', path.name).groups()
    assert cfg.train_dataloader.batch_size == int(batch)
    assert cfg.train_cfg.max_iters == (int(iters[:-1]) * 1000 if iters.endswith('k') else int(iters))
    if 'demo' not in path.parts:
        # The test uses SEISM's 99 edge thresholds; validation during training fewer, without
        # Delta_m and without writing the result file that Delta_m of other runs reads.
        assert cfg.test_evaluator.get('edge_thresholds', 99) == 99
        assert cfg.val_evaluator.edge_thresholds < 99
        assert not cfg.val_evaluator.get('baselines') and not cfg.val_evaluator.get('results_file')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        set_data_root(cfg[key].dataset, demo_roots[DEMO_OF_TYPE[dataset_type]])
        # serialize_data=False skips mmengine's gc.collect() per dataset (a quarter second each).
        assert len(DATASETS.build(dict(cfg[key].dataset, serialize_data=False))) > 0
    check_config(cfg)
    if cfg.model.backbone.type == 'TimmFeatures':
        cfg.model.backbone.checkpoint = None  # no weights on the test machine
    channels = _backbone_channels(cfg.model.backbone)
    if cfg.model.get('decoder'):
        with torch.device('meta'):
            decoder = MODELS.build(cfg.model.decoder)
        assert decoder.in_channels == channels
        channels = [decoder.fuse.conv.out_channels]
    for task, head_cfg in cfg.model.heads.items():
        with torch.device('meta'):
            head = MODELS.build(dict(cfg.model.head_defaults, **head_cfg, task=task))
        index = head.in_index if isinstance(head.in_index, (list, tuple)) else [head.in_index]
        width = head.convs[0].conv.in_channels if len(head.convs) else head.bn.num_features
        assert width == sum(channels[i] for i in index), (task, width, channels)
    # Linear probes follow the frozen-backbone protocol; the fpn configs fine-tune.
    assert cfg.model.freeze_backbone == ('multitask-fpn' not in path.name)
    if path.name.startswith('singletask'):
        assert len(tasks) == 1 and cfg.test_evaluator.results_file.endswith(path.stem + '.json')
    elif 'gspn2-t' in path.name and 'demo' not in path.parts:
        # Delta_m of the T probes reads the single-task configs' result files.
        assert set(cfg.test_evaluator.baselines) == set(tasks)
        for task, file in cfg.test_evaluator.baselines.items():
            single = Config.fromfile(str(CONFIG_DIR / 'multitask' / (Path(file).stem + '.py')))
            assert single.test_evaluator.results_file == file and tuple(single.model.heads) == (task, )
