"""run_runner: the runner is gone before the process group is destroyed; failures propagate."""
import weakref

import pytest

from gspn2_dense.engine import launch


class FakeRunner:
    def __init__(self, fail=False):
        self.fail = fail
        self.loop = self  # a reference cycle, as mmengine's loops and hooks make
        self.ran = []

    def train(self):
        self.ran.append('train')
        if self.fail:
            raise RuntimeError('boom in train')

    def test(self):
        self.ran.append('test')
        return {'mIoU': 12}


@pytest.fixture
def fake(monkeypatch):
    """Patch build_runner / release_process_group; record what release saw."""
    state = {'runners': [], 'released_with_alive': []}

    def build(cfg):
        runner = FakeRunner(fail=cfg.get('fail', False))
        state['runners'].append(weakref.ref(runner))
        state['ran'] = runner.ran
        return runner

    def release():
        state['released_with_alive'].append([r() is not None for r in state['runners']])

    monkeypatch.setattr(launch, 'build_runner', build)
    monkeypatch.setattr(launch, 'release_process_group', release)
    return state


@pytest.mark.parametrize('stage, ran, metrics', [
    ('train', ['train'], None),
    ('test', ['test'], {'mIoU': 12.0}),
    ('train_test', ['train', 'test'], {'mIoU': 12.0}),
])
def test_runner_is_freed_before_the_group_is_released(fake, stage, ran, metrics):
    seen = []
    result = launch.run_runner({}, stage, inspect=lambda runner: seen.append(list(runner.ran)))
    assert fake['ran'] == ran and seen == [ran]  # inspect sees the runner after its stages
    assert result == metrics and (metrics is None or isinstance(result['mIoU'], float))
    assert fake['released_with_alive'] == [[False]]


def test_a_failing_stage_propagates_without_the_barrier(fake):
    with pytest.raises(RuntimeError, match='boom in train'):
        launch.run_runner({'fail': True}, 'train')
    assert fake['released_with_alive'] == []


def test_unknown_stage_is_refused(fake):
    with pytest.raises(ValueError, match=r"stage must be one of \('train', 'test', 'train_test'\), got 'val'"):
        launch.run_runner({}, 'val')
    assert fake['runners'] == []


def test_runners_built_in_the_same_second_log_to_their_own_files(tmp_path, monkeypatch):
    """mmengine names a run's logger ``<config>_<timestamp>`` and reuses an existing one."""
    import time
    import types
    from pathlib import Path

    import mmengine.runner.runner as mm_runner
    from mmengine.logging import MMLogger

    import gspn2_dense  # noqa: F401  (registers the modules)
    from gspn2_dense.demo import make_probe_data

    frozen = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith('_')})
    frozen.strftime = lambda fmt, *args: '20261203_120000'
    monkeypatch.setattr(mm_runner, 'time', frozen)
    config = str(Path(__file__).parents[2] / 'configs/demo/ms-linear_gspn2-test_1xb2-4_ade20k-demo-64x64.py')
    data_root = make_probe_data(str(tmp_path / 'data'), datasets=['ade20k'])['ade20k']
    options = {f'{key}.dataset.data_root': data_root
               for key in ('train_dataloader', 'val_dataloader', 'test_dataloader')}
    loggers = []
    for run in ('first', 'second'):
        cfg = launch.prepare_train_config(config, work_dir=str(tmp_path / run),
                                          cfg_options=options)
        runner = launch.build_runner(cfg)
        runner.logger.info(f'hello from the {run} run')
        loggers.append(runner.logger)
        del runner
    assert loggers[0] is not MMLogger.get_current_instance() is loggers[1]
    for run in ('first', 'second'):
        (log,) = (tmp_path / run).glob('*/*.log')
        text = log.read_text()
        assert f'hello from the {run} run' in text
        assert 'hello from the ' + ({'first', 'second'} - {run}).pop() not in text
