"""Reading open_clip_train checkpoints and extracting the GSPN-2 image tower from them.

An ``open_clip_train`` checkpoint is ``{'epoch', 'name', 'state_dict', 'optimizer', ...}``
whose ``state_dict`` keys carry a ``module.`` prefix when it was written by a DDP run. The
image tower is open_clip's ``TimmModel``: the timm backbone under ``visual.trunk.`` and the
CLIP projection under ``visual.head.``. :func:`convert_clip_to_backbone` writes the trunk alone,
with plain timm keys, as ``{'state_dict': ..., 'meta': ...}``: the file loads with
``timm.create_model(variant, pretrained=True, pretrained_cfg_overlay=dict(file=...))`` and
through the mmseg ``GSPN2`` backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""
import os
from typing import Dict

import torch

__all__ = ['TRUNK_PREFIX', 'convert_clip_to_backbone', 'extract_image_tower',
           'load_clip_state_dict']

TRUNK_PREFIX = 'visual.trunk.'


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The model weights of an open_clip(_train) checkpoint, without any DDP ``module.`` prefix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'CLIP checkpoint {path!r} does not exist')
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path}: expected a dict checkpoint (a state dict, or open_clip_train\'s '
                         f'dict with a "state_dict" entry), got {type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint)
    return {key[len('module.'):] if key.startswith('module.') else key: value
            for key, value in state_dict.items()}


def extract_image_tower(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The timm trunk of a CLIP state dict, with the ``visual.trunk.`` prefix removed."""
    trunk = {key[len(TRUNK_PREFIX):]: value for key, value in state_dict.items()
             if key.startswith(TRUNK_PREFIX)}
    if not trunk:
        visual = sorted({'.'.join(key.split('.')[:2]) for key in state_dict
                         if key.startswith('visual.')})
        raise ValueError(
            f'expected a CLIP state dict with a timm image tower (keys "{TRUNK_PREFIX}*", as '
            f'open_clip\'s TimmModel writes them), got image-tower keys {visual or "none"}')
    return trunk


def convert_clip_to_backbone(src: str, dst: str) -> Dict[str, torch.Tensor]:
    """Write the image tower of CLIP checkpoint ``src`` to ``dst`` as a backbone checkpoint."""
    trunk = extract_image_tower(load_clip_state_dict(src))
    directory = os.path.dirname(os.path.abspath(dst))
    os.makedirs(directory, exist_ok=True)
    torch.save({'state_dict': trunk, 'meta': {'source': os.path.abspath(src),
                                              'converted_from': 'open_clip visual.trunk'}}, dst)
    return trunk
