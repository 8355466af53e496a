"""The launch plan of the CUDA op (csrc/cuda/launch_plan.h): which kernels a call runs.

The plan is host code: these tests need the CUDA extension built (a CUDA toolkit), not a GPU,
so they run wherever tests/ops/test_build.py compiles it, CI included.
"""
import re

import pytest
import torch

import test_cuda_propagate as cases
from gspn2_dense.ops import _build

pytestmark = pytest.mark.skipif(_build.resolve_cuda_home() is None,
                                reason='no CUDA toolkit on this machine')


@pytest.fixture(scope='module')
def ext():
    if torch.cuda.is_available():
        return _build.load_extension('cuda')
    # Without a GPU: the sm_90 build that test_build.py compiles (CI's), not one for every
    # default architecture.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
        return _build.load_extension('cuda')


# Every kind of launch the plan picks (csrc/cuda/launch_plan.h), forward and backward alike.
PLAN_KINDS = {'local', 'small plane', 'plane', 'warp kc1', 'warp kc2', 'cta kc1', 'cta kc2',
              'long kc1', 'shared-line kc1', 'transposed warp kc1', 'transposed cta kc1',
              'transposed cta kc2', 'transposed long kc1', 'transposed shared-line kc1'}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _launch_kinds(ext, case, dtype, backward):
    """The kinds of launch the plan picks for a case: its lines without the counts."""
    B, C, G, H, W, dirs, chunk = case
    lines = ext.plan([B, C, H, W], G, list(dirs), chunk, dtype, backward)
    return {re.sub(r'(, \d+ slices?| x\d+ch, .*)$', '', line) for line in lines}


@pytest.mark.parametrize('backward', [False, True], ids=['forward', 'backward'])
def test_cases_cover_every_launch(ext, backward):
    """The reference tests of test_cuda_propagate.py run every kind of launch the plan can
    pick, in some dtype."""
    seen = set()
    for case in cases.CASES + cases.PLANE_CASES + cases.LOCAL_CASES + cases.SMALL_CASES + [
            (1, 3, G, *hw, (0, 1, 2, 3), 0) for hw in cases.LINE_SHAPES for G in (1, 3)]:
        for dtype in DTYPES:
            seen |= _launch_kinds(ext, case, dtype, backward)
    assert seen == PLAN_KINDS


# sizes, G, directions, chunk, dtype, backward -> the plan's lines (docs/ops.md, "The launch
# plan", shows the same rows)
PLAN_TABLE = [
    # GSPN-2-T's stages 1 and 3 at 224 px, B128; its stages 3 and 4 at a 2048 px input, B2
    ((128, 20, 56, 56), 1, [0, 1, 2, 3], 2, torch.bfloat16, False, ['local, 2 slices']),
    ((2, 24, 56, 56), 1, [0, 1, 2, 3], 2, torch.float32, True, ['local, 24 slices']),
    ((128, 80, 14, 14), 1, [0, 1, 2, 3], 0, torch.bfloat16, False, ['small plane, 20 slices']),
    ((2, 80, 128, 128), 1, [0, 1, 2, 3], 0, torch.bfloat16, False,
     ['warp kc1 x4ch, entries 0,1', 'transposed warp kc1 x4ch, entries 2,3 as 0,1']),
    ((2, 80, 127, 127), 1, [0, 1, 2, 3], 0, torch.bfloat16, False,
     ['warp kc1 x4ch, entries 0,1,2,3']),
    ((2, 160, 64, 64), 1, [0, 1, 2, 3], 0, torch.bfloat16, True, ['plane x4ch, entries 0,1,2,3']),
    ((128, 24, 56, 56), 1, [0, 1, 2, 3], 0, torch.bfloat16, False,
     ['plane x2ch, entries 0,1,2,3']),
    ((128, 24, 56, 56), 1, [0, 1, 2, 3], 0, torch.float32, False,
     ['warp kc1 x8ch, entries 0,1,2,3']),
    ((128, 24, 56, 56), 1, [0, 1, 2, 3], 0, torch.bfloat16, True,
     ['plane x4ch, entries 0,1,2,3']),
    ((4, 32, 1024, 1024), 1, [0, 1, 2, 3], 0, torch.bfloat16, False,
     ['cta kc2 x2ch, entries 0,1', 'transposed cta kc2 x2ch, entries 2,3 as 0,1']),
    ((1, 32, 2048, 2048), 1, [0, 1, 2, 3], 0, torch.bfloat16, True,
     ['long kc1 x1ch, entries 0,1', 'transposed long kc1 x1ch, entries 2,3 as 0,1']),
    ((16, 8, 1024, 1024), 8, [3], 0, torch.float32, False,
     ['transposed cta kc1 x1ch, entries 0 as 1']),
    ((1, 4, 100, 300), 1, [2, 0], 0, torch.float32, False, ['cta kc1 x2ch, entries 0,1']),
    ((1, 4, 4097, 4097), 1, [0, 1, 2, 3], 0, torch.bfloat16, True,
     ['shared-line kc1 x1ch, entries 0,1', 'transposed shared-line kc1 x1ch, entries 2,3 as 0,1']),
]


@pytest.mark.parametrize('row', PLAN_TABLE, ids=lambda r: f"{'x'.join(map(str, r[0]))}_k{r[3]}_"
                         f"{str(r[4])[6:]}_{'bwd' if r[5] else 'fwd'}")
def test_plan_table(ext, row):
    sizes, G, dirs, chunk, dtype, backward, want = row
    assert ext.plan(list(sizes), G, dirs, chunk, dtype, backward) == want


def test_plan_errors(ext):
    with pytest.raises(RuntimeError, match=r'sizes must be \(B, C, H, W\), got 3 values'):
        ext.plan([1, 2, 3], 1, [0], 0, torch.float32, False)
    with pytest.raises(RuntimeError, match='groups must divide C = 6, got 4'):
        ext.plan([1, 6, 8, 8], 4, [0], 0, torch.float32, False)
    with pytest.raises(RuntimeError, match='lines of at most 8192 .*got a line of 8193'):
        ext.plan([1, 1, 4, 8193], 1, [0], 0, torch.float32, False)
    with pytest.raises(RuntimeError, match=r'sizes must be >= 0, got \[1, -2, 4, 4\]'):
        ext.plan([1, -2, 4, 4], 1, [0], 0, torch.float32, False)
    with pytest.raises(RuntimeError, match='direction ids must be in \\[0, 4\\), got 5'):
        ext.plan([1, 2, 4, 4], 1, [0, 5], 0, torch.float32, False)
    with pytest.raises(RuntimeError, match='direction left_right is repeated'):
        ext.plan([1, 2, 4, 4], 1, [2, 2], 0, torch.float32, False)
    with pytest.raises(RuntimeError, match='chunk must be >= 0'):
        ext.plan([1, 2, 4, 4], 1, [0], -1, torch.float32, False)
    with pytest.raises(RuntimeError, match='dtype must be float64, float32, float16 or bfloat16, '
                                           'got Long'):
        ext.plan([1, 2, 4, 4], 1, [0], 0, torch.int64, False)
