"""Scaling over processes: the linear probe, the multi-task probe and CLIP on 1, 2, 4, 8 GPUs.

Behind ``tools/benchmark_scaling.py`` (the report: ``docs/benchmarks/scaling.md``). Every run is
launched the way users launch training: ``tools/dist_train.sh CONFIG N`` for the mmengine
configs and ``torchrun --nproc_per_node N`` around ``gspn2_dense.clip.train.main`` (what
``tools/train_clip.py`` calls) for CLIP, with NCCL on GPUs and gloo on the CPU, and always with
NVLink multicast switched off (:data:`NVLINK_MULTICAST_OFF`).

What is measured, for each run of ``N`` processes and a fixed *global* batch (per-process batch
= global / N):

* images/s per process: the per-process batch over the median iteration time after the
  warm-up iterations (mmengine: :class:`ScalingRecordHook`, the slowest process's time from one
  data fetch to the next, GPU synchronised; CLIP: open_clip_train's own ``/s/gpu`` of each
  step); scaling efficiency = images/s per process at N / the same at N = 1;
* peak memory: ``torch.cuda.max_memory_allocated`` of the busiest GPU, or on the CPU the peak
  resident set of the largest process;
* the loss curve: for mmengine runs the loss of every iteration averaged over the processes
  (the loss of the global batch), compared iteration by iteration with one process. The
  configs' random augmentations are dropped and the data is generated at the training
  resolution, so that N processes and one process see the same pixels in the same global
  batches (mmengine's ``InfiniteSampler`` deals rank r the r-th of every N indices of one
  permutation); the learning rate warms up linearly over the short run (the 40k-iteration
  schedule would keep it near zero). CLIP's webdataset pipeline splits shards by rank and
  shuffles samples with a clock-seeded generator, so its global batches hold other samples
  at other N (and from run to run): its curves are compared by their mean, and that the
  loss contrasted every image with all texts of the global batch is checked directly
  (:func:`gathered`: the columns of ``ClipLoss``'s logits at every step of every process);
* resume: a run of N processes is stopped abruptly (``os._exit`` after the checkpoint of
  iteration C is written, no teardown, as a pre-empted job), resumed with ``--resume``, and
  compared with the uninterrupted run: the iteration it restarts at, the optimizer state
  right after loading against the uninterrupted run's checkpoint of iteration C, the losses
  of iterations C+1..K and the weights at K.

The per-iteration records come from :class:`ScalingRecordHook`, which the derived configs add
(``custom_imports`` brings this module into the training processes).
"""
import json
import math
import os
import os.path as osp
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine import dist as mmdist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from . import report
from .timing import fmt, load_average, run_stamp

# NVLink multicast can put a host's shared GPUs out of service (the device docs): every process
# the benchmark starts gets these values, whatever the calling environment says.
NVLINK_MULTICAST_OFF = {'NCCL_NVLS_ENABLE': '0', 'TORCH_SYMM_MEM_DISABLE_MULTICAST': '1',
                        'NVSHMEM_DISABLE_NVLS': '1'}

PARTS = ('probe', 'multitask', 'clip', 'resume')
RECORD_FILE = 'scaling_record.jsonl'
RESUMED_RECORD_FILE = 'scaling_record_resumed.jsonl'
OPTIMIZER_AT_START = 'optimizer_at_start.pth'
# Transforms that draw random numbers per sample: dropped, so that N processes see what 1 sees.
_RANDOM_TRANSFORMS = re.compile(r'Random|PhotoMetricDistortion')


# --------------------------------------------------------------------------- inside the runs

def _peak_memory_gib() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


@HOOKS.register_module()
class ScalingRecordHook(Hook):
    """Write one JSON line per training iteration to ``<work_dir>/<record_name>`` (rank 0).

    A line holds the iteration, every logged loss averaged over the processes, the slowest
    process's step time (``before_train_iter`` to ``after_train_iter``) and cycle time (one
    ``after_train_iter`` to the next: data loading included) and the highest peak memory
    (:func:`_peak_memory_gib`, a running maximum: mmengine's logger resets CUDA's peak counter
    when it logs). The first line (``"event": "start"``) gives the iteration the run starts at,
    the world size and the per-process batch; a resumed run (start iteration > 0) also saves its
    optimizer state as loaded to ``<work_dir>/optimizer_at_start.pth``.

    ``interrupt_after=C`` ends every process with ``os._exit(0)`` once iteration C is recorded.
    The hook runs last (after ``CheckpointHook``) and waits at a barrier first, so the
    checkpoint of iteration C is complete on disk when the processes go.
    """
    priority = 'LOWEST'

    def __init__(self, record_name: str = RECORD_FILE, interrupt_after: Optional[int] = None):
        self.record_name = record_name
        self.interrupt_after = interrupt_after
        self._file = None
        self._start = self._last = 0.0
        self._peak = 0.0

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def _write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + '\n')
            self._file.flush()

    def before_train(self, runner) -> None:
        if mmdist.is_main_process():
            self._file = open(osp.join(runner.work_dir, self.record_name), 'w', encoding='utf-8')
            if runner.iter > 0:
                torch.save(runner.optim_wrapper.state_dict(),
                           osp.join(runner.work_dir, OPTIMIZER_AT_START))
        self._write(dict(event='start', iter=runner.iter, world_size=mmdist.get_world_size(),
                         batch_size=runner.train_dataloader.batch_size))
        self._last = self._now()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start = self._now()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        now = self._now()
        step, cycle = now - self._start, now - self._last
        self._last = now
        self._peak = max(self._peak, _peak_memory_gib())
        names = sorted(outputs or {})
        values = [float(torch.as_tensor(outputs[name]).detach()) for name in names]
        values += [step, cycle, self._peak]
        device = torch.device('cuda', torch.cuda.current_device()) \
            if torch.cuda.is_available() and torch.cuda.is_initialized() else torch.device('cpu')
        gathered = torch.stack(mmdist.all_gather(torch.tensor(values, dtype=torch.float64,
                                                              device=device))).cpu()
        losses = gathered[:, :len(names)].mean(0).tolist()
        slowest = gathered[:, len(names):].max(0).values.tolist()
        self._write(dict(iter=runner.iter + 1, losses=dict(zip(names, losses)), step_s=slowest[0],
                         cycle_s=slowest[1], peak_gib=slowest[2]))
        if self.interrupt_after is not None and runner.iter + 1 == self.interrupt_after:
            mmdist.barrier()
            if self._file is not None:
                self._file.close()
            os._exit(0)

    def after_train(self, runner) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def run_clip_worker(peak_prefix: str, train_args: Sequence[str]) -> int:
    """One CLIP training process: :func:`gspn2_dense.clip.train.main` (as ``tools/train_clip.py``),
    then this process's peak memory and the contrastive candidates to
    ``<peak_prefix>.rank<R>.json``. Returns the exit code.

    The candidates are the columns of open_clip's ``ClipLoss`` image-to-text logits: every text
    of the global batch when the processes' features are gathered, only the local ones when they
    are not. Recorded by wrapping ``ClipLoss.get_logits`` (smallest and largest over the steps).
    """
    from open_clip.loss import ClipLoss

    from gspn2_dense.clip.train import main

    columns = []
    get_logits = ClipLoss.get_logits

    def recording_get_logits(self, *args, **kwargs):
        logits_per_image, logits_per_text = get_logits(self, *args, **kwargs)
        columns.append(logits_per_image.shape[-1])
        return logits_per_image, logits_per_text

    ClipLoss.get_logits = recording_get_logits
    try:
        code = main(list(train_args))
    finally:
        ClipLoss.get_logits = get_logits
    rank = int(os.environ.get('RANK', '0'))
    with open(f'{peak_prefix}.rank{rank}.json', 'w', encoding='utf-8') as f:
        json.dump(dict(rank=rank, peak_gib=_peak_memory_gib(),
                       candidates=[min(columns), max(columns)] if columns else None), f)
    return 1 if code == -1 else 0


# --------------------------------------------------------------------------- the plan

def parse_nprocs(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise ValueError(f'process counts must be comma-separated integers, got {text!r}') from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f'process counts must be integers >= 1, got {text!r}')
    return sorted(set(values))


def parse_resolution(text: str) -> Tuple[int, int]:
    match = re.fullmatch(r'(\d+)x(\d+)', text.strip())
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise ValueError(f'resolution must be HEIGHTxWIDTH in pixels (e.g. 512x512), got {text!r}')
    return int(match.group(1)), int(match.group(2))


def per_process_batch(global_batch: int, nprocs: int, what: str = 'global batch') -> int:
    """``global_batch / nprocs``, or a ValueError when it is not a whole number."""
    if global_batch % nprocs:
        divisors = [d for d in range(1, global_batch + 1) if global_batch % d == 0]
        raise ValueError(f'{what} {global_batch} cannot be split over {nprocs} processes: the '
                         f'per-process batch is {what} / N and must be a whole number '
                         f'(N among {divisors}, or another {what})')
    return global_batch // nprocs


@dataclass
class ScalingPlan:
    """What one benchmark invocation runs. :meth:`check` says what is wrong with it."""
    work_dir: str = 'work_dirs/scaling'
    parts: Tuple[str, ...] = ('probe', 'multitask', 'clip', 'resume')
    nprocs: Tuple[int, ...] = (1, 2, 4, 8)
    probe_config: str = 'configs/linear_probe/linear_gspn2-t_8xb2-40k_ade20k-512x512.py'
    multitask_config: str = 'configs/multitask/multitask-linear_gspn2-t_8xb2-40k_nyud-mt-448x576.py'
    resolution: Optional[Tuple[int, int]] = None   # None: each config's crop_size
    global_batch: int = 16
    iters: int = 40
    resume_at: Optional[int] = None                # None: iters // 2
    resume_config: str = 'probe'
    resume_nprocs: Optional[int] = None            # None: the largest of nprocs
    warmup: int = 5
    workers: int = 4
    probe_options: Tuple[str, ...] = ()
    multitask_options: Tuple[str, ...] = ()
    clip_model: str = 'GSPN2-T'
    clip_global_batch: int = 512
    clip_steps: int = 20
    clip_workers: int = 4
    clip_warmup: int = 4
    loss_rtol: Optional[float] = None              # None: by device (:func:`default_loss_rtol`)
    # CLIP's mean loss over the steps: the level only (other samples at other N, and
    # open_clip's sample shuffle is seeded by the clock); the gather is checked by
    # :func:`gathered`, not by this tolerance
    clip_loss_rtol: float = 0.05
    timeout_s: float = 900.0
    device: str = field(default_factory=lambda: 'cuda' if torch.cuda.is_available() else 'cpu')

    @property
    def checkpoint_at(self) -> int:
        return self.resume_at if self.resume_at is not None else self.iters // 2

    @property
    def resume_n(self) -> int:
        return self.resume_nprocs if self.resume_nprocs is not None else max(self.nprocs)

    def check(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(f'parts must be a non-empty selection of {list(PARTS)}, got '
                             f'{list(self.parts)}')
        if self.device not in ('cuda', 'cpu'):
            raise ValueError(f"device must be 'cuda' or 'cpu', got {self.device!r}")
        if self.device == 'cuda':
            visible = torch.cuda.device_count()
            if max(self.nprocs) > visible:
                raise ValueError(f'{max(self.nprocs)} processes need {max(self.nprocs)} GPUs (one '
                                 f'each), {visible} visible; use fewer, or --device cpu for gloo')
        if self.iters < 2:
            raise ValueError(f'iters must be >= 2 (a checkpoint between two iterations), got '
                             f'{self.iters}')
        if not 0 < self.checkpoint_at < self.iters:
            raise ValueError(f'resume_at must lie between 1 and iters - 1 = {self.iters - 1}, '
                             f'got {self.checkpoint_at}')
        if not 0 <= self.warmup < self.iters:
            raise ValueError(f'warmup {self.warmup} leaves no timed iteration of {self.iters}')
        if {'probe', 'multitask'} & set(self.parts):
            for n in self.nprocs:
                per_process_batch(self.global_batch, n)
        if 'resume' in self.parts:
            if self.resume_config not in ('probe', 'multitask'):
                raise ValueError(f"resume_config must be 'probe' or 'multitask', got "
                                 f"{self.resume_config!r}")
            per_process_batch(self.global_batch, self.resume_n)
            if self.resume_n < 2:
                raise ValueError(f'the resume check interrupts a run of several processes; got '
                                 f'resume_nprocs {self.resume_n}')
        if 'clip' in self.parts:
            for n in self.nprocs:
                per_process_batch(self.clip_global_batch, n, 'CLIP global batch')
            if self.clip_steps % self.clip_workers:
                raise ValueError(f'clip_steps {self.clip_steps} must be a multiple of clip_workers '
                                 f'{self.clip_workers}: open_clip_train splits the batches of an '
                                 f'epoch evenly over the loader workers')
            if not 0 <= self.clip_warmup < self.clip_steps:
                raise ValueError(f'clip_warmup {self.clip_warmup} leaves no timed step of '
                                 f'{self.clip_steps}')
        for name in ('probe_config', 'multitask_config'):
            part = name.split('_')[0]
            used = part in self.parts or ('resume' in self.parts and self.resume_config == part)
            if used and not osp.isfile(getattr(self, name)):
                raise ValueError(f'{name} {getattr(self, name)!r} does not exist')
        if self.timeout_s <= 0:
            raise ValueError(f'timeout_s must be > 0, got {self.timeout_s}')


def default_loss_rtol(device: str) -> float:
    """Largest relative difference allowed between the loss curves of N processes and one.

    CPU (gloo, float32): N processes and one differ in the order of float32 sums (the DDP
    gradient is the mean of the processes' means) and, where labels have invalid pixels, in
    the loss normalisers (each process divides by its own count of valid pixels). Measured
    (docs/benchmarks/scaling.md): 1e-7 for the linear probe, 1e-5 for the multi-task probe.
    1e-4 is above both and far below a fault: per-process BatchNorm statistics alone move the
    probe's curve by 3e-2. GPU: TF32 convolutions (cuDNN's default), algorithms chosen per batch
    size and SyncBN's reductions differ between N and 1 by ~1e-3 relative per layer; 2e-2 is a
    first guess that the first multi-GPU run has to confirm.
    """
    return 1e-4 if device == 'cpu' else 2e-2


# --------------------------------------------------------------------------- data

def _resize_tree(data_root: str, size: Tuple[int, int]) -> None:
    """Resize every image under ``data_root`` to ``size`` (H, W), in place: images bilinearly,
    label maps (anything under an ``annotations`` folder) by nearest neighbour."""
    import cv2

    h, w = size
    for folder, _, files in os.walk(data_root):
        label = 'annotations' in folder.split(os.sep)
        for name in files:
            if not name.endswith(('.jpg', '.png')):
                continue
            path = osp.join(folder, name)
            array = cv2.imread(path, cv2.IMREAD_UNCHANGED if label else cv2.IMREAD_COLOR)
            array = cv2.resize(array, (w, h), interpolation=cv2.INTER_NEAREST if label
                               else cv2.INTER_LINEAR)
            if not cv2.imwrite(path, array):
                raise OSError(f'could not write {path}')


_SEG_DEMO = {'ADE20KDataset': 'ade20k', 'NYUDataset': 'nyu-depth', 'NYUv2Seg40Dataset': 'nyu40'}
_MULTITASK_DEMO = {'NYUDMultiTaskDataset': 'nyud-mt', 'PascalMultiTaskDataset': 'pascal-mt'}


def make_data(dataset_type: str, root: str, size: Tuple[int, int],
              train_images: int = 48) -> str:
    """Synthetic data of the layout ``dataset_type`` reads, at ``size`` (H, W); its data_root.

    The demo generators' scenes (:mod:`gspn2_dense.demo`): the multi-task ones are drawn at
    ``size`` (``train_images`` of them), the single-task ones are the demo's (48 training
    images), drawn at the demo's size and resized. Kept when present.
    """
    if dataset_type in _MULTITASK_DEMO:
        from gspn2_dense.demo.multitask_data import make_multitask_data
        name = _MULTITASK_DEMO[dataset_type]
        return make_multitask_data(root, [name], splits={'train': train_images, 'val': 1},
                                        size=size)[name]
    if dataset_type in _SEG_DEMO:
        from gspn2_dense.demo import make_probe_data
        name = _SEG_DEMO[dataset_type]
        marker = osp.join(root, f'.{name}-resized')
        data_root = make_probe_data(root, [name])[name]
        if not osp.isfile(marker):
            _resize_tree(data_root, size)
            open(marker, 'w').close()
        return data_root
    raise ValueError(f'no data generator for dataset type {dataset_type!r}; the benchmark '
                     f'generates {sorted(_SEG_DEMO) + sorted(_MULTITASK_DEMO)}')


def make_clip_shards(root: str, plan: ScalingPlan, image_size: int):
    """Shards for ``plan.clip_steps`` steps of ``plan.clip_global_batch`` at every N of the plan.

    ``max(N) x workers`` shards (each loader worker of each rank gets whole shards), each large
    enough that no worker runs out before the epoch's last step.
    """
    from gspn2_dense.demo.clip_data import make_clip_shards

    num_shards = max(plan.nprocs) * plan.clip_workers
    worker_batches = plan.clip_steps // plan.clip_workers
    per_shard = math.ceil(worker_batches * plan.clip_global_batch / max(plan.nprocs))
    return make_clip_shards(osp.join(root, f'clip-{image_size}px-{num_shards}x{per_shard}'),
                          num_shards=num_shards, samples_per_shard=per_shard, val_per_class=1,
                          image_size=image_size)


# --------------------------------------------------------------------------- configs

def derive_config(config: str, out_path: str, data_root: str, size: Tuple[int, int],
                  plan: ScalingPlan) -> str:
    """Write a leaf config over ``config`` for the scaling runs; return its path.

    Changes: generated data (``data_root``) without the random transforms; no validation;
    the backbone's random initialisation (no pretrained file is needed); ``plan.iters``
    iterations with a linear warm-up over all of them; checkpoints every ``checkpoint_at``
    iterations, all kept; the :class:`ScalingRecordHook` before the config's own custom hooks.
    Batch size and hook options are set per run on the command line.
    """
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    pipeline = [t.to_dict() if hasattr(t, 'to_dict') else dict(t)
                for t in cfg.train_dataloader.dataset.pipeline
                if not _RANDOM_TRANSFORMS.search(t['type'])]
    model = {}
    if cfg.model.get('backbone', {}).get('init_cfg') is not None:
        model['backbone'] = dict(init_cfg=None)
    if cfg.model.get('data_preprocessor', {}).get('size') is not None:
        model['data_preprocessor'] = dict(size=tuple(size))
    imports = list(cfg.get('custom_imports', {}).get('imports', [])) + [__name__]
    hooks = [h.to_dict() if hasattr(h, 'to_dict') else dict(h) for h in cfg.get('custom_hooks', [])]
    workers = plan.workers if plan.device == 'cuda' else 0
    lines = [
        f'# Written by {__name__} for the scaling benchmark: {config} on generated data at '
        f'{size[0]}x{size[1]}',
        f'# without random transforms, no validation, {plan.iters} iterations, per-iteration '
        'records.',
        f'_base_ = {osp.abspath(config)!r}',
        f'custom_imports = dict(imports={imports!r}, allow_failed_imports=False)',
        f'model = {model!r}',
        f'train_dataloader = dict(num_workers={workers}, persistent_workers={workers > 0}, '
        f"sampler=dict(type='InfiniteSampler', shuffle=True), "
        f'dataset=dict(data_root={data_root!r}, pipeline={pipeline!r}))',
        'val_dataloader = None', 'val_cfg = None', 'val_evaluator = None',
        'test_dataloader = None', 'test_cfg = None', 'test_evaluator = None',
        f"train_cfg = dict(type='IterBasedTrainLoop', max_iters={plan.iters}, "
        f'val_interval={plan.iters})',
        f"param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, "
        f'end={plan.iters})]',
        f'default_hooks = dict(logger=dict(interval={plan.iters}), checkpoint=dict('
        f'interval={plan.checkpoint_at}, max_keep_ckpts=-1, save_last=True))',
        # first, so that the per-run options can name it custom_hooks.0
        f"custom_hooks = [dict(type='ScalingRecordHook')] + {hooks!r}",
        'randomness = dict(seed=0)',
    ]
    os.makedirs(osp.dirname(out_path), exist_ok=True)
    with open(out_path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    return out_path


def config_resolution(config: str) -> Tuple[int, int]:
    from mmengine.config import Config

    crop = Config.fromfile(config).get('crop_size')
    if crop is None:
        raise ValueError(f'{config} has no crop_size: pass a resolution')
    return int(crop[0]), int(crop[1])


# --------------------------------------------------------------------------- launching

def launch_env(device: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of the launched processes: ``base`` (default ``os.environ``) with NVLink
    multicast off, ``PYTHON`` for the launch scripts and, on the CPU, one thread per process
    (so that N processes on N cores compare with one on one core) unless set."""
    env = dict(os.environ if base is None else base)
    env.update(NVLINK_MULTICAST_OFF)
    env['PYTHON'] = sys.executable
    env['PYTHONUNBUFFERED'] = '1'
    if device == 'cpu':
        env.setdefault('OMP_NUM_THREADS', '1')
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _rel(text: str) -> str:
    """``text`` with paths inside the current folder made relative to it."""
    return text.replace(os.getcwd() + os.sep, '')


def _shown(cmd: Sequence[str], env: Dict[str, str], keys: Sequence[str]) -> str:
    """The command as one shell line, with the environment variables that matter."""
    prefix = [f'{k}={env[k]}' for k in keys if k in env]
    return shlex.join([_rel(w) for w in prefix + list(cmd)])


def _end_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _launch(cmd: List[str], env: Dict[str, str], log_path: str, timeout_s: float) -> int:
    """Run ``cmd`` in its own process group, output to ``log_path``; returns the exit code.

    The group is ended on timeout and when this process is stopped while waiting (an
    exception, or SIGTERM turned into ``SystemExit`` as ``tools/benchmark_scaling.py`` does):
    torchrun's workers would outlive a killed torchrun and keep the GPUs busy.
    """
    with open(log_path, 'w', encoding='utf-8') as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            log.write(f'\n[scaling] stopped after {timeout_s:.0f} s\n')
            return 124
        finally:
            if proc.poll() is None:
                _end_group(proc)


def _tail(path: str, lines: int = 8) -> str:
    if not osp.isfile(path):
        return ''
    with open(path, encoding='utf-8', errors='replace') as f:
        return ''.join(f.readlines()[-lines:]).strip()


_SHOWN_ENV = ('NCCL_NVLS_ENABLE', 'TORCH_SYMM_MEM_DISABLE_MULTICAST', 'NVSHMEM_DISABLE_NVLS',
              'OMP_NUM_THREADS', 'PORT')


def read_records(path: str) -> dict:
    """``{'start': {...}, 'iters': [{iter, losses, step_s, cycle_s, peak_gib}, ...]}``."""
    start, iters = None, []
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            for line in f:
                record = json.loads(line)
                if record.get('event') == 'start':
                    start = record
                else:
                    iters.append(record)
    return dict(start=start, iters=iters)


def _median_rate(batch: int, seconds: Sequence[float]) -> Optional[float]:
    return batch / statistics.median(seconds) if seconds else None


def run_mmengine(part: str, config: str, n: int, run_dir: str, plan: ScalingPlan, tools_dir: str,
                 options: Sequence[str] = (), resume: bool = False,
                 interrupt_after: Optional[int] = None) -> dict:
    """``tools/dist_train.sh config n`` into ``run_dir``; the run's row (see :func:`summarise`)."""
    if not resume and osp.isdir(run_dir):
        shutil.rmtree(run_dir)  # a run of an earlier invocation would be resumed or appended to
    os.makedirs(run_dir, exist_ok=True)
    env = launch_env(plan.device)
    env['PORT'] = str(_free_port())
    batch = per_process_batch(plan.global_batch, n)
    record = RESUMED_RECORD_FILE if resume else RECORD_FILE
    cfg_options = [f'train_dataloader.batch_size={batch}', f'custom_hooks.0.record_name={record}']
    if interrupt_after is not None:
        cfg_options.append(f'custom_hooks.0.interrupt_after={interrupt_after}')
    cmd = ['bash', osp.join(tools_dir, 'dist_train.sh'), config, str(n), '--work-dir', run_dir,
           *(['--resume'] if resume else []), '--cfg-options', *cfg_options, *options]
    log_name = 'resume.log' if resume else 'launch.log'
    started = time.perf_counter()
    rc = _launch(cmd, env, osp.join(run_dir, log_name), plan.timeout_s)
    records = read_records(osp.join(run_dir, record))
    timed = [r['cycle_s'] for r in records['iters'][plan.warmup:]] if not resume else []
    row = dict(part=part, config=config, nprocs=n, batch_per_proc=batch,
               global_batch=plan.global_batch, command=_shown(cmd, env, _SHOWN_ENV), rc=rc,
               wall_s=round(time.perf_counter() - started, 1), start=records['start'],
               ips_per_proc=_median_rate(batch, timed),
               peak_gib=max((r['peak_gib'] for r in records['iters']), default=None),
               curve={r['iter']: r['losses']['loss'] for r in records['iters']},
               work_dir=osp.relpath(run_dir))  # relative: reports carry no machine paths
    if rc != 0 or not records['iters']:
        row['error'] = _tail(osp.join(run_dir, log_name)) or f'exit code {rc}, no records'
    return row


_CLIP_STEP = re.compile(r'Train Epoch: \d+ \[\s*(\d+)/\d+ .*?, ([\d.e+-]+)/s/gpu .* Loss: '
                        r'([\d.e+-]+) \(')


def run_clip(n: int, run_dir: str, shards, plan: ScalingPlan, tools_dir: str) -> dict:
    """``torchrun`` of ``n`` CLIP training processes on ``shards``; the run's row."""
    if osp.isdir(run_dir):
        shutil.rmtree(run_dir)  # open_clip_train refuses an existing experiment folder
    os.makedirs(run_dir)
    env = launch_env(plan.device)
    port = _free_port()
    batch = per_process_batch(plan.clip_global_batch, n, 'CLIP global batch')
    cuda = plan.device == 'cuda'
    train_args = [
        '--model', plan.clip_model, '--train-data', shards.train_pattern,
        '--dataset-type', 'webdataset', '--train-num-samples',
        str(plan.clip_steps * plan.clip_global_batch), '--batch-size', str(batch),
        '--epochs', '1', '--workers', str(plan.clip_workers),
        '--precision', 'amp_bf16' if cuda else 'fp32', '--device', plan.device,
        '--lr', '5e-4', '--wd', '0.2', '--beta1', '0.9', '--beta2', '0.98', '--eps', '1e-6',
        '--warmup', str(max(1, plan.clip_steps // 4)), '--local-loss', '--gather-with-grad',
        *(['--grad-checkpointing'] if cuda else []),
        '--log-every-n-steps', '1', '--logs', run_dir, '--name', 'run', '--seed', '0']
    peak_prefix = osp.join(run_dir, 'peak')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node',
           str(n), '--master_addr', '127.0.0.1', '--master_port', str(port),
           osp.join(tools_dir, 'benchmark_scaling.py'), '--', 'clip-worker', peak_prefix,
           *train_args]
    started = time.perf_counter()
    rc = _launch(cmd, env, osp.join(run_dir, 'launch.log'), plan.timeout_s)
    out_log = osp.join(run_dir, 'run', 'out.log')
    steps = []
    if osp.isfile(out_log):
        with open(out_log, encoding='utf-8', errors='replace') as f:
            for line in f:
                match = _CLIP_STEP.search(line)
                if match:
                    steps.append((int(match.group(1)) // plan.clip_global_batch,
                                  float(match.group(2)), float(match.group(3))))
    peaks, candidates = [], []
    for rank in range(n):
        path = f'{peak_prefix}.rank{rank}.json'
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                record = json.load(f)
            peaks.append(record['peak_gib'])
            candidates += record.get('candidates') or []
    row = dict(part='clip', config=plan.clip_model, nprocs=n, batch_per_proc=batch,
               global_batch=plan.clip_global_batch,
               command=_shown(cmd, env, _SHOWN_ENV[:4]), rc=rc,
               wall_s=round(time.perf_counter() - started, 1),
               ips_per_proc=statistics.median([s[1] for s in steps[plan.clip_warmup:]])
               if steps[plan.clip_warmup:] else None,
               peak_gib=max(peaks) if peaks else None,
               curve={step: loss for step, _, loss in steps},
               candidates=[min(candidates), max(candidates)] if candidates else None,
               work_dir=osp.relpath(run_dir))
    if rc != 0 or not steps:
        row['error'] = (_tail(out_log) or _tail(osp.join(run_dir, 'launch.log'))
                        or f'exit code {rc}, no steps logged')
    return row


# --------------------------------------------------------------------------- comparisons

def max_rel_diff(curve: Dict[int, float], reference: Dict[int, float],
                 iters: Optional[Sequence[int]] = None) -> Optional[float]:
    """Largest ``|curve - reference| / |reference|`` over the iterations both hold (or the
    ``iters`` among them)."""
    keys = [k for k in (iters if iters is not None else curve) if k in curve and k in reference]
    if not keys:
        return None
    return max(abs(curve[k] - reference[k]) / max(abs(reference[k]), 1e-12) for k in keys)


def gathered(row: dict) -> bool:
    """Every step of a CLIP run contrasted each image with all texts of the global batch
    (:func:`run_clip_worker` records the logits' columns of every process and step)."""
    return row.get('candidates') == [row['global_batch'], row['global_batch']]


def mean_rel_diff(curve: Dict[int, float], reference: Dict[int, float]) -> Optional[float]:
    """``|mean(curve) - mean(reference)| / mean(reference)`` (CLIP: other samples at other N)."""
    if not curve or not reference:
        return None
    mean = statistics.fmean(curve.values())
    ref = statistics.fmean(reference.values())
    return abs(mean - ref) / max(abs(ref), 1e-12)


def _flat_tensors(state, prefix: str = '') -> Dict[str, torch.Tensor]:
    out = {}
    if isinstance(state, dict):
        for key, value in state.items():
            out.update(_flat_tensors(value, f'{prefix}{key}.'))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            out.update(_flat_tensors(value, f'{prefix}{i}.'))
    elif isinstance(state, torch.Tensor):
        out[prefix[:-1]] = state
    elif isinstance(state, (int, float)) and not isinstance(state, bool):
        out[prefix[:-1]] = torch.tensor(float(state))
    return out


def state_rel_diff(state, reference) -> float:
    """Largest relative difference between two (nested) states' numbers: ``max|a - b| /
    max(max|b|, tiny)`` per tensor; ``inf`` when they do not hold the same entries."""
    a, b = _flat_tensors(state), _flat_tensors(reference)
    if a.keys() != b.keys():
        return math.inf
    worst = 0.0
    for key, ref in b.items():
        value = a[key]
        if value.shape != ref.shape:
            return math.inf
        if ref.numel() == 0:
            continue
        value, ref = value.double(), ref.double()
        worst = max(worst, ((value - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item())
    return worst


def _load(path: str):
    from gspn2_dense.engine.checkpoint import load_checkpoint_file
    return load_checkpoint_file(path, map_location='cpu', expected='a checkpoint of this run')


def check_resume(reference: dict, run_dir: str, plan: ScalingPlan, tools_dir: str,
                 config: str, options: Sequence[str]) -> dict:
    """Interrupt a run of ``reference['nprocs']`` processes at ``checkpoint_at``, resume it and
    compare with the uninterrupted ``reference`` run (a :func:`run_mmengine` row)."""
    n, c = reference['nprocs'], plan.checkpoint_at
    first = run_mmengine('resume', config, n, run_dir, plan, tools_dir, options,
                         interrupt_after=c)
    row = dict(part=reference['part'], config=config, nprocs=n, resume_at=c, iters=plan.iters,
               commands=[first['command']], interrupted_last_iter=max(first['curve'], default=None))
    if first['rc'] != 0 or row['interrupted_last_iter'] != c:
        row['error'] = first.get('error') or (f'the interrupted run stopped at iteration '
                                              f'{row["interrupted_last_iter"]}, expected {c}')
        return row
    second = run_mmengine('resume', config, n, run_dir, plan, tools_dir, options, resume=True)
    row['commands'].append(second['command'])
    if second['rc'] != 0 or not second['curve']:
        row['error'] = second.get('error') or 'the resumed run recorded no iteration'
        return row
    row['resumed_start_iter'] = second['start']['iter']
    row['resumed_first_iter'] = min(second['curve'])
    row['resumed_last_iter'] = max(second['curve'])
    ref_dir = reference['work_dir']
    at_start = torch.load(osp.join(run_dir, OPTIMIZER_AT_START), map_location='cpu',
                          weights_only=True)
    row['optimizer_rel_diff'] = state_rel_diff(at_start, _load(osp.join(ref_dir, f'iter_{c}.pth'))
                                               ['optimizer'])
    row['loss_rel_diff'] = max_rel_diff(second['curve'], reference['curve'],
                                        range(c + 1, plan.iters + 1))
    final = osp.join(run_dir, f'iter_{plan.iters}.pth')
    ref_final = osp.join(ref_dir, f'iter_{plan.iters}.pth')
    row['weights_rel_diff'] = state_rel_diff(_load(final)['state_dict'],
                                             _load(ref_final)['state_dict'])
    row['optimizer_final_rel_diff'] = state_rel_diff(_load(final)['optimizer'],
                                                     _load(ref_final)['optimizer'])
    return row


def resume_ok(row: dict, rtol: float) -> bool:
    """The resumed run restarts at C and runs C+1..K; its state and losses match the
    uninterrupted run's within ``rtol``."""
    if 'error' in row:
        return False
    c, k = row['resume_at'], row['iters']
    return (row['resumed_start_iter'] == c and row['resumed_first_iter'] == c + 1
            and row['resumed_last_iter'] == k
            and all(row[key] is not None and row[key] <= rtol
                    for key in ('optimizer_rel_diff', 'loss_rel_diff', 'weights_rel_diff',
                                'optimizer_final_rel_diff')))


def summarise(runs: Sequence[dict], tolerances: Dict[str, float]) -> List[dict]:
    """Add efficiency and loss agreement against the N = 1 run of the same part (and device)."""
    out = []
    for row in runs:
        row = dict(row)
        base = next((r for r in runs if r['part'] == row['part'] and r['nprocs'] == 1
                     and r.get('device') == row.get('device') and 'error' not in r), None)
        row['efficiency'] = (row['ips_per_proc'] / base['ips_per_proc']
                             if base and row.get('ips_per_proc') and base.get('ips_per_proc')
                             else None)
        if base is None or 'error' in row:
            row['loss_rel_diff'] = None
        elif row['part'] == 'clip':
            row['loss_rel_diff'] = mean_rel_diff(row['curve'], base['curve'])
        else:
            row['loss_rel_diff'] = max_rel_diff(row['curve'], base['curve'])
        tol = tolerances.get(row['part'])
        row['loss_ok'] = (None if row['loss_rel_diff'] is None or row['nprocs'] == 1
                          else row['loss_rel_diff'] <= tol)
        if row['part'] == 'clip' and 'error' not in row:
            row['gathered'] = gathered(row)
            if row['loss_ok'] is not None:
                row['loss_ok'] = row['loss_ok'] and row['gathered']
        out.append(row)
    return out


# --------------------------------------------------------------------------- the whole benchmark

def scaling_stamp(device: str, commit: Optional[str] = None) -> dict:
    """:func:`~gspn2_dense.benchmarks.timing.run_stamp` with the backend and, on GPUs, their
    number in the device's name."""
    stamp = run_stamp(torch.device(device), commit)
    if device == 'cuda':
        stamp['device'] = f'{torch.cuda.device_count()} x {stamp["device"]}'
    stamp['backend'] = 'nccl' if device == 'cuda' else 'gloo'
    return stamp


def run_benchmark(plan: ScalingPlan, tools_dir: str, commit: Optional[str] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Run every part of ``plan``; the result (what :func:`markdown` reports)."""
    plan.check()
    work_dir = osp.abspath(plan.work_dir)
    tolerances = dict(probe=plan.loss_rtol or default_loss_rtol(plan.device),
                      multitask=plan.loss_rtol or default_loss_rtol(plan.device),
                      clip=plan.clip_loss_rtol)
    result = dict(scaling_stamp(plan.device, commit), plan=asdict(plan), tolerances=tolerances,
                  runs=[], resume=[], data={}, load_average=[load_average()])
    configs = dict(probe=(plan.probe_config, plan.probe_options),
                   multitask=(plan.multitask_config, plan.multitask_options))
    derived = {}

    def prepared(part):
        if part not in derived:
            config, _ = configs[part]
            from mmengine.config import Config
            size = plan.resolution or config_resolution(config)
            dataset_type = Config.fromfile(config).train_dataloader.dataset.type
            data_root = make_data(dataset_type, osp.join(work_dir, 'data', f'{size[0]}x{size[1]}'),
                                  size)
            result['data'][part] = dict(dataset_type=dataset_type, data_root=_rel(data_root),
                                        resolution=list(size))
            derived[part] = derive_config(config, osp.join(work_dir, 'configs', f'{part}.py'),
                                          data_root, size, plan)
        return derived[part]

    for part in ('probe', 'multitask'):
        if part not in plan.parts:
            continue
        for n in plan.nprocs:
            log(f'[scaling] {part}: {n} process(es)')
            row = run_mmengine(part, prepared(part), n, osp.join(work_dir, 'runs', part, f'n{n}'),
                               plan, tools_dir, configs[part][1])
            row.update(config=configs[part][0], device=result['device'])
            result['runs'].append(row)
            log(f'[scaling]   {_row_line(row)}')
    if 'clip' in plan.parts:
        import open_clip
        from gspn2_dense.clip import register_model_configs
        register_model_configs()
        image_size = open_clip.get_model_config(plan.clip_model)['vision_cfg']['image_size']
        image_size = image_size if isinstance(image_size, int) else image_size[0]
        shards = make_clip_shards(osp.join(work_dir, 'data'), plan, image_size)
        result['data']['clip'] = dict(train_pattern=_rel(shards.train_pattern),
                                      num_samples=shards.num_samples, image_size=image_size)
        for n in plan.nprocs:
            log(f'[scaling] clip: {n} process(es)')
            row = run_clip(n, osp.join(work_dir, 'runs', 'clip', f'n{n}'), shards, plan, tools_dir)
            row['device'] = result['device']
            result['runs'].append(row)
            log(f'[scaling]   {_row_line(row)}')
    if 'resume' in plan.parts:
        part, n = plan.resume_config, plan.resume_n
        reference = next((r for r in result['runs'] if r['part'] == part and r['nprocs'] == n
                          and 'error' not in r), None)
        if reference is None:
            log(f'[scaling] resume: the uninterrupted reference, {part} on {n} processes')
            reference = run_mmengine(part, prepared(part), n,
                                     osp.join(work_dir, 'runs', part, f'n{n}'), plan, tools_dir,
                                     configs[part][1])
        log(f'[scaling] resume: {part} on {n} processes, interrupted at {plan.checkpoint_at}')
        if 'error' in reference:
            row = dict(part=part, nprocs=n, resume_at=plan.checkpoint_at, iters=plan.iters,
                       commands=[], error=f'the uninterrupted run failed: {reference["error"]}')
        else:
            row = check_resume(reference, osp.join(work_dir, 'runs', 'resume', f'{part}-n{n}'),
                               plan, tools_dir, prepared(part), configs[part][1])
        row.update(config=configs[part][0], device=result['device'],
                   reference_command=reference.get('command', ''))
        result['resume'].append(row)
        log(f'[scaling]   resume ok: {resume_ok(row, tolerances[part])}'
            + (f' ({row["error"]})' if 'error' in row else ''))
    result['runs'] = summarise(result['runs'], tolerances)
    result['load_average'].append(load_average())
    return result


def combine(results: Sequence[dict]) -> List[dict]:
    """Merge results of the same device and backend (e.g. N = 1, 2 and N = 4, 8 run in two
    calls) into one, later runs of the same part and N replacing earlier ones; efficiency and
    loss agreement are computed again over the merged runs."""
    merged: Dict[Tuple[str, str], dict] = {}
    for result in results:
        key = (result['device'], result['backend'])
        if key not in merged:
            merged[key] = dict(result, runs=[], resume=[], data=dict(result['data']))
        target = merged[key]
        for row in result['runs']:
            row = dict(row, curve={int(k): v for k, v in row['curve'].items()})
            target['runs'] = [r for r in target['runs']
                              if (r['part'], r['nprocs']) != (row['part'], row['nprocs'])] + [row]
        target['resume'] += result['resume']
        target['data'].update(result['data'])
        if result['commit'] != target['commit']:
            target['commit'] = f'{target["commit"]}, {result["commit"]}'
    out = []
    for result in merged.values():
        runs = sorted(result['runs'], key=lambda r: (PARTS.index(r['part']), r['nprocs']))
        out.append(dict(result, runs=summarise(runs, result['tolerances'])))
    return out


def _row_line(row: dict) -> str:
    if 'error' in row:
        return f'failed (exit {row["rc"]}): {row["error"].splitlines()[-1] if row["error"] else ""}'
    return (f'{fmt(row["ips_per_proc"], ".1f")} img/s per process, peak '
            f'{fmt(row["peak_gib"], ".2f")} GiB, {len(row["curve"])} iterations, {row["wall_s"]} s')


# --------------------------------------------------------------------------- the report

_PART_TITLES = dict(probe='linear probe', multitask='multi-task probe', clip='CLIP')


def _runs_table(result: dict) -> str:
    peak = ('peak GiB (max allocated, busiest GPU)' if result['backend'] == 'nccl'
            else 'peak GiB (RSS, largest process)')
    rows = []
    for r in result['runs']:
        ips = r['ips_per_proc']
        agree = '-' if r['loss_ok'] is None else ('yes' if r['loss_ok'] else '**no**')
        rows.append([_PART_TITLES[r['part']], f'`{osp.basename(r["config"])}`', r['nprocs'],
                     r['batch_per_proc'], r['global_batch'], fmt(ips, '.2f'),
                     fmt(ips and ips * r['nprocs'], '.2f'), fmt(r['efficiency'], '.2f'),
                     fmt(r['peak_gib'], '.2f'), fmt(r['loss_rel_diff'], '.1e'), agree,
                     'failed: ' + r['error'].splitlines()[-1][:120] if 'error' in r else ''])
    return report.table(['run', 'config', 'N', 'batch / proc', 'global batch', 'img/s / proc',
                         'img/s total', 'efficiency', peak, 'loss diff vs N=1', 'curves agree',
                         'note'], rows)


def _curves_table(result: dict) -> str:
    picks = sorted({1, result['plan']['iters'] // 2, result['plan']['iters']})
    return report.table(['run', 'N'] + [f'iter {i}' for i in picks],
                        [[_PART_TITLES[r['part']], r['nprocs']]
                         + [fmt(r['curve'].get(i), '.6f') for i in picks]
                         for r in result['runs'] if r['curve'] and r['part'] != 'clip'])


def _resume_section(result: dict, row: dict) -> List[str]:
    c, k = row['resume_at'], row['iters']
    lines = ['', f'### Resume: `{osp.basename(row.get("config", ""))}` on {row["nprocs"]} '
                 f'processes, stopped after iteration {c} of {k}', '']
    if 'error' in row:
        return lines + [f'Failed: {row["error"]}']
    ok = resume_ok(row, result['tolerances'][row['part']])
    lines.append(report.table(['check', 'value'], [
        [f'iteration the resumed run starts at (expected {c})', row['resumed_start_iter']],
        ['iterations it runs', f'{row["resumed_first_iter"]}..{row["resumed_last_iter"]}'],
        [f'optimizer state as loaded vs the uninterrupted run at {c} (max rel. diff)',
         fmt(row['optimizer_rel_diff'], '.1e')],
        [f'losses {c + 1}..{k} vs the uninterrupted run (max rel. diff)',
         fmt(row['loss_rel_diff'], '.1e')],
        [f'weights at {k} (max rel. diff)', fmt(row['weights_rel_diff'], '.1e')],
        [f'optimizer state at {k} (max rel. diff)', fmt(row['optimizer_final_rel_diff'], '.1e')],
        ['all within the tolerance', 'yes' if ok else '**no**']]))
    return lines + ['', 'Commands (uninterrupted, stopped, resumed):', '', '```',
                    row['reference_command'], *row['commands'], '```']


def markdown(results: Sequence[dict], note: str = '') -> str:
    """The report of one or more :func:`combine` -d results (e.g. a CPU and a GPU session)."""
    lines = ['# Scaling over processes: linear probe, multi-task probe, CLIP', '']
    if note:
        lines += [note.strip(), '']
    lines += ['Made by `tools/benchmark_scaling.py` (what is measured and how: '
              '`gspn2_dense/benchmarks/scaling.py`). Per-process batch = global batch / N; '
              'efficiency = images/s per process at N / images/s per process at N = 1; loss '
              'diff = the largest relative difference of the loss (averaged over the processes) '
              'from the N = 1 run at any iteration (CLIP: of the mean loss over the steps, since '
              'its data order depends on N; its curves agree only if every step also contrasted '
              'each image with all texts of the global batch). The `configs/<part>.py` in the '
              'commands are the leaf configs the benchmark writes over the named ones: '
              'generated data at the training '
              'resolution without random transforms, no validation, a linear warm-up over the '
              'short run, checkpoints every `resume_at` iterations, per-iteration records.', '']
    for result in results:
        plan = result['plan']
        loads = ' -> '.join(str(v[0]) for v in result.get('load_average', []))
        lines += [f'## {result["device"]}, {result["backend"]}', '',
                  f'{report.stamp_line(result)}. {result["cores"]} CPU cores, 1-minute load '
                  f'average {loads or "-"} over the runs. {plan["iters"]} iterations per mmengine '
                  f'run (the first {plan["warmup"]} untimed), {plan["clip_steps"]} CLIP steps (the '
                  f'first {plan["clip_warmup"]} untimed). Tolerances on the loss diff: '
                  + ', '.join(f'{_PART_TITLES[k]} {v:g}' for k, v in result['tolerances'].items())
                  + '.', '']
        if result.get('command'):
            lines += [f'Benchmark command: `{result["command"]}`', '']
        for name, data in result['data'].items():
            lines.append(f'* {_PART_TITLES[name]} data: ' + ', '.join(
                f'{k} `{v}`' if isinstance(v, str) else f'{k} {v}' for k, v in data.items()))
        lines += ['', _runs_table(result)]
        if any(r['curve'] and r['part'] != 'clip' for r in result['runs']):
            lines += ['', 'Loss of the global batch (mean over the processes) at a few '
                          'iterations:', '', _curves_table(result)]
        for row in result['resume']:
            lines += _resume_section(result, row)
        lines += ['', 'Commands:', '', '```', *[r['command'] for r in result['runs']], '```', '']
    return '\n'.join(lines)


def write_report(results: Sequence[dict], out_stem: str, note: str = '') -> str:
    """``<out_stem>.json`` (``{"results": [...]}``, :func:`combine` -d) and ``<out_stem>.md``;
    returns the markdown."""
    results = combine(results)
    text = markdown(results, note)
    report.write(out_stem, dict(results=results), text)
    return text


def read_results(path: str) -> List[dict]:
    """The results in a file written by :func:`write_report` (or one result as a JSON object)."""
    loaded = report.read(path)
    return loaded['results'] if 'results' in loaded else [loaded]


def failures(results: Sequence[dict]) -> List[str]:
    """What failed or disagreed, one line each (empty when every run and check passed)."""
    out = []
    for result in results:
        for r in result['runs']:
            if 'error' in r:
                out.append(f'{r["part"]} N={r["nprocs"]}: failed')
            elif r.get('gathered') is False:
                out.append(f'{r["part"]} N={r["nprocs"]}: the loss contrasted '
                           f'{r["candidates"]} texts per image, not the global batch of '
                           f'{r["global_batch"]}')
            elif r.get('loss_ok') is False:
                out.append(f'{r["part"]} N={r["nprocs"]}: loss curve differs from N=1 by '
                           f'{r["loss_rel_diff"]:.1e}')
        for r in result['resume']:
            if not resume_ok(r, result['tolerances'][r['part']]):
                why = (r.get('error') or 'mismatch').splitlines()[-1]
                out.append(f'resume N={r["nprocs"]}: {why}')
    return out
