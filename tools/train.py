"""Train a segmentor: ``python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp]``.

Behaves like mmsegmentation's ``tools/train.py``; ``tools/dist_train.sh CONFIG GPUS`` runs it
under torchrun (on CPU too, with the gloo backend). ``--resume`` continues from the newest
readable checkpoint of the work dir (skipping, with a warning, newer ones that cannot be read);
without it, a work dir that already holds checkpoints is reported in the log and the run
starts over. mmengine reads the checkpoints through the toolkit's weights-only loader, which
``build_runner`` installs (torch >= 2.6 cannot resume through mmengine's own).
"""
import argparse

from mmengine.config import DictAction

import gspn2_dense  # noqa: F401  (registers the GSPN-2 modules in mmseg's registries)
from gspn2_dense.engine.checkpoint import CheckpointError
from gspn2_dense.engine.launch import LAUNCHERS, prepare_train_config, run_runner


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor (mmseg-compatible).')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the newest readable checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value (e.g. '
                             'model.backbone.init_cfg.checkpoint=tower.pth)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser, parser.parse_args()


def main():
    parser, args = parse_args()
    try:
        cfg = prepare_train_config(args.config, work_dir=args.work_dir, resume=args.resume,
                                   amp=args.amp, cfg_options=args.cfg_options,
                                   launcher=args.launcher)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    run_runner(cfg, 'train')


if __name__ == '__main__':
    main()
