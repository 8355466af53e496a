"""The timm-style GSPN-2 model: shapes, the timm contract, options, checkpoints."""
import math

import pytest
import timm
from timm.layers import LayerNorm2d
from timm.optim import create_optimizer_v2
import torch
import torch.nn as nn

import gspn2_dense  # noqa: F401  (registers the timm models)
from gspn2_dense.models.gspn2 import GSPN2, GSPN2Block, GSPN2Mixer, LowPrecisionLayerNorm2d, checkpoint_filter_fn
from gspn2_dense.ops import gspn_propagate_ref

SIZES = [(64, 64), (65, 33), (31, 97), (5, 3), (1, 1)]
DIMS = (8, 16, 32, 64)


def build(**kwargs) -> GSPN2:
    torch.manual_seed(0)
    return timm.create_model('gspn2_test', **kwargs).eval()


@pytest.mark.parametrize('size', SIZES)
def test_stage_shapes(size):
    model = build()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
    expected = [(2, c, math.ceil(size[0] / 2 ** (i + 2)), math.ceil(size[1] / 2 ** (i + 2)))
                for i, c in enumerate(DIMS)]
    assert [tuple(f.shape) for f in feats] == expected
    assert [info['num_chs'] for info in model.feature_info] == list(DIMS)
    assert [info['reduction'] for info in model.feature_info] == [4, 8, 16, 32]


def test_forward_intermediates_agrees_with_forward_features():
    model = build()
    x = torch.randn(2, 3, 45, 38)
    with torch.no_grad():
        features = model.forward_features(x)
        final, inter = model.forward_intermediates(x)
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
    torch.testing.assert_close(final, features, rtol=0, atol=0)
    torch.testing.assert_close(normed[0], features, rtol=0, atol=0)
    assert not torch.equal(inter[-1], features)  # the un-normed last stage differs
    torch.testing.assert_close(early[0], inter[0], rtol=0, atol=0)
    torch.testing.assert_close(early[1], inter[2], rtol=0, atol=0)


def test_prune_intermediate_layers_keeps_features():
    model = build()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        before = model.forward_intermediates(x, intermediates_only=True)
        kept = model.prune_intermediate_layers([0, 1])
        after = model.forward_intermediates(x, indices=kept, intermediates_only=True)
    assert kept == [0, 1] and len(model.stages) == 2
    for a, b in zip(after, before[:2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert model.num_features == DIMS[1]
    assert model(x).shape == (1, DIMS[1], 5, 5)  # pruned head: no pooling, like timm's models


def test_head_and_classifier_reset():
    model = build()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert model(x).shape == (2, 1000)
    assert model.forward_head(feats, pre_logits=True).shape == (2, DIMS[-1])
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    model.reset_classifier(0, global_pool='')
    assert model(x).shape == feats.shape


def test_grad_checkpointing_gives_same_outputs_and_grads():
    model = build(drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 33, 29)
    outputs, grads = [], []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_compiles_to_one_graph():
    model = build()
    x = torch.randn(2, 3, 37, 44)
    compiled = torch.compile(model, backend='eager', fullgraph=True)  # fails on any graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


def test_every_parameter_gets_a_gradient():
    model = build().train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_features_only_and_default_cfg():
    model = timm.create_model('gspn2_test', features_only=True, out_indices=(1, 3))
    feats = model(torch.randn(1, 3, 50, 70))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 7, 9), (1, 64, 2, 3)]
    assert model.feature_info.channels() == [16, 64] and model.feature_info.reduction() == [8, 32]
    full = build()
    assert full.pretrained_cfg['url'] == '' and full.default_cfg['first_conv'] == 'stem.0'
    for name in ('gspn2_nano', 'gspn2_tiny', 'gspn2_small', 'gspn2_base'):
        assert name in timm.list_models('gspn2_*')


def test_optimizer_groups_cover_all_parameters():
    model = build()
    no_decay = model.no_weight_decay()
    assert 'stages.0.blocks.0.mixer.skip_scale' in no_decay
    assert 'stages.0.blocks.0.mixer.in_proj.weight' not in no_decay
    optimizer = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.7)
    in_groups = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert in_groups == {id(p) for p in model.parameters()}
    assert len({group['lr_scale'] for group in optimizer.param_groups}) > 3  # group_matcher splits by depth


def test_architecture_options():
    model = build(drop_path_rate=0.3, use_lpu=False, local_chunk=3, global_stages=(3,), gate_groups=(1, 2, 4, 4))
    blocks = [stage.blocks[0] for stage in model.stages]
    assert [b.mixer.chunk for b in blocks] == [3, 3, 3, None]
    assert [b.mixer.gate_groups for b in blocks] == [1, 2, 4, 4]
    assert isinstance(blocks[0].lpu1, nn.Identity) and isinstance(blocks[0].lpu2, nn.Identity)
    assert blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    default = build()
    assert [s.blocks[0].mixer.chunk for s in default.stages] == [2, 2, None, None]
    assert [s.blocks[0].mixer.proxy_dim for s in default.stages] == [c // 4 for c in DIMS]


def test_per_channel_gates_gspn1_style():
    proxy = (4, 8, 8, 16)
    model = build(proxy_dim=proxy, gate_groups=proxy)
    mixer = model.stages[3].blocks[0].mixer
    assert mixer.proxy_proj.out_channels == 16 + 4 * 16 * 3 + 2 * 4 * 16
    assert model(torch.randn(1, 3, 36, 36)).shape == (1, 1000)


def _mixer_reference(mixer, x, norm):
    """GSPN2Mixer's maths written with its modules' own calls and the reference op; ``norm(module,
    t)`` applies its out_norm. Proxy P, gate groups G: the projection's planes are P proxy,
    4 x G x 3 gate logits, 4 x P lam logits, 4 x P u."""
    (B, _, H, W), P, G = x.shape, mixer.proxy_dim, mixer.gate_groups
    z = mixer.conv_dw(torch.nn.functional.silu(mixer.in_proj(x)))
    proxy, gates, lam, u = mixer.proxy_proj(z).split([P, 4 * G * 3, 4 * P, 4 * P], dim=1)
    y = gspn_propagate_ref(proxy, gates.reshape(B, 4, G, 3, H, W), torch.sigmoid(lam).reshape(B, 4, P, H, W),
                           u.reshape(B, 4, P, H, W), chunk=mixer.chunk)
    y = y + proxy * mixer.skip_scale.view(1, -1, 1, 1)
    return mixer.out_proj(norm(mixer.out_norm, mixer.lift(y)))


def test_mixer_matches_reference_computation():
    torch.manual_seed(0)
    mixer = GSPN2Mixer(dim=6, inner_dim=8, proxy_dim=4, gate_groups=2, chunk=2).double()
    for p in mixer.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    expected = _mixer_reference(mixer, x, lambda module, t: module(t))
    torch.testing.assert_close(mixer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_block_matches_reference_computation(memory_format):
    """The block (its 1x1 projections run as GEMMs on the channels_last map's rows, the fused
    norm) against the same maths written with the modules' own calls (1x1 convolutions,
    LayerNorm2d), for either input layout."""
    torch.manual_seed(0)
    block = GSPN2Block(6, proxy_dim=4, gate_groups=2, chunk=None, mlp_ratio=2.0).double()
    for p in block.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=memory_format)

    def norm(module, t):
        return LayerNorm2d.forward(module, t)

    expected = x + block.lpu1.conv(x)
    expected = expected + _mixer_reference(block.mixer, norm(block.norm1, expected), norm)
    expected = expected + block.lpu2.conv(expected)
    hidden = torch.nn.functional.gelu(block.mlp.fc1(norm(block.norm2, expected)))
    expected = expected + block.mlp.fc2(hidden)
    out = block(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('autocast', [False, True])
def test_low_precision_norm_is_layer_norm(autocast):
    """Outside autocast it is LayerNorm2d; under it, LayerNorm2d's output in the autocast dtype."""

    torch.manual_seed(0)
    ours, timm_norm = LowPrecisionLayerNorm2d(12), LayerNorm2d(12)
    for p in ours.parameters():
        nn.init.normal_(p)
    timm_norm.load_state_dict(ours.state_dict())
    x = torch.randn(2, 12, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
        y = ours(x.bfloat16() if autocast else x)
        expected = timm_norm(x.bfloat16() if autocast else x)
    assert y.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert y.is_contiguous(memory_format=torch.channels_last)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=0, atol=0)
    torch.testing.assert_close(y.float(), expected.float(), **tol)
    grads = torch.autograd.grad(y.float().square().sum(), [x, ours.weight])
    expected_grads = torch.autograd.grad(expected.float().square().sum(), [x, timm_norm.weight])
    for g, e in zip(grads, expected_grads):
        assert g.dtype == e.dtype == torch.float32
        torch.testing.assert_close(g, e, **(dict(rtol=5e-2, atol=5e-2) if autocast else tol))


@pytest.mark.parametrize('kwargs, match', [
    (dict(gate_groups=3), r'gate_groups must divide proxy_dim in every stage, got gate_groups=3 and proxy_dim=2'),
    (dict(depths=(1, 1, 1)), r'depths must be one int or a sequence of 4, got \(1, 1, 1\)'),
    (dict(proxy_dim=0), r'proxy_dim >= 1, got .*proxy_dim=\(0, 0, 0, 0\)'),
    (dict(local_chunk=0), r'local_chunk must be a positive int, got 0'),
    (dict(global_stages=(4,)), r'global_stages must be stage indices in 0..3, got \(4,\)'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\), got 1.0'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('gspn2_test', **kwargs)


def test_bad_output_fmt():
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW', got 'NHWC'"):
        build().forward_intermediates(torch.randn(1, 3, 8, 8), output_fmt='NHWC')


def _prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


@pytest.mark.parametrize('wrap', [
    lambda s: s,
    lambda s: {'state_dict': s},
    lambda s: {'model': _prefixed(s, 'module.'), 'epoch': 3},
    lambda s: {**_prefixed(s, 'visual.trunk.'), 'text.proj': torch.zeros(2), 'logit_scale': torch.ones(())},
    lambda s: {'state_dict': {**_prefixed(s, 'backbone.trunk.'), 'decode_head.conv_seg.weight': torch.zeros(1)},
               'meta': {}},
    lambda s: {'state_dict': _prefixed(s, 'backbone.')},
], ids=['timm', 'state_dict', 'ddp', 'open_clip', 'mmseg_wrapper', 'mmseg'])
def test_checkpoint_filter_maps_every_layout(wrap):
    state = build().state_dict()
    filtered = checkpoint_filter_fn(wrap(state))
    assert filtered.keys() == state.keys()
    assert all(torch.equal(filtered[k], state[k]) for k in state)


def test_checkpoint_filter_errors():
    with pytest.raises(TypeError, match='state_dict must be a dict of tensors, got list'):
        checkpoint_filter_fn([])
    with pytest.raises(KeyError, match='no tensors in the checkpoint'):
        checkpoint_filter_fn({'epoch': 1, 'state_dict': None})


def test_pretrained_from_local_open_clip_file(tmp_path):
    source = build()
    path = tmp_path / 'clip.pt'
    torch.save({'state_dict': _prefixed(source.state_dict(), 'visual.trunk.')}, path)
    model = timm.create_model('gspn2_test', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match='No pretrained weights exist for gspn2_test'):
        timm.create_model('gspn2_test', pretrained=True)  # no download URL: weights only from files


def test_open_clip_timm_tower():
    open_clip = pytest.importorskip('open_clip')
    tower = open_clip.timm_model.TimmModel('gspn2_test', embed_dim=12, image_size=64, pool='avg', proj='linear')
    assert tower(torch.randn(2, 3, 64, 64)).shape == (2, 12)
    tower.lock(unlocked_groups=2)  # open_clip's partial freezing goes through group_matcher
    trainable = {name for name, p in tower.trunk.named_parameters() if p.requires_grad}
    assert 'norm.weight' in trainable and 'stages.3.blocks.0.mixer.in_proj.weight' in trainable
    assert not any(name.startswith(('stem.', 'stages.0.', 'stages.1.')) for name in trainable)


def test_fx_feature_extraction():
    """The fused op is an FX leaf: torchvision's and timm's FX feature extractors trace."""
    from torchvision.models.feature_extraction import create_feature_extractor
    model = build()
    x = torch.randn(2, 3, 40, 56)
    nodes = {f'stages.{i}': str(i) for i in range(4)}
    with torch.no_grad():
        want = model.forward_intermediates(x, intermediates_only=True)
        got = create_feature_extractor(model, return_nodes=nodes)(x)
        got_timm = build(features_only=True, feature_cls='fx')(x)
    for i, w in enumerate(want):
        torch.testing.assert_close(got[str(i)], w, rtol=0, atol=0)
        torch.testing.assert_close(got_timm[i], w, rtol=0, atol=0)


@pytest.mark.parametrize('part', ['model', 'block'])
def test_torchscript_is_refused_with_a_reason(part):
    model = timm.create_model('gspn2_test')
    with pytest.raises(RuntimeError, match='cannot be compiled by torch.jit.script.*torch.compile'):
        torch.jit.script(model if part == 'model' else model.stages[1].blocks[0])


def test_trace_matches_eager():
    model = timm.create_model('gspn2_test').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
