"""The results table of a multi-task run: ``python tools/multitask_eval.py CONFIG [--results FILE]``.

Reads the run's results file (``test_evaluator.results_file`` of CONFIG, or the
``multitask_results.json`` that ``tools/test.py CONFIG CKPT --out DIR`` writes), the single-task
baselines that CONFIG's ``test_evaluator.baselines`` names and, optionally, a chance table; prints
every task's metrics next to the single-task values and chance, with the gains and Delta_m; and
writes the same as JSON (default: ``multitask_eval.json`` beside the results file). A missing
file, or one that does not hold the tasks CONFIG evaluates, stops the tool with a message saying
what was expected and what was found.
"""
import argparse

from mmengine.config import DictAction

import gspn2_dense  # noqa: F401  (registers the datasets and the metric, for --chance-from-data)
from gspn2_dense.evaluation.multitask_report import evaluate_run, parse_baselines


def parse_args():
    parser = argparse.ArgumentParser(description='Results table and Delta_m of a multi-task run.')
    parser.add_argument('config', help='the multi-task config that was tested')
    parser.add_argument('--results', help='its results file (default: test_evaluator.results_file of CONFIG)')
    parser.add_argument('--baseline', nargs='+', metavar='TASK=FILE', default=[],
                        help="a single-task run's results file, replacing CONFIG's entry for TASK")
    parser.add_argument('--no-delta-m', action='store_true',
                        help='ignore the single-task baselines (a table without Delta_m)')
    chance = parser.add_mutually_exclusive_group()
    chance.add_argument('--chance', help='a chance table (e.g. the chance.json of an earlier --chance-from-data)')
    chance.add_argument('--chance-from-data', action='store_true',
                        help="compute the chance table from CONFIG's data (constant predictions fitted on "
                             'the training labels); written as chance.json beside --out')
    parser.add_argument('--out', help='the JSON to write (default: multitask_eval.json beside the results file)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value (e.g. data roots for --chance-from-data)')
    return parser, parser.parse_args()


def main():
    parser, args = parse_args()
    try:
        evaluate_run(args.config, results=args.results, baselines=parse_baselines(args.baseline),
                     use_baselines=not args.no_delta_m, chance=args.chance,
                     chance_from_data=args.chance_from_data, out=args.out, cfg_options=args.cfg_options)
    except (FileNotFoundError, ValueError) as err:  # a missing file, or one that does not fit CONFIG
        parser.exit(1, f'{parser.prog}: error: {err}\n')


if __name__ == '__main__':
    main()
