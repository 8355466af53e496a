"""The demo pipeline behind ``make demo``: CLIP-train a tiny GSPN-2 tower, then probe it densely.

1. :func:`gspn2_dense.demo.clip_leg.run_clip_leg` trains ``gspn2_nano`` CLIP on synthetic
   DataComp-style shards for a few minutes, evaluates it zero-shot next to the chance rate and
   converts its image tower into a backbone checkpoint;
2. :func:`gspn2_dense.demo.probe_leg.run_probe_leg` trains and tests linear probes (segmentation on the
   ADE20K-layout demo data, depth on the NYU-layout demo data) on that frozen tower and prints
   each metric next to its chance baseline, with visualisations under the work dir;
3. :func:`gspn2_dense.demo.multitask_leg.run_multitask_leg` trains and tests multi-task linear
   probes on the same frozen tower (NYUD-MT: semseg, depth, normals, edges; PASCAL-MT: semseg,
   human parts, saliency, normals, edges), prints every task's metric next to its chance
   baseline, Delta_m over single-task probes (NYUD-MT) and saves one panel per test image.

``clip=False`` skips step 1 and probes a randomly initialised ``gspn2_nano``.
"""
import os.path as osp
import time
from typing import Callable, Dict, Optional, Sequence

from .probe_leg import run_probe_leg
from .multitask_leg import MULTITASK_DEMO_CONFIGS, run_multitask_leg

# The multi-task leg's budget: iterations per run, and the datasets whose tasks are also probed
# one by one for Delta_m (each such task is one more run).
MULTITASK_ITERS = 120
MULTITASK_SINGLE_TASK = ('nyud-mt', )


def run_pipeline(work_dir: str = 'work_dirs/demo', data_root: str = 'data/demo',
                 clip: bool = True, clip_minutes: float = 3.0, iters: Optional[int] = None,
                 multitask: Sequence[str] = tuple(MULTITASK_DEMO_CONFIGS),
                 multitask_iters: int = MULTITASK_ITERS,
                 multitask_single_task: Sequence[str] = MULTITASK_SINGLE_TASK,
                 log: Callable[[str], None] = lambda msg: print(msg, flush=True)) -> Dict[str, dict]:
    """Run the legs; returns :func:`run_probe_leg`'s results, ``'multitask'`` and ``'clip'``.

    ``results['multitask']`` holds ``beats_chance`` (every task of every dataset beat chance),
    ``failed`` (``'<dataset> <task>'`` entries that did not) and ``datasets``
    (:func:`run_multitask_leg`'s results). ``iters`` sets the dense-probe leg's iterations,
    ``multitask_iters`` the multi-task leg's; ``multitask=()`` skips that leg.
    """
    start = time.time()
    backbone_ckpt = None
    tower = 'CLIP-trained tower' if clip else 'randomly initialised gspn2_nano'
    if clip:
        from gspn2_dense.demo.clip_leg import run_clip_leg
        log(f'== CLIP leg: gspn2_nano image tower, about {clip_minutes:g} minutes of training')
        backbone_ckpt = run_clip_leg(osp.join(work_dir, 'clip'), minutes=clip_minutes, log=log)
    log(f'== dense-probe leg: linear probes on the frozen {tower}')
    results = run_probe_leg(work_dir=work_dir, data_root=data_root, backbone_ckpt=backbone_ckpt,
                       iters=iters, log=log)
    if multitask:
        leg_start = time.time()
        log(f'== multi-task leg: multi-task linear probes on the frozen {tower} ({", ".join(multitask)})')
        datasets = run_multitask_leg(work_dir=osp.join(work_dir, 'multitask'), data_root=data_root,
                                      backbone_ckpt=backbone_ckpt, datasets=multitask, iters=multitask_iters,
                                      single_task=[d for d in multitask_single_task if d in multitask], log=log)
        failed = [f'{name} {task}' for name, r in datasets.items() for task, beats in r['beats_chance'].items()
                  if not beats]
        results['multitask'] = dict(beats_chance=not failed, failed=failed, datasets=datasets)
        log(f'== multi-task leg finished in {time.time() - leg_start:.0f} s'
            + (f'; did NOT beat chance: {failed}' if failed else '; every task beat chance'))
    results['clip'] = dict(backbone_ckpt=backbone_ckpt)
    log(f'== demo finished in {time.time() - start:.0f} s; outputs under {work_dir}')
    return results
