"""Install gspn2_dense: ``pip install -e .``.

The compiled ops are built just in time on first use. ``GSPN2_BUILD_EXT=1 pip install -e .``
builds them ahead of time instead (CUDA kernels for ``$TORCH_CUDA_ARCH_LIST``, default
``8.0;8.6;9.0+PTX``, when a CUDA toolkit is found; ``GSPN2_BUILD_CUDA=0`` skips them).

What is installed:

* the op and the timm backbones: ``pip install gspn2_dense`` (torch, timm, ninja);
* ``[mmseg]``: the OpenMMLab side (mmseg registry modules, datasets, probes, tools/train.py);
* ``[clip]``: the open_clip side (GSPN2-T/S/B towers, DataComp shards, zero-shot);
* ``[dev]``: both, plus the test tools (``make setup`` installs this).

mmcv 2.1.0 is a source release that must be built after torch, so install in this order
(the Makefile does): torch/torchvision, then
``MMCV_WITH_OPS=1 pip install --no-build-isolation 'setuptools<70' mmcv==2.1.0``, then this.

``csrc/`` and ``configs/`` ship inside the package (``gspn2_dense/csrc``,
``gspn2_dense/configs``), so an installed wheel builds the op and finds the configs without
the checkout.
"""
import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_TREES = ('csrc', 'configs')  # copied into the package (gspn2_dense/ops/_build.py: shipped_tree)

INSTALL_REQUIRES = [
    'torch==2.11.0',
    'torchvision==0.26.0',
    'timm>=1.0.17',
    'ninja',
    'numpy<2.4',
]
MMSEG_REQUIRES = [
    'mmengine==0.10.7',
    'mmcv==2.1.0',
    'mmsegmentation==1.2.2',
    'matplotlib',
    'prettytable',
    'opencv-python-headless',
]
CLIP_REQUIRES = [
    'open_clip_torch[training]==3.3.0',
    'webdataset<=0.2.86',
    'ftfy',
    'regex',
]
EXTRAS_REQUIRE = {
    'mmseg': MMSEG_REQUIRES,
    'clip': CLIP_REQUIRES,
    'dev': MMSEG_REQUIRES + CLIP_REQUIRES + ['pytest>=8', 'pytest-timeout', 'expecttest'],
}


class BuildPyWithTrees(build_py):
    """build_py that also copies ``csrc/`` and ``configs/`` into the built package."""

    def run(self):
        super().run()
        for name in SHIPPED_TREES:
            target = Path(self.build_lib) / 'gspn2_dense' / name
            shutil.rmtree(target, ignore_errors=True)  # no files left from an earlier build
            shutil.copytree(ROOT / name, target,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


def ext_modules():
    if os.environ.get('GSPN2_BUILD_EXT', '0') != '1':
        return [], {}
    spec = importlib.util.spec_from_file_location('_gspn2_build', ROOT / 'gspn2_dense/ops/_build.py')
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    from torch.utils.cpp_extension import BuildExtension
    return build.setup_extensions(), {'build_ext': BuildExtension}


modules, cmdclass = ext_modules()
cmdclass['build_py'] = BuildPyWithTrees

setup(
    name='gspn2_dense',
    version='0.1.0',
    description='GSPN-2 line-scan propagation, backbones and dense linear probes '
                '(OpenMMLab / timm / open_clip)',
    long_description=(ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(include=['gspn2_dense', 'gspn2_dense.*']),
    package_data={'gspn2_dense': ['clip/model_configs/*.json']},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
