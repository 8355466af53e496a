"""Write the synthetic demo datasets: ``python tools/make_demo_data.py [--root data/demo]``."""
import argparse

from gspn2_dense.demo import DEMO_DATASETS, make_probe_data


def parse_args():
    parser = argparse.ArgumentParser(description='Write small synthetic datasets in the real layouts.')
    parser.add_argument('--root', default='data/demo', help='demo data root')
    parser.add_argument('--datasets', default=','.join(DEMO_DATASETS),
                        help=f'comma-separated subset of {list(DEMO_DATASETS)}')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='rewrite datasets that exist')
    return parser.parse_args()


def main():
    args = parse_args()
    roots = make_probe_data(args.root, datasets=[d for d in args.datasets.split(',') if d],
                           seed=args.seed, overwrite=args.overwrite)
    for name, root in roots.items():
        print(f'{name}: {root}')


if __name__ == '__main__':
    main()
