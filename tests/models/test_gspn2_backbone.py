"""The mmseg ``GSPN2`` backbone: registry, shapes, freezing, checkpointing, checkpoint loading."""
import math

import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmseg.registry import MODELS

import gspn2_dense  # noqa: F401  (registers GSPN2 in mmseg's MODELS)
from gspn2_dense.models.backbones import GSPN2Backbone

DIMS = (8, 16, 32, 64)


def build(**kwargs) -> GSPN2Backbone:
    torch.manual_seed(0)
    return MODELS.build(dict(type='GSPN2', arch='test', **kwargs))


def test_config_with_custom_imports_builds_the_backbone(tmp_path):
    path = tmp_path / 'gspn2_cfg.py'
    path.write_text(
        "custom_imports = dict(imports=['gspn2_dense'], allow_failed_imports=False)\n"
        "model = dict(type='EncoderDecoder',\n"
        "             backbone=dict(type='GSPN2', arch='test', out_indices=(0, 1, 2, 3), drop_path_rate=0.1),\n"
        "             decode_head=dict(type='FCNHead', in_channels=64, in_index=3, channels=8, num_convs=1,\n"
        "                              concat_input=False, num_classes=3))\n")
    cfg = Config.fromfile(str(path))
    backbone = MODELS.build(cfg.model.backbone)
    assert isinstance(backbone, GSPN2Backbone)
    segmentor = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = segmentor(torch.randn(1, 3, 37, 53), mode='tensor')
    assert logits.shape == (1, 3, 2, 2)  # the head reads stage 3 (stride 32)


@pytest.mark.parametrize('size', [(64, 64), (37, 53), (3, 1)])
def test_outputs_are_nchw_at_strides_4_to_32(size):
    backbone = build().eval()
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, *size))
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(size[0] / 2 ** (i + 2)), math.ceil(size[1] / 2 ** (i + 2))) for i, c in enumerate(DIMS)]
    # NCHW in memory too (the trunk runs channels_last; heads get what TimmFeatures gives)
    assert all(o.is_contiguous() for o in outs)


def test_out_indices_subset_prunes_later_stages():
    backbone = build(out_indices=(0, 2))
    outs = backbone(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [8, 32]
    assert len(backbone.trunk.stages) == 3 and backbone.num_features == [8, 32]


def test_explicit_dims_and_model_options():
    backbone = build(dims=(8, 16, 24, 32), depths=(1, 2, 1, 1), proxy_dim=4, gate_groups=4, use_lpu=False)
    assert [len(s.blocks) for s in backbone.trunk.stages] == [1, 2, 1, 1]
    assert backbone.trunk.stages[3].blocks[0].mixer.gate_groups == 4
    assert [o.shape[1] for o in backbone(torch.randn(1, 3, 32, 32))] == [8, 16, 24, 32]


def test_frozen_stages_stay_in_eval_and_get_no_gradient():
    backbone = build(frozen_stages=2, drop_path_rate=0.2)
    backbone.train()
    frozen = [backbone.trunk.stem, backbone.trunk.stages[0], backbone.trunk.stages[1]]
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(m.training for m in backbone.trunk.stages[2].modules())
    sum(o.sum() for o in backbone(torch.randn(2, 3, 32, 32))).backward()
    for module in frozen:
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    assert all(p.grad is not None for p in backbone.trunk.stages[2].parameters())
    # drop path is off in the frozen (eval) stages: their outputs are deterministic in train()
    x = torch.randn(1, 3, 32, 32)
    a, b = backbone(x)[1], backbone(x)[1]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_with_cp_gives_same_outputs_and_grads():
    x = torch.randn(2, 3, 36, 28)
    results = []
    for with_cp in (False, True):
        backbone = build(with_cp=with_cp).train()
        outs = backbone(x)
        sum(o.square().mean() for o in outs).backward()
        results.append(([o.detach() for o in outs], [p.grad for p in backbone.parameters()]))
    assert all(s.grad_checkpointing for s in build(with_cp=True).trunk.stages)
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_with_cp_after_frozen_stages_still_trains_the_rest():
    # the checkpointed stages take an input that needs no grad (it comes from frozen stages)
    backbone = build(frozen_stages=2, with_cp=True).train()
    sum(o.sum() for o in backbone(torch.randn(1, 3, 32, 32))).backward()
    assert all(p.grad is not None for s in backbone.trunk.stages[2:] for p in s.parameters())


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


@pytest.mark.parametrize('layout', ['timm', 'open_clip', 'mmseg'])
def test_checkpoint_from_timm_model_loads_with_equal_features(tmp_path, layout):
    torch.manual_seed(1)
    source = timm.create_model('gspn2_test').eval()
    state = source.state_dict()
    checkpoint = {
        'timm': state,
        'open_clip': {'state_dict': {**_prefixed(state, 'visual.trunk.'), 'text.token_embedding.weight':
                                     torch.zeros(4, 2), 'logit_scale': torch.ones(())}},
        'mmseg': {'state_dict': {**_prefixed(state, 'backbone.trunk.'), 'decode_head.conv_seg.bias': torch.zeros(3)}},
    }[layout]
    path = tmp_path / f'{layout}.pth'
    torch.save(checkpoint, path)
    backbone = build(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(2, 3, 45, 39)
    with torch.no_grad():
        expected = source.forward_intermediates(x, intermediates_only=True)
        outs = backbone(x)
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_and_unexpected_keys_are_reported(tmp_path, capsys):
    state = timm.create_model('gspn2_test').state_dict()
    state.pop('stem.0.weight')
    state['stages.0.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save(state, path)
    MMLogger.get_instance('gspn2_backbone_test')  # the logger print_log(logger='current') writes to
    backbone = build(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    log = capsys.readouterr().out
    assert "missing keys (left at their init): ['stem.0.weight']" in log
    assert 'stages.0.extra.weight' in log and "'head.fc.weight'" in log


def test_checkpoint_with_no_matching_key_raises(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': {'encoder.layer.weight': torch.zeros(2)}}, path)
    backbone = build(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(KeyError, match='no key of checkpoint .*other.pth.* matches the GSPN2 backbone'):
        backbone.init_weights()


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), r"arch must be one of \('test', 'nano', 'tiny', 'small', 'base'\), got 'huge'"),
    (dict(out_indices=(0, 4)), r'out_indices must be stage indices in 0..3, got \(0, 4\)'),
    (dict(frozen_stages=5), r'frozen_stages must be an int in -1..4, got 5'),
    (dict(init_cfg=dict(type='Kaiming')), r"init_cfg must be None or dict\(type='Pretrained', checkpoint=...\)"),
    (dict(init_cfg=dict(type='Pretrained', checkpoint='a.pth', prefix='backbone.')),
     r"init_cfg must be None or dict\(type='Pretrained', checkpoint=...\) .*got .*'prefix': 'backbone.'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GSPN2Backbone(**{'arch': 'test', **kwargs})


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r'x must be \(B, C, H, W\), got shape \(3, 32, 32\)'):
        build()(torch.randn(3, 32, 32))
