"""CuPy access shared by the CuPy and fused-kernel backends (and the trainer's CUDA Adam):
import with a clear hint, availability, CuPy's view of torch's current stream, and the
device a launch goes to."""

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
