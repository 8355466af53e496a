"""The CLIP leg of ``make demo``: a few CPU minutes of GSPN-2 CLIP training, end to end.

:func:`run_clip_leg` writes the synthetic DataComp-style shards and validation folder
(:mod:`.demo_data`), trains ``GSPN2-N-demo`` (``gspn2_nano`` image tower, small text tower)
through the same launcher as ``tools/train_clip.py``, evaluates it zero-shot on the validation
folder next to the chance rate, and converts its image tower into a backbone checkpoint for the
dense-probe demo. The number of steps is fitted to the time budget from a measured step time.
"""
import json
import os
import time
from typing import Optional

import torch

from ..clip import register_model_configs
from ..clip.checkpoint import convert_clip_to_backbone
from ..clip.train import main as train_main
from ..clip.zeroshot import zero_shot
from .clip_data import make_clip_shards

__all__ = ['DEMO_MODEL', 'run_clip_leg']

DEMO_MODEL = 'GSPN2-N-demo'
_BATCH_SIZE = 64
_TRAIN_SHARE = 0.6   # of the budget; the rest is data, start-up, evaluation and conversion
_LOOP_OVERHEAD = 1.4


def _step_seconds(batch_size: int) -> float:
    """Seconds per training step of the demo model here: the mean of three timed steps after
    one warm-up step, times the overhead of open_clip_train's loop over a bare step (data
    loading, logging, gradient clipping), measured at about 1.4 on the 2-core CPU machine."""
    import open_clip
    from open_clip import ClipLoss

    model, _, _ = open_clip.create_model_and_transforms(DEMO_MODEL)
    size = model.visual.image_size
    images = torch.randn(batch_size, 3, *size)
    texts = open_clip.get_tokenizer(DEMO_MODEL)(['a photo of a red circle.'] * batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = ClipLoss()
    times = []
    for _ in range(4):
        start = time.perf_counter()
        loss = loss_fn(*model(images, texts))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return _LOOP_OVERHEAD * sum(times[1:]) / len(times[1:])


def run_clip_leg(work_dir: str, minutes: float = 3.0, steps: Optional[int] = None,
                  log=print) -> str:
    """Train, evaluate and convert; returns the path of the converted backbone checkpoint.

    ``steps`` fixes the number of training steps instead of fitting them to ``minutes``. The
    fit assumes the machine stays as busy as it was while the step time was measured; on a
    shared machine whose load rises the run takes longer.
    """
    register_model_configs()
    started = time.perf_counter()
    work_dir = os.path.abspath(work_dir)
    data = make_clip_shards(os.path.join(work_dir, 'data'), image_size=32)
    log(f'[clip demo] {data.num_samples} captioned images in {len(data.shards)} shards, '
        f'{data.val_dir} for zero-shot')
    if steps is None:
        step_time = _step_seconds(_BATCH_SIZE)
        steps = max(10, int(minutes * 60 * _TRAIN_SHARE / step_time))
        log(f'[clip demo] {step_time:.2f} s per step of {_BATCH_SIZE} -> {steps} steps '
            f'for a {minutes:g}-minute budget')
    logs = os.path.join(work_dir, 'logs')
    name = f'{DEMO_MODEL}-{steps}steps'
    rc = train_main([
        '--model', DEMO_MODEL, '--train-data', data.train_pattern, '--dataset-type', 'webdataset',
        '--train-num-samples', str(steps * _BATCH_SIZE), '--batch-size', str(_BATCH_SIZE),
        '--epochs', '1', '--workers', '1', '--precision', 'fp32', '--device', 'cpu',
        '--lr', '1e-3', '--wd', '0.05', '--warmup', str(max(1, steps // 10)),
        '--grad-clip-norm', '1',
        '--logs', logs, '--name', name, '--log-every-n-steps', '10', '--seed', '0',
        '--resume', 'latest'])
    if rc == -1:
        raise RuntimeError(f'open_clip_train refused to start (see {logs}/{name}/out.log)')
    checkpoint = os.path.join(logs, name, 'checkpoints', 'epoch_1.pt')
    result = zero_shot(checkpoint, DEMO_MODEL, data.val_dir, classnames_file=data.classnames_file,
                       batch_size=64, workers=0, progress=False)
    with open(os.path.join(work_dir, 'zeroshot.json'), 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)
    log(f'[clip demo] zero-shot on {result["num_images"]} images of {result["num_classes"]} '
        f'classes: top-1 {100 * result["top1"]:.1f}% (chance {100 * result["chance_top1"]:.1f}%), '
        f'top-5 {100 * result["top5"]:.1f}% (chance {100 * result["chance_top5"]:.1f}%)')
    backbone = os.path.join(work_dir, 'gspn2_nano_clip.pth')
    convert_clip_to_backbone(checkpoint, backbone, overwrite=True)  # the demo's own output
    log(f'[clip demo] image tower written to {backbone} '
        f'({time.perf_counter() - started:.0f} s in all)')
    return backbone
