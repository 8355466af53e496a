"""Bad input given to each compiled extension, in a fresh interpreter, raises and does not crash it.

On the GPU machine both extensions once crashed the interpreter while the TORCH_CHECK message
was formatted (a second, static libstdc++ inside the extension; docs/ops.md, "Bad inputs"). In
a child process such a crash is one failed test, not a dead test run. ``STAGES=errors`` of
``tools/device_check_op.sh`` runs this module, and when it fails, the call as a script under
cuda-gdb for a native backtrace:

    python tests/ops/test_bad_input_process.py cuda     # prints 'cuda raised RuntimeError: ...'
"""
import subprocess
import sys

import pytest
import torch

KINDS = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device'))]


def bad_call(kind: str):
    """The first line of the error of ``forward`` given lam of 1 channel for x of 2, or None
    when nothing is raised."""
    from gspn2_dense.ops._build import load_extension
    ext = load_extension(kind)
    x = torch.randn(1, 2, 4, 4, device=kind)
    gates = torch.randn(1, 1, 1, 3, 4, 4, device=kind)
    lam = torch.randn(1, 1, 1, 4, 4, device=kind)
    try:
        ext.forward(x, gates, lam, None, [0], 0, True, False, False)
    except RuntimeError as err:
        return str(err).splitlines()[0]
    return None


@pytest.mark.parametrize('kind', KINDS)
def test_bad_input_raises_in_a_fresh_process(kind):
    done = subprocess.run([sys.executable, '-X', 'faulthandler', __file__, kind],
                          capture_output=True, text=True, timeout=900)
    said = f'exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}'
    assert done.returncode == 0, said
    assert f'{kind} raised RuntimeError: lam must be (B, D, C, H, W) = (1, 1, 2, 4, 4)' in done.stdout, said


if __name__ == '__main__':
    device = sys.argv[1]
    message = bad_call(device)
    print(device, 'no error raised' if message is None else f'raised RuntimeError: {message}')
    sys.exit(message is None)
