"""The compute-sanitizer workload: every kind of launch of the CUDA kernels on small shapes,
forward (with and without the saved hidden state) and backward.

``STAGES=sanitize`` of ``tools/device_check_op.sh`` runs this file as a script under
``compute-sanitizer --tool memcheck`` and ``--tool racecheck``:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        python tests/ops/test_sanitizer_workload.py

Under pytest the same calls are checked against the float64 reference (on a GPU).
"""
import pytest
import torch

from test_cuda_propagate import _check_against_reference

B, C = 2, 4
# directions, G, chunk, merge, H, W: the launch the plan picks (csrc/cuda/launch_plan.h), in
# 16-bit storage where the dtype changes it
CASES = [
    ((0, 1, 2, 3), 1, 0, True, 19, 22),   # warp mode (float32: plane)
    ((3, 1), 2, 3, False, 19, 22),        # warp mode, chunked; plane backward
    ((2,), 4, 0, True, 19, 22),
    ((2, 3), 1, 0, True, 7, 40),          # warp mode, 2 channels per thread
    ((0, 1, 2, 3), 1, 0, True, 19, 150),  # CTA mode
    ((1, 0), 1, 0, True, 300, 200),       # CTA mode, 2 channels per thread, paired merge
    ((0, 1), 2, 0, True, 40, 1100),       # long mode, paired merge
    ((2, 0), 2, 3, False, 1100, 5),       # transposed long mode
    ((0, 1, 2, 3), 1, 0, True, 200, 24),  # transposed CTA mode beside the in-place warp mode
    ((0, 1, 2, 3), 1, 0, True, 14, 14),   # small plane (propagate_small.h)
    ((0, 1, 2, 3), 2, 3, False, 32, 8),   # small plane, lines of 32 lanes, chunked
    ((0, 1, 2, 3), 1, 2, True, 56, 56),   # local (propagate_local.h)
    ((0, 1, 2, 3), 1, 0, True, 56, 56),   # plane mode (16-bit), NP = 2
    ((0, 1, 2, 3), 1, 0, True, 13, 40),   # odd plane
    ((3, 1), 2, 3, False, 28, 28),        # warp forward, plane backward
    ((0, 1, 2, 3), 1, 0, True, 5, 2100),  # shared-line mode (rows of 2100), columns in place
    ((2, 1), 4, 3, False, 2100, 3),       # shared-line mode on transposed planes, G = C
]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]


def run_workload(ext) -> None:
    """The raw extension calls of every dtype and case, nothing checked."""
    torch.manual_seed(0)
    for dtype in DTYPES:
        for dirs, G, chunk, merge, H, W in CASES:
            D = len(dirs)
            x = torch.randn(B, C, H, W, device='cuda', dtype=dtype)
            gates = torch.randn(B, D, G, 3, H, W, device='cuda', dtype=dtype)
            lam = torch.rand(B, D, C, H, W, device='cuda', dtype=dtype)
            u = torch.randn(B, D, C, H, W, device='cuda', dtype=dtype)
            for save in (False, True):
                out, hidden = ext.forward(x, gates, lam, u, list(dirs), chunk, True, merge, save)
            ext.backward(torch.randn_like(out), x, gates, lam, u, hidden if merge else out,
                         list(dirs), chunk, True, merge)


@pytest.fixture(scope='module')
def ext():
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
    from gspn2_dense.ops._build import load_extension
    return load_extension('cuda')


@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: str(d)[6:])
def test_workload_matches_reference(ext, dtype):
    for dirs, G, chunk, merge, H, W in CASES:
        _check_against_reference(ext, (B, C, G, H, W, dirs, chunk), True, merge, dtype)


if __name__ == '__main__':
    from gspn2_dense.ops._build import load_extension
    run_workload(load_extension('cuda'))
    torch.cuda.synchronize()
    print('sanitizer workload done')
