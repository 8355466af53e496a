"""Depth losses that mmseg lacks (mmseg ``MODELS``), and the heads' training accuracy."""
import torch
import torch.nn as nn
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class DepthGradientLoss(nn.Module):
    """Multi-scale gradient-matching loss on log depth (Li & Snavely, MegaDepth, CVPR 2018).

    With ``R = log(pred) - log(gt)`` on valid pixels, the loss at one scale is the mean of
    ``|R(i, j+1) - R(i, j)|`` and ``|R(i+1, j) - R(i, j)|`` over pairs of valid neighbours; scales
    are obtained by taking every ``2**s``-th pixel. Pixels with ``gt <= eps`` are invalid.

    Args:
        num_scales (int): number of scales. Defaults to 4.
        loss_weight (float): weight of the loss. Defaults to 0.5.
        eps (float): smallest valid depth. Defaults to 1e-3.
        loss_name (str): key of the loss in the loss dict. Defaults to ``'loss_grad'``.
    """

    def __init__(self, num_scales: int = 4, loss_weight: float = 0.5, eps: float = 1e-3,
                 loss_name: str = 'loss_grad'):
        super().__init__()
        if num_scales < 1:
            raise ValueError(f'num_scales must be >= 1, got {num_scales}')
        self.num_scales = num_scales
        self.loss_weight = loss_weight
        self.eps = eps
        self._loss_name = loss_name

    def forward(self, pred: Tensor, target: Tensor, **kwargs) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f'pred and target must have the same shape, got {tuple(pred.shape)} '
                             f'and {tuple(target.shape)}')
        valid = target > self.eps
        diff = torch.where(valid, pred.clamp(min=self.eps).log() - target.clamp(min=self.eps).log(),
                           torch.zeros_like(pred))
        total = pred.new_zeros(())
        for scale in range(self.num_scales):
            step = 2 ** scale
            r, m = diff[..., ::step, ::step], valid[..., ::step, ::step]
            mx = m[..., :, 1:] & m[..., :, :-1]
            my = m[..., 1:, :] & m[..., :-1, :]
            gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * mx
            gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * my
            count = mx.sum() + my.sum()
            if count > 0:
                total = total + (gx.sum() + gy.sum()) / count
        return self.loss_weight * total / self.num_scales

    @property
    def loss_name(self) -> str:
        return self._loss_name


def top1_accuracy(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """mmseg's ``accuracy(logits, labels, ignore_index=...)`` (top-1, in percent, shape (1,)),
    through ``argmax`` instead of ``topk``: ``topk`` over the class dimension of a full-resolution
    map took 69 ms of the linear-probe head's step at 2048 px on an H100, ``argmax`` is one
    reduction. The count stays on the device (mmseg's ``numel`` of a masked tensor waits for it).
    Where two classes tie for the maximum the two may pick different ones."""
    if logits.dim() != labels.dim() + 1 or logits.shape[0] != labels.shape[0] \
            or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f'top1_accuracy expects logits (N, C, *S) and labels (N, *S), got '
                         f'{tuple(logits.shape)} and {tuple(labels.shape)}')
    with torch.no_grad():
        valid = labels != ignore_index
        correct = ((logits.argmax(dim=1) == labels) & valid).sum().float()
        eps = torch.finfo(torch.float32).eps
        return ((correct + eps) * 100.0 / (valid.sum().float() + eps)).reshape(1)
