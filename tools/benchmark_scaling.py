"""Scaling of the linear probe, the multi-task probe and CLIP over 1, 2, 4, 8 processes.

    python tools/benchmark_scaling.py --out docs/benchmarks/scaling          # GPUs, NCCL
    # on the device machine (tools/device/scaling_run.sh), parts in separate calls:
    python tools/benchmark_scaling.py --parts clip --out $OUT/clip --commit <hash>
    # CPU processes with gloo (tiny configs, small images):
    python tools/benchmark_scaling.py --device cpu --nprocs 1,2 --global-batch 4 --iters 6 \\
        --probe-config configs/demo/ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py ...
    # one report from several results (e.g. N = 1, 2 and N = 4, 8 measured in two calls):
    python tools/benchmark_scaling.py --report $OUT/a.json $OUT/b.json --out docs/benchmarks/scaling

Runs ``tools/dist_train.sh`` and ``torchrun`` with NVLink multicast off. What is measured and
how: :mod:`gspn2_dense.benchmarks.scaling`. Writes ``<out>.json`` and ``<out>.md`` and exits
with 1 when a run failed or a check (loss agreement, resume) did not pass.
"""
import argparse
import shlex
import signal
import sys
from pathlib import Path

from gspn2_dense.benchmarks import scaling

TOOLS = Path(__file__).resolve().parent


def parse_args(argv):
    d = scaling.ScalingPlan
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='docs/benchmarks/scaling', help='output stem (.json, .md)')
    parser.add_argument('--report', nargs='+', metavar='JSON',
                        help='only write the report of these results (no run)')
    parser.add_argument('--note', default='', help='a paragraph at the top of the report')
    parser.add_argument('--commit', help='git commit to record (default: git rev-parse)')
    parser.add_argument('--work-dir', default=d.work_dir, help='data, configs and runs')
    parser.add_argument('--device', choices=['cuda', 'cpu'], default=None,
                        help='cuda (NCCL, one GPU a process) or cpu (gloo); default: cuda if seen')
    parser.add_argument('--parts', default=','.join(d.parts), help=f'of {",".join(scaling.PARTS)}')
    parser.add_argument('--nprocs', default=','.join(map(str, d.nprocs)))
    parser.add_argument('--probe-config', default=d.probe_config)
    parser.add_argument('--multitask-config', default=d.multitask_config)
    parser.add_argument('--probe-cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='extra --cfg-options for every probe run')
    parser.add_argument('--multitask-cfg-options', nargs='+', default=[], metavar='KEY=VALUE')
    parser.add_argument('--resolution', help='HxW of the generated images (default: each '
                                             "config's crop_size)")
    parser.add_argument('--global-batch', type=int, default=d.global_batch)
    parser.add_argument('--iters', type=int, default=d.iters)
    parser.add_argument('--warmup', type=int, default=d.warmup, help='untimed first iterations')
    parser.add_argument('--workers', type=int, default=d.workers, help='loader workers (GPU runs)')
    parser.add_argument('--resume-at', type=int, help='checkpoint to resume from (default iters/2)')
    parser.add_argument('--resume-config', default=d.resume_config, choices=['probe', 'multitask'])
    parser.add_argument('--resume-nprocs', type=int, help='default: the largest of --nprocs')
    parser.add_argument('--clip-model', default=d.clip_model)
    parser.add_argument('--clip-global-batch', type=int, default=d.clip_global_batch)
    parser.add_argument('--clip-steps', type=int, default=d.clip_steps)
    parser.add_argument('--clip-workers', type=int, default=d.clip_workers)
    parser.add_argument('--clip-warmup', type=int, default=d.clip_warmup)
    parser.add_argument('--loss-rtol', type=float, help='default: by device (see scaling.py)')
    parser.add_argument('--clip-loss-rtol', type=float, default=d.clip_loss_rtol)
    parser.add_argument('--timeout', type=float, default=d.timeout_s, help='seconds per launch')
    return parser, parser.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['--']:  # under torchrun (see run_clip)
        argv = argv[1:]
    if argv[:1] == ['clip-worker']:
        return scaling.run_clip_worker(argv[1], argv[2:])
    parser, args = parse_args(argv)
    if args.report:
        results = [result for path in args.report for result in scaling.read_results(path)]
        print(scaling.write_report(results, args.out, args.note))
        return 1 if scaling.failures(scaling.combine(results)) else 0
    try:
        plan = scaling.ScalingPlan(
            work_dir=args.work_dir, parts=tuple(p for p in args.parts.split(',') if p),
            nprocs=tuple(scaling.parse_nprocs(args.nprocs)), probe_config=args.probe_config,
            multitask_config=args.multitask_config,
            resolution=scaling.parse_resolution(args.resolution) if args.resolution else None,
            global_batch=args.global_batch, iters=args.iters, resume_at=args.resume_at,
            resume_config=args.resume_config, resume_nprocs=args.resume_nprocs,
            warmup=args.warmup, workers=args.workers,
            probe_options=tuple(args.probe_cfg_options),
            multitask_options=tuple(args.multitask_cfg_options), clip_model=args.clip_model,
            clip_global_batch=args.clip_global_batch, clip_steps=args.clip_steps,
            clip_workers=args.clip_workers, clip_warmup=args.clip_warmup,
            loss_rtol=args.loss_rtol, clip_loss_rtol=args.clip_loss_rtol, timeout_s=args.timeout,
            **({'device': args.device} if args.device else {}))
        plan.check()
    except ValueError as err:
        parser.error(str(err))
    # `timeout` and the device machine stop with SIGTERM: as SystemExit it ends the launched
    # process group too (scaling._launch)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = scaling.run_benchmark(plan, str(TOOLS), args.commit)
    shown = [a for i, a in enumerate(argv) if '--note' not in (a, argv[i - 1] if i else '')]
    result['command'] = shlex.join(['python', 'tools/benchmark_scaling.py', *shown])
    print(scaling.write_report([result], args.out, args.note))
    problems = scaling.failures(scaling.combine([result]))
    for line in problems:
        print(f'[scaling] {line}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
