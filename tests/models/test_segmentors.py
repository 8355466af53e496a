import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.models.segmentors import DepthEstimator
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import gspn2_dense  # noqa: F401  (registers DepthEncoderDecoder and the heads)

init_default_scope('mmseg')


@MODELS.register_module()
class _PointwiseStandIn(BaseModule):
    """A stride-1 backbone with no spatial context (one 1x1 conv), or a global-context one."""

    def __init__(self, global_context=False, channels=4):
        super().__init__()
        self.proj = nn.Conv2d(3, channels, 1)
        self.global_context = global_context

    def forward(self, x):
        y = self.proj(x)
        if self.global_context:
            y = y + y.mean(dim=(2, 3), keepdim=True)
        return [y]


def build(segmentor='DepthEncoderDecoder', mode='whole', global_context=False, head_mode='bins'):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type=segmentor,
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(type='_PointwiseStandIn', global_context=global_context),
        decode_head=dict(type='LinearDepthHead', in_channels=4, in_index=0, mode=head_mode, num_bins=8,
                         max_depth=10.0),
        test_cfg=ConfigDict(mode=mode, crop_size=(8, 8), stride=(6, 6))))
    return model.eval()


def infer(model, inputs):
    metas = [dict(ori_shape=inputs.shape[2:], img_shape=inputs.shape[2:], pad_shape=inputs.shape[2:],
                  padding_size=[0, 0, 0, 0])] * inputs.shape[0]
    with torch.no_grad():
        return model.inference(inputs, metas)


@pytest.mark.parametrize('head_mode', ['bins', 'regression'])
def test_slide_equals_whole_without_spatial_context(head_mode):
    inputs = torch.randn(2, 3, 13, 17)
    whole = infer(build(mode='whole', head_mode=head_mode), inputs)
    slide = infer(build(mode='slide', head_mode=head_mode), inputs)
    assert whole.shape == slide.shape == (2, 1, 13, 17)
    torch.testing.assert_close(slide, whole)


def test_slide_differs_from_whole_with_global_context():
    inputs = torch.randn(1, 3, 13, 17) + torch.linspace(-3, 3, 17)
    whole = infer(build(mode='whole', global_context=True), inputs)
    slide = infer(build(mode='slide', global_context=True), inputs)
    assert slide.shape == (1, 1, 13, 17)
    assert (slide - whole).abs().max() > 1e-3
    # Windows that see only the left or only the right of the gradient give different depth there.
    flip = infer(build(mode='slide_flip', global_context=True), inputs)
    assert flip.shape == (1, 1, 13, 17)


def test_mmseg_depth_estimator_overwrites_slide_with_whole():
    """The mmseg 1.2.2 behaviour DepthEncoderDecoder fixes: 'slide' runs the windows, then a whole
    pass overwrites them, resized to the last window's size (slide writes it into the shared meta)."""
    inputs = torch.randn(1, 3, 13, 17) + torch.linspace(-3, 3, 17)
    ours_whole = infer(build(mode='whole', global_context=True), inputs)
    theirs_slide = infer(build(segmentor='DepthEstimator', mode='slide', global_context=True), inputs)
    assert theirs_slide.shape == (1, 1, 8, 8)
    torch.testing.assert_close(theirs_slide, F.interpolate(ours_whole, size=(8, 8), mode='bilinear'))
    assert isinstance(build(), DepthEstimator)


def test_slide_mode_needs_crop_size_and_valid_mode():
    model = build(mode='slide')
    del model.test_cfg['crop_size']
    with pytest.raises(KeyError, match='needs test_cfg.crop_size'):
        infer(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="test_cfg.mode must be one of .*got 'tiles'"):
        infer(build(mode='tiles'), torch.randn(1, 3, 8, 8))
