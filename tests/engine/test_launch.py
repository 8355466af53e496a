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


@pytest.mark.parametrize('stage', ['train', 'test'])
def test_runner_is_freed_before_the_group_is_released(fake, stage):
    launch.run_runner({}, stage)
    assert fake['ran'] == [stage]
    assert fake['released_with_alive'] == [[False]]


def test_a_failing_stage_propagates_without_the_barrier(fake):
    with pytest.raises(RuntimeError, match='boom in train'):
        launch.run_runner({'fail': True}, 'train')
    assert fake['released_with_alive'] == []


def test_unknown_stage_is_refused(fake):
    with pytest.raises(ValueError, match=r"stage must be 'train' or 'test', got 'val'"):
        launch.run_runner({}, 'val')
    assert fake['runners'] == []
