"""Public k-th eigenvalue op: validation, backend choice and autograd."""

from __future__ import annotations

import numbers
from types import ModuleType

import torch

from . import _cupy_backend, _kernel_backend, _torch_backend

BACKENDS = ("auto", "torch", "cupy", "kernel")

# Measured (benchmarks/RESULTS.md): up to n = MAX_N our fused kernel beats
# both others at every batch size; above it CuPy's batched cuSOLVER call
# beats torch.linalg (which loops over matrices for n > 32 and synchronises
# to check errors) for every batch of more than one matrix, and for a single
# matrix torch's syevd wins from these sizes up.
_TORCH_SINGLE_MATRIX_MIN_N = {torch.float32: 64, torch.float64: 45}


def _backend_module(name: str) -> ModuleType:
    return {"torch": _torch_backend, "cupy": _cupy_backend, "kernel": _kernel_backend}[name]


def resolve_backend(device, n: int, dtype: torch.dtype = torch.float32, batch_size: int | None = None) -> str:
    """Name of the fastest correct backend for ``n x n`` matrices on ``device``.

    "auto" resolves through this function; estimators record its answer.
    On CPU: "torch". On CUDA where CuPy is importable: "kernel" for
    n <= 64, else "cupy" (except a single large matrix, ``batch_size == 1``,
    where torch wins). On CUDA without CuPy: "torch".
    """
    device = torch.device(device)
    if device.type != "cuda" or not _cupy_backend.is_available():
        return "torch"
    if n <= _kernel_backend.MAX_N:
        return "kernel"
    if batch_size == 1 and n >= _TORCH_SINGLE_MATRIX_MIN_N.get(dtype, 64):
        return "torch"
    return "cupy"


def check_backend(backend: str, device: torch.device, n: int, dtype: torch.dtype, batch_size: int | None = None) -> str:
    """Validate a backend name for ``device`` and resolve "auto"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return resolve_backend(device, n, dtype, batch_size)
    if backend in ("cupy", "kernel"):
        if torch.device(device).type != "cuda":
            raise ValueError(
                f"backend={backend!r} needs CUDA tensors, got a tensor on {device}; "
                "move it with .cuda() or use backend='torch' (or 'auto')."
            )
        _cupy_backend.import_cupy()
    if backend == "kernel" and n > _kernel_backend.MAX_N:
        raise ValueError(f"backend='kernel' handles n <= {_kernel_backend.MAX_N}, got n={n}; use 'cupy' or 'auto'.")
    return backend


def check_eigval_index(k, n: int, name: str = "k") -> int:
    """Validate a Python-style eigenvalue index for ``n x n`` matrices; return it in [0, n)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {k!r} of type {type(k).__name__}.")
    k = int(k)
    if not -n <= k < n:
        raise ValueError(
            f"{name}={k} is out of range for {n}x{n} matrices: it must lie in [{-n}, {n - 1}] "
            "(ascending order; negative values count from the largest)."
        )
    return k % n


def _check_matrices(A) -> int:
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"A must be a torch.Tensor, got {type(A).__name__}; convert it with torch.as_tensor(A).")
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"A must be a square matrix or a batch of them, shape (..., n, n); got shape {tuple(A.shape)}."
        )
    if A.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"A must be float32 or float64, got {A.dtype}; convert it with A.float() or A.double() "
            "(complex Hermitian matrices are not supported)."
        )
    return A.shape[-1]


class _KthEigvalsh(torch.autograd.Function):
    """lambda_k of a (B, n, n) batch; backward g * q_k q_k^T (symmetric, as torch.linalg)."""

    @staticmethod
    def forward(ctx, A, k, lower, backend):
        value, vector = _backend_module(backend).eigh_k(A.detach(), k, lower)
        ctx.save_for_backward(vector)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError(
                "kth_eigvalsh is differentiable once: double backward (create_graph=True, Hessians) "
                "would need the other eigenpairs and is not implemented."
            )
        (vector,) = ctx.saved_tensors
        # two kernels: (g q) first on B x n, then the outer product (unsqueeze: cheaper than [:, None])
        grad_A = (vector * grad_value.unsqueeze(-1)).unsqueeze(-1) * vector.unsqueeze(-2)
        return grad_A, None, None, None


def kth_eigvalsh(A: torch.Tensor, k: int, *, lower: bool = True, backend: str = "auto") -> torch.Tensor:
    """The k-th smallest eigenvalue of each symmetric matrix in ``A``.

    Parameters
    ----------
    A : Tensor of shape (..., n, n), float32 or float64, on any device.
        Symmetric matrices, read from the lower (``lower=True``) or upper
        triangle only, as ``torch.linalg.eigvalsh(UPLO=...)``.
    k : int
        Index in ascending order; negative values count from the largest
        (``k=-1`` is the largest eigenvalue).
    lower : bool, default True
        Which triangle to read.
    backend : {"auto", "torch", "cupy", "kernel"}, default "auto"
        "torch" uses torch.linalg; "cupy" uses CuPy's batched cuSOLVER solver
        on CUDA tensors (zero-copy, on torch's current stream); "kernel" our
        fused kernel for the k-th pair alone (CUDA via CuPy, n <= 64;
        Householder, Sturm multisection, inverse iteration; capture-safe in
        CUDA graphs); "auto" picks the fastest for the device, n and dtype
        (see :func:`resolve_backend`).

    Returns
    -------
    Tensor of shape (...,), same dtype and device as ``A``.

    Differentiable once: the gradient is ``g * q_k q_k^T`` for the unit
    eigenvector ``q_k`` (at a repeated eigenvalue, a valid Clarke
    subgradient). Without grad only eigenvalues are computed. A matrix with
    NaN or inf in the triangle that is read gives NaN.
    """
    n = _check_matrices(A)
    if not isinstance(lower, bool):
        raise TypeError(f"lower must be a bool, got {lower!r}.")
    k = check_eigval_index(k, n)
    batch_shape = A.shape[:-2]
    batch = A.reshape(-1, n, n)
    backend = check_backend(backend, A.device, n, A.dtype, batch.shape[0])
    if batch.shape[0] == 0:
        return A.new_empty(batch_shape) + 0 * A.sum()  # keeps the graph for empty batches
    batch = batch.contiguous()
    if torch.is_grad_enabled() and A.requires_grad:
        values = _KthEigvalsh.apply(batch, k, lower, backend)
    else:
        # detached: DLPack refuses tensors that require grad
        values = _backend_module(backend).eigvalsh_k(batch.detach(), k, lower)
    return values.reshape(batch_shape)
