import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import gspn2_dense  # noqa: F401  (registers the heads and losses in mmseg's MODELS)
from gspn2_dense.models.heads import LinearDepthHead, LinearSegHead
from gspn2_dense.models.losses import DepthGradientLoss

CHANNELS = [8, 16, 32, 64]


def features(batch=2, size=(9, 13)):
    h, w = size
    return [torch.randn(batch, c, -(-h // 2**i), -(-w // 2**i)) for i, c in enumerate(CHANNELS)]


def depth_samples(gt):
    samples = []
    for depth in gt:
        sample = SegDataSample()
        sample.gt_depth_map = PixelData(data=depth)
        samples.append(sample)
    return samples


def test_linear_seg_head_last_stage():
    head = MODELS.build(dict(type='LinearSegHead', in_channels=64, in_index=3, num_classes=5))
    assert head.conv_seg.in_channels == 64 and head.conv_seg.out_channels == 5
    assert head.conv_seg.kernel_size == (1, 1)
    out = head(features())
    assert out.shape == (2, 5, 2, 2)
    # The probe is BN + one 1x1 conv: nothing else holds parameters.
    names = {n.split('.')[0] for n, _ in head.named_parameters()}
    assert names == {'bn', 'conv_seg'}


def test_linear_seg_head_multi_scale_concatenates_at_finest_stage():
    head = LinearSegHead(in_channels=CHANNELS, in_index=[0, 1, 2, 3], input_transform='resize_concat',
                         num_classes=3)
    assert head.bn.num_features == sum(CHANNELS)
    feats = features()
    out = head(feats)
    assert out.shape == (2, 3) + feats[0].shape[2:]
    out.sum().backward()
    assert head.conv_seg.weight.grad is not None


def test_linear_seg_head_rejects_bad_channels():
    with pytest.raises(TypeError, match='resize_concat.*list of in_channels'):
        LinearSegHead(in_channels=64, in_index=[0, 1], input_transform='resize_concat', num_classes=3)
    with pytest.raises(TypeError, match='do not pass channels'):
        LinearSegHead(in_channels=64, channels=32, num_classes=3)


def test_depth_head_bins_weighted_sum_of_centres():
    head = LinearDepthHead(in_channels=64, in_index=3, num_bins=4, min_depth=0.0, max_depth=8.0)
    assert torch.allclose(head.bin_centres.flatten(), torch.tensor([1.0, 3.0, 5.0, 7.0]))
    # Make the logits exactly a chosen per-pixel distribution: identity BN, conv picks channels.
    head.eval()
    with torch.no_grad():
        head.conv_seg.weight.zero_()
        head.conv_seg.bias.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    depth = head(features())
    assert depth.shape == (2, 1, 2, 2)
    assert torch.allclose(depth, torch.full_like(depth, 0.1 + 0.6 + 1.5 + 2.8))


def test_depth_head_regression_is_bounded():
    head = LinearDepthHead(in_channels=64, in_index=3, mode='regression', min_depth=0.5, max_depth=10.0)
    assert head.conv_seg.out_channels == 1
    depth = head([f * 100 for f in features()])
    assert depth.min() >= 0.5 and depth.max() <= 10.0


def test_depth_head_loss_ignores_invalid_and_trains():
    torch.manual_seed(0)
    head = LinearDepthHead(in_channels=64, in_index=3, num_bins=16, max_depth=10.0,
                           loss_decode=[dict(type='SiLogLoss'), dict(type='DepthGradientLoss')])
    feats = features(size=(16, 16))
    gt = torch.rand(2, 1, 16, 16) * 8 + 1
    gt[:, :, :4] = 0  # invalid rows
    losses = head.loss_by_feat(head(feats), depth_samples(gt))
    assert set(losses) == {'loss_silog', 'loss_grad'}
    assert all(torch.isfinite(v) for v in losses.values())
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = None
    for _ in range(30):
        loss = sum(head.loss_by_feat(head(feats), depth_samples(gt)).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_depth_head_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of \\('bins', 'regression'\\), got 'log'"):
        LinearDepthHead(in_channels=8, mode='log')
    with pytest.raises(ValueError, match='min_depth < max_depth'):
        LinearDepthHead(in_channels=8, min_depth=5.0, max_depth=1.0)
    with pytest.raises(TypeError, match='derives num_classes'):
        LinearDepthHead(in_channels=8, num_classes=3)


def test_gradient_loss_is_scale_invariant():
    loss = DepthGradientLoss(num_scales=2, loss_weight=1.0)
    gt = torch.rand(1, 1, 8, 8) + 1
    assert loss(gt * 3.0, gt).item() == pytest.approx(0.0, abs=1e-6)
    noisy = gt * (1 + 0.5 * torch.rand_like(gt))
    assert loss(noisy, gt).item() > 0.01
    with pytest.raises(ValueError, match='same shape'):
        loss(gt, gt[..., :4])


def seg_samples(labels):
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def test_linear_seg_head_loss_matches_mmseg_base_head():
    """The head's loss_by_feat (resize_bilinear, argmax accuracy) gives mmseg's loss and accuracy
    and the same gradients as BaseDecodeHead.loss_by_feat (F.interpolate, topk accuracy)."""
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    torch.manual_seed(0)
    head = LinearSegHead(in_channels=64, in_index=3, num_classes=5, ignore_index=255)
    logits = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 24, 32))
    labels[:, :3] = 255
    samples = seg_samples(labels)
    got_logits = logits.clone().requires_grad_()
    got = head.loss_by_feat(got_logits, samples)
    want_logits = logits.clone().requires_grad_()
    want = BaseDecodeHead.loss_by_feat(head, want_logits, samples)
    assert set(got) == set(want) == {'loss_ce', 'acc_seg'}
    torch.testing.assert_close(got['loss_ce'], want['loss_ce'], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got['acc_seg'], want['acc_seg'].float())
    got['loss_ce'].backward()
    want['loss_ce'].backward()
    torch.testing.assert_close(got_logits.grad, want_logits.grad, rtol=1e-10, atol=1e-12)


def test_top1_accuracy_matches_mmseg_and_checks_shapes():
    from mmseg.models.losses import accuracy
    from gspn2_dense.models.losses import top1_accuracy
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 10, 11)
    labels = torch.randint(0, 7, (3, 10, 11))
    labels[0, :4] = 255
    torch.testing.assert_close(top1_accuracy(logits, labels, 255), accuracy(logits, labels, ignore_index=255))
    all_ignored = torch.full_like(labels, 255)
    torch.testing.assert_close(top1_accuracy(logits, all_ignored, 255),
                               accuracy(logits, all_ignored, ignore_index=255))
    with pytest.raises(ValueError, match=r'logits \(N, C, \*S\) and labels \(N, \*S\), got \(3, 7, 10, 11\) '
                                         r'and \(3, 10, 12\)'):
        top1_accuracy(logits, labels[..., :1].expand(3, 10, 12), 255)
