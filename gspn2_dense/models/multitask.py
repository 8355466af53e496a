"""Multi-task dense prediction: one backbone, a dict of task heads (mmseg ``MODELS``).

* :class:`MultiTaskSegmentor` -- backbone (``GSPN2`` or ``TimmFeatures``), an optional shared
  decoder and one head per task, with per-task loss weights. ``freeze_backbone=True`` is the
  frozen-backbone protocol (linear probes); ``False`` fine-tunes everything.
* Heads (:class:`TaskHead` subclasses): BatchNorm + 1x1 conv over the selected stages (a linear
  probe), optionally preceded by ``num_convs`` 3x3 conv-BN-ReLU layers (per-task output layers
  on top of the shared decoder). :class:`SegTaskHead` (semseg, human parts),
  :class:`BinaryTaskHead` (saliency, edges), :class:`DepthTaskHead`, :class:`NormalsTaskHead`.
* :class:`MultiScaleFusionDecoder` -- a light decoder shared by the tasks: every stage projected
  to ``channels``, upsampled to the finest stage, summed and fused by a 3x3 conv.
* Losses: mmseg's ``CrossEntropyLoss`` for class maps, :class:`BalancedBCELoss` (saliency;
  edges with the usual fixed positive weight 0.95), :class:`MaskedL1Loss` (depth) and
  :class:`NormalsLoss` (L1 on unit normals, or cosine).
* :class:`MultiTaskDataPreProcessor` -- mmseg's pre-processor, also padding every task's label
  when a training batch is padded, and padding test batches to the same size divisor.

Labels and predictions live in the data sample as ``gt_<field>`` / ``pred_<field>``
(:data:`~gspn2_dense.datasets.multitask.TASK_FIELDS`).
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, SampleList
from torch import Tensor

from gspn2_dense.datasets.multitask import IGNORE_INDEX, IGNORE_VALUES, TASK_FIELDS

from .resize import resize_bilinear

_FIELD_TASKS = {field: task for task, field in TASK_FIELDS.items()}


def _gt(data_samples: SampleList, task: str) -> Tensor:
    field = 'gt_' + TASK_FIELDS[task]
    missing = [i for i, s in enumerate(data_samples) if field not in s]
    if missing:
        raise KeyError(f'task {task!r} needs {field} in every data sample; samples {missing} have '
                       f'fields {sorted(data_samples[missing[0]].keys())} (is {task!r} in the '
                       "dataset's tasks?)")
    return torch.stack([s.get(field).data for s in data_samples], dim=0)


# --------------------------------------------------------------------------- losses


@MODELS.register_module()
class BalancedBCELoss(nn.Module):
    """Class-balanced binary cross-entropy on logits (saliency, edges).

    ``loss = mean over valid pixels of -(w * y * log p + (1 - w) * (1 - y) * log(1 - p))`` with
    ``w = pos_weight`` when given (0.95 for edges in the multi-task codebases) and otherwise the
    fraction of negative pixels among the valid pixels of the batch.
    """

    def __init__(self, pos_weight: Optional[float] = None, ignore_index: int = IGNORE_INDEX,
                 loss_weight: float = 1.0, loss_name: str = 'loss_bce') -> None:
        super().__init__()
        if pos_weight is not None and not 0 < pos_weight < 1:
            raise ValueError(f'pos_weight must be None or in (0, 1), got {pos_weight}')
        self.pos_weight, self.ignore_index, self.loss_weight = pos_weight, ignore_index, loss_weight
        self._loss_name = loss_name

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = target != self.ignore_index
        y = (target == 1).to(logits.dtype)
        num_valid = valid.sum()
        if num_valid == 0:
            return logits.sum() * 0.0
        w = self.pos_weight if self.pos_weight is not None else \
            ((y == 0) & valid).sum().to(logits.dtype) / num_valid
        loss_pos = F.logsigmoid(logits)  # log p
        loss_neg = F.logsigmoid(-logits)  # log (1 - p)
        loss = -(w * y * loss_pos + (1 - w) * (1 - y) * loss_neg)
        return self.loss_weight * (loss * valid).sum() / num_valid

    @property
    def loss_name(self) -> str:
        return self._loss_name


@MODELS.register_module()
class MaskedL1Loss(nn.Module):
    """Mean ``|pred - target|`` over pixels with ``target > min_valid`` (depth: 0 is invalid)."""

    def __init__(self, min_valid: float = 0.0, loss_weight: float = 1.0, loss_name: str = 'loss_l1') -> None:
        super().__init__()
        self.min_valid, self.loss_weight, self._loss_name = min_valid, loss_weight, loss_name

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = target > self.min_valid
        if not valid.any():
            return pred.sum() * 0.0
        return self.loss_weight * (pred - target).abs()[valid].mean()

    @property
    def loss_name(self) -> str:
        return self._loss_name


@MODELS.register_module()
class NormalsLoss(nn.Module):
    """Surface-normal loss over pixels whose label is a unit vector (norm > 0.5).

    ``mode='l1'``: mean over valid pixels of ``sum_c |n_pred - n_gt|`` with both normalised
    (the multi-task codebases' normalised L1); ``mode='cosine'``: mean of ``1 - cos(n_pred, n_gt)``.
    """

    MODES = ('l1', 'cosine')

    def __init__(self, mode: str = 'l1', loss_weight: float = 1.0, loss_name: str = 'loss_normals') -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f'mode must be one of {self.MODES}, got {mode!r}')
        self.mode, self.loss_weight, self._loss_name = mode, loss_weight, loss_name

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = target.norm(dim=1) > 0.5
        if not valid.any():
            return pred.sum() * 0.0
        pred = F.normalize(pred, dim=1)
        target = F.normalize(target, dim=1)
        if self.mode == 'l1':
            per_pixel = (pred - target).abs().sum(dim=1)
        else:
            per_pixel = 1.0 - (pred * target).sum(dim=1)
        return self.loss_weight * per_pixel[valid].mean()

    @property
    def loss_name(self) -> str:
        return self._loss_name


# --------------------------------------------------------------------------- decoder and heads


@MODELS.register_module()
class MultiScaleFusionDecoder(BaseModule):
    """Shared multi-scale decoder: 1x1 conv-BN-ReLU per stage to ``channels``, upsample to the
    finest stage, sum, 3x3 conv-BN-ReLU. Returns a one-element list (the fused map)."""

    def __init__(self, in_channels: Sequence[int], channels: int = 128,
                 norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 align_corners: bool = False, init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, (list, tuple)) or not in_channels:
            raise TypeError(f'in_channels must be a non-empty list of stage channels, got {in_channels!r}')
        self.in_channels = list(in_channels)
        self.align_corners = align_corners
        self.lateral = nn.ModuleList(
            ConvModule(c, channels, 1, norm_cfg=norm_cfg, act_cfg=dict(type='ReLU')) for c in in_channels)
        self.fuse = ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'))

    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'MultiScaleFusionDecoder expects {len(self.in_channels)} stages with '
                             f'channels {self.in_channels}, got {len(inputs)}')
        size = inputs[0].shape[2:]
        out = 0
        for x, lateral in zip(inputs, self.lateral):
            y = lateral(x)
            if y.shape[2:] != size:
                y = resize_bilinear(y, size, self.align_corners)
            out = out + y
        return [self.fuse(out)]


class TaskHead(BaseModule):
    """BN + dropout + 1x1 conv over the selected features, preceded by ``num_convs`` 3x3 layers.

    Args:
        task: the task name (a key of ``TASK_FIELDS``); set by the segmentor from its ``heads`` key.
        in_channels: channels of the selected input, or of every selected stage for
            ``input_transform='resize_concat'``.
        in_index: which of the inputs (backbone stages, or the decoder's single map) to use.
        input_transform: ``None`` (one input) or ``'resize_concat'`` (resize to the first selected
            input and concatenate).
        num_convs: 3x3 conv-BN-ReLU layers (``channels`` wide) before the linear layer.
        loss_decode: the loss config.
    """

    def __init__(self, task: str, in_channels: Union[int, Sequence[int]], out_channels: int,
                 loss_decode: ConfigType, in_index: Union[int, Sequence[int]] = -1,
                 input_transform: Optional[str] = None, num_convs: int = 0, channels: int = 128,
                 dropout_ratio: float = 0.0, norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
                 align_corners: bool = False, init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if task not in TASK_FIELDS:
            raise KeyError(f'unknown task {task!r}; expected one of {tuple(TASK_FIELDS)}')
        if input_transform not in (None, 'resize_concat'):
            raise ValueError(f"input_transform must be None or 'resize_concat', got {input_transform!r}")
        if input_transform == 'resize_concat':
            if not isinstance(in_channels, (list, tuple)) or not isinstance(in_index, (list, tuple)) \
                    or len(in_channels) != len(in_index):
                raise TypeError("input_transform='resize_concat' needs lists in_channels and in_index of "
                                f'the same length, got {in_channels!r} and {in_index!r}')
            total = int(sum(in_channels))
        else:
            if not isinstance(in_channels, int) or not isinstance(in_index, int):
                raise TypeError(f'in_channels and in_index must be ints without input_transform, got '
                                f'{in_channels!r} and {in_index!r}')
            total = in_channels
        self.task = task
        self.in_index, self.input_transform = in_index, input_transform
        self.align_corners = align_corners
        self.convs = nn.Sequential(*[
            ConvModule(total if i == 0 else channels, channels, 3, padding=1, norm_cfg=norm_cfg,
                       act_cfg=dict(type='ReLU')) for i in range(num_convs)])
        width = channels if num_convs else total
        self.bn = build_norm_layer(norm_cfg, width)[1]
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_out = nn.Conv2d(width, out_channels, 1)
        self.loss_decode = MODELS.build(loss_decode)

    def _select(self, inputs: Sequence[Tensor]) -> Tensor:
        if self.input_transform is None:
            return inputs[self.in_index]
        selected = [inputs[i] for i in self.in_index]
        size = selected[0].shape[2:]
        return torch.cat([x if x.shape[2:] == size else
                          resize_bilinear(x, size, self.align_corners)
                          for x in selected], dim=1)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Raw output (logits or regression values) at feature resolution."""
        x = self.convs(self._select(inputs))
        return self.conv_out(self.dropout(self.bn(x)))

    def upsample(self, raw: Tensor, size) -> Tensor:
        return resize_bilinear(raw, size, self.align_corners)

    def loss(self, raw: Tensor, data_samples: SampleList) -> Dict[str, Tensor]:
        gt = _gt(data_samples, self.task)
        value = self.compute_loss(self.upsample(raw.float(), gt.shape[2:]), gt.to(raw.device))
        return {self.loss_decode.loss_name: value}

    def compute_loss(self, output: Tensor, gt: Tensor) -> Tensor:
        raise NotImplementedError

    def postprocess(self, output: Tensor) -> Tensor:
        """Prediction (N, C, H, W) from the upsampled raw output."""
        raise NotImplementedError


@MODELS.register_module()
class SegTaskHead(TaskHead):
    """Per-pixel classification (semseg, human parts); predicts the arg-max class (N, 1, H, W)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 loss_decode: ConfigType = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                                                avg_non_ignore=True), **kwargs) -> None:
        if num_classes < 2:
            raise ValueError(f'num_classes must be >= 2, got {num_classes}')
        super().__init__(out_channels=num_classes, loss_decode=loss_decode, **kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def compute_loss(self, output: Tensor, gt: Tensor) -> Tensor:
        return self.loss_decode(output, gt[:, 0].long(), ignore_index=self.ignore_index)

    def postprocess(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1, keepdim=True)


@MODELS.register_module()
class BinaryTaskHead(TaskHead):
    """Binary maps (saliency, edges); predicts the foreground probability (N, 1, H, W)."""

    def __init__(self, loss_decode: ConfigType = dict(type='BalancedBCELoss'), **kwargs) -> None:
        super().__init__(out_channels=1, loss_decode=loss_decode, **kwargs)

    def compute_loss(self, output: Tensor, gt: Tensor) -> Tensor:
        return self.loss_decode(output, gt)

    def postprocess(self, output: Tensor) -> Tensor:
        return output.sigmoid()


@MODELS.register_module()
class DepthTaskHead(TaskHead):
    """Depth regression: ``min_depth + (max_depth - min_depth) * sigmoid(r)`` metres (N, 1, H, W)."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0,
                 loss_decode: ConfigType = dict(type='MaskedL1Loss'), **kwargs) -> None:
        if not 0 <= min_depth < max_depth:
            raise ValueError(f'need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}')
        super().__init__(out_channels=1, loss_decode=loss_decode, **kwargs)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)

    def _depth(self, output: Tensor) -> Tensor:
        return self.min_depth + (self.max_depth - self.min_depth) * torch.sigmoid(output)

    def compute_loss(self, output: Tensor, gt: Tensor) -> Tensor:
        return self.loss_decode(self._depth(output), gt)

    def postprocess(self, output: Tensor) -> Tensor:
        return self._depth(output)


@MODELS.register_module()
class NormalsTaskHead(TaskHead):
    """Surface normals: three channels normalised to unit vectors (N, 3, H, W)."""

    def __init__(self, loss_decode: ConfigType = dict(type='NormalsLoss'), **kwargs) -> None:
        super().__init__(out_channels=3, loss_decode=loss_decode, **kwargs)

    def compute_loss(self, output: Tensor, gt: Tensor) -> Tensor:
        return self.loss_decode(output, gt)

    def postprocess(self, output: Tensor) -> Tensor:
        return F.normalize(output, dim=1)


# --------------------------------------------------------------------------- pre-processor and segmentor


@MODELS.register_module()
class MultiTaskDataPreProcessor(SegDataPreProcessor):
    """mmseg's ``SegDataPreProcessor``; in training every task's label is padded to the batch's
    input size (bottom and right, with the task's ignore value), as mmseg pads ``gt_sem_seg``.

    Test batches are padded (bottom and right) to ``size_divisor`` as training batches are,
    unless ``test_cfg`` says otherwise (``dict()``: no padding); the segmentor crops its
    predictions back to each ``img_shape``. mmseg's docstring promises this default but its code
    pads test batches only under an explicit ``test_cfg``: without it a test image whose sides are
    not multiples of the backbone's stride gives stage maps whose last row and column come from
    partly empty windows and that no longer line up when resized to stride 4, which training never
    showed (a depth probe on 72x96 images tested worse than a constant, issue 16).
    """

    def __init__(self, *args, test_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, test_cfg=test_cfg, **kwargs)
        if test_cfg is None and self.size_divisor is not None:
            self.test_cfg = dict(size_divisor=self.size_divisor)

    def forward(self, data: dict, training: bool = False) -> dict:
        sizes = None
        if training:  # mmseg pads gt_sem_seg / gt_depth_map / gt_edge_map with seg_pad_val: redo it
            sizes = [{key: sample.get(key).data.shape[-2:] for key in sample.keys() if self._is_label(key)}
                     for sample in data['data_samples']]
        out = super().forward(data, training)
        if training:
            h, w = out['inputs'].shape[2:]
            for sample, sample_sizes in zip(out['data_samples'], sizes):
                for key, (h0, w0) in sample_sizes.items():
                    label = sample.get(key).data[..., :h0, :w0]
                    value = IGNORE_VALUES[_FIELD_TASKS[key[3:]]]
                    setattr(sample, key, PixelData(data=F.pad(label, (0, w - w0, 0, h - h0), value=value)))
        return out

    @staticmethod
    def _is_label(key: str) -> bool:
        return key.startswith('gt_') and key[3:] in _FIELD_TASKS


@MODELS.register_module()
class MultiTaskSegmentor(BaseSegmentor):
    """One backbone, an optional shared decoder and one head per task.

    Args:
        backbone: the backbone config (any mmseg backbone returning NCHW stage maps).
        heads: ``{task: head config}``; the key is passed to the head as ``task``.
        head_defaults: entries shared by every head config (e.g. ``in_channels``, ``in_index``,
            ``input_transform``, ``norm_cfg``), overridden by a head's own entries; a config
            for another backbone then changes one line.
        decoder: an optional shared decoder (e.g. :class:`MultiScaleFusionDecoder`) whose output
            list the heads read instead of the backbone stages.
        loss_weights: ``{task: weight}`` multiplying each task's loss (default 1 for every task).
        freeze_backbone: no gradient into the backbone and the backbone kept in eval mode (the
            frozen-backbone protocol); its forward then runs under ``torch.no_grad()``.
        test_cfg: ``dict(mode='whole')`` (the only mode).
    """

    def __init__(self, backbone: ConfigType, heads: Dict[str, ConfigType], decoder: OptConfigType = None,
                 head_defaults: OptConfigType = None, loss_weights: Optional[Dict[str, float]] = None, freeze_backbone: bool = False,
                 data_preprocessor: OptConfigType = None, train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None, init_cfg: OptConfigType = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not isinstance(heads, dict) or not heads:
            raise TypeError(f'heads must be a non-empty dict of task -> head config, got {heads!r}')
        unknown = [t for t in heads if t not in TASK_FIELDS]
        if unknown:
            raise KeyError(f'unknown tasks {unknown} in heads; expected names from {tuple(TASK_FIELDS)}')
        loss_weights = dict(loss_weights or {})
        extra = [t for t in loss_weights if t not in heads]
        if extra:
            raise KeyError(f'loss_weights names tasks without a head: {extra}; heads: {list(heads)}')
        test_cfg = dict(test_cfg or dict(mode='whole'))
        if test_cfg.get('mode', 'whole') != 'whole':
            raise ValueError(f"MultiTaskSegmentor supports test_cfg.mode='whole' only, got {test_cfg['mode']!r}")
        self.backbone = MODELS.build(backbone)
        self.decoder = MODELS.build(decoder) if decoder is not None else None
        head_defaults = dict(head_defaults or {})
        self.heads = nn.ModuleDict({task: MODELS.build(dict(head_defaults, **cfg, task=task))
                                    for task, cfg in heads.items()})
        self.tasks = tuple(heads)
        self.loss_weights = {task: float(loss_weights.get(task, 1.0)) for task in self.tasks}
        self.freeze_backbone = freeze_backbone
        self.train_cfg, self.test_cfg = train_cfg, test_cfg
        if freeze_backbone:
            for param in self.backbone.parameters():
                param.requires_grad = False
            self.backbone.eval()

    def train(self, mode: bool = True) -> 'MultiTaskSegmentor':
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        if self.freeze_backbone:
            with torch.no_grad():
                feats = list(self.backbone(inputs))
        else:
            feats = list(self.backbone(inputs))
        return self.decoder(feats) if self.decoder is not None else feats

    def _forward(self, inputs: Tensor, data_samples: OptConfigType = None) -> Dict[str, Tensor]:
        """Raw head outputs at feature resolution, ``{task: (N, C, h, w)}``."""
        feats = self.extract_feat(inputs)
        return {task: head(feats) for task, head in self.heads.items()}

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """Predictions at the input size, ``{task: (N, C, H, W)}`` (see each head's ``postprocess``)."""
        raw = self._forward(inputs)
        size = inputs.shape[2:]
        return {task: self.heads[task].postprocess(self.heads[task].upsample(out.float(), size))
                for task, out in raw.items()}

    def loss(self, inputs: Tensor, data_samples: SampleList) -> Dict[str, Tensor]:
        raw = self._forward(inputs)
        losses = {}
        for task, out in raw.items():
            for name, value in self.heads[task].loss(out, data_samples).items():
                losses[f'{task}.{name}'] = self.loss_weights[task] * value
        return losses

    def predict(self, inputs: Tensor, data_samples: OptConfigType = None) -> SampleList:
        """Set ``pred_<field>`` of every task on the data samples, cropped to each ``img_shape``."""
        if data_samples is None:
            from mmseg.structures import SegDataSample
            data_samples = [SegDataSample(metainfo=dict(img_shape=inputs.shape[2:])) for _ in inputs]
        preds = self.encode_decode(inputs, [s.metainfo for s in data_samples])
        for i, sample in enumerate(data_samples):
            h, w = sample.metainfo.get('img_shape', inputs.shape[2:])
            for task, pred in preds.items():
                setattr(sample, 'pred_' + TASK_FIELDS[task], PixelData(data=pred[i, :, :h, :w]))
        return data_samples
