"""CuPy access shared by the CuPy and fused-kernel backends (and the CUDA kernels of the model's
assembly, the losses and Adam): import with a clear hint, availability, CuPy's view of torch's
current stream, the device a launch goes to, and a CUDA source's kernels launched on torch's
stream (:class:`RawKernels`)."""

from __future__ import annotations

import contextlib
import functools
import warnings

INSTALL_HINT = (
    "install the CUDA extra matching your CUDA toolkit: "
    "pip install 'skspectral[cuda12]' (CUDA 12) or 'skspectral[cuda13]' (CUDA 13)"
)


@functools.cache
def is_available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or a CuPy built for another CUDA
        return False


def import_cupy(needed_by: str = "this eigen backend"):
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"{needed_by} needs CuPy, which is not installed; {INSTALL_HINT}.") from exc
    return cupy


@functools.lru_cache(maxsize=64)
def cupy_stream(pointer: int, index: int):
    """CuPy's view of one torch stream, made once: construction is not free."""
    cupy = import_cupy()
    with warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream for Stream.from_external
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
