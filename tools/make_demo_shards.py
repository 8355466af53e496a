"""Write synthetic CLIP demo data: DataComp-style webdataset shards and a validation folder.

    python tools/make_demo_shards.py data/demo/clip [--num-shards 8 --samples-per-shard 250]

Prints the ``--train-data`` pattern, ``--train-num-samples``, the validation folder and its
class-name file (for tools/train_clip.py and tools/clip_zeroshot.py).
"""
import argparse
import json
from dataclasses import asdict

from gspn2_dense.demo.clip_data import make_clip_shards


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument('--num-shards', type=int, default=8)
    parser.add_argument('--samples-per-shard', type=int, default=250)
    parser.add_argument('--val-per-class', type=int, default=10)
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    demo = make_clip_shards(args.out_dir, num_shards=args.num_shards,
                          samples_per_shard=args.samples_per_shard,
                          val_per_class=args.val_per_class, image_size=args.image_size,
                          seed=args.seed)
    info = asdict(demo)
    info.pop('shards')
    print(json.dumps(info, indent=2))


if __name__ == '__main__':
    main()
