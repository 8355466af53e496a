"""The demo main job (``make demo``): CLIP-train a tiny GSPN-2 tower, then linear-probe it.

Writes the demo data if absent, trains ``gspn2_nano`` CLIP on synthetic shards and evaluates it
zero-shot, converts the tower, trains and tests segmentation and depth probes on it, prints every
metric next to its chance baseline and saves image | ground truth | prediction panels under
``--work-dir``. ``--no-clip`` probes a randomly initialised ``gspn2_nano`` instead.
"""
import argparse

import gspn2_dense  # noqa: F401  (registers the GSPN-2 modules in mmseg's registries)
from gspn2_dense.demo.pipeline import run_pipeline


def parse_args():
    parser = argparse.ArgumentParser(description='Run the CPU demo: CLIP leg, then dense probes.')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--no-clip', action='store_true',
                        help='skip the CLIP leg and probe a randomly initialised gspn2_nano')
    parser.add_argument('--clip-minutes', type=float, default=3.0,
                        help='time budget of the CLIP training')
    parser.add_argument('--iters', type=int, default=None, help='probe training iterations per task')
    return parser.parse_args()


def main():
    args = parse_args()
    results = run_pipeline(work_dir=args.work_dir, data_root=args.data_root,
                           clip=not args.no_clip, clip_minutes=args.clip_minutes,
                           iters=args.iters)
    failed = [task for task, r in results.items()
              if task != 'clip' and not r['beats_chance']]
    if failed:
        raise SystemExit(f'the probes of {failed} did not beat the chance baseline')


if __name__ == '__main__':
    main()
