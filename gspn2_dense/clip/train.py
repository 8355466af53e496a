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
import logging
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
    """Route open_clip_train's webdataset loader and DDP wrapper to ours while the block runs.

    Also puts logging back as it was: open_clip_train adds a console and a log-file handler to
    the root logger on every run and sets every existing logger to its level, which would
    otherwise outlive the run in the calling process.
    """
    import open_clip_train.data as oc_data

    saved_loader = oc_data.get_wds_dataset
    saved_ddp = torch.nn.parallel.DistributedDataParallel
    saved_handlers = list(logging.root.handlers)
    saved_levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
                    if isinstance(logger, logging.Logger)}
    saved_levels[None] = logging.root.level
    oc_data.get_wds_dataset = data.get_wds_dataset
    torch.nn.parallel.DistributedDataParallel = _DeviceAgnosticDDP
    try:
        yield
    finally:
        oc_data.get_wds_dataset = saved_loader
        torch.nn.parallel.DistributedDataParallel = saved_ddp
        for handler in list(logging.root.handlers):
            if handler not in saved_handlers:
                logging.root.removeHandler(handler)
                handler.close()
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):   # loggers born during the run inherit again
                logger.setLevel(saved_levels.get(name, logging.NOTSET))
        logging.root.setLevel(saved_levels[None])


def main(argv: Sequence[str]) -> Optional[int]:
    """Run ``open_clip_train.main.main(argv)`` with our models; returns what it returns.

    A leading ``--`` is dropped, so that the argument list written for ``torchrun`` (which
    needs ``--`` before them: its parser takes ``--logs`` for an abbreviation of its own
    ``--logs-specs``, and removes the ``--``) also works without it.
    """
    from open_clip_train.main import main as open_clip_main

    argv = list(argv)
    if argv[:1] == ['--']:
        argv = argv[1:]
    register_model_configs()
    with open_clip_train_hooks():
        return open_clip_main(argv)
