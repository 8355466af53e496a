import logging
import re
import subprocess
import sys

import pytest
import torch


def _train_args(demo, logs, epochs, *extra, num_samples=8):
    return ['--model', 'GSPN2-test', '--train-data', demo.train_pattern,
            '--dataset-type', 'webdataset', '--train-num-samples', str(num_samples), '--batch-size', '4',
            '--epochs', str(epochs), '--workers', '1', '--lr', '1e-3', '--warmup', '1',
            '--device', 'cpu', '--logs', str(logs), '--name', 'run', '--seed', '0', *extra]


def test_two_steps_with_a_corrupt_shard_then_resume_latest(demo, tmp_path, run_tool, truncate):
    truncate(demo.shards[2])
    logs = tmp_path / 'logs'
    handlers, dynamo_level = list(logging.root.handlers), logging.getLogger('torch._dynamo').level
    # fp16 'amp' (open_clip's default) overflows and skips its first steps; bf16 does not
    assert run_tool('train_clip.py', _train_args(demo, logs, 1, '--precision', 'amp_bf16')) == 0
    log = (logs / 'run' / 'out.log').read_text()
    assert re.search(r'Train Epoch: 0 \[\s*8/8 \(100%\)\]', log), log
    # the truncated shard was skipped with a warning and the epoch reported what it lost
    assert 'Skipping the rest of corrupt or truncated shard' in log and '00002.tar' in log
    skipped = re.search(r'Rank 0: skipped (\d+) sample\(s\) this epoch', log)
    assert skipped and int(skipped.group(1)) > 0, log
    first = torch.load(logs / 'run' / 'checkpoints' / 'epoch_1.pt', weights_only=True)
    assert first['epoch'] == 1
    # open_clip_train's logging set-up does not outlive the run
    assert logging.root.handlers == handlers
    assert logging.getLogger('torch._dynamo').level == dynamo_level

    assert run_tool('train_clip.py', _train_args(demo, logs, 2, '--precision', 'amp_bf16',
                                                 '--resume', 'latest')) == 0
    log = (logs / 'run' / 'out.log').read_text()
    resumed = log[log.index('Found latest resume checkpoint'):]
    assert 'epoch_1.pt' in resumed.splitlines()[0]
    assert "(epoch 1)" in resumed and 'Start epoch 1' in resumed and 'Start epoch 0' not in resumed
    assert re.search(r'Train Epoch: 1 \[\s*8/8 \(100%\)\]', resumed)
    second = torch.load(logs / 'run' / 'checkpoints' / 'epoch_2.pt', weights_only=True)
    assert second['epoch'] == 2
    changed = [k for k in first['state_dict'] if not torch.equal(first['state_dict'][k],
                                                                  second['state_dict'][k])]
    assert changed, 'the resumed epoch did not update any weight'


def test_fewer_shards_than_workers_is_an_error_before_training(demo, tmp_path, run_tool):
    args = _train_args(demo, tmp_path / 'logs', 1, '--precision', 'fp32')
    args[args.index('--workers') + 1] = '5'
    with pytest.raises(ValueError, match=r'expands to 4 shard\(s\).*--workers 5 x world size 1'):
        run_tool('train_clip.py', args)
    assert 'Start epoch' not in (tmp_path / 'logs' / 'run' / 'out.log').read_text()


def test_torchrun_two_processes_on_cpu(demo, tmp_path, tool_env, repo_root):
    logs = tmp_path / 'logs'
    args = _train_args(demo, logs, 1, '--precision', 'fp32', '--local-loss', '--gather-with-grad',
                       num_samples=16)
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               'tools/train_clip.py', '--', *args]
    done = subprocess.run(command, cwd=repo_root, env=tool_env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (logs / 'run' / 'out.log').read_text()
    assert 'Running in distributed mode with multiple processes' in log and 'total 2' in log
    # 16 samples at batch 4 per rank on 2 ranks: two steps of 8
    assert re.search(r'Train Epoch: 0 \[\s*16/16 \(100%\)\]', log), log
    assert torch.load(logs / 'run' / 'checkpoints' / 'epoch_1.pt', weights_only=True)['epoch'] == 1
