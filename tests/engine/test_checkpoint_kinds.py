"""Checkpoint kinds come from the model file's one table of layouts (CHECKPOINT_LAYOUTS)."""
import pytest
import timm
import torch

import gspn2_dense  # noqa: F401  (registers the timm variants)
from gspn2_dense.engine.checkpoint import checkpoint_kind, describe_kind, state_dict_of
from gspn2_dense.models.gspn2 import checkpoint_filter_fn


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


@pytest.fixture(scope='module')
def trunk():
    return timm.create_model('gspn2_test', num_classes=0).state_dict()


@pytest.mark.parametrize('layout, kind', [
    (lambda s: {'state_dict': _prefixed(s, 'backbone.trunk.'), 'meta': {'iter': 4},
                'optimizer': {'state': {}}}, 'segmentor'),          # tools/train.py's iter_N.pth
    (lambda s: {'state_dict': {**_prefixed(s, 'backbone.trunk.'),
                               'heads.depth.conv.weight': torch.zeros(1)}}, 'segmentor'),  # multi-task
    (lambda s: {'epoch': 1, 'state_dict': {**_prefixed(s, 'module.visual.trunk.'),
                                           'module.logit_scale': torch.zeros(())}}, 'clip'),
    (lambda s: {'state_dict': s, 'meta': {'converted_from': 'open_clip image tower'}}, 'backbone'),
    (lambda s: _prefixed(s, 'trunk.'), 'backbone'),                 # the mmseg wrapper's own
    (lambda s: {'encoder.weight': torch.zeros(1)}, 'unknown'),
    (lambda s: [torch.zeros(1)], 'unknown'),
    (lambda s: {'epoch': 3}, 'unknown'),
], ids=['segmentor', 'multitask', 'clip', 'backbone', 'wrapper', 'foreign', 'list', 'no_tensors'])
def test_kind_and_filter_agree_on_every_layout(trunk, layout, kind):
    checkpoint = layout(trunk)
    assert checkpoint_kind(checkpoint) == kind
    if kind != 'unknown':
        filtered = checkpoint_filter_fn(checkpoint)
        assert filtered.keys() == trunk.keys()


def test_state_dict_of_opens_wrappers_and_ddp_prefixes(trunk):
    nested = {'model': {'module': _prefixed(trunk, 'module.')}, 'epoch': 2}
    assert state_dict_of(nested).keys() == trunk.keys()
    assert state_dict_of([1, 2]) == {} and state_dict_of({'epoch': 1}) == {}


def test_a_vit_clip_checkpoint_is_clip_without_a_trunk():
    vit = {'state_dict': {'visual.conv1.weight': torch.zeros(1), 'logit_scale': torch.zeros(())}}
    assert checkpoint_kind(vit) == 'clip'
    with pytest.raises(ValueError, match=r'this clip checkpoint holds no GSPN-2 trunk: expected keys '
                                         r'"visual.trunk.\*", got keys \[\'logit_scale\', \'visual.conv1\'\]'):
        checkpoint_filter_fn(vit)


def test_descriptions_name_the_marker_keys():
    assert describe_kind('segmentor')[0] == ('a segmentor checkpoint written by tools/train.py, '
                                             'with decode_head.* / backbone.* keys')
    assert 'visual.* / logit_scale keys' in describe_kind('clip')[0]
    assert describe_kind('unknown') == ("a checkpoint of none of this toolkit's kinds", '')
