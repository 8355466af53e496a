"""The compute-sanitizer workload: every mode of the CUDA kernels on small shapes, forward
(with and without the saved hidden state) and backward.

``STAGES=sanitize`` of ``tools/device_check_op.sh`` runs this file as a script under
``compute-sanitizer --tool memcheck`` and ``--tool racecheck``:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        python tests/ops/test_sanitizer_workload.py

Under pytest the same calls are checked against the float64 reference (on a GPU).
"""
import contextlib

import pytest
import torch

from test_cuda_propagate import PLANE_FORCE, PLANE_OFF, _check_against_reference

B, C = 2, 4
# directions, G, chunk, merge, H, W
LINE_CASES = [
    ((0, 1, 2, 3), 1, 0, True, 19, 22),   # warp mode
    ((3, 1), 2, 3, False, 19, 22),
    ((2,), 4, 0, True, 19, 22),
    ((0, 1, 2, 3), 1, 0, True, 19, 150),  # CTA mode
    ((1, 0), 1, 0, True, 300, 200),       # CTA mode, paired merge
    ((0, 1), 2, 0, True, 40, 1100),       # long mode, paired merge
    ((2, 0), 2, 3, False, 1100, 5),       # long mode
    ((0, 1, 2, 3), 1, 0, True, 14, 14),   # small plane (propagate_small.h)
    ((0, 1, 2, 3), 2, 3, False, 32, 8),   # small plane, lines of 32 lanes, chunked
]
PLANE_CASES = [
    ((0, 1, 2, 3), 1, 2, True, 56, 56),   # plane mode (16-bit), NP = 2, chunked
    ((0, 1, 2, 3), 1, 0, True, 13, 17),   # odd plane
    ((3, 1), 2, 3, False, 28, 28),
    ((2,), 4, 0, True, 7, 7),
]
# plane mode forced (else the line modes), dtype, channels per thread (line modes: 1, or up to 4)
SETTINGS = [(False, torch.float32, 1), (False, torch.bfloat16, 1), (False, torch.bfloat16, 4),
            (True, torch.float32, 1), (True, torch.bfloat16, 1), (True, torch.float64, 1)]


@contextlib.contextmanager
def modes(ext, plane: bool, channels_per_thread: int):
    previous = (ext.set_plane_mode(PLANE_FORCE if plane else PLANE_OFF),
                ext.set_channels_per_thread(channels_per_thread))
    try:
        yield PLANE_CASES if plane else LINE_CASES
    finally:
        ext.set_plane_mode(previous[0])
        ext.set_channels_per_thread(previous[1])


def run_workload(ext) -> None:
    """The raw extension calls of every setting and case, nothing checked."""
    torch.manual_seed(0)
    for plane, dtype, kc in SETTINGS:
        with modes(ext, plane, kc) as cases:
            for dirs, G, chunk, merge, H, W in cases:
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


@pytest.mark.parametrize('plane, dtype, kc', SETTINGS,
                         ids=[f"{'plane' if p else 'lines'}-{str(d)[6:]}-kc{k}" for p, d, k in SETTINGS])
def test_workload_matches_reference(ext, plane, dtype, kc):
    with modes(ext, plane, kc) as cases:
        for dirs, G, chunk, merge, H, W in cases:
            _check_against_reference(ext, (B, C, G, H, W, dirs, chunk), True, merge, dtype)


if __name__ == '__main__':
    from gspn2_dense.ops._build import load_extension
    run_workload(load_extension('cuda'))
    torch.cuda.synchronize()
    print('sanitizer workload done')
