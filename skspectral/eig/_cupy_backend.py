"""The CuPy backend: cuSOLVER's batched Jacobi eigensolver through DLPack.

torch (<= 2.11) loops over matrices for n > 32 on CUDA; CuPy hands the whole
batch to cuSOLVER. The input is shared zero-copy through DLPack, and all CuPy
work is queued on torch's current stream of the tensor's own device, so no
host synchronisation is needed and the result is usable on that stream at
once. One small kernel then gathers the k-th pair into torch-allocated
outputs and writes NaN for matrices with NaN/inf in the triangle that is read
(cuSOLVER's Jacobi returns finite garbage for them, where torch.linalg
raises), in place of half a dozen torch/CuPy calls.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

from ._backend import EigenBackend
from ._cupy_support import current_cupy_stream, import_cupy, is_available, require_cupy

# One block per matrix: flag a non-finite entry of the triangle that is read,
# then copy lambda_k and column k of V (or NaN).
_GATHER_SOURCE = r"""
extern "C" __global__ void gather_kth(
    const SCALAR* __restrict__ A, const SCALAR* __restrict__ w, const SCALAR* __restrict__ V,
    SCALAR* __restrict__ value, SCALAR* __restrict__ vector,
    const int n, const int k, const int lower,
    const long long w_batch, const long long w_index,
    const long long v_batch, const long long v_row, const long long v_col)
{
    const long long b = blockIdx.x;
    const SCALAR* a = A + b * (long long)n * n;
    __shared__ int bad;
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    int local = 0;
    for (int idx = threadIdx.x; idx < n * n; idx += blockDim.x) {
        const int i = idx / n, j = idx - (idx / n) * n;
        const bool read = lower ? (j <= i) : (j >= i);
        if (read && !isfinite(a[idx])) local = 1;
    }
    if (local) bad = 1;
    __syncthreads();
    const SCALAR nan_value = (SCALAR)nan("");
    if (threadIdx.x == 0) value[b] = bad ? nan_value : w[b * w_batch + k * w_index];
    if (vector != nullptr) {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            vector[b * n + i] = bad ? nan_value : V[b * v_batch + i * v_row + k * v_col];
    }
}
"""

# Measured on an H100 (benchmarks/RESULTS.md): for a single matrix from these
# sizes up torch's syevd beats cuSOLVER's batched Jacobi; for any batch > 1 CuPy wins.
_TORCH_SINGLE_MATRIX_MIN_N = {torch.float32: 64, torch.float64: 45}


@functools.lru_cache(maxsize=4)
def _gather_kernel(scalar: str):
    cupy = import_cupy()
    return cupy.RawKernel(_GATHER_SOURCE.replace("SCALAR", scalar), "gather_kth")


@contextlib.contextmanager
def _on_torch_stream(device: torch.device):
    cupy = import_cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(index), current_cupy_stream(index):
        yield cupy


def _uplo(lower: bool) -> str:
    return "L" if lower else "U"


def _gather(A, values, vectors, k, lower, want_vector):
    """Launch gather_kth; outputs are torch tensors on A's device."""
    B, n = A.shape[0], A.shape[-1]
    value = torch.empty(B, dtype=A.dtype, device=A.device)
    vector = torch.empty(B, n, dtype=A.dtype, device=A.device) if want_vector else None
    item = values.itemsize
    w_strides = [s // item for s in values.strides]
    v_strides = [s // item for s in vectors.strides] if want_vector else [0, 0, 0]
    scalar = "float" if A.dtype == torch.float32 else "double"
    _gather_kernel(scalar)(
        (B,),
        (64,),
        (
            np.uint64(A.data_ptr()),
            values,
            vectors if want_vector else values,
            np.uint64(value.data_ptr()),
            np.uint64(vector.data_ptr() if want_vector else 0),
            np.int32(n),
            np.int32(k),
            np.int32(lower),
            np.int64(w_strides[0]),
            np.int64(w_strides[1]),
            *(np.int64(s) for s in v_strides),
        ),
    )
    return value, vector


def eigvalsh_k(A: torch.Tensor, k: int, lower: bool) -> torch.Tensor:
    """k-th eigenvalue of each matrix of a contiguous CUDA (B, n, n) batch; NaN where A is not finite."""
    with _on_torch_stream(A.device) as cupy:
        values = cupy.linalg.eigvalsh(cupy.from_dlpack(A), UPLO=_uplo(lower))
        return _gather(A, values, None, k, lower, want_vector=False)[0]


def eigh_k(A: torch.Tensor, k: int, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous CUDA batch."""
    with _on_torch_stream(A.device) as cupy:
        values, vectors = cupy.linalg.eigh(cupy.from_dlpack(A), UPLO=_uplo(lower))
        return _gather(A, values, vectors, k, lower, want_vector=True)


def eigh_all(A: torch.Tensor, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every eigenpair of a contiguous CUDA (B, n, n) batch (ascending); NaN where A is not finite."""
    nonfinite = torch.isfinite(A).logical_not_()
    bad = (nonfinite.tril_() if lower else nonfinite.triu_()).flatten(1).any(dim=1)  # on the device: no sync
    A = A.masked_fill(bad[:, None, None], 0.0)
    with _on_torch_stream(A.device) as cupy:
        values, vectors = cupy.linalg.eigh(cupy.from_dlpack(A), UPLO=_uplo(lower))
        values, vectors = torch.from_dlpack(values), torch.from_dlpack(vectors)
    return values.masked_fill(bad[:, None], torch.nan), vectors.masked_fill(bad[:, None, None], torch.nan)


def _preferred_for(n: int, dtype: torch.dtype, batch_size: int | None) -> bool:
    return not (batch_size == 1 and n >= _TORCH_SINGLE_MATRIX_MIN_N.get(dtype, 64))


BACKEND = EigenBackend(
    name="cupy",
    eigvalsh_k=eigvalsh_k,
    eigh_k=eigh_k,
    device_types=frozenset({"cuda"}),
    # CuPy allocates cuSOLVER's workspace from its own pool and may read its status back to the host
    capture_safe=False,
    is_available=is_available,
    require=lambda: require_cupy("backend='cupy'"),
    preferred_for=_preferred_for,
    eigh_all=eigh_all,
)
