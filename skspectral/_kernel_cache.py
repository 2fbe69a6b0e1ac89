"""Numba's on-disk kernel cache, kept fresh against every source a kernel is compiled from.

Numba checks a cached function against its own file only. A kernel whose callee, or a constant it
reads, lives in another file of the package -- ``training_steps`` calls ``training_pass``, which calls
the eigen lanes and reads the loss codes -- would load machine code compiled from the old callee
after that file alone changed: after a ``git pull`` or an edit in an editable install, or after
``pip install -U`` (pip leaves Numba's files in ``__pycache__`` beside the new sources, and Numba
0.68 compares a file's contents (numba#10659; mtimes before), which an unchanged caller keeps). That
is stale numbers, or a crash where an argument's layout changed.

Here every cached function of the package is stamped with a digest of its *kernel sources*: the
modules that define cached kernels and every module of the package they import from, read once a
process. A change to any of them invalidates every cached kernel, which then compiles again once.
:func:`keep_kernel_cache_fresh` installs the stamp; each module that defines cached kernels calls
it before its first one (``tests/test_kernel_cache.py`` checks that all of them do).

The stamp also holds Numba's code-generation settings (:func:`codegen_settings`). Numba's cache key
holds the CPU only (numba#10821): a process run once with ``NUMBA_OPT=0``, ``NUMBA_DEBUGINFO=1`` or
``NUMBA_ENABLE_PROFILING=1`` (perf's or VTune's JIT events) left its kernels in the cache, and every
later process loaded them. One fit under ``NUMBA_ENABLE_PROFILING=1`` (debug info on: the gather's
loop 17x slower) made every later CPU fit of flights twice as slow (5x where every kernel was compiled
so). With the settings stamped, a process whose settings differ compiles its own, and the next one
with the usual settings compiles its own again, once.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
_roots: list[Path] = []
_warned: list[bool] = []


@functools.cache
def kernel_sources(root: Path) -> tuple[Path, ...]:
    """The package's modules under ``root`` that a cached kernel can be compiled from: those that
    define one (``cache=True``) and, transitively, the modules they import from by relative import
    (callees, intrinsics, constants). Sorted."""
    found = {path for path in root.rglob("*.py") if "cache=True" in path.read_text(encoding="utf-8")}
    pending = sorted(found)
    while pending:
        for module in _imported_modules(pending.pop(), root):
            if module not in found:
                found.add(module)
                pending.append(module)
    return tuple(sorted(found))


# "from .x import a, b" and "from ..x.y import (a,\n b)", anywhere in a file (also inside functions)
_RELATIVE_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.+)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.MULTILINE)


def _imported_modules(path: Path, root: Path) -> set[Path]:
    """The module files under ``root`` that ``path`` imports from by relative import (``from .x import
    y``: x.py, or x/y.py where y is a module). Read from the text (a few ms for the package; parsing
    the files took ~100 ms): an import that a string or comment only mentions adds a file, never
    drops one."""
    here = path.parent.relative_to(root).parts
    modules = set()
    for dots, module, names in _RELATIVE_IMPORT.findall(path.read_text(encoding="utf-8")):
        base = here[: len(here) - (len(dots) - 1)]
        target = base + tuple(part for part in module.split(".") if part)
        aliases = [name.split("#")[0].split(" as ")[0].strip(" ()\\\n\t") for name in names.split(",")]
        for parts in [target] + [target + (alias,) for alias in aliases if alias.isidentifier()]:
            candidate = root.joinpath(*parts).with_suffix(".py") if parts else None
            if candidate is not None and candidate.is_file():
                modules.add(candidate)
    return modules


@functools.cache
def kernel_sources_digest(root: Path) -> str:
    """SHA-256 of :func:`kernel_sources` (each file's path under ``root`` and its bytes)."""
    digest = hashlib.sha256()
    for path in kernel_sources(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


# Numba's settings that change the machine code of a function it compiles (numba.core.config; the CPU's
# name and features are in Numba's own cache key already). A setting an older Numba lacks reads None.
_CODEGEN_SETTINGS = ("OPT", "LOOP_VECTORIZE", "SLP_VECTORIZE", "DEBUGINFO_DEFAULT", "BOUNDSCHECK",
                     "EXTEND_VARIABLE_LIFETIMES", "ENABLE_PROFILING", "USING_SVML", "LLVM_REFPRUNE_PASS",
                     "LLVM_REFPRUNE_FLAGS")


def codegen_settings() -> tuple:
    """Numba's code-generation settings in force, as (name, repr) pairs: a part of every cached
    kernel's stamp (read when a kernel's cache is opened, not once a process: Numba's config can be reloaded)."""
    from numba.core import config

    return tuple((name, repr(getattr(config, name, None))) for name in _CODEGEN_SETTINGS)


def _root_of(py_file: str) -> Path | None:
    try:
        path = Path(py_file).resolve()
    except (OSError, ValueError):
        return None
    return next((root for root in _roots if path.is_relative_to(root)), None)


@functools.cache
def _locator_class():
    """A Numba cache locator for the functions of a registered root: the locator Numba would choose
    (a user's NUMBA_CACHE_DIR, the source's __pycache__, ...) with the kernel sources' digest and Numba's
    code-generation settings added to its source stamp. Built on first use (Numba is imported then)."""
    from numba.core import caching

    class KernelSourcesLocator(caching._CacheLocator):
        def __init__(self, inner, root: Path):
            self._inner, self._root = inner, root

        @classmethod
        def from_function(cls, py_func, py_file):
            root = _root_of(py_file)
            if root is None:
                return None
            for other in _cache_impl_class()._locator_classes:
                if other is cls:
                    continue
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, root)
            return None

        def ensure_cache_path(self):
            self._inner.ensure_cache_path()

        def get_cache_path(self):
            return self._inner.get_cache_path()

        def get_source_stamp(self):
            return self._inner.get_source_stamp(), kernel_sources_digest(self._root), codegen_settings()

        def get_disambiguator(self):
            return self._inner.get_disambiguator()

        def __getattr__(self, name):
            # What Numba reads of a locator besides its methods (``_py_file``, where it warns that a
            # function cannot be cached) is the inner locator's.
            if name.startswith("__") or name in ("_inner", "_root"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    return KernelSourcesLocator


def _cache_impl_class():
    from numba.core import caching

    # CacheImpl in recent Numba, _CacheImpl in older releases
    return getattr(caching, "CacheImpl", None) or caching._CacheImpl


def keep_kernel_cache_fresh(root: Path = PACKAGE_ROOT) -> None:
    """Stamp the cached Numba functions defined under ``root`` (this package by default) with the
    digest of its kernel sources (see the module's docstring). Idempotent; call it before the
    functions are defined (a function's cache locator is chosen when it is decorated)."""
    root = Path(root).resolve()
    if root not in _roots:
        _roots.append(root)
    try:
        locators = _cache_impl_class()._locator_classes
        locator = _locator_class()
    except AttributeError as exc:  # a Numba whose cache internals differ: its own stamps only
        if not _warned:
            _warned.append(True)
            from ._warn import warn

            warn(f"skspectral cannot stamp Numba's kernel cache with its kernel sources ({exc}): after an upgrade "
                 "or an edit of skspectral, delete its __pycache__ folders (or set NUMBA_CACHE_DIR to a new "
                 "folder) so that no kernel is loaded stale", RuntimeWarning)
        return
    if locator not in locators:
        locators.insert(0, locator)


def uses_fresh_cache(dispatcher) -> bool:
    """Whether a Numba dispatcher caches through the kernel sources' stamp."""
    cache = getattr(dispatcher, "_cache", None)
    locator = getattr(getattr(cache, "_impl", None), "_locator", None)
    return isinstance(locator, _locator_class())
