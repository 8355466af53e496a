"""The timer, the peak-memory probe and the stamp of a benchmark report."""
import datetime
import statistics
import subprocess
import time
from typing import Callable, Dict, Optional

import torch


class Timer:
    """Median time of a callable: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == 'cuda'

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def median_ms(self, fn: Callable[[], object], iters: int, warmup: int) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(iters):
            if self.cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

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


def git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def run_stamp(device: torch.device, commit: Optional[str] = None) -> Dict[str, str]:
    """Device, versions, date and commit, as every report states them."""
    import timm
    device = torch.device(device)
    return dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU',
                torch=torch.__version__, cuda=str(torch.version.cuda), timm=timm.__version__,
                date=datetime.date.today().isoformat(), commit=commit or git_commit())


def fmt(value, spec: str, missing: str = '-') -> str:
    return missing if value is None else format(value, spec)
