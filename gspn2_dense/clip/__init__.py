"""CLIP with a GSPN-2 image tower: open_clip model configs and the bridge to the dense probes.

The model configs in ``model_configs/`` are plain open_clip JSON files. Their image tower is
open_clip's ``TimmModel`` around one of our registered timm variants (average pool, linear
projection); their text tower is open_clip's own transformer with its built-in tokenizer, so
nothing here lives inside open_clip's package and nothing is fetched from a hub.

* ``GSPN2-T``, ``GSPN2-S``, ``GSPN2-B``: the paper's sizes at 224 px with the standard
  12-layer, 512-wide text tower, ``embed_dim`` 512 (the paper's CLIP setting).
* ``GSPN2-N-demo``: 32 px with a 2-layer, 128-wide text tower, for the CPU demo.
* ``GSPN2-test``: 32 px with a 1-layer, 32-wide text tower, for the tests.

Each image tower is the timm variant whose ``clip`` field names the config in the variant table
(:mod:`gspn2_dense.models.variants`); ``tests/models/test_variants.py`` checks the files against it.

:func:`register_model_configs` makes them known to ``open_clip.list_models()`` and
``open_clip.create_model_and_transforms``; ``import gspn2_dense`` calls it when open_clip is
installed.
"""
from pathlib import Path

from gspn2_dense.models.variants import VARIANTS

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / 'model_configs'
MODEL_NAMES = tuple(v.clip for v in VARIANTS.values() if v.clip)  # one JSON file each

__all__ = ['MODEL_CONFIG_DIR', 'MODEL_NAMES', 'register_model_configs']


def register_model_configs() -> None:
    """Register the timm variants and add ``model_configs/`` to open_clip's config registry.

    Safe to call more than once: the directory is added to open_clip's search path once.
    """
    import open_clip

    from gspn2_dense.models import gspn2  # noqa: F401  (registers the timm variants)

    if not set(MODEL_NAMES) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)
