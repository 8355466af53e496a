"""Loading local mmengine checkpoints with torch >= 2.6.

torch 2.6 made ``torch.load(..., weights_only=True)`` the default; mmengine 0.10.7 calls
``torch.load`` without the argument, so resuming a run fails on the objects an mmengine
checkpoint holds besides tensors (the message hub's ``HistoryBuffer`` of numpy arrays, numpy
scalars in the meta). :func:`register_checkpoint_loader` installs, through mmengine's own
extension point (``CheckpointLoader.register_scheme``), a loader for local paths that

1. loads with ``weights_only=True`` and an allow-list of the classes mmengine writes, and
2. only if a checkpoint needs anything else, loads it with ``weights_only=False`` after a
   warning that names the file and the refused global (local files are the user's own).
"""
import logging
import os
import pickle
from typing import Any, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader


def _safe_globals() -> list:
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    numpy_globals = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    numpy_globals += [type(np.dtype(t)) for t in ('float16', 'float32', 'float64', 'int32',
                                                   'int64', 'uint8', 'bool')]
    return [HistoryBuffer, *numpy_globals]


def _refused_global(err: Exception) -> str:
    for line in str(err).splitlines():
        if 'Unsupported global' in line:
            return line.strip()
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def load_local_checkpoint(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a local checkpoint written by mmengine (or plain ``torch.save``)."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        print_log(
            f'{filename} holds objects outside the weights-only allow-list; loading this local '
            f'file with weights_only=False (load only checkpoints you trust). Refused: '
            f'{_refused_global(err)}', logger='current', level=logging.WARNING)
        return torch.load(filename, map_location=map_location, weights_only=False)


def register_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints with :func:`load_local_checkpoint`."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
