"""The main job behind ``make demo``: CLIP-train a tiny GSPN-2 tower, then probe it densely.

1. :func:`gspn2_dense.clip.demo.run_clip_demo` trains ``gspn2_nano`` CLIP on synthetic
   DataComp-style shards for a few minutes, evaluates it zero-shot next to the chance rate and
   converts its image tower into a backbone checkpoint;
2. :func:`gspn2_dense.demo.job.run_demo` trains and tests linear probes (segmentation on the
   ADE20K-layout demo data, depth on the NYU-layout demo data) on that frozen tower and prints
   each metric next to its chance baseline, with visualisations under the work dir.

``clip=False`` skips step 1 and probes a randomly initialised ``gspn2_nano``.
"""
import os.path as osp
import time
from typing import Callable, Dict, Optional

from .job import run_demo


def run_main_job(work_dir: str = 'work_dirs/demo', data_root: str = 'data/demo',
                 clip: bool = True, clip_minutes: float = 3.0, iters: Optional[int] = None,
                 log: Callable[[str], None] = lambda msg: print(msg, flush=True)) -> Dict[str, dict]:
    """Run both legs; returns :func:`run_demo`'s results plus ``'clip'`` (the tower's path)."""
    start = time.time()
    backbone_ckpt = None
    if clip:
        from gspn2_dense.clip.demo import run_clip_demo
        log(f'== CLIP leg: gspn2_nano image tower, about {clip_minutes:g} minutes of training')
        backbone_ckpt = run_clip_demo(osp.join(work_dir, 'clip'), minutes=clip_minutes, log=log)
    log('== dense-probe leg: linear probes on the frozen '
        + ('CLIP-trained tower' if clip else 'randomly initialised gspn2_nano'))
    results = run_demo(work_dir=work_dir, data_root=data_root, backbone_ckpt=backbone_ckpt,
                       iters=iters, log=log)
    results['clip'] = dict(backbone_ckpt=backbone_ckpt)
    log(f'== demo finished in {time.time() - start:.0f} s; outputs under {work_dir}')
    return results
