"""Linear-probe decode heads for frozen backbones (mmseg ``MODELS``).

The two heads follow the linear-evaluation protocol of DINOv2 (Oquab et al., 2023, §7.4 and
appendix) and RADIO: a BatchNorm over the frozen features followed by one 1x1 convolution.

* :class:`LinearSegHead` — semantic segmentation; ``in_index=-1`` is the "linear" variant (last
  stage only), ``in_index=[0, 1, 2, 3]`` with ``input_transform='resize_concat'`` is the
  "multi-scale" variant (every stage resized to the finest one and concatenated).
* :class:`LinearDepthHead` — monocular depth, either classification over uniformly spaced depth
  bins turned into depth by a softmax-weighted sum of the bin centres, or direct regression.
"""
from typing import List, Optional, Sequence, Union

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from .losses import top1_accuracy
from .resize import resize_bilinear


def _total_channels(in_channels: Union[int, Sequence[int]], input_transform: Optional[str]) -> int:
    if input_transform == 'resize_concat':
        if not isinstance(in_channels, (list, tuple)):
            raise TypeError(f"input_transform='resize_concat' needs a list of in_channels, "
                            f'got {in_channels!r}')
        return int(sum(in_channels))
    if not isinstance(in_channels, int):
        raise TypeError(f'in_channels must be an int when input_transform is '
                        f'{input_transform!r}, got {in_channels!r}')
    return in_channels


class _LinearProbeHead(BaseDecodeHead):
    """BatchNorm + dropout + 1x1 conv over the selected (and possibly concatenated) features.

    ``channels`` of :class:`BaseDecodeHead` is fixed to the number of input channels: there is no
    hidden layer, the 1x1 convolution ``conv_seg`` is the whole linear map.
    """

    def __init__(self, in_channels: Union[int, Sequence[int]], input_transform: Optional[str] = None,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True), **kwargs):
        if 'channels' in kwargs:
            raise TypeError(f'{type(self).__name__} sets channels to the number of input channels; '
                            f"do not pass channels (got {kwargs['channels']})")
        channels = _total_channels(in_channels, input_transform)
        super().__init__(in_channels=in_channels, channels=channels, input_transform=input_transform,
                         norm_cfg=norm_cfg, **kwargs)
        self.bn = build_norm_layer(norm_cfg, channels)[1]

    def _features(self, inputs: Sequence[Tensor]) -> Tensor:
        x = self._transform_inputs(inputs)
        x = self.bn(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return x

    def _sum_losses(self, *args, **kwargs) -> dict:
        """Every ``loss_decode`` module on the same arguments, summed per ``loss_name``."""
        losses = dict()
        loss_modules = self.loss_decode if isinstance(self.loss_decode, torch.nn.ModuleList) else [self.loss_decode]
        for loss_module in loss_modules:
            value = loss_module(*args, **kwargs)
            losses[loss_module.loss_name] = losses.get(loss_module.loss_name, 0) + value
        return losses


@MODELS.register_module()
class LinearSegHead(_LinearProbeHead):
    """Linear segmentation probe: ``conv1x1(BN(features))`` -> per-pixel class logits.

    Args:
        in_channels (int | list[int]): channels of the selected stage, or of every selected stage
            for ``input_transform='resize_concat'``.
        num_classes (int): number of classes.
        norm_cfg (dict): the BatchNorm (``SyncBN`` under DDP on GPUs).
        **kwargs: the remaining arguments of mmseg's ``BaseDecodeHead`` (``in_index``,
            ``dropout_ratio``, ``loss_decode``, ``align_corners``, ``ignore_index``...).
    """

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.cls_seg(self._features(inputs))

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples: SampleList) -> dict:
        """mmseg's ``BaseDecodeHead.loss_by_feat`` (logits resized to the label, ``loss_decode``,
        ``acc_seg``), with the resize's backward as matrix products (:func:`resize_bilinear`) and
        the accuracy through ``argmax`` (:func:`top1_accuracy`): the same values, and the head's
        step at 2048 px no longer dominated by atomics and ``topk``."""
        seg_label = self._stack_batch_gt(batch_data_samples)
        seg_logits = resize_bilinear(seg_logits, seg_label.shape[2:], self.align_corners)
        seg_weight = None if self.sampler is None else self.sampler.sample(seg_logits, seg_label)
        seg_label = seg_label.squeeze(1)
        losses = self._sum_losses(seg_logits, seg_label, weight=seg_weight, ignore_index=self.ignore_index)
        losses['acc_seg'] = top1_accuracy(seg_logits, seg_label, self.ignore_index)
        return losses


@MODELS.register_module()
class LinearDepthHead(_LinearProbeHead):
    """Linear depth probe over frozen features.

    ``mode='bins'``: the 1x1 conv predicts ``num_bins`` logits per pixel; depth is
    ``sum_k softmax(logits)_k * centre_k`` with centres uniformly spaced in
    ``[min_depth, max_depth]`` (bin k covers ``[min + k*w, min + (k+1)*w]``, ``w = (max-min)/K``).
    ``mode='regression'``: the 1x1 conv predicts one value ``r`` and depth is
    ``min_depth + (max_depth - min_depth) * sigmoid(r)``.

    The depth map at feature resolution is bilinearly upsampled to the target size; the losses
    (``loss_decode``: SILog by default, optionally a gradient loss as a second entry) are computed
    at the ground truth's resolution on pixels with ``min_depth < gt <= max_depth``.

    Args:
        in_channels (int | list[int]): as for :class:`LinearSegHead`.
        mode (str): ``'bins'`` or ``'regression'``.
        num_bins (int): number of depth bins for ``mode='bins'``. Defaults to 256.
        min_depth (float): smallest predicted and evaluated depth in metres. Defaults to 1e-3.
        max_depth (float): largest depth in metres (10 for NYUv2). Defaults to 10.
        loss_decode (dict | list[dict]): losses on ``(pred, gt)`` maps of shape (N, 1, H, W).
    """

    MODES = ('bins', 'regression')

    def __init__(self, in_channels: Union[int, Sequence[int]], mode: str = 'bins', num_bins: int = 256,
                 min_depth: float = 1e-3, max_depth: float = 10.0,
                 loss_decode: Union[ConfigType, List[ConfigType]] = dict(type='SiLogLoss', loss_weight=1.0),
                 **kwargs):
        if mode not in self.MODES:
            raise ValueError(f'mode must be one of {self.MODES}, got {mode!r}')
        if mode == 'bins' and num_bins < 2:
            raise ValueError(f'mode="bins" needs num_bins >= 2, got {num_bins}')
        if not 0 <= min_depth < max_depth:
            raise ValueError(f'need 0 <= min_depth < max_depth, got min_depth={min_depth}, '
                             f'max_depth={max_depth}')
        for key in ('num_classes', 'out_channels'):
            if key in kwargs:
                raise TypeError(f'LinearDepthHead derives {key} from mode/num_bins; do not pass '
                                f'{key} (got {kwargs[key]})')
        out_channels = num_bins if mode == 'bins' else 1
        super().__init__(in_channels=in_channels, num_classes=out_channels, out_channels=out_channels,
                         threshold=0.0, loss_decode=loss_decode, **kwargs)
        self.mode = mode
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        if mode == 'bins':
            width = (max_depth - min_depth) / num_bins
            centres = min_depth + width * (torch.arange(num_bins, dtype=torch.float32) + 0.5)
            self.register_buffer('bin_centres', centres.view(1, num_bins, 1, 1), persistent=False)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Return the depth map in metres at feature resolution, shape (N, 1, h, w)."""
        out = self.cls_seg(self._features(inputs))
        if self.mode == 'bins':
            probs = out.float().softmax(dim=1)
            return (probs * self.bin_centres).sum(dim=1, keepdim=True)
        return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(out.float())

    @staticmethod
    def _stack_batch_gt(batch_data_samples: SampleList) -> Tensor:
        return torch.stack([sample.gt_depth_map.data for sample in batch_data_samples], dim=0)

    def loss_by_feat(self, seg_logits: Tensor, batch_data_samples: SampleList) -> dict:
        """Depth losses: ``seg_logits`` is the depth map returned by :meth:`forward`."""
        gt = self._stack_batch_gt(batch_data_samples).to(seg_logits)
        pred = resize_bilinear(seg_logits, gt.shape[2:], self.align_corners)
        valid = (gt > self.min_depth) & (gt <= self.max_depth)
        # SiLogLoss ignores pixels whose target is ~0: zero the invalid ones in the target.
        target = torch.where(valid, gt, torch.zeros_like(gt))
        return self._sum_losses(pred, target)
