"""A/B on the device: GSPN-2's blocks on the (B, H, W, C) view (a candidate) against the committed ones.

    python tools/device/block_layout_ab.py --order ABAB --commit <hash> --out $OUT/block_layout_ab

The committed blocks take and return (B, C, H, W) maps at every 1x1 projection and norm, each
wrapped in its own pair of permutes (``_pointwise`` in gspn2.py): about ten permutes per block
forward that cancel out, each an operator and an autograd node (the eager model is host-bound
at batch 1, docs/benchmarks/host_ops.md). The candidate (B, below) runs norm, mixer and FFN on
the (B, H, W, C) view and permutes only around the depth-wise convolutions and the
propagation: the same maths and parameters, the same memory layouts, 1696 instead of 1876
ATen operators per inference forward (CPU, batch 2: ``host_ops.count_training_step`` under
``candidate()``). It is swapped in (the block's forward) in one process:

1. eager throughput at 224 px, B128, bf16 autocast;
2. eager batch-1 latency at 224 and 1024 px; runs in the order ``--order``: A the committed
   blocks, B the candidate.

On 2026-12-06 (H100, 82e249d) one AB run, the candidate first and cuDNN's autotuner off, gave it
0.79x / 0.83x the inference / training throughput; the ABAB runs of 93122e9 (same day, H100,
autotuner on; docs/benchmarks/backbones.md) settled it as that run's order: at 224 px B128 the
candidate trains 1% faster, infers at the same rate and answers batch 1 2.5-3.5% sooner (host
time), and at 2048 px B2 it is the same. Not landed for that (the blocks would stop calling their
norm modules); kept here to measure again when the blocks change.
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


def _linear(x, conv):  # a 1x1 conv over the last dim of a (B, H, W, C) map
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def _norm(norm, x):  # the model's norm of a (B, H, W, C) map
    return m._layer_norm_nhwc(x, norm, norm.low_precision)


def mixer_nhwc(self, x):
    """GSPN2Mixer.forward on (B, H, W, dim) -> (B, H, W, dim)."""
    y = self.propagate(self.conv_dw(self.act(_linear(x, self.in_proj)).permute(0, 3, 1, 2)))
    y = _linear(y.permute(0, 2, 3, 1).contiguous(), self.lift)
    return _linear(_norm(self.out_norm, y), self.out_proj)


def block_nhwc(self, x):
    """GSPN2Block.forward with norm, mixer and FFN on the (B, H, W, C) view."""
    x = self.lpu1(x)
    x = x + self.drop_path1(
        mixer_nhwc(self.mixer, _norm(self.norm1, x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2))
    x = self.lpu2(x)
    t = _norm(self.norm2, x.permute(0, 2, 3, 1))
    t = _linear(self.mlp.act(_linear(t, self.mlp.fc1)), self.mlp.fc2)
    return x + self.drop_path2(t.permute(0, 3, 1, 2))


@contextlib.contextmanager
def candidate():
    """The (B, H, W, C) blocks swapped in (GSPN2Block.forward), restored on exit."""
    saved = m.GSPN2Block.forward
    m.GSPN2Block.forward = block_nhwc
    try:
        yield
    finally:
        m.GSPN2Block.forward = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--img-size', type=int, default=224, help='input size of the throughput runs')
    parser.add_argument('--model', default='gspn2_tiny')
    parser.add_argument('--sizes', default='224,1024')
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--order', default='ABAB', help='the runs in order: A the committed blocks, B the candidate')
    parser.add_argument('--out', default='block_layout_ab')
    args = parser.parse_args()
    if set(args.order) - set('AB'):
        raise SystemExit(f'--order takes the letters A and B, got {args.order!r}')
    device, dtype = torch.device('cuda'), torch.bfloat16
    backbones.prepare(device)  # (cuDNN's autotuner on, as in the published tables)
    timer = Timer(device)
    names = {'A': ('A committed (permute pairs)', contextlib.nullcontext),
             'B': ('B (B, H, W, C) blocks', candidate)}
    variants = [(names[k][0] + (' again' if args.order[:i].count(k) else ''), names[k][1])
                for i, k in enumerate(args.order)]
    rows, latency = [], []
    for label, ctx in variants:
        with ctx():
            row = backbones.throughput(args.model, 'eager', device, dtype, timer,
                                       img_size=args.img_size, batch=args.batch, iters=args.iters)
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
             f'## Throughput, {args.img_size} px, batch {args.batch}', '',
             backbones.variant_table(rows), '',
             '## Batch-1 latency (ms)', '',
             report.table(['variant'] + [f'{s} px' for s in sizes],
                          [[lat['variant']] + [backbones.fmt(p['ms'], '.2f') for p in lat['points']]
                           for lat in latency])]
    report.write(args.out, result, '\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
