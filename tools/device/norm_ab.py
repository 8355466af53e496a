"""A/B on the device: GSPN-2-T eager throughput with the autocast-dtype norms against the same
model with float32-output LayerNorm2d (what timm's LayerNorm2d gives under autocast), in one run.

    python tools/device/norm_ab.py --out $OUT/norm_ab

The A side is the model as committed. The B side swaps only ``_layer_norm_nhwc`` (the helper
the mixer's and blocks' norms call) for plain ``F.layer_norm`` under autocast; weights, inputs
and everything else are the same. A, B, A are measured in turn (and Swin-T, for scale) so that
drift over the run shows up as a difference between the two A rows.
"""
import argparse
import json

import torch
import torch.nn.functional as F

import gspn2_dense  # noqa: F401  (registers the timm models)
from gspn2_dense.benchmarks import backbones, report
from gspn2_dense.benchmarks.timing import Timer, run_stamp
from gspn2_dense.models import gspn2 as gspn2_module
from gspn2_dense.models.variants import BASELINES


def _float32_norm(x, norm, low_precision=True):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--model', default='gspn2_tiny')
    parser.add_argument('--reference', default=BASELINES['swin_t'])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', default='norm_ab')
    args = parser.parse_args()
    device, dtype = torch.device(args.device), torch.bfloat16
    timer = Timer(device)
    rows = backbones.swapped_throughput(
        gspn2_module, '_layer_norm_nhwc',
        (('A autocast-dtype norms', None, args.model),
         ('B float32 norms', _float32_norm, args.model),
         ('A autocast-dtype norms (again)', None, args.model),
         (args.reference, None, args.reference)),
        device, dtype, timer, batch=args.batch, iters=args.iters,
        on_row=lambda row: print(json.dumps(row), flush=True))
    result = dict(run_stamp(device, args.commit), rows=rows)
    lines = [f'# Norm A/B: {args.model} eager, 224 px, batch {args.batch}, bfloat16 autocast', '',
             report.stamp_line(result), '', backbones.variant_table(rows)]
    report.write(args.out, result, '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
