"""A/B on the device: the eager model's fused layer norm against ``F.layer_norm``, in one run.

    python tools/device/glue_ab.py --out $OUT/glue_ab

1. The norm alone at GSPN-2-T's shapes (B128, 224 px; the dtypes its norms see under bf16
   autocast): forward + backward ms of ``gspn2_dense.ops.layer_norm`` against what the model
   ran before, ``F.layer_norm`` on the input cast to the output dtype (with autocast's float32
   norm for the float32-output ones), and against the same run's copy time of the bytes a norm
   must move.
2. GSPN-2-T eager throughput: A, the model as committed; B, its ``layer_norm`` swapped for the
   ``F.layer_norm`` path (the model before the fused norm); A again to show drift; Swin-T for
   scale.
"""
import argparse
import json

import torch

import gspn2_dense  # noqa: F401  (registers the timm models)
from gspn2_dense.benchmarks import backbones, report
from gspn2_dense.benchmarks.timing import Timer, run_stamp
from gspn2_dense.models import gspn2 as gspn2_module
from gspn2_dense.models.variants import BASELINES
from gspn2_dense.ops import layer_norm
from gspn2_dense.ops.layer_norm import layer_norm_unfused

BF16, F32 = torch.bfloat16, torch.float32
# (rows, channels, x dtype, y dtype): stem; stage-1 block norms (bf16 stream); downsample
# (bf16 in, float32 out) and the float32-stream block norms of stages 2-4; the final norm.
SHAPES = [(128 * 112 * 112, 40, BF16, F32), (128 * 56 * 56, 80, BF16, BF16),
          (128 * 28 * 28, 160, BF16, F32), (128 * 28 * 28, 160, F32, BF16),
          (128 * 14 * 14, 320, BF16, F32), (128 * 14 * 14, 320, F32, BF16),
          (128 * 7 * 7, 640, F32, BF16), (128 * 7 * 7, 640, BF16, F32)]


def norm_rows(timer: Timer, iters: int):
    rows = []
    for n, c, xd, yd in SHAPES:
        x = torch.randn(n, c, device='cuda', dtype=xd, requires_grad=True)
        w = torch.randn(c, device='cuda', requires_grad=True)
        b = torch.randn(c, device='cuda', requires_grad=True)
        g = torch.randn(n, c, device='cuda', dtype=yd)
        row = dict(rows=n, channels=c, x=str(xd), y=str(yd))
        src = torch.empty(n * c * (xd.itemsize + yd.itemsize), dtype=torch.uint8, device='cuda')
        dst = torch.empty_like(src)
        # (the forward's bytes: x in, y out)
        row['copy_ms'] = timer.measure(lambda: dst.copy_(src), iters, 3).ms
        for name, fn in (('fused', layer_norm), ('F.layer_norm', layer_norm_unfused)):
            row[name + '_fwd_ms'] = timer.measure(lambda: fn(x, w, b, 1e-6, yd), iters, 3).ms

            def step():
                fn(x, w, b, 1e-6, yd).backward(g)
            row[name + '_fwd_bwd_ms'] = timer.measure(step, iters, 3).ms
        x.grad = w.grad = b.grad = None
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--model', default='gspn2_tiny')
    parser.add_argument('--reference', default=BASELINES['swin_t'])
    parser.add_argument('--commit', default=None, help='commit to record (default: git rev-parse)')
    parser.add_argument('--out', default='glue_ab')
    args = parser.parse_args()
    device, dtype = torch.device('cuda'), torch.bfloat16
    timer = Timer(device)
    norms = norm_rows(timer, 20)
    rows = backbones.swapped_throughput(
        gspn2_module, 'layer_norm',
        (('A as committed', None, args.model), ('B F.layer_norm', layer_norm_unfused, args.model),
         ('A again', None, args.model), (args.reference, None, args.reference)),
        device, dtype, timer, batch=args.batch, iters=args.iters,
        on_row=lambda row: print(json.dumps(row), flush=True))
    result = dict(run_stamp(device, args.commit), norms=norms, rows=rows)
    lines = ['# Glue A/B: the fused layer norm against F.layer_norm', '',
             report.stamp_line(result), '',
             '## The norm alone (ms; forward, forward + backward)', '',
             report.table(['rows', 'C', 'x', 'y', 'copy of x+y', 'fused fwd', 'F fwd',
                           'fused fwd+bwd', 'F fwd+bwd'],
                          [[r['rows'], r['channels'], r['x'], r['y'], f"{r['copy_ms']:.3f}",
                            f"{r['fused_fwd_ms']:.3f}", f"{r['F.layer_norm_fwd_ms']:.3f}",
                            f"{r['fused_fwd_bwd_ms']:.3f}", f"{r['F.layer_norm_fwd_bwd_ms']:.3f}"]
                           for r in norms]), '',
             f'## {args.model} eager, 224 px, batch {args.batch}, bfloat16 autocast', '',
             backbones.variant_table(rows)]
    report.write(args.out, result, '\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
