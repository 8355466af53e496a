"""The GSPN-2 variants: one table, and every spelling of a variant read from it.

Each row is one variant. The rest of the package derives from it:

* timm: the model ``gspn2_{arch}`` (:attr:`Variant.name`), registered in :mod:`.gspn2` with
  the row's ``depths`` and ``dims`` and a default input size of ``img_size``;
* mmseg: the backbone ``dict(type='GSPN2', arch=arch)`` (:mod:`.backbones`);
* configs: the backbone part of a config name, ``{method}_gspn2-{short}_...`` (``t`` / ``s``
  / ``b`` for the paper's sizes), also ``--arch`` of ``tools/linear_probe.py``;
* open_clip: the model config ``gspn2_dense/clip/model_configs/{clip}.json`` with this image tower;
* the paper's ImageNet-1K figures, which :mod:`.complexity` and its tests compare with the counts.

The open_clip JSON files, the configs under ``configs/`` and the variant table of
``docs/models.md`` are checked against this table by ``tests/models/test_variants.py``.
This module is plain data: it imports neither torch nor timm.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ['BASELINES', 'PAPER_VARIANTS', 'PaperFigures', 'VARIANTS', 'Variant', 'get_variant',
           'timm_size_kwargs']


@dataclass(frozen=True)
class PaperFigures:
    """The GSPN-2 paper's ImageNet-1K figures at 224x224 (SPEC section 2)."""
    top1: float  # %
    params: float
    macs: float


@dataclass(frozen=True)
class Variant:
    """One GSPN-2 variant.

    Args:
        arch: The mmseg backbone's ``arch``; the timm model is ``gspn2_{arch}``.
        short: The variant in config names and the linear-probe tool.
        depths: Blocks per stage.
        dims: Channels per stage.
        clip: The open_clip model config with this image tower, if there is one.
        paper: The paper's figures, for the sizes the paper reports.
        img_size: Default square input size of the timm model's pretrained_cfg.
    """
    arch: str
    short: str
    depths: Tuple[int, int, int, int]
    dims: Tuple[int, int, int, int]
    clip: Optional[str] = None
    paper: Optional[PaperFigures] = None
    img_size: int = 224

    @property
    def name(self) -> str:
        """The timm model name."""
        return f'gspn2_{self.arch}'

    @property
    def model_args(self) -> Dict[str, Tuple[int, ...]]:
        """The :class:`~gspn2_dense.models.gspn2.GSPN2` arguments that make this variant."""
        return dict(depths=self.depths, dims=self.dims)


# test: the test suite's tiny widths; nano: the CPU demo; tiny / small / base: the paper's T / S / B
# (its layer configuration is not published: these land on its params and MACs, docs/models.md).
# The paper gives S and B's parameters as ~50M and ~89M.
VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant('test', 'test', depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), clip='GSPN2-test', img_size=64),
    Variant('nano', 'nano', depths=(2, 2, 4, 2), dims=(32, 64, 128, 256), clip='GSPN2-N-demo'),
    Variant('tiny', 't', depths=(2, 4, 10, 2), dims=(80, 160, 320, 640), clip='GSPN2-T',
            paper=PaperFigures(top1=83.0, params=24e6, macs=4.2e9)),
    Variant('small', 's', depths=(3, 3, 20, 2), dims=(96, 192, 384, 768), clip='GSPN2-S',
            paper=PaperFigures(top1=84.4, params=50e6, macs=9.2e9)),
    Variant('base', 'b', depths=(2, 2, 17, 3), dims=(128, 256, 512, 1024), clip='GSPN2-B',
            paper=PaperFigures(top1=84.6, params=89e6, macs=14.2e9)),
)}

PAPER_VARIANTS: Tuple[Variant, ...] = tuple(v for v in VARIANTS.values() if v.paper is not None)

# The timm models GSPN-2 is compared with (complexity table, backbone benchmark), by role.
BASELINES: Dict[str, str] = {
    'swin_t': 'swin_tiny_patch4_window7_224',
    'convnext_t': 'convnext_tiny',
    'vit_s': 'vit_small_patch16_224',
}


def get_variant(name: str) -> Variant:
    """The variant spelled ``name``: timm name, arch, short or open_clip name (``gspn2_tiny``,
    ``tiny``, ``t``, ``GSPN2-T``)."""
    for variant in VARIANTS.values():
        if name in (variant.name, variant.arch, variant.short, variant.clip):
            return variant
    raise ValueError(f'unknown GSPN-2 variant {name!r}; known: timm names {list(VARIANTS)}, archs '
                     f'{[v.arch for v in VARIANTS.values()]}, short names {[v.short for v in VARIANTS.values()]}, '
                     f'open_clip names {[v.clip for v in VARIANTS.values() if v.clip]}')


def timm_size_kwargs(name: str, img_size: int) -> Dict[str, object]:
    """The ``timm.create_model`` arguments that let model ``name`` take ``img_size`` x ``img_size``
    inputs: Swin's window grid is fixed when it is built (``img_size``), ViTs interpolate their
    position embedding (``dynamic_img_size``); GSPN-2 and ConvNeXt take any size as they are."""
    if name.startswith('swin'):
        return dict(img_size=img_size)
    if name.startswith('vit_'):
        return dict(dynamic_img_size=True)
    return {}
