"""Zero-shot top-1 / top-5 of a CLIP checkpoint on an ImageNet-style folder, printed as JSON.

    python tools/clip_zeroshot.py logs/run/checkpoints/epoch_100.pt --model GSPN2-T \
        --val /data/imagenet/val [--classnames FILE] [--output results.json]
"""
import argparse
import json

from gspn2_dense.clip.zeroshot import zero_shot
from gspn2_dense.engine.checkpoint import CheckpointError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint', help='open_clip_train checkpoint (epoch_N.pt) or CLIP state dict')
    parser.add_argument('--model', required=True, help='open_clip model name, e.g. GSPN2-T')
    parser.add_argument('--val', required=True, help='folder with one subfolder per class')
    parser.add_argument('--classnames', default=None,
                        help='one class name per line, in sorted subfolder order '
                             '(default: open_clip\'s ImageNet-1K names)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--output', default=None, help='also write the JSON result to this file')
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        result = zero_shot(args.checkpoint, args.model, args.val, classnames_file=args.classnames,
                           batch_size=args.batch_size, workers=args.workers, device=args.device)
    except (CheckpointError, FileNotFoundError) as err:
        parser.exit(1, f'{parser.prog}: error: {err}\n')
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
