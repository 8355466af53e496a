"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--work-dir DIR]``.

Behaves like mmsegmentation's ``tools/test.py``; ``tools/dist_test.sh`` runs it under torchrun.
The checkpoint is loaded strictly: a backbone or CLIP checkpoint, or one of another model, is
refused with a message saying what the file is and what to do with it. mmengine reads it through
the toolkit's weights-only loader, which ``build_runner`` installs.
"""
import argparse

from mmengine.config import DictAction

import gspn2_dense  # noqa: F401  (registers the GSPN-2 modules in mmseg's registries)
from gspn2_dense.engine.checkpoint import CheckpointError
from gspn2_dense.engine.launch import LAUNCHERS, prepare_test_config, run_runner


def parse_args():
    parser = argparse.ArgumentParser(description='Test a segmentor (mmseg-compatible).')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for logs and metrics')
    parser.add_argument('--out', help='directory to save the predictions')
    parser.add_argument('--show-dir', help='directory to save drawn predictions (in its vis_data/vis_image/)')
    parser.add_argument('--show-interval', type=int, default=1,
                        help='with --show-dir: draw the images of every N-th test batch (default 1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser, parser.parse_args()


def main():
    parser, args = parse_args()
    try:
        cfg = prepare_test_config(args.config, args.checkpoint, work_dir=args.work_dir,
                                  cfg_options=args.cfg_options, launcher=args.launcher,
                                  out=args.out, show_dir=args.show_dir,
                                  show_interval=args.show_interval)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    try:
        run_runner(cfg, 'test')
    except CheckpointError as err:  # the checkpoint does not fit the model (checked first)
        parser.exit(1, f'{parser.prog}: error: {err}\n')


if __name__ == '__main__':
    main()
