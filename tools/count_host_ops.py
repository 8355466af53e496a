"""Count the PyTorch operators of a training step (forward + backward) and of an inference forward, per model.

    python tools/count_host_ops.py --out docs/benchmarks/host_ops
    python tools/count_host_ops.py --models gspn2_tiny,swin_tiny_patch4_window7_224 --device cuda

What is counted and why: :mod:`gspn2_dense.benchmarks.host_ops`. Writes ``<out>.md`` and
``<out>.json``; runs on the CPU (default) or a GPU.
"""
import argparse
import shlex
import sys

from gspn2_dense.benchmarks import host_ops, report
from gspn2_dense.models.variants import BASELINES


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default=','.join(
        ['gspn2_tiny', BASELINES['swin_t'], BASELINES['convnext_t']]))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', default='host_ops')
    args = parser.parse_args()
    models = [m for m in args.models.split(',') if m]
    if not models:
        parser.error('--models must name at least one timm model')
    result = host_ops.run(models, args.device, args.batch, args.img_size, args.commit,
                          shlex.join(['python', *sys.argv]))
    text = host_ops.markdown(result)
    report.write(args.out, result, text)
    print(text)


if __name__ == '__main__':
    main()
