"""The CuPy backend: cuSOLVER's batched Jacobi eigensolver through DLPack.

torch (<= 2.11) loops over matrices for n > 32 on CUDA; CuPy hands the whole
batch to cuSOLVER. Tensors are shared zero-copy through DLPack, and all CuPy
work is queued on torch's current stream of the tensor's own device, so no
host synchronisation is needed and the result is usable on that stream at
once.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch


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


def import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"backend='cupy' needs CuPy, which is not installed; {INSTALL_HINT}.") from exc
    return cupy


@functools.lru_cache(maxsize=64)
def _cupy_stream(pointer: int, index: int):
    """CuPy's view of one torch stream, made once: construction is not free."""
    cupy = import_cupy()
    with warnings.catch_warnings():  # CuPy 14 deprecates ExternalStream for Stream.from_external
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(pointer, index)


@contextlib.contextmanager
def _on_torch_stream(device: torch.device):
    cupy = import_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = _cupy_stream(torch.cuda.current_stream(index).cuda_stream, index)
    with cupy.cuda.Device(index), stream:
        yield cupy


def _uplo(lower: bool) -> str:
    return "L" if lower else "U"


def eigvalsh_k(A: torch.Tensor, k: int, lower: bool) -> torch.Tensor:
    """k-th eigenvalue of each matrix of a contiguous CUDA (B, n, n) batch."""
    with _on_torch_stream(A.device) as cupy:
        values = cupy.linalg.eigvalsh(cupy.from_dlpack(A), UPLO=_uplo(lower))
        return torch.from_dlpack(cupy.ascontiguousarray(values[:, k]))


def eigh_k(A: torch.Tensor, k: int, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous CUDA batch."""
    with _on_torch_stream(A.device) as cupy:
        values, vectors = cupy.linalg.eigh(cupy.from_dlpack(A), UPLO=_uplo(lower))
        # Copy out the k-th column so the (B, n, n) eigenvector buffer is freed now.
        value = cupy.ascontiguousarray(values[:, k])
        vector = cupy.ascontiguousarray(vectors[:, :, k])
        return torch.from_dlpack(value), torch.from_dlpack(vector)
