"""Does the memory layout of a backbone's last feature map change the cost of the probe head?
And is the head's bilinear resize to the label's size what makes it slow?

    python tools/device/seg_loss_layout.py --size 2048 --channels 640 --out $OUT/seg_loss_layout

The linear-probe segmentor (``backbones.probe_segmentor``) runs ``conv1x1(BN(features))``, resizes
the logits to the label's size and takes mmseg's cross-entropy and top-1 accuracy there. GSPN-2
returns channels_last features, timm's Swin-T a contiguous map. This times that head tail
(forward and backward of the head, frozen features) on a (B, C, size/32, size/32) map in both
layouts, in plain PyTorch (no mmcv needed), bf16 autocast, in one process.

With ``--resize both`` it also times the heads' resize, ``resize_bilinear``
(``gspn2_dense/models/resize.py``: ``F.interpolate``'s forward, its backward as two matrix
products), against ``F.interpolate``, whose backward adds every output gradient into its four
input neighbours with atomics: at a 32x upsampling, about 4096 output pixels land on each input
pixel. (Its first device run, 2026-12-06 at 38d5e4a, timed an earlier candidate that computed
the forward as products too: 87 ms against 734 ms at 2048 px; the row was named ``products``.)
"""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from gspn2_dense.benchmarks import report
from gspn2_dense.benchmarks.timing import Timer, run_stamp
from gspn2_dense.models.resize import resize_bilinear


def head_step(features, bn, conv, labels, resize='interpolate'):
    with torch.autocast(features.device.type, dtype=torch.bfloat16):
        logits = conv(bn(features))
        if resize == 'resize_bilinear':
            logits = resize_bilinear(logits, labels.shape[-2:])
        else:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode='bilinear',
                                   align_corners=False)
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        correct = logits.topk(1, dim=1)[1].squeeze(1).eq(labels).float().mean()
    loss.backward()
    return correct


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=2048)
    parser.add_argument('--channels', type=int, default=640)
    parser.add_argument('--classes', type=int, default=150)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--resize', default='interpolate', choices=('interpolate', 'both'),
                        help="both: also time the heads' resize_bilinear")
    parser.add_argument('--profile', action='store_true',
                        help='also print the top kernels of one step on contiguous features')
    parser.add_argument('--commit', default=None)
    parser.add_argument('--out', default='seg_loss_layout')
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    timer = Timer(device)
    side = args.size // 32
    bn = nn.BatchNorm2d(args.channels).to(device).train()
    conv = nn.Conv2d(args.channels, args.classes, 1).to(device)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    base = torch.randn(args.batch, args.channels, side, side, device=device, dtype=torch.bfloat16)
    rows = []
    resizes = ('interpolate', 'resize_bilinear') if args.resize == 'both' else ('interpolate',)
    for layout in ('contiguous', 'channels_last', 'contiguous', 'channels_last'):
        fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
        features = base.contiguous(memory_format=fmt)
        for resize in resizes:
            ms = timer.median_ms(lambda: head_step(features, bn, conv, labels, resize), args.iters, 2)
            rows.append(dict(layout=layout, resize=resize, ms=ms))
            print(json.dumps(rows[-1]), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        features = base.contiguous()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
        with profile(activities=activities) as prof:
            head_step(features, bn, conv, labels)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
        sort = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
        print(prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60))
    result = dict(run_stamp(device, args.commit), args=vars(args), rows=rows)
    lines = [f'# Probe head tail on {args.batch} x {args.channels} x {side}² features, '
             f'labels of {args.size}² ({args.classes} classes)', '', report.stamp_line(result), '',
             report.table(['features', 'resize', 'ms'],
                          [[r['layout'], r['resize'], f"{r['ms']:.1f}"] for r in rows])]
    report.write(args.out, result, '\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
