"""Linear-probe a backbone checkpoint: ``python tools/linear_probe.py CKPT --tasks ade20k,voc,nyu-depth``.

For each task trains and tests ``configs/linear_probe/{variant}_gspn2-{arch}_8xb2-40k_<task>.py``
with the checkpoint as the frozen backbone, then writes ``results.md`` and ``results.json``.
"""
import argparse

from mmengine.config import DictAction

import gspn2_dense  # noqa: F401  (registers the GSPN-2 modules in mmseg's registries)
from gspn2_dense.engine.launch import LAUNCHERS
from gspn2_dense.models.variants import get_variant
from gspn2_dense.engine.probe import ARCHS, TASKS, VARIANTS, parse_tasks, run_linear_probe


def parse_args():
    parser = argparse.ArgumentParser(description='Linear-probe evaluation of a backbone checkpoint.')
    parser.add_argument('checkpoint', help='backbone checkpoint (init_cfg of the GSPN2 backbone)')
    parser.add_argument('--tasks', default='ade20k,voc,nyu-depth',
                        help=f'comma-separated tasks from {list(TASKS)}')
    parser.add_argument('--arch', choices=ARCHS, default='t',
                        help='GSPN-2 variant: ' + ', '.join(f'{a} ({get_variant(a).name})' for a in ARCHS))
    parser.add_argument('--variant', choices=VARIANTS, default='linear',
                        help='linear (last stage) or ms-linear (all stages concatenated)')
    parser.add_argument('--work-dir', default='work_dirs/linear_probe',
                        help='one sub-directory per task, and results.md / results.json')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override entries of every task config, key=value')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    run_linear_probe(args.checkpoint, parse_tasks(args.tasks), args.work_dir, arch=args.arch,
                     variant=args.variant, cfg_options=args.cfg_options, launcher=args.launcher)


if __name__ == '__main__':
    main()
