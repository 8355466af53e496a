"""The demo room (``make demo``): synthetic data in the real layouts and the legs that use it.

Data makers (learnable structure, the real folder layouts):

* :mod:`.probe_data` -- :func:`make_probe_data`: ADE20K, VOC, Pascal Context, NYUv2 depth and
  NYUv2-40 folders for the linear probes (``tools/make_demo_data.py``);
* :mod:`.multitask_data` -- :func:`make_multitask_data`: NYUD-MT and PASCAL-MT folders;
* :mod:`.clip_data` -- :func:`make_clip_shards`: DataComp-style webdataset shards and a
  zero-shot validation folder (``tools/make_demo_shards.py``).

Legs, each a function of a work dir, a data root and a backbone checkpoint:
:mod:`.clip_leg` (CLIP-train a ``gspn2_nano`` tower, zero-shot, convert it), :mod:`.probe_leg`
(segmentation and depth linear probes), :mod:`.multitask_leg` (multi-task probes and Delta_m).
:mod:`.pipeline` orders them: CLIP leg, then the dense legs on its tower (``tools/demo.py``).
"""
from .clip_data import make_clip_shards
from .multitask_data import make_multitask_data
from .probe_data import DEMO_DATASETS, DEMO_ROOTS, make_probe_data

__all__ = ['DEMO_DATASETS', 'DEMO_ROOTS', 'make_clip_shards', 'make_multitask_data', 'make_probe_data']
