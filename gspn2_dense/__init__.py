"""gspn2_dense: GSPN-2 line-scan propagation, backbones and dense linear probes.

``import gspn2_dense`` registers what the installed stack can use:

* the timm models (``gspn2_tiny``, ``gspn2_small``, ``gspn2_base``, ``gspn2_nano``, ...);
* with mmsegmentation: the ``GSPN2`` backbone, heads, segmentors, datasets and metrics in
  mmseg's registries (mmengine's checkpoint loader is left as it is: the toolkit's runners,
  :func:`gspn2_dense.engine.launch.build_runner`, install the one that resumes under
  torch >= 2.6);
* with open_clip: the ``GSPN2-T/S/B`` model configs.

The op alone (``gspn2_dense.ops``) needs only torch; nothing here compiles anything.
"""
import importlib.util

__version__ = '0.1.0'


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


from . import models  # noqa: E402,F401  (timm models; needs only timm)

if _installed('mmseg'):
    from . import datasets, engine, evaluation  # noqa: E402,F401
    from .models import openmmlab  # noqa: E402,F401  (mmseg registry modules)

if _installed('open_clip'):
    from .clip import register_model_configs  # noqa: E402
    register_model_configs()
