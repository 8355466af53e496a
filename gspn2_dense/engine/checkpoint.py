"""Reading, checking and writing checkpoints: the one loading helper of the toolkit.

torch 2.6 made ``torch.load(..., weights_only=True)`` the default; mmengine 0.10.7 calls
``torch.load`` without the argument. :func:`load_checkpoint_file` loads every checkpoint the
toolkit reads (``tools/test.py``, resuming, ``init_cfg`` backbones, ``tools/clip_zeroshot.py``,
``tools/convert_clip_to_backbone.py``) in weights-only mode, with an allow-list of exactly what
mmengine writes besides tensors (the message hub's ``HistoryBuffer`` of numpy arrays and its
statistics methods, numpy scalars in the meta). Nothing is ever loaded with
``weights_only=False``. A file that cannot be used raises :class:`CheckpointError`, whose
message says what the file is, what was expected and what to do.

:func:`register_checkpoint_loader` installs the loader for local paths through mmengine's own
extension point (``CheckpointLoader.register_scheme``), for the whole process. Importing
``gspn2_dense`` does not call it (mmengine's default stays for everyone else);
:func:`gspn2_dense.engine.launch.build_runner` does, before it builds a runner, so every run of
the toolkit (``tools/train.py``, ``tools/test.py``, the linear probes, the demo) resumes and
loads through it.

Also here: :func:`checkpoint_kind` names a file's kind (segmentor, backbone, CLIP) for messages;
which keys mark a kind and where its GSPN-2 trunk sits is the model file's
:data:`~gspn2_dense.models.gspn2.CHECKPOINT_LAYOUTS`, which
:func:`~gspn2_dense.models.gspn2.checkpoint_filter_fn` maps. :func:`check_state_dict_fits` turns
a key / shape mismatch into a short summary, :func:`save_checkpoint_file` writes atomically
without overwriting its input, and :func:`find_resume_checkpoint` picks the newest readable
checkpoint of a work dir.
"""
import logging
import os
import pickle
import re
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader

from gspn2_dense.models.gspn2 import CHECKPOINT_LAYOUTS, checkpoint_layout, checkpoint_state_dict

__all__ = ['CheckpointError', 'check_output_path', 'check_state_dict_fits', 'checkpoint_kind', 'describe_kind',
           'find_resume_checkpoint', 'list_checkpoints', 'load_checkpoint_file',
           'load_local_checkpoint', 'register_checkpoint_loader', 'save_checkpoint_file',
           'state_dict_of']

_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTO = 0x80  # first byte of a pickle (the legacy, non-zip torch.save format)
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
_EXAMPLES = 5  # keys named in a mismatch summary


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message says what it is and what to do."""


def _history_buffer_statistic(cls, name: str):
    """``getattr`` as the weights-only unpickler may call it: HistoryBuffer statistics only.

    ``HistoryBuffer.__getstate__`` pickles its statistics methods as ``getattr(HistoryBuffer,
    'mean')``; this stands in for ``builtins.getattr`` while loading and refuses anything else.
    """
    if cls is HistoryBuffer and (name in _HISTORY_BUFFER_STATISTICS
                                 or name in HistoryBuffer._statistics_methods):
        return getattr(cls, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr on {cls!r}, {name!r} (only the statistics '
        f'methods of mmengine\'s HistoryBuffer are allowed)')


def _safe_globals() -> list:
    """What mmengine 0.10.7 checkpoints hold besides tensors and plain Python values."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    numpy_globals = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    numpy_globals += [type(np.dtype(t)) for t in ('float16', 'float32', 'float64', 'int32',
                                                   'int64', 'uint8', 'bool')]
    return [HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr'), *numpy_globals]


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip()
    text = text.splitlines()[0].split('. ')[0][:200] if text else '(no message)'
    return f'{type(err).__name__}: {text}'


def _refused_global(err: BaseException) -> Optional[str]:
    match = re.search(r'Unsupported global: GLOBAL (\S+)', str(err))
    return match.group(1) if match else None


def load_checkpoint_file(filename: str, map_location: Optional[Any] = 'cpu',
                         expected: str = 'a PyTorch checkpoint (a torch.save file)') -> Any:
    """Load a local checkpoint in weights-only mode; raise :class:`CheckpointError` if unusable.

    ``expected`` names what the caller needs (e.g. ``'a segmentor checkpoint'``); it goes into
    the error messages.
    """
    filename = os.path.expanduser(str(filename))
    if not os.path.exists(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist (expected {expected})')
    if os.path.isdir(filename):
        raise CheckpointError(f'{filename} is a directory, not a checkpoint file; expected {expected}')
    size = os.path.getsize(filename)
    if size == 0:
        raise CheckpointError(
            f'{filename} is empty (0 bytes): its writing was interrupted or the copy failed. '
            f'Expected {expected}; copy or save the checkpoint again')
    with open(filename, 'rb') as f:
        head = f.read(4)
    if not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_PROTO:
        raise CheckpointError(
            f'{filename} is not a PyTorch checkpoint: it is neither a torch.save zip archive nor a '
            f'legacy torch.save pickle (it starts with bytes {head!r}). Expected {expected}; check '
            f'that the path names the checkpoint and not another file')
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if refused is None:
            raise CheckpointError(
                f'{filename} ({size:,} bytes) is corrupt: its pickled data does not decode '
                f'({_first_sentence(err)}). Expected {expected}; copy or save it again') from None
        raise CheckpointError(
            f'{filename} holds a Python object outside the weights-only allow-list (GLOBAL '
            f'{refused}), so it is not a checkpoint of tensors and plain values as this toolkit and '
            f'mmengine write them. Expected {expected}. Load only files you trust; if you trust '
            f'this one, allow-list the object with torch.serialization.add_safe_globals([{refused}]) '
            f'before loading, or re-save just its tensors') from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(
            f'{filename} ({size:,} bytes) is truncated or corrupt and cannot be read '
            f'({_first_sentence(err)}). Expected {expected}; copy or save it again (an '
            f'interrupted save or download leaves such a file)') from None


def load_local_checkpoint(filename: str, map_location: Optional[Any] = None) -> Any:
    """mmengine's loader for local paths: :func:`load_checkpoint_file` of an mmengine checkpoint."""
    return load_checkpoint_file(filename, map_location=map_location,
                                expected='an mmengine or PyTorch checkpoint')


def register_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints with :func:`load_local_checkpoint`, process-wide.

    Idempotent (a second call registers the same function again). ``import gspn2_dense`` does
    not call it; :func:`gspn2_dense.engine.launch.build_runner` does.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


def state_dict_of(checkpoint: Any) -> Dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint (the model file's
    :func:`~gspn2_dense.models.gspn2.checkpoint_state_dict`), or ``{}`` when it holds none."""
    try:
        return checkpoint_state_dict(checkpoint)
    except (TypeError, KeyError):
        return {}


def checkpoint_kind(checkpoint: Any) -> str:
    """``'segmentor'``, ``'backbone'``, ``'clip'`` or ``'unknown'``: which kind of checkpoint
    ``checkpoint`` (a loaded file) is, by the model file's
    :data:`~gspn2_dense.models.gspn2.CHECKPOINT_LAYOUTS`."""
    return checkpoint_layout(state_dict_of(checkpoint))[0]


_KIND_ADVICE = {
    'segmentor': ('a segmentor checkpoint written by tools/train.py',
                  'Evaluate it with tools/test.py CONFIG CHECKPOINT'),
    'backbone': ('a backbone checkpoint (a GSPN-2 trunk, no segmentor head)',
                 'Use it as `model.backbone.init_cfg.checkpoint` (tools/train.py CONFIG '
                 '--cfg-options model.backbone.init_cfg.checkpoint=PATH, or tools/linear_probe.py '
                 'PATH) to train a probe on it, then evaluate the probe\'s checkpoint'),
    'clip': ('a CLIP checkpoint (open_clip)',
             'Evaluate it with tools/clip_zeroshot.py, or extract its image tower with '
             'tools/convert_clip_to_backbone.py and use the result as '
             '`model.backbone.init_cfg.checkpoint` of a probe config'),
}
_KIND_MARKERS = {kind: markers for kind, markers, _ in CHECKPOINT_LAYOUTS}


def describe_kind(kind: str) -> Tuple[str, str]:
    """``(what the file is, what to do with it)`` for a :func:`checkpoint_kind` result; what
    the file is names the keys that mark its kind."""
    if kind not in _KIND_ADVICE:
        return 'a checkpoint of none of this toolkit\'s kinds', ''
    what, advice = _KIND_ADVICE[kind]
    keys = ' / '.join(m + '*' if m.endswith('.') else m for m in _KIND_MARKERS[kind])
    return f'{what}, with {keys} keys', advice


def _examples(names: List[str]) -> str:
    shown = ', '.join(names[:_EXAMPLES])
    return shown + (f', ... ({len(names) - _EXAMPLES} more)' if len(names) > _EXAMPLES else '')


def check_state_dict_fits(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                          filename: str, expected: str, advice: str = '') -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly ``model``'s keys and shapes.

    The message counts the missing, unexpected and mis-shaped keys and names a few of each
    (instead of torch's one line per key).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}'
              for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    problems = []
    if missing:
        problems.append(f'{len(missing)} of the model\'s {len(own)} tensors are missing from it '
                        f'({_examples(missing)})')
    if unexpected:
        problems.append(f'{len(unexpected)} of its tensors are not in the model '
                        f'({_examples(unexpected)})')
    if shapes:
        problems.append(f'{len(shapes)} have another shape ({_examples(shapes)})')
    raise CheckpointError(f'{filename} does not fit the model: ' + '; '.join(problems)
                          + f'. Expected {expected}' + (f'; {advice}' if advice else ''))


_CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def list_checkpoints(work_dir: str) -> List[str]:
    """The ``iter_N.pth`` / ``epoch_N.pth`` files of ``work_dir``, newest (largest N) first."""
    if not os.path.isdir(work_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(work_dir)
             if (m := _CHECKPOINT_NAME.match(name))]
    return [os.path.join(work_dir, name) for _, name in sorted(found, reverse=True)]


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The newest readable checkpoint of ``work_dir`` (``None`` when there is none).

    Tries the file named by mmengine's ``last_checkpoint`` first, then ``iter_N`` / ``epoch_N``
    files from the newest; each unreadable one is skipped with a warning that says why. Raises
    :class:`CheckpointError` when checkpoints exist but none can be read.
    """
    candidates = []
    pointer = os.path.join(work_dir, 'last_checkpoint')
    if os.path.isfile(pointer):
        with open(pointer, encoding='utf-8') as f:
            named = f.read().strip()
        if named:
            candidates.append(named if os.path.isabs(named) else os.path.join(work_dir, named))
    candidates += [p for p in list_checkpoints(work_dir)
                   if not any(os.path.exists(c) and os.path.samefile(p, c) for c in candidates)]
    refused = []
    for path in candidates:
        try:
            load_checkpoint_file(path, map_location='cpu', expected='an mmengine training checkpoint')
        except (CheckpointError, FileNotFoundError) as err:
            refused.append(str(err))
            print_log(f'resume: skipping {path}: {err}', logger='current', level=logging.WARNING)
            continue
        if refused:
            print_log(f'resume: {len(refused)} newer checkpoint(s) in {work_dir} cannot be read; '
                      f'resuming from the newest readable one, {path}', logger='current',
                      level=logging.WARNING)
        return path
    if refused:
        raise CheckpointError(
            f'cannot resume: none of the {len(refused)} checkpoint(s) in {work_dir} can be read '
            f'(first: {refused[0]}). Move them away to start the run over, or point '
            f'--cfg-options load_from=PATH at a readable checkpoint')
    return None


def check_output_path(filename: str, source: Optional[str] = None, overwrite: bool = False) -> str:
    """Refuse to write ``filename`` when it is ``source`` or, without ``overwrite``, exists.

    Returns the absolute path. :func:`save_checkpoint_file` calls it; a tool calls it too before
    a long computation whose result would be refused.
    """
    filename = os.path.abspath(os.path.expanduser(str(filename)))
    if source is not None and os.path.exists(filename) and os.path.samefile(source, filename):
        raise FileExistsError(f'refusing to write {filename}: it is the input checkpoint; name '
                              f'another output file')
    if os.path.isdir(filename):
        raise IsADirectoryError(f'output {filename} is a directory; name the checkpoint file to write')
    if os.path.exists(filename) and not overwrite:
        raise FileExistsError(f'output {filename} already exists; pass --force (overwrite=True) '
                              f'to replace it, or name another file')
    return filename


def save_checkpoint_file(obj: Any, filename: str, source: Optional[str] = None,
                         overwrite: bool = False) -> None:
    """``torch.save(obj, filename)`` written atomically (a temp file in the same folder, then
    ``os.replace``), never onto ``source`` (the file it was made from) and onto an existing file
    only with ``overwrite=True``."""
    filename = check_output_path(filename, source=source, overwrite=overwrite)
    directory = os.path.dirname(filename)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{os.path.basename(filename)}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
