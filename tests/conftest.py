"""Shared test set-up."""
import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _mmseg_default_scope():
    """Resolve registry look-ups in mmseg's scope in every test.

    An mmengine ``Runner`` makes its ``default_scope`` the process-wide current scope and
    leaves it so; without this, a test's ``MODELS.build(dict(type='GSPN2'))`` would depend on
    which Runner an earlier test happened to build.
    """
    if importlib.util.find_spec('mmseg') is None:
        yield
        return
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
