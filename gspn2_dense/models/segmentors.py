"""Depth segmentor with working ``whole``, ``slide`` and ``slide_flip`` inference (mmseg ``MODELS``).

mmseg 1.2.2's ``DepthEstimator.inference`` runs the sliding window and then overwrites its result
with a whole-image pass (``if mode == 'slide' ... if mode == 'slide_flip' ... else whole``), and the
inherited ``EncoderDecoder.slide_inference`` sizes its accumulator by ``decode_head.out_channels``
(the number of depth bins for a bin-classification head) instead of by the depth map it receives;
the sliding window also writes each window's size into the caller's ``img_shape`` meta, so the
whole-image pass that follows is resized to the last window.
:class:`DepthEncoderDecoder` keeps everything else of ``DepthEstimator`` and replaces inference.
"""
from typing import List

import torch
import torch.nn.functional as F
from mmseg.models.segmentors import DepthEstimator
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class DepthEncoderDecoder(DepthEstimator):
    """Backbone + depth decode head; ``test_cfg.mode`` is ``'whole'``, ``'slide'`` or ``'slide_flip'``.

    For the sliding modes ``test_cfg`` needs ``crop_size=(h, w)`` and ``stride=(h, w)``; windows
    that overlap are averaged. ``'slide_flip'`` averages each window with its horizontally flipped
    prediction. The decode head's ``predict`` must return a depth map of shape (N, 1, h, w).
    """

    TEST_MODES = ('whole', 'slide', 'slide_flip')

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        mode = self.test_cfg.get('mode', 'whole')
        if mode not in self.TEST_MODES:
            raise ValueError(f'test_cfg.mode must be one of {self.TEST_MODES}, got {mode!r}')
        if mode == 'whole':
            return self.whole_inference(inputs, batch_img_metas)
        return self.slide_inference(inputs, batch_img_metas, flip=mode == 'slide_flip')

    def slide_inference(self, inputs: Tensor, batch_img_metas: List[dict], flip: bool = False) -> Tensor:
        """Average the depth predicted on overlapping ``crop_size`` windows moved by ``stride``.

        A window larger than the image is clipped to the image; the caller's metas are not modified.
        """
        for key in ('crop_size', 'stride'):
            if key not in self.test_cfg:
                raise KeyError(f"test_cfg.mode={self.test_cfg.get('mode')!r} needs test_cfg.{key}")
        h_stride, w_stride = self.test_cfg['stride']
        h_crop, w_crop = self.test_cfg['crop_size']
        if min(h_stride, w_stride, h_crop, w_crop) <= 0:
            raise ValueError(f'test_cfg.crop_size and stride must be positive, got crop_size='
                             f"{self.test_cfg['crop_size']}, stride={self.test_cfg['stride']}")
        batch_size, _, h_img, w_img = inputs.shape
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        preds = None
        count = inputs.new_zeros((batch_size, 1, h_img, w_img))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, h_img)
                x2 = min(w_idx * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                crop = inputs[:, :, y1:y2, x1:x2]
                crop_metas = [dict(meta, img_shape=crop.shape[2:]) for meta in batch_img_metas]
                depth = self.encode_decode(crop, crop_metas)
                if flip:
                    depth_flip = self.encode_decode(crop.flip(dims=(3, )), crop_metas).flip(dims=(3, ))
                    depth = (depth + depth_flip) / 2.0
                if preds is None:
                    preds = inputs.new_zeros((batch_size, depth.shape[1], h_img, w_img))
                preds += F.pad(depth, (x1, w_img - x2, y1, h_img - y2))
                count[:, :, y1:y2, x1:x2] += 1
        return preds / count
