"""Numba's disk cache of the package's kernels is stamped with every source they are compiled from."""

import importlib
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from skspectral import _kernel_cache
from skspectral._kernel_cache import PACKAGE_ROOT, kernel_sources, kernel_sources_digest


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_kernel_sources_follow_relative_imports_and_the_digest_moves_with_any_of_them(tmp_path):
    root = tmp_path / "toy"
    _write(root / "__init__.py", "")
    _write(root / "kernels.py", """\
        import numba
        from .helpers import g
        from .sub.consts import (A,  # a comment, with commas, and words
                                 B as C)

        @numba.njit(cache=True)
        def f():
            return g() + A + C

        def later():
            from . import lazy
        """)
    _write(root / "helpers.py", "def g():\n    return 1\n")
    _write(root / "sub" / "__init__.py", "")
    _write(root / "sub" / "consts.py", "A = 1\nB = 2\n")
    _write(root / "lazy.py", "")
    _write(root / "unrelated.py", "from .helpers import g\n")

    def sources():
        kernel_sources.cache_clear()
        kernel_sources_digest.cache_clear()
        return {p.relative_to(root).as_posix() for p in kernel_sources(root)}, kernel_sources_digest(root)

    files, digest = sources()
    assert files == {"kernels.py", "helpers.py", "sub/consts.py", "lazy.py"}
    _write(root / "unrelated.py", "from .helpers import g\nX = 1\n")
    assert sources() == (files, digest)
    _write(root / "sub" / "consts.py", "A = 1\nB = 3\n")
    assert sources()[1] != digest
    kernel_sources.cache_clear()
    kernel_sources_digest.cache_clear()


def test_the_package_kernel_sources_hold_every_kernel_module_and_what_it_reads():
    files = {p.relative_to(PACKAGE_ROOT).as_posix() for p in kernel_sources(PACKAGE_ROOT)}
    kernels = {"_encoding_kernels.py", "_step_kernels.py", "_training/_steps_kernel.py", "_training/_adam_kernel.py",
               "eig/_numba_kernels.py", "eig/_numba_lanes.py", "_preprocessing.py", "_columns/summary.py"}
    assert kernels | {"eig/_simd.py", "_loss_codes.py", "_kernel_cache.py"} <= files
    assert not {"regressor.py", "classifier.py", "_estimator.py", "model.py"} & files


_RUN = """\
import importlib.util, sys
spec = importlib.util.spec_from_file_location("kernel_cache", {module!r})
kernel_cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kernel_cache)
kernel_cache.keep_kernel_cache_fresh({root!r})
sys.path.insert(0, {parent!r})
from toy.a import f
print(f(), sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()))
"""


def test_a_kernel_whose_callee_changed_in_another_file_compiles_again(tmp_path):
    """Numba alone checks a cached function against its own file: after only the callee's file
    changed (an edit or ``git pull`` in an editable install; also a ``pip install -U``, which leaves
    Numba's cache files beside the new sources, where Numba 0.68 compares a file's contents), a new process loaded the caller compiled with the old callee and
    returned 2 here instead of 11. With the kernel sources' stamp it compiles again, once."""
    pytest.importorskip("numba")
    root = tmp_path / "toy"
    _write(root / "__init__.py", "")
    _write(root / "a.py", "import numba\nfrom .b import g\n\n\n@numba.njit(cache=True)\ndef f():\n    return g() + 1\n")
    _write(root / "b.py", "import numba\n\n\n@numba.njit(cache=True)\ndef g():\n    return 1\n")
    code = _RUN.format(module=_kernel_cache.__file__, root=str(root), parent=str(tmp_path))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def run():
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return tuple(map(int, done.stdout.split()))

    assert run() == (2, 0, 1)  # compiled
    assert run() == (2, 1, 0)  # loaded from the cache
    _write(root / "b.py", "import numba\n\n\n@numba.njit(cache=True)\ndef g():\n    return 10\n")
    assert run() == (11, 0, 1)  # compiled again, not the stale 2
    assert run() == (11, 1, 0)


@pytest.mark.parametrize("setting", [{"NUMBA_OPT": "0"}, {"NUMBA_DEBUGINFO": "1"}, {"NUMBA_ENABLE_PROFILING": "1"}])
def test_a_kernel_compiled_under_other_numba_settings_is_not_loaded_by_a_process_with_the_usual_ones(tmp_path,
                                                                                                   setting):
    """Numba's cache key holds the CPU, not its code-generation settings (numba#10821): one process run with
    debug info on (NUMBA_ENABLE_PROFILING=1 for perf) left its kernels in the cache, and every later process
    loaded them -- a CPU fit of flights then took twice as long. The stamp holds the settings: a process
    with other settings compiles its own, and the next one with the usual settings compiles again, once."""
    pytest.importorskip("numba")
    root = tmp_path / "toy"
    _write(root / "__init__.py", "")
    _write(root / "a.py", "import numba\n\n\n@numba.njit(cache=True)\ndef f():\n    return 2\n")
    code = _RUN.format(module=_kernel_cache.__file__, root=str(root), parent=str(tmp_path))
    usual = {key: value for key, value in os.environ.items()
             if key not in ("NUMBA_OPT", "NUMBA_DEBUGINFO", "NUMBA_ENABLE_PROFILING", "VS_PROFILER")}
    usual["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")

    def run(env):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return tuple(map(int, done.stdout.split()))

    assert run(usual) == (2, 0, 1)  # compiled
    assert run(usual) == (2, 1, 0)  # loaded
    assert run({**usual, **setting}) == (2, 0, 1)  # compiled under its own settings, not loaded
    assert run({**usual, **setting}) == (2, 1, 0)
    assert run(usual) == (2, 0, 1)  # compiled again, not the other settings' code
    assert run(usual) == (2, 1, 0)


def test_the_codegen_settings_follow_numbas_config(monkeypatch):
    pytest.importorskip("numba")
    from numba.core import config

    settings = dict(_kernel_cache.codegen_settings())
    assert {"OPT", "DEBUGINFO_DEFAULT", "LOOP_VECTORIZE", "BOUNDSCHECK"} <= set(settings)
    monkeypatch.setattr(config, "DEBUGINFO_DEFAULT", 1 - int(config.DEBUGINFO_DEFAULT))
    assert dict(_kernel_cache.codegen_settings())["DEBUGINFO_DEFAULT"] != settings["DEBUGINFO_DEFAULT"]


def test_every_cached_kernel_of_the_package_is_stamped_with_the_kernel_sources():
    """Each module that defines cached kernels installs the stamp before its first one (a kernel's cache
    locator is chosen when it is decorated): every cached dispatcher of the package uses it."""
    pytest.importorskip("numba")
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from skspectral._columns.summary import _moments_kernel
    from skspectral._preprocessing import _row_hash_kernel

    from skspectral.eig import _numba_kernels
    from skspectral.eig._numba_lanes import _lane_solver_cfunc

    found = [_row_hash_kernel()]
    found += [value for value in inspect.getclosurevars(_moments_kernel()).nonlocals.values()]
    solvers = [_lane_solver_cfunc(np.dtype(dtype)) for dtype in ("float32", "float64")]  # cfuncs, by dtype
    solvers += [_numba_kernels._c_function(py_func, types_for, np.dtype("float64"))
                for py_func, types_for in ((_numba_kernels._gathered_range_c, _numba_kernels._gathered_range_types),
                                           (_numba_kernels._gathered_grad_c, _numba_kernels._gathered_grad_types))]
    for name in ("_encoding_kernels", "_step_kernels", "_training._steps_kernel", "_training._adam_kernel",
                 "eig._numba_kernels", "eig._numba_lanes"):
        module = importlib.import_module(f"skspectral.{name}")
        found += [getattr(module, attribute) for attribute in dir(module)]
    cached = {f.py_func.__module__ + "." + f.py_func.__qualname__: f for f in found
              if isinstance(f, CPUDispatcher) and not isinstance(f._cache, NullCache)}
    assert {"skspectral._training._steps_kernel.training_steps", "skspectral.eig._numba_lanes.householder",
            "skspectral._preprocessing._row_hash_kernel.<locals>.row_hashes",
            "skspectral._columns.summary._moments_kernel.<locals>.chunk_sums"} <= set(cached)
    assert [name for name, f in cached.items() if not _kernel_cache.uses_fresh_cache(f)] == []
    assert all(_kernel_cache.uses_fresh_cache(solver) for solver in solvers)


def test_a_numba_without_the_cache_internals_gets_one_warning_and_its_own_stamps(monkeypatch):
    """Where Numba's cache internals differ, the kernels still compile and cache with Numba's own stamps,
    and the user is told once what to do after an upgrade."""
    def missing():
        raise AttributeError("module 'numba.core.caching' has no attribute 'CacheImpl'")

    monkeypatch.setattr(_kernel_cache, "_cache_impl_class", missing)
    monkeypatch.setattr(_kernel_cache, "_warned", [])
    with pytest.warns(RuntimeWarning, match="delete its __pycache__") as warned:
        _kernel_cache.keep_kernel_cache_fresh()
        _kernel_cache.keep_kernel_cache_fresh()
    assert len(warned) == 1 and warned[0].filename == __file__  # the caller's line, not the package's


def test_a_kernel_numba_cannot_cache_still_compiles_with_numbas_warning(tmp_path):
    """Numba reads the locator's ``_py_file`` where it warns that a function cannot be cached (a ctypes
    pointer here; with NUMBA_OPT below 3, the package's own kernels that link callees loaded from the
    cache). The stamping locator had no such attribute, and the fit failed with an AttributeError."""
    pytest.importorskip("numba")
    root = tmp_path / "toy"
    _write(root / "__init__.py", "")
    _write(root / "a.py", """\
        import ctypes
        import ctypes.util

        import numba

        _labs = ctypes.CDLL(ctypes.util.find_library("c")).labs
        _labs.argtypes, _labs.restype = [ctypes.c_long], ctypes.c_long


        @numba.njit(cache=True)
        def f():
            return _labs(-2) + 1
        """)
    code = _RUN.format(module=_kernel_cache.__file__, root=str(root), parent=str(tmp_path))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    for _ in range(2):  # compiled each time: nothing was cached
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert tuple(map(int, done.stdout.split())) == (3, 0, 1)
        assert 'Cannot cache compiled function "f"' in done.stderr
