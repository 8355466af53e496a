"""The demo main job (``make demo``): linear probes for segmentation and depth on CPU.

Writes the demo data if absent, trains and tests the probes, prints the metrics next to a chance
baseline and saves image | ground truth | prediction panels under ``--work-dir``.
"""
import argparse

import gspn2_dense  # noqa: F401  (registers the GSPN-2 modules in mmseg's registries)
from gspn2_dense.demo import run_demo


def parse_args():
    parser = argparse.ArgumentParser(description='Run the CPU demo of the dense linear probes.')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--backbone-ckpt', default=None,
                        help='backbone checkpoint to probe (default: randomly initialised gspn2_nano)')
    parser.add_argument('--iters', type=int, default=None, help='training iterations per task')
    return parser.parse_args()


def main():
    args = parse_args()
    results = run_demo(work_dir=args.work_dir, data_root=args.data_root,
                       backbone_ckpt=args.backbone_ckpt, iters=args.iters)
    failed = [task for task, r in results.items() if not r['beats_chance']]
    if failed:
        raise SystemExit(f'the probes of {failed} did not beat the chance baseline')


if __name__ == '__main__':
    main()
