"""tools/profile_op.py's bookkeeping (the profiling itself needs a GPU)."""
import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'profile_op.py'


@pytest.fixture(scope='module')
def profile_op():
    spec = importlib.util.spec_from_file_location('profile_op', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernels_grouped_by_what_they_do(profile_op):
    times = {
        'void gspn2::cuda::propagate_forward_kernel<c10::BFloat16, true, true, 1, 2>(...)': (300.0, 2),
        'void gspn2::cuda::(anonymous namespace)::transpose_planes_kernel<float, true, false>(...)': (50.0, 7),
        'void at::native::vectorized_layer_norm_kernel<float, float, false>(...)': (20.0, 3),
        'sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64': (25.0, 4),
        'void at::native::elementwise_kernel<128, 4, at::native::direct_copy_kernel_cuda(...)>': (5.0, 9),
        'Memcpy HtoD (Pageable -> Device)': (1.0, 1),
    }
    groups = profile_op.grouped(times)
    assert groups['gspn2 op'] == (300.0, 2)
    assert groups['gspn2 transpose'] == (50.0, 7)
    assert groups['normalisation'] == (20.0, 3)
    assert groups['matmul / 1x1 conv'] == (25.0, 4)
    assert groups['copy / layout'] == (5.0, 9)
    assert groups['other'] == (1.0, 1)
    assert sum(t for t, _ in groups.values()) == sum(t for t, _ in times.values())


def test_table_in_ms_per_call_with_shares(profile_op):
    text, total = profile_op.table({'a': (3000.0, 2), 'b': (1000.0, 1)}, 'forward')
    assert total == 4000.0
    lines = text.splitlines()
    assert lines[0] == '**forward**: 4.000 ms of kernels per call'
    assert lines[4] == '| `a` | 3.000 | 2 | 75% |' and lines[5] == '| `b` | 1.000 | 1 | 25% |'
    top1, _ = profile_op.table({'a': (3000.0, 2), 'b': (1000.0, 1)}, 'top', top=1)
    assert '`b`' not in top1
