"""The kernel profile's bookkeeping (the profiling itself needs a GPU)."""
import torch

from gspn2_dense.benchmarks import profile
from gspn2_dense.benchmarks.timing import run_stamp


def test_kernels_grouped_by_what_they_do():
    times = {
        'void gspn2::cuda::propagate_forward_kernel<c10::BFloat16, true, true, 1, 2>(...)': (300.0, 2),
        'void gspn2::cuda::(anonymous namespace)::transpose_planes_kernel<float, true, false>(...)': (50.0, 7),
        'void at::native::vectorized_layer_norm_kernel<float, float, false>(...)': (20.0, 3),
        'sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64': (25.0, 4),
        'void at::native::elementwise_kernel<128, 4, at::native::direct_copy_kernel_cuda(...)>': (5.0, 9),
        'Memcpy HtoD (Pageable -> Device)': (1.0, 1),
        'void gspn2::cuda::(anonymous namespace)::layer_norm_forward_kernel<c10::BFloat16, float>(...)': (7.0, 2),
        'void gspn2::cuda::(anonymous namespace)::sum_partial_rows_kernel(...)': (2.0, 2),
        'triton_red_fused__to_copy_add_convolution_native_layer_norm_permute_39': (11.0, 4),
    }
    groups = profile.grouped(times)
    assert groups['gspn2 op'] == (300.0, 2)
    assert groups['gspn2 transpose'] == (50.0, 7)
    assert groups['normalisation'] == (20.0, 3)
    assert groups['matmul / 1x1 conv'] == (25.0, 4)
    assert groups['copy / layout'] == (5.0, 9)
    assert groups['other'] == (1.0, 1)
    assert groups['fused layer norm'] == (9.0, 4)  # (our norm kernels are not the op)
    assert groups['inductor-fused (triton)'] == (11.0, 4)  # (not 'convolution' by its name)
    assert sum(t for t, _ in groups.values()) == sum(t for t, _ in times.values())


def test_table_in_ms_per_call_with_shares():
    text, total = profile.kernel_table({'a': (3000.0, 2), 'b': (1000.0, 1)}, 'forward')
    assert total == 4000.0
    lines = text.splitlines()
    assert lines[0] == '**forward**: 4.000 ms of kernels per call'
    assert lines[4] == '| `a` | 3.000 | 2 | 75% |' and lines[5] == '| `b` | 1.000 | 1 | 25% |'
    top1, _ = profile.kernel_table({'a': (3000.0, 2), 'b': (1000.0, 1)}, 'top', top=1)
    assert '`b`' not in top1
    long_name = 'k' * 200
    assert f"`{'k' * 87}...`" in profile.kernel_table({long_name: (1.0, 1)}, 't')[0]


def test_report_states_the_stamp_and_command():
    result = dict(run_stamp('cpu', 'abc1234'), device='Some GPU', command='python tools/profile_op.py',
                  reps=5, results=[])
    text = profile.markdown(result, ['### a\n', '### b\n'])
    assert text.startswith('# Kernel time breakdown on Some GPU\n\ntorch ')
    assert 'commit abc1234; `python tools/profile_op.py`' in text and '(torch.profiler, 5 calls' in text
    assert text.endswith('### a\n\n### b\n')


def test_operators_grouped_by_input_shapes():
    a, b = torch.randn(256, 256), torch.randn(8, 8)

    def fn():
        for _ in range(3):
            a @ a
        b @ b

    rows = profile.op_times(fn, reps=2, device='cpu')
    mm = {shapes: (t, n) for op, shapes, t, n in rows if op == 'aten::mm'}
    assert set(mm) == {'(256, 256), (256, 256)', '(8, 8), (8, 8)'}
    assert mm['(256, 256), (256, 256)'][1] == 3 and mm['(8, 8), (8, 8)'][1] == 1  # per call
    assert [t for _, _, t, _ in rows] == sorted((t for _, _, t, _ in rows), reverse=True)
