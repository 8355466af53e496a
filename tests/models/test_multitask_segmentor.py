"""The multi-task segmentor, its heads and losses (hand-computed values), and the timm backbone wrapper."""
import math

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import gspn2_dense  # noqa: F401

HEADS = dict(
    semseg=dict(type='SegTaskHead', num_classes=5),
    human_parts=dict(type='SegTaskHead', num_classes=7),
    sal=dict(type='BinaryTaskHead'),
    edge=dict(type='BinaryTaskHead', loss_decode=dict(type='BalancedBCELoss', pos_weight=0.95)),
    depth=dict(type='DepthTaskHead', max_depth=10.0),
    normals=dict(type='NormalsTaskHead'))
MS_LINEAR = dict(in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], input_transform='resize_concat')


def _model(**kwargs):
    cfg = dict(type='MultiTaskSegmentor', backbone=dict(type='GSPN2', arch='test'), heads=HEADS,
               head_defaults=MS_LINEAR, freeze_backbone=True,
               data_preprocessor=dict(type='MultiTaskDataPreProcessor', size_divisor=32))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _samples(n, size):
    h, w = size
    out = []
    for i in range(n):
        s = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
        g = torch.Generator().manual_seed(i)
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, h, w), generator=g))
        s.gt_human_parts = PixelData(data=torch.full((1, h, w), 255))  # no person: ignored
        s.gt_saliency = PixelData(data=torch.randint(0, 2, (1, h, w), generator=g))
        s.gt_edge_map = PixelData(data=torch.randint(0, 2, (1, h, w), generator=g))
        s.gt_depth_map = PixelData(data=torch.rand((1, h, w), generator=g) * 5)
        s.gt_normals = PixelData(data=torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0))
        out.append(s)
    return out


def test_losses_and_frozen_backbone():
    model = _model(loss_weights=dict(edge=50.0))
    model.train()
    assert not model.backbone.training and all(h.training for h in model.heads.values())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    losses = model.loss(torch.randn(2, 3, 32, 32), _samples(2, (32, 32)))
    assert set(losses) == {'semseg.loss_ce', 'human_parts.loss_ce', 'sal.loss_bce', 'edge.loss_bce',
                           'depth.loss_l1', 'normals.loss_normals'}
    assert losses['human_parts.loss_ce'] == 0  # every pixel ignored
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.heads.parameters())
    # The weight multiplies the task's loss.
    plain = _model()
    plain.load_state_dict(model.state_dict())
    plain.train()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    weighted = model.loss(x, _samples(1, (32, 32)))['edge.loss_bce'].item()
    assert weighted == pytest.approx(50 * plain.loss(x, _samples(1, (32, 32)))['edge.loss_bce'].item(), rel=1e-5)


def test_predict_fields_and_ranges():
    model = _model().eval()
    samples = _samples(2, (29, 37))
    with torch.no_grad():
        out = model.predict(torch.randn(2, 3, 32, 40), samples)  # padded input, cropped back
    s = out[0]
    assert s.pred_sem_seg.data.shape == (1, 29, 37) and s.pred_sem_seg.data.max() < 5
    assert s.pred_normals.data.shape == (3, 29, 37)
    assert torch.allclose(s.pred_normals.data.norm(dim=0), torch.ones(29, 37), atol=1e-5)
    assert 0 <= s.pred_saliency.data.min() and s.pred_edge_map.data.max() <= 1
    assert 1e-3 <= s.pred_depth_map.data.min() and s.pred_depth_map.data.max() <= 10


def test_shared_decoder_fine_tunes_the_backbone():
    model = _model(freeze_backbone=False,
                   decoder=dict(type='MultiScaleFusionDecoder', in_channels=[8, 16, 32, 64], channels=16),
                   head_defaults=dict(in_channels=16, in_index=0, num_convs=1, channels=8))
    model.train()
    sum(model.loss(torch.randn(2, 3, 32, 32), _samples(2, (32, 32))).values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    assert model.backbone.training


def test_preprocessor_pads_every_label_with_its_ignore_value():
    model = _model()
    samples = _samples(1, (30, 31))
    data = dict(inputs=[torch.zeros(3, 30, 31, dtype=torch.uint8)], data_samples=samples)
    out = model.data_preprocessor(data, training=True)
    s = out['data_samples'][0]
    assert out['inputs'].shape[2:] == (32, 32)
    assert (s.gt_sem_seg.data[:, 30:] == 255).all() and (s.gt_saliency.data[:, :, 31:] == 255).all()
    assert (s.gt_depth_map.data[:, 30:] == 0).all() and (s.gt_normals.data[:, :, 31:] == 0).all()
    assert (s.gt_edge_map.data[:, 30:] == 255).all() and (s.gt_human_parts.data[:, :, 31:] == 255).all()
    assert torch.equal(s.gt_depth_map.data[:, :30, :31], samples[0].gt_depth_map.data[:, :30, :31])


def test_test_batches_are_padded_like_training_batches():
    """Issue 16: a test image whose sides are not multiples of 32 is padded as a training batch is,
    so that it is predicted as the model saw it in training, and the predictions are cropped back."""
    model = _model().eval()
    image = torch.randint(0, 256, (3, 30, 45), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[image], data_samples=_samples(1, (30, 45))), training=False)
        assert data['inputs'].shape[2:] == (32, 64)
        assert data['data_samples'][0].img_shape == (30, 45)
        out = model.test_step(dict(inputs=[image], data_samples=_samples(1, (30, 45))))[0]
        padded = model.data_preprocessor(dict(inputs=[image], data_samples=_samples(1, (30, 45))), training=True)
        reference = model.predict(padded['inputs'], _samples(1, (30, 45)))[0]
    assert out.pred_depth_map.data.shape == (1, 30, 45)
    for field in ('pred_depth_map', 'pred_normals', 'pred_edge_map', 'pred_sem_seg'):
        assert torch.allclose(out.get(field).data, reference.get(field).data, atol=1e-5), field
    # An explicit test_cfg wins: dict() tests on the image as it is.
    plain = _model(data_preprocessor=dict(type='MultiTaskDataPreProcessor', size_divisor=32, test_cfg=dict()))
    data = plain.data_preprocessor(dict(inputs=[image], data_samples=_samples(1, (30, 45))), training=False)
    assert data['inputs'].shape[2:] == (30, 45)


def test_balanced_bce_by_hand():
    logits = torch.zeros(1, 1, 1, 4)  # p = 0.5 everywhere: each term is w * log 2
    target = torch.tensor([[[[1, 0, 0, 255]]]])
    auto = MODELS.build(dict(type='BalancedBCELoss'))
    # w = 2 negatives / 3 valid: (w + 2 (1 - w)) log 2 / 3
    assert auto(logits, target).item() == pytest.approx((2 / 3 + 2 / 3) * math.log(2) / 3)
    fixed = MODELS.build(dict(type='BalancedBCELoss', pos_weight=0.95))
    assert fixed(logits, target).item() == pytest.approx((0.95 + 2 * 0.05) * math.log(2) / 3)


def test_normals_and_l1_losses_by_hand():
    pred = torch.tensor([0.0, 0.0, 2.0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    gt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]).view(1, 3, 1, 2)  # second pixel unlabelled
    assert MODELS.build(dict(type='NormalsLoss'))(pred, gt).item() == pytest.approx(2.0)
    assert MODELS.build(dict(type='NormalsLoss', mode='cosine'))(pred, gt).item() == pytest.approx(1.0)
    l1 = MODELS.build(dict(type='MaskedL1Loss'))
    assert l1(torch.tensor([1.0, 5.0, 2.0]), torch.tensor([2.0, 0.0, 4.0])).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="mode must be one of \\('l1', 'cosine'\\)"):
        MODELS.build(dict(type='NormalsLoss', mode='l2'))


def test_bad_configs_and_missing_labels():
    with pytest.raises(KeyError, match=r"unknown tasks \['segm'\] in heads"):
        _model(heads=dict(segm=dict(type='SegTaskHead', num_classes=3)))
    with pytest.raises(KeyError, match=r"loss_weights names tasks without a head: \['depth'\]"):
        _model(heads=dict(semseg=HEADS['semseg']), loss_weights=dict(depth=1.0))
    with pytest.raises(TypeError, match="input_transform='resize_concat' needs lists"):
        _model(head_defaults=dict(in_channels=64, in_index=[0, 1], input_transform='resize_concat'))
    model = _model(heads=dict(depth=HEADS['depth']))
    sample = SegDataSample(metainfo=dict(img_shape=(32, 32)))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 32, 32, dtype=torch.long))
    with pytest.raises(KeyError, match="task 'depth' needs gt_depth_map in every data sample"):
        model.loss(torch.randn(1, 3, 32, 32), [sample])


@pytest.mark.parametrize('name,kwargs', [('convnext_atto', {}),
                                         ('swin_tiny_patch4_window7_224', dict(img_size=64, strict_img_size=False))])
def test_timm_backbone_is_nchw(name, kwargs):
    backbone = MODELS.build(dict(type='TimmFeatures', model_name=name, **kwargs))
    feats = backbone(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == backbone.num_features
    assert [(f.shape[2], f.shape[3]) for f in feats] == [(64 // s, 96 // s) for s in (4, 8, 16, 32)]
    with pytest.raises(KeyError, match="timm has no model 'swin_tiniest'"):
        MODELS.build(dict(type='TimmFeatures', model_name='swin_tiniest'))
