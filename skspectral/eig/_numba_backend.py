"""The CPU kernel: the k-th eigenpair of each matrix, compiled with Numba.

The algorithm of the CUDA kernel, written for one CPU core per matrix and the
batch spread over cores (Numba's prange; no nested threading): Householder
tridiagonalisation, Sturm-count bisection for lambda_k alone, inverse
iteration and the back-transform for q_k alone -- the syevx route, about
(4/3) n^3 flops per matrix instead of a full eigendecomposition. The Sturm
counts evaluate several points of the bracket per sweep (multisection): the
sweeps are independent chains of divisions, which the core overlaps.

Same contract as the other backends: NaN/inf in the triangle that is read
gives NaN for that matrix; the matrix is scaled by a power of two (exact) so
that max |a_ij| lies in [0.5, 1); a zero matrix gives lambda = 0, q = e_k.
Works on the tensors' memory without copies. Compiled at first use per dtype
and cached on disk (Numba's cache).
"""

from __future__ import annotations

import functools
import warnings

import torch

from ._backend import EigenBackend
from . import _numba_support
from ._numba_support import numba_module, parallel_threads

# Below this much work (batch * n**3) the batch runs on the calling thread:
# waking Numba's worker threads costs more than it saves.
_PARALLEL_MIN_WORK = 32 * 15**3
# Below this much work (batch * n**3) "auto" leaves a call to torch.linalg.
_PREFERRED_MIN_WORK = 16 * 15**3


@functools.cache
def _numba():
    """The numba module, or None when it is missing or broken (auto then uses torch)."""
    numba = numba_module()
    if numba is None:
        warnings.warn(f"skspectral's CPU kernel needs Numba, which failed to import ({_numba_support.import_error}); "
                      "kth_eigvalsh falls back to torch.linalg on the CPU.", RuntimeWarning, stacklevel=3)
    return numba


def is_available() -> bool:
    return _numba() is not None and _kernels() is not None


def _require() -> None:
    if _numba() is None:
        raise ImportError("backend='numba' needs Numba, which is not installed or does not import; "
                          "pip install numba (a dependency of skspectral).")
    if _kernels() is None:
        raise RuntimeError("backend='numba': the CPU kernel failed to compile; use backend='torch'.")


@functools.cache
def _kernels():
    """The compiled module, or None where Numba is missing or the kernel does not build."""
    if _numba() is None:
        return None
    try:
        from . import _numba_kernels

        probe = torch.eye(2, dtype=torch.float64)[None]  # compile (or load from cache) now, not mid-fit
        _launch_with(_numba_kernels, probe, 0, True, True)
        return _numba_kernels
    except Exception as exc:
        warnings.warn(f"skspectral's CPU kernel failed to build ({exc}); kth_eigvalsh falls back to torch.linalg.",
                      RuntimeWarning, stacklevel=3)
        return None


def _run(serial, parallel, args: tuple, batch: int, work: int) -> None:
    """One kernel call over the batch: on the calling thread, or in chunks over Numba's
    threads (one per core, as many as torch uses) when the work pays for waking them."""
    if torch.get_num_threads() > 1 and batch > 1 and work >= _PARALLEL_MIN_WORK:
        parallel(*args, min(batch, parallel_threads()))
    else:
        serial(*args)


def _launch_with(kernels, A: torch.Tensor, k: int, lower: bool, want_vector: bool):
    B, n = A.shape[0], A.shape[-1]
    value = torch.empty(B, dtype=A.dtype)
    vector = torch.empty(B, n if want_vector else 1, dtype=A.dtype)
    args = (A.numpy(), lower, k, want_vector, value.numpy(), vector.numpy())
    _run(kernels.run_serial, kernels.run_parallel, args, B, B * n**3)
    return value, (vector if want_vector else None)


def _launch(A: torch.Tensor, k: int, lower: bool, want_vector: bool):
    return _launch_with(_kernels(), A, k, lower, want_vector)


def eigvalsh_k(A: torch.Tensor, k: int, lower: bool) -> torch.Tensor:
    """k-th eigenvalue of each matrix of a contiguous CPU (B, n, n) batch; NaN where A is not finite."""
    return _launch(A, k, lower, want_vector=False)[0]


def eigh_k(A: torch.Tensor, k: int, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous CPU batch."""
    return _launch(A, k, lower, want_vector=True)


def tridiagonal_k(diagonal: torch.Tensor, off: torch.Tensor, k: int, want_vector: bool):
    """k-th eigenvalue (B,) and, with want_vector, unit eigenvector (B, n) of symmetric
    tridiagonal matrices: contiguous CPU diagonals (B, n) and off-diagonals (B, n - 1)."""
    kernels = _kernels()
    B, n = diagonal.shape
    value = torch.empty(B, dtype=diagonal.dtype)
    vector = torch.empty(B, n if want_vector else 1, dtype=diagonal.dtype)
    args = (diagonal.numpy(), off.numpy(), k, want_vector, value.numpy(), vector.numpy())
    # a Sturm sweep is O(n) and tens of sweeps find lambda_k: about n**2 work per matrix
    _run(kernels.tridiagonal_serial, kernels.tridiagonal_parallel, args, B, B * n * n)
    return value, (vector if want_vector else None)


def _preferred_for(n: int, dtype: torch.dtype, batch_size: int | None) -> bool:
    # Measured on 2 cores (benchmarks/RESULTS.md, section 2): faster than torch.linalg up to
    # n = 64 from 16 matrices of 15 x 15 worth of work; a single matrix or a tiny batch is
    # cheaper through LAPACK (Numba's dispatch costs ~10 us). A model's calls (batch_size
    # None) are training batches.
    small = batch_size is not None and (batch_size <= 1 or batch_size * n**3 < _PREFERRED_MIN_WORK)
    return n <= 64 and not small


BACKEND = EigenBackend(
    name="numba",
    eigvalsh_k=eigvalsh_k,
    eigh_k=eigh_k,
    device_types=frozenset({"cpu"}),
    is_available=is_available,
    require=_require,
    preferred_for=_preferred_for,
    tridiagonal_k=tridiagonal_k,
)
