"""The k-th eigenvalue of symmetric tridiagonal matrices: validation, backend choice, autograd.

No Householder step: Sturm-count multisection on the diagonal and off-diagonal,
inverse iteration for the eigenvector (Numba on the CPU, a warp per matrix in
the fused CUDA kernel, a dense torch.linalg call as the reference), so n can be
in the hundreds at the cost of a dense n = 45 call.
"""

from __future__ import annotations

import torch

from ._api import check_eigval_index, kth_eigvalsh_unchecked, select_backend, select_backend_offering, transformed
from ._backend import EigenBackend


def select_tridiagonal_backend(backend: str, device) -> EigenBackend:
    """Validate a backend name for tridiagonal matrices on ``device``; resolve "auto"."""
    return select_backend_offering(backend, device, "tridiagonal_k", "solve tridiagonal matrices")


class _KthEigvalshTridiagonal(torch.autograd.Function):
    """lambda_k of (B, n) diagonals and (B, n - 1) off-diagonals; backward q_j^2 and 2 q_j q_{j+1}."""

    @staticmethod
    def forward(ctx, diagonal, off, k, backend):
        value, vector = backend.tridiagonal_k(diagonal.detach(), off.detach(), k, True)
        ctx.save_for_backward(vector)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():
            raise RuntimeError("kth_eigvalsh_tridiagonal is differentiable once (no double backward).")
        (vector,) = ctx.saved_tensors
        g = grad_value.unsqueeze(-1)
        grad_diagonal = g * vector * vector
        grad_off = 2.0 * g * vector[:, :-1] * vector[:, 1:]
        return grad_diagonal, grad_off, None, None


def kth_eigvalsh_tridiagonal_unchecked(diagonal: torch.Tensor, off: torch.Tensor, k: int,
                                       backend: EigenBackend) -> torch.Tensor:
    """:func:`kth_eigvalsh_tridiagonal` for validated inputs (the model's forward): k in [0, n)."""
    n = diagonal.shape[-1]
    if transformed(diagonal) or transformed(off):
        # torch.func's transforms and forward-mode AD: the dense matrices through kth_eigvalsh's op for them,
        # the same value and first derivatives (q_j^2, 2 q_j q_j+1 once the dense gradient is read back
        # through the construction: both off-diagonals, since that gradient is symmetric, not the lower
        # triangle alone as the torch backend's tridiagonal_k builds it), at O(n^3) a matrix, not O(n)
        dense = torch.diag_embed(diagonal) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        return kth_eigvalsh_unchecked(dense, k, select_backend("auto", dense.device, n, dense.dtype))
    batch_shape = diagonal.shape[:-1]
    d = diagonal.reshape(-1, n)
    e = off.reshape(d.shape[0], n - 1)
    if d.shape[0] == 0:
        return diagonal.new_empty(batch_shape) + 0 * (diagonal.sum() + off.sum())
    d, e = d.contiguous(), e.contiguous()
    if torch.is_grad_enabled() and (diagonal.requires_grad or off.requires_grad):
        values = _KthEigvalshTridiagonal.apply(d, e, k, backend)
    else:
        values = backend.tridiagonal_k(d.detach(), e.detach(), k, False)[0]
    return values.reshape(batch_shape)


def kth_eigvalsh_tridiagonal(diagonal: torch.Tensor, off_diagonal: torch.Tensor, k: int, *,
                             backend: str = "auto") -> torch.Tensor:
    """The k-th smallest eigenvalue of each symmetric tridiagonal matrix.

    Parameters
    ----------
    diagonal : Tensor of shape (..., n), float32 or float64
    off_diagonal : Tensor of shape (..., n - 1), same dtype and device
        The sub- (= super-) diagonal.
    k : int
        Index in ascending order; negative values count from the largest.
    backend : {"auto", "numba", "kernel", "torch"}, default "auto"
        "numba" (CPU) and "kernel" (CUDA, via CuPy): Sturm-count multisection
        and inverse iteration, O(n) memory per matrix; "torch" builds the dense
        matrix and calls torch.linalg (the reference); "auto" takes the first
        of these that runs on the device.

    Returns
    -------
    Tensor of shape (...,). Differentiable once: d lambda_k / d diagonal_j =
    q_j^2 and d lambda_k / d off_j = 2 q_j q_{j+1} for the unit eigenvector q
    (a Clarke element at a repeated eigenvalue). Under torch.func's transforms
    (vmap, grad, jvp, ...) and forward-mode AD it solves the dense matrices
    through :func:`skspectral.kth_eigvalsh` (the same values and first
    derivatives, O(n^3) a matrix). Non-finite entries give NaN.
    """
    for name, t in (("diagonal", diagonal), ("off_diagonal", off_diagonal)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{name} must be float32 or float64, got {t.dtype}.")
    if diagonal.dim() < 1:
        raise ValueError("diagonal must have shape (..., n) with n >= 1, got a scalar.")
    n = diagonal.shape[-1]
    if n < 1 or off_diagonal.shape != diagonal.shape[:-1] + (n - 1,):
        raise ValueError(
            f"off_diagonal must have shape (..., n - 1) = {tuple(diagonal.shape[:-1]) + (n - 1,)} for a diagonal "
            f"of shape {tuple(diagonal.shape)}; got {tuple(off_diagonal.shape)}."
        )
    if off_diagonal.dtype != diagonal.dtype or off_diagonal.device != diagonal.device:
        raise ValueError("diagonal and off_diagonal must have the same dtype and device.")
    k = check_eigval_index(k, n)
    return kth_eigvalsh_tridiagonal_unchecked(diagonal, off_diagonal, k,
                                              select_tridiagonal_backend(backend, diagonal.device))
