"""Building and loading the compiled GSPN-2 extensions.

Two extensions are built from ``csrc/``:

* ``cpu``  -- ``csrc/cpu/*.cpp``: the CPU kernels and their bindings (C++ only);
* ``cuda`` -- ``csrc/cuda/*.cpp`` and ``csrc/cuda/*.cu``: the fused CUDA kernels.

Each is taken, in this order, from

1. an ahead-of-time build installed with the package
   (``GSPN2_BUILD_EXT=1 pip install -e .`` -> ``gspn2_dense._C_cpu`` / ``gspn2_dense._C_cuda``);
2. a just-in-time build with ninja through :mod:`torch.utils.cpp_extension`, cached in
   ``$GSPN2_EXT_DIR`` (default ``~/.cache/gspn2_dense/extensions/<torch>-<cuda>``).

Nothing here runs at import time: the package imports without a compiler or a GPU, and
:func:`load_extension` raises :class:`ExtensionBuildError` with build instructions when the
first compiled op is needed and no build can be had.

This file is also loaded by ``setup.py`` (by path, before the package is installed), so it
imports nothing from ``gspn2_dense``.
"""
import fcntl
import glob
import importlib
import importlib.util
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def shipped_tree(name: str) -> Path:
    """The top-level source tree ``name`` ('csrc' or 'configs') this package uses.

    A wheel carries them as package data (``gspn2_dense/csrc``, ``gspn2_dense/configs``;
    setup.py copies them in); a source checkout (also ``pip install -e .``) has them beside
    the package. ``importlib.resources.files('gspn2_dense') / name`` is the first of those
    for an installed package (this file cannot import the package: setup.py loads it by path).
    """
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


CSRC = shipped_tree('csrc')
SOURCE_ROOT = CSRC.parent  # extension sources are named relative to it
DEFAULT_CUDA_ARCH_LIST = '8.0;8.6;9.0+PTX'

BUILD_HINT = (
    'Build the extension ahead of time with `GSPN2_BUILD_EXT=1 pip install -e .` '
    '(needs a C++ compiler, ninja and, for the CUDA kernels, nvcc with CUDA_HOME set), '
    'or install a compiler and let gspn2_dense build it on first use '
    '(cache directory: $GSPN2_EXT_DIR).')


class ExtensionBuildError(RuntimeError):
    """Raised when a compiled GSPN-2 extension is needed but can be neither imported nor built."""


def cxx_flags() -> List[str]:
    return ['-O3', '-std=c++17', '-fopenmp'] if os.name != 'nt' else ['/O2']


def nvcc_flags() -> List[str]:
    return [
        '-O3', '-std=c++17', '--use_fast_math', '-lineinfo', '--expt-relaxed-constexpr',
        '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
        '-U__CUDA_NO_BFLOAT16_OPERATORS__', '-U__CUDA_NO_BFLOAT16_CONVERSIONS__',
    ]


def runtime_libstdcxx() -> Optional[str]:
    """Path of the libstdc++ shared library this process runs with (Linux; None elsewhere).

    Extensions link against it by path. A g++ that finds no ``libstdc++.so`` next to itself
    (seen on the GPU machines' image, g++ 13.3) silently links the static ``libstdc++.a``
    into the extension instead; that second copy of the C++ runtime shares the process with
    the shared one torch loaded, and the first error message formatted through
    ``std::ostream`` (any failed TORCH_CHECK) crashes the interpreter.
    """
    try:
        with open('/proc/self/maps') as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith('libstdc++.so') and os.path.isfile(path):
                    return path
    except OSError:
        pass
    return None


def ldflags(kind: str) -> List[str]:
    flags = ['-fopenmp'] if kind == 'cpu' and os.name != 'nt' else []
    libstdcxx = runtime_libstdcxx()
    return flags + ([libstdcxx] if libstdcxx else [])


def extension_sources(kind: str) -> List[str]:
    """Source files of extension ``kind`` ('cpu' or 'cuda'), relative to ``SOURCE_ROOT``."""
    if kind == 'cpu':
        patterns = ['csrc/cpu/*.cpp']
    elif kind == 'cuda':
        patterns = ['csrc/cuda/*.cpp', 'csrc/cuda/*.cu']
    else:
        raise ValueError(f"extension kind must be 'cpu' or 'cuda', got {kind!r}")
    files = sorted(
        os.path.relpath(f, SOURCE_ROOT) for p in patterns for f in glob.glob(str(SOURCE_ROOT / p)))
    if not files:
        raise ExtensionBuildError(
            f'no sources for the {kind} extension under {CSRC}: the installed package lacks its '
            'csrc/ tree (reinstall gspn2_dense from a wheel or a source checkout)')
    return files


def resolve_cuda_home() -> Optional[str]:
    """Find the CUDA toolkit that ``nvcc`` belongs to.

    ``$CUDA_HOME``/``$CUDA_PATH`` win when set. Otherwise the ``nvcc`` on ``PATH`` is
    followed through symlinks and through wrapper scripts of the form
    ``exec /path/to/cuda/bin/nvcc "$@"`` (torch guesses ``dirname(dirname(nvcc))``, which is
    wrong for such wrappers and makes linking fail with ``cannot find -lcudart``).
    """
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which('nvcc')
    candidates = []
    if nvcc is not None:
        nvcc = os.path.realpath(nvcc)
        try:
            with open(nvcc, 'rb') as f:
                head = f.read(4096)
        except OSError:
            head = b''
        if head.startswith(b'#!'):
            # a wrapper script: the toolkit is the one it runs, not the one it sits in
            candidates += re.findall(r'(/\S+?/bin/nvcc)\b', head.decode(errors='replace'))
        candidates.append(nvcc)
    candidates.append('/usr/local/cuda/bin/nvcc')
    for path in candidates:
        home = os.path.dirname(os.path.dirname(os.path.realpath(path)))
        if os.path.isfile(os.path.join(home, 'bin', 'nvcc')) and os.path.isfile(
                os.path.join(home, 'include', 'cuda_runtime_api.h')):
            return home
    return None


def _prepare_cuda_environment() -> str:
    home = resolve_cuda_home()
    if home is None:
        raise ExtensionBuildError(
            'cannot build the CUDA extension: no CUDA toolkit found (nvcc is not on PATH and '
            f'CUDA_HOME is unset). {BUILD_HINT}')
    os.environ['CUDA_HOME'] = home
    import torch.utils.cpp_extension as cpp_extension
    if cpp_extension.CUDA_HOME != home:
        # torch guessed CUDA_HOME when it was first imported; keep it consistent with ours.
        cpp_extension.CUDA_HOME = home
    return home


def cuda_arch_list() -> str:
    """Architectures to compile for: ``$TORCH_CUDA_ARCH_LIST``, else the visible GPUs', else
    the default list (8.0, 8.6, 9.0 with PTX)."""
    if os.environ.get('TORCH_CUDA_ARCH_LIST'):
        return os.environ['TORCH_CUDA_ARCH_LIST']
    import torch
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ';'.join(f'{major}.{minor}' for major, minor in caps)
    return DEFAULT_CUDA_ARCH_LIST


def extension_dir() -> Path:
    """Directory holding just-in-time builds (``$GSPN2_EXT_DIR`` overrides the default)."""
    if os.environ.get('GSPN2_EXT_DIR'):
        return Path(os.environ['GSPN2_EXT_DIR']).expanduser()
    import torch
    cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    tag = f"torch{torch.__version__.split('+')[0]}-{torch.version.cuda or 'cpu'}"
    return cache / 'gspn2_dense' / 'extensions' / tag


def _check_compilers(kind: str) -> None:
    cxx = os.environ.get('CXX', 'c++')
    if shutil.which(cxx) is None:
        raise ExtensionBuildError(
            f'cannot build the gspn2_dense {kind} extension: no C++ compiler found '
            f'({cxx!r} is not on PATH). {BUILD_HINT}')
    if shutil.which('ninja') is None:
        import torch.utils.cpp_extension as cpp_extension
        if not cpp_extension.is_ninja_available():
            raise ExtensionBuildError(
                f'cannot build the gspn2_dense {kind} extension: ninja is not installed '
                f'(pip install ninja). {BUILD_HINT}')


_loaded: Dict[str, object] = {}
_thread_lock = threading.Lock()


def load_extension(kind: str, verbose: bool = False):
    """Return the compiled extension module ``kind`` ('cpu' or 'cuda'), building it if needed."""
    with _thread_lock:
        if kind in _loaded:
            return _loaded[kind]
        aot_name = f'gspn2_dense._C_{kind}'
        if importlib.util.find_spec(aot_name) is not None:
            module = importlib.import_module(aot_name)
        else:
            module = _build_jit(kind, verbose=verbose)
        _loaded[kind] = module
        return module


def _build_jit(kind: str, verbose: bool = False):
    sources = [str(SOURCE_ROOT / s) for s in extension_sources(kind)]
    _check_compilers(kind)
    build_name = f'gspn2_dense_{kind}'
    if kind == 'cpu' and not os.environ.get('CUDA_HOME') and resolve_cuda_home():
        # torch guesses CUDA_HOME when cpp_extension is imported (and warns when wrong)
        os.environ['CUDA_HOME'] = resolve_cuda_home()
    if kind == 'cuda':
        _prepare_cuda_environment()
        # torch's JIT cache does not key on the architectures: keep one build per list.
        os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list = cuda_arch_list()
        build_name += '_sm' + re.sub(r'[^0-9A-Za-z]+', '_', arch_list).strip('_')
    from torch.utils import cpp_extension

    build_dir = extension_dir() / build_name
    build_dir.mkdir(parents=True, exist_ok=True)
    # torch guards each build directory with a plain 'lock' file that an interrupted build
    # leaves behind, making every later build wait forever. Our own flock is released by the
    # kernel when its process dies, so while we hold it any torch lock file is stale.
    with open(build_dir / '.gspn2_build.lock', 'w') as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            stale = build_dir / 'lock'
            if stale.exists():
                stale.unlink()
            if verbose or os.environ.get('GSPN2_VERBOSE_BUILD'):
                print(f'[gspn2_dense] building the {kind} extension in {build_dir}', flush=True)
            try:
                return cpp_extension.load(
                    name=build_name,
                    sources=sources,
                    extra_include_paths=[str(CSRC)],
                    extra_cflags=cxx_flags(),
                    extra_cuda_cflags=nvcc_flags() if kind == 'cuda' else None,
                    extra_ldflags=ldflags(kind),
                    build_directory=str(build_dir),
                    with_cuda=kind == 'cuda',
                    verbose=verbose or bool(os.environ.get('GSPN2_VERBOSE_BUILD')),
                )
            except (RuntimeError, OSError, ImportError) as err:
                raise ExtensionBuildError(
                    f'building the gspn2_dense {kind} extension in {build_dir} failed: {err}\n'
                    f'{BUILD_HINT}') from err
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def build_cpu_variant(csrc: Path, name: str, build_dir: Path, extra_cflags: Sequence[str] = ()):
    """A CPU extension built from the sources under ``csrc`` (this checkout's ``csrc/`` or
    another revision's), as module ``name`` in ``build_dir``, with the usual flags plus
    ``extra_cflags``: builds to compare with the one :func:`load_extension` gives."""
    from torch.utils import cpp_extension
    return cpp_extension.load(
        name=name, sources=sorted(str(f) for f in (Path(csrc) / 'cpu').glob('*.cpp')),
        extra_include_paths=[str(csrc)], extra_cflags=cxx_flags() + list(extra_cflags),
        extra_ldflags=ldflags('cpu'), build_directory=str(build_dir))


def setup_extensions() -> list:
    """``ext_modules`` for ``setup.py`` when ``GSPN2_BUILD_EXT=1`` (ahead-of-time build)."""
    from torch.utils.cpp_extension import CppExtension, CUDAExtension
    include = [str(CSRC)]
    modules = [
        CppExtension('gspn2_dense._C_cpu', extension_sources('cpu'), include_dirs=include,
                     extra_compile_args=cxx_flags(), extra_link_args=ldflags('cpu')),
    ]
    if os.environ.get('GSPN2_BUILD_CUDA', '1') != '0' and resolve_cuda_home() is not None:
        _prepare_cuda_environment()
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', DEFAULT_CUDA_ARCH_LIST)
        modules.append(
            CUDAExtension('gspn2_dense._C_cuda', extension_sources('cuda'), include_dirs=include,
                          extra_compile_args={'cxx': cxx_flags(), 'nvcc': nvcc_flags()},
                          extra_link_args=ldflags('cuda')))
    return modules
