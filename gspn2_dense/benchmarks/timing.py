"""The one timer, the peak-memory probe and the stamp every benchmark report carries."""
import datetime
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional

import torch

# Environment variables that change timings; a stamp records those that are set
# (THP_MEM_ALLOC_ENABLE=1: PyTorch's CPU allocator asks for transparent huge pages for large
# tensors, docs/ops.md).
TIMING_ENVIRONMENT = ('THP_MEM_ALLOC_ENABLE', 'OMP_NUM_THREADS', 'PYTORCH_CUDA_ALLOC_CONF',
                      'CUDA_LAUNCH_BLOCKING')


class Timing(NamedTuple):
    """Milliseconds of a call: ``ms`` by CUDA events on a GPU, by the wall clock on the CPU;
    ``cpu_ms`` the process CPU time of all threads (CPU only: on a GPU it would count the
    host's wait), which other jobs on a shared machine disturb less than the wall clock."""
    ms: float
    cpu_ms: Optional[float]


class Timer:
    """Times callables on one device: one call (:meth:`once`) or the median of several after a
    warm-up (:meth:`measure`, :meth:`median_ms`)."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == 'cuda'

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn: Callable[[], object]) -> Timing:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return Timing(start.elapsed_time(end), None)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return Timing((time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3)

    def measure(self, fn: Callable[[], object], iters: int, warmup: int) -> Timing:
        """Medians of ``iters`` calls after ``warmup`` untimed ones."""
        for _ in range(warmup):
            fn()
        self.sync()
        samples = [self.once(fn) for _ in range(iters)]
        cpu = None if self.cuda else statistics.median(s.cpu_ms for s in samples)
        return Timing(statistics.median(s.ms for s in samples), cpu)

    def median_ms(self, fn: Callable[[], object], iters: int, warmup: int) -> float:
        return self.measure(fn, iters, warmup).ms

    def peak_gib(self, fn: Callable[[], object]) -> Optional[float]:
        """GPU memory allocated at the peak of one call beyond what was allocated before it."""
        if not self.cuda:
            return None
        fn()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**30


def git(*args: str) -> bytes:
    """The output of ``git args`` run in the working directory; ``ValueError`` with git's own
    message when it fails (no git, not a checkout, an unknown revision)."""
    try:
        done = subprocess.run(['git', *args], capture_output=True)
    except OSError as err:
        raise ValueError(f'cannot run git: {err}') from err
    if done.returncode != 0:
        raise ValueError(done.stderr.decode().strip() or f'git {args[0]} failed')
    return done.stdout


def git_commit() -> str:
    """The short hash of the checkout's HEAD, or 'unknown' (e.g. a tree copied without .git:
    pass the commit by hand then)."""
    try:
        return git('rev-parse', '--short', 'HEAD').decode().strip()
    except ValueError:
        return 'unknown'


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_stamp(device: torch.device, commit: Optional[str] = None) -> Dict:
    """What a report's figures were measured on and with: the device (GPU name, or CPU model),
    CPU cores, versions, the timing-relevant environment, date and commit."""
    import timm
    device = torch.device(device)
    return dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else _cpu_model(),
                cores=os.cpu_count(), torch=torch.__version__, cuda=str(torch.version.cuda),
                timm=timm.__version__, python=platform.python_version(),
                environment={k: os.environ[k] for k in TIMING_ENVIRONMENT if k in os.environ},
                date=datetime.date.today().isoformat(), commit=commit or git_commit())


def load_average() -> list:
    """The 1, 5 and 15 minute load averages: how busy the machine was."""
    return [round(v, 2) for v in os.getloadavg()]


def fmt(value, spec: str, missing: str = '-') -> str:
    return missing if value is None else format(value, spec)
