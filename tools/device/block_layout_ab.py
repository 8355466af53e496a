"""A/B on the device: GSPN-2's blocks on the (B, H, W, C) view against the permute pairs they ran before.

    python tools/device/block_layout_ab.py --commit <hash> --out $OUT/block_layout_ab

Until 2026-12-06 every 1x1 projection and norm of a block took and returned (B, C, H, W)
maps, each wrapped in its own pair of permutes (``_pointwise``): about ten permutes per block
forward that cancel out, each an operator and an autograd node (the eager model is host-bound
at batch 1, docs/benchmarks/host_ops.md). The blocks now run norm, mixer and FFN on the
(B, H, W, C) view and permute only around the depth-wise convolutions and the propagation.
The maths and parameters are the same. This script keeps the previous block, mixer and FFN
forwards (B, below) and swaps them in, in one process:

1. eager throughput at 224 px, B128, bf16 autocast: A (as committed), B (before), A again;
2. eager batch-1 latency at 224 and 1024 px; runs in the order ``--order`` (ABAB).
"""
import argparse
import contextlib
import json

import torch
import torch.nn.functional as F

import gspn2_dense  # noqa: F401  (registers the timm models)
from gspn2_dense.benchmarks import backbones, report
from gspn2_dense.benchmarks.timing import Timer, run_stamp
from gspn2_dense.models import gspn2 as m
from gspn2_dense.ops import gspn_propagate


def _pointwise(conv, x):  # (the previous helper: NCHW in, NCHW out, a permute pair each)
    return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


def mixer_before(self, x):
    x = self.conv_dw(self.act(_pointwise(self.in_proj, x)))
    batch, channels, height, width = x.shape
    tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    weight = self.proxy_proj.weight.flatten(1).to(tokens.dtype)
    planes = torch.baddbmm(self.proxy_proj.bias.to(tokens.dtype).view(1, -1, 1),
                           weight.expand(batch, -1, -1), tokens.transpose(1, 2))
    proxy, gates, lam, u = planes.view(batch, -1, height, width).split(self.split_sizes, dim=1)
    gates = gates.reshape(batch, m.NUM_DIRECTIONS, self.gate_groups, m.NUM_TAPS, height, width)
    lam = torch.sigmoid(lam).reshape(batch, m.NUM_DIRECTIONS, self.proxy_dim, height, width)
    u = u.reshape(batch, m.NUM_DIRECTIONS, self.proxy_dim, height, width)
    y = gspn_propagate(proxy, gates, lam, u, chunk=self.chunk)
    y = torch.addcmul(y, proxy, self.skip_scale.to(y.dtype).view(1, -1, 1, 1))
    y = y.contiguous(memory_format=torch.channels_last)
    return _pointwise(self.out_proj, self.out_norm(_pointwise(self.lift, y)))


def mlp_before(self, x):
    return _pointwise(self.fc2, self.act(_pointwise(self.fc1, x)))


def block_before(self, x):
    x = self.lpu1(x)
    x = x + self.drop_path1(self.mixer(self.norm1(x)))
    x = self.lpu2(x)
    x = x + self.drop_path2(self.mlp(self.norm2(x)))
    return x


@contextlib.contextmanager
def before():
    """The blocks of before 2026-12-06 swapped in (the classes' forwards), restored on exit."""
    saved = [(cls, cls.forward) for cls in (m.GSPN2Block, m.GSPN2Mixer, m.PointwiseMlp)]
    m.GSPN2Block.forward, m.GSPN2Mixer.forward, m.PointwiseMlp.forward = (
        block_before, mixer_before, mlp_before)
    try:
        yield
    finally:
        for cls, fwd in saved:
            cls.forward = fwd


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--model', default='gspn2_tiny')
    parser.add_argument('--sizes', default='224,1024')
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--order', default='ABAB', help='the runs, A (as committed) or B (before)')
    parser.add_argument('--out', default='block_layout_ab')
    args = parser.parse_args()
    device, dtype = torch.device('cuda'), torch.bfloat16
    timer = Timer(device)
    if set(args.order) - set('AB'):
        raise SystemExit(f'--order takes the letters A and B, got {args.order!r}')
    names = {'A': ('A (B, H, W, C) blocks', contextlib.nullcontext), 'B': ('B permute pairs', before)}
    variants = [(names[k][0] + (' again' if args.order[:i].count(k) else ''), names[k][1])
                for i, k in enumerate(args.order)]
    rows, latency = [], []
    for label, ctx in variants:
        with ctx():
            row = backbones.throughput(args.model, 'eager', device, dtype, timer,
                                       batch=args.batch, iters=args.iters)
            row['variant'] = label
            lat = backbones.latency(args.model, [int(s) for s in args.sizes.split(',')], 'eager',
                                    device, dtype, timer)
            lat['variant'] = label
        rows.append(row)
        latency.append(lat)
        print(json.dumps(row), json.dumps(lat), flush=True)
    result = dict(run_stamp(device, args.commit), rows=rows, latency=latency)
    sizes = [p['size'] for p in latency[0]['points']]
    lines = [f'# Block layout A/B: {args.model} eager, bfloat16 autocast', '',
             report.stamp_line(result), '',
             f'## Throughput, 224 px, batch {args.batch}', '', backbones.variant_table(rows), '',
             '## Batch-1 latency (ms)', '',
             report.table(['variant'] + [f'{s} px' for s in sizes],
                          [[lat['variant']] + [backbones.fmt(p['ms'], '.2f') for p in lat['points']]
                           for lat in latency])]
    report.write(args.out, result, '\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
