"""Launch ``open_clip_train`` with the GSPN-2 models (the logic behind ``tools/train_clip.py``).

Every argument goes to ``open_clip_train.main.main`` unchanged, so all of its flags keep
working (``--train-data`` brace patterns, ``--dataset-type webdataset``, ``--resume latest``,
``--local-loss --gather-with-grad``, ``--grad-checkpointing``, ``--imagenet-val``, ...), alone or
under ``torchrun``. Before handing over, :func:`main` registers our timm variants and model
configs, and for the duration of the run only (:func:`open_clip_train_hooks`) it routes two
things open_clip_train has no extension point for:

* training webdataset loading goes through :func:`gspn2_dense.clip.data.get_wds_dataset`
  (shard-count check before training, corrupt shards skipped and counted, per-epoch report);
* on CPU processes, ``DistributedDataParallel`` is built without ``device_ids``: open_clip_train
  passes ``device_ids=[device]`` whatever the device, which torch rejects for CPU modules, so
  a gloo ``torchrun`` on CPU would fail before its first step.

Both are undone when the run returns; nothing is changed at ``import gspn2_dense``.
"""
import contextlib
from typing import Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from . import data, register_model_configs

__all__ = ['main', 'open_clip_train_hooks']


class _DeviceAgnosticDDP(DistributedDataParallel):
    """``DistributedDataParallel`` that ignores ``device_ids`` naming CPU devices."""

    def __init__(self, module, device_ids=None, *args, **kwargs):
        if device_ids and all(torch.device(d).type == 'cpu' for d in device_ids):
            device_ids = None
        super().__init__(module, device_ids, *args, **kwargs)


@contextlib.contextmanager
def open_clip_train_hooks():
    """Route open_clip_train's webdataset loader and DDP wrapper to ours while the block runs."""
    import open_clip_train.data as oc_data

    saved_loader = oc_data.get_wds_dataset
    saved_ddp = torch.nn.parallel.DistributedDataParallel
    oc_data.get_wds_dataset = data.get_wds_dataset
    torch.nn.parallel.DistributedDataParallel = _DeviceAgnosticDDP
    try:
        yield
    finally:
        oc_data.get_wds_dataset = saved_loader
        torch.nn.parallel.DistributedDataParallel = saved_ddp


def main(argv: Sequence[str]) -> Optional[int]:
    """Run ``open_clip_train.main.main(argv)`` with our models; returns what it returns.

    A leading ``--`` is dropped: ``torchrun`` needs it before open_clip's arguments because
    its own parser rejects ``--logs`` as an ambiguous abbreviation of ``--logs-specs``.
    """
    from open_clip_train.main import main as open_clip_main

    argv = list(argv)
    if argv[:1] == ['--']:
        argv = argv[1:]
    register_model_configs()
    with open_clip_train_hooks():
        return open_clip_main(argv)
