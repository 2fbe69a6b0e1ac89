"""CuPy access shared by the CuPy and fused-kernel backends (and the CUDA kernels of the model's
assembly, the losses and Adam): import with a clear hint, availability, CuPy's view of torch's
current stream, the device a launch goes to, and a CUDA source's kernels launched on torch's
stream (:class:`RawKernels`)."""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings

INSTALL_HINT = (
    "install the CUDA extra matching torch's CUDA (torch.version.cuda): "
    "pip install 'skspectral[cuda12]' (CUDA 12) or 'skspectral[cuda13]' (CUDA 13)"
)


def _install_hint() -> str:
    """The extra for this torch's CUDA where it has one, else both."""
    import torch

    major = (torch.version.cuda or "").split(".")[0]
    if major in ("12", "13"):
        return (f"install the CUDA extra matching torch's CUDA {torch.version.cuda}: "
                f"pip install 'skspectral[cuda{major}]'")
    return INSTALL_HINT


@functools.cache
def unusable_reason() -> str | None:
    """Why the installed CuPy (its import checked by the caller) cannot run our kernels, or None; found once a
    process, as is_available's verdict, so a backend asked for by name does not query NVRTC at every call.
    A CuPy built for another CUDA than the libraries present (cupy-cuda12x beside PyPI's torch, a CUDA 13 build
    that brings CUDA 13's NVRTC only) imports and counts the devices, but fails to load NVRTC, its kernels'
    compiler, at the first compile: "CuPy failed to load libnvrtc.so.12"."""
    import cupy

    nvrtc = getattr(cupy.cuda, "nvrtc", None)
    if nvrtc is None:  # a CuPy that keeps NVRTC elsewhere: not judged here (its first compile says)
        return None
    try:
        nvrtc.getVersion()
    except Exception as exc:  # RuntimeError from CuPy's loader, or NVRTC's own error
        return (f"CuPy {getattr(cupy, '__version__', '')} cannot load NVRTC, the CUDA compiler its kernels need "
                f"({type(exc).__name__}: {exc}); {_install_hint()}.")
    return None


@functools.cache
def is_available() -> bool:
    """True when CuPy imports, sees a CUDA device and loads NVRTC. A CuPy that sees a device but cannot
    compile (:func:`unusable_reason`) warns once and counts as missing: the CUDA paths then take torch's
    ops, as without CuPy, instead of failing at a fit's first kernel."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() <= 0:
            return False
    except Exception:  # ImportError, no driver, or a CuPy built for another CUDA
        return False
    reason = unusable_reason()
    if reason is not None:
        from .._warn import warn

        warn(f"{reason} skspectral's CUDA paths run torch's slower ops until then.", RuntimeWarning)
        return False
    return True


def import_cupy(needed_by: str = "this eigen backend"):
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"{needed_by} needs CuPy, which is not installed; {_install_hint()}.") from exc
    return cupy


def require_cupy(needed_by: str):
    """CuPy for a backend asked for by name: a clear error where it is missing or cannot compile."""
    cupy = import_cupy(needed_by)
    reason = unusable_reason()
    if reason is not None:
        raise RuntimeError(f"{needed_by} needs CuPy's kernels, but {reason}")
    return cupy


# warnings.catch_warnings swaps the process's filters and is not thread-safe: fits on several threads making
# their streams' views at once could leave its "ignore" in force; held, ours at least never interleave
_QUIET_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def cupy_stream(pointer: int, index: int):
    """CuPy's view of one torch stream, made once: construction is not free."""
    cupy = import_cupy()
    with _QUIET_LOCK, warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream for Stream.from_external
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(pointer, index)


def current_cupy_stream(index: int):
    """CuPy's view of torch's current stream on CUDA device ``index``."""
    import torch

    return cupy_stream(torch.cuda.current_stream(index).cuda_stream, index)


def launch_device(index: int):
    """The context a raw kernel launch on CUDA device ``index`` runs in: none where it is torch's
    current device (entering CuPy's device context costs a few microseconds, which matters for
    small calls), else CuPy's device ``index``."""
    import torch

    return contextlib.nullcontext() if torch.cuda.current_device() == index else import_cupy().cuda.Device(index)


class RawKernels:
    """A CUDA source's kernels, compiled on first use and loaded once per device: ``launch(name,
    dtype, ...)`` runs ``{name}_float`` or ``{name}_double`` (by the dtype) on torch's current
    stream, so a CUDA graph captures it; a tensor among the arguments goes as its data pointer."""

    def __init__(self, source: str, needed_by: str):
        self.source, self.needed_by = source, needed_by
        self._module = None
        self._functions: dict = {}

    def function(self, name: str, dtype, index: int):
        """The loaded kernel ``{name}_{float|double}`` on CUDA device ``index``."""
        import torch

        key = (name, dtype, index)
        function = self._functions.get(key)
        if function is None:
            cupy = import_cupy(self.needed_by)
            if self._module is None:
                self._module = cupy.RawModule(code=self.source)
            with cupy.cuda.Device(index):
                suffix = "double" if dtype == torch.float64 else "float"
                function = self._functions[key] = self._module.get_function(f"{name}_{suffix}").kernel
        return function

    def launch(self, name: str, dtype, index: int, blocks: int, threads: int, args: tuple) -> None:
        import numpy as np
        import torch

        function = self.function(name, dtype, index)
        with launch_device(index):
            function((blocks,), (threads,),
                     tuple(np.uint64(a.data_ptr()) if isinstance(a, torch.Tensor) else a for a in args), 0,
                     current_cupy_stream(index))
