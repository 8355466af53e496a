"""Reading open_clip_train checkpoints and extracting the GSPN-2 image tower from them.

An ``open_clip_train`` checkpoint is ``{'epoch', 'name', 'state_dict', 'optimizer', ...}``
whose ``state_dict`` keys carry a ``module.`` prefix when it was written by a DDP run; the image
tower is open_clip's ``TimmModel`` around the timm backbone. :func:`convert_clip_to_backbone` is
the model file's :func:`~gspn2_dense.models.gspn2.checkpoint_filter_fn` (which knows that
layout, as every other) plus a save: it writes the trunk alone, with plain timm keys, as
``{'state_dict': ..., 'meta': ...}``. The file loads with ``timm.create_model(variant,
pretrained=True, pretrained_cfg_overlay=dict(file=...))`` and through the mmseg ``GSPN2``
backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

Files are read with the toolkit's one loading helper
(:func:`gspn2_dense.engine.checkpoint.load_checkpoint_file`), so a truncated, foreign or
wrong-kind file is refused with a message saying what it is and what to do.
"""
import os
from typing import Dict, Optional

import torch
from torch import nn

from gspn2_dense.engine.checkpoint import (CheckpointError, check_output_path,
                                           check_state_dict_fits, checkpoint_kind, describe_kind,
                                           load_checkpoint_file, save_checkpoint_file,
                                           state_dict_of)
from gspn2_dense.models.gspn2 import checkpoint_filter_fn

__all__ = ['convert_clip_to_backbone', 'extract_image_tower', 'load_clip_state_dict',
           'load_clip_weights']

_EXPECTED = ('an open_clip_train checkpoint (epoch_N.pt: a dict with a "state_dict" entry) or a '
             'CLIP state dict')


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The model weights of an open_clip(_train) checkpoint, without any DDP ``module.`` prefix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'CLIP checkpoint {path!r} does not exist')
    checkpoint = load_checkpoint_file(path, map_location='cpu', expected=_EXPECTED)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path}: expected a dict checkpoint (a state dict, or open_clip_train\'s '
                              f'dict with a "state_dict" entry), got {type(checkpoint).__name__}')
    kind = checkpoint_kind(checkpoint)
    if kind in ('segmentor', 'backbone'):
        what, advice = describe_kind(kind)
        raise CheckpointError(f'{path} is {what}, not a CLIP checkpoint; expected {_EXPECTED}. '
                              f'{advice}')
    return state_dict_of(checkpoint)


def load_clip_weights(model: nn.Module, path: str, model_name: Optional[str] = None) -> None:
    """Load CLIP checkpoint ``path`` into ``model`` strictly, with a short summary of a mismatch."""
    state_dict = load_clip_state_dict(path)
    name = f' {model_name}' if model_name else ''
    check_state_dict_fits(model, state_dict, path, expected=f'a CLIP checkpoint of model{name}',
                          advice='pass the --model the checkpoint was trained with')
    model.load_state_dict(state_dict)


def extract_image_tower(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The GSPN-2 trunk of a CLIP state dict: :func:`checkpoint_filter_fn` of it, which raises
    ``ValueError`` for a CLIP model without a GSPN-2 tower (e.g. a ViT)."""
    kind = checkpoint_kind(state_dict)
    if kind != 'clip':
        raise CheckpointError(f'expected a CLIP state dict (open_clip keys), got '
                              f'{describe_kind(kind)[0]}')
    return checkpoint_filter_fn(state_dict)


def convert_clip_to_backbone(src: str, dst: str, overwrite: bool = False) -> Dict[str, torch.Tensor]:
    """Write the image tower of CLIP checkpoint ``src`` to ``dst`` as a backbone checkpoint.

    ``dst`` is written atomically; it may not be ``src``, nor an existing file unless
    ``overwrite=True``. Both are checked before ``src`` is read.
    """
    check_output_path(dst, source=src, overwrite=overwrite)  # before the (possibly long) read
    state_dict = load_clip_state_dict(src)
    try:
        trunk = extract_image_tower(state_dict)
    except ValueError as err:
        raise CheckpointError(f'{src}: {err}') from None
    save_checkpoint_file({'state_dict': trunk, 'meta': {'source': os.path.abspath(src),
                                                        'converted_from': 'open_clip image tower'}},
                         dst, source=src, overwrite=overwrite)
    return trunk
