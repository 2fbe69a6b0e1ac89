"""The Moreau-smoothed k-th eigenvalue: a C^1 stand-in for lambda_k with a Lipschitz gradient.

For eigenvalues mu of M and 0 <= r <= n, the smoothed sum of the r largest is

    S_r(M) = max { <q, mu> - (alpha / 2) ||q||^2 : 0 <= q <= 1, sum(q) = r },

attained at q_r = clip(mu / alpha - tau_r, 0, 1), the projection of mu / alpha onto
that capped simplex (tau_r found by bisection and made exact on the active set).
The smoothed r-th largest eigenvalue is S_r - S_{r-1}; the k-th smallest (0-based)
is the r-th largest for r = n - k. As alpha -> 0 it tends to lambda_k (for a simple
eigenvalue with gaps above alpha it is lambda_k - alpha / 2).

Gradient: U diag(w) U^T with w = q_r - q_{r-1} (Lewis: a spectral function of a
symmetric differentiable g has this gradient), 1/alpha-Lipschitz.

Certified bounds carry over. tau_r <= tau_{r-1} (the capped sum falls as tau rises)
and clip is non-decreasing, so 0 <= w <= 1 with sum(w) = 1: the gradient G is PSD
with trace (nuclear norm) 1. By the mean value theorem on the segment from M to M',
|f(M') - f(M)| = |<G(xi), M' - M>| <= ||G(xi)||_* ||M' - M||_2 = ||M' - M||_2, the same
Weyl-type bound as the exact eigenvalue; and G >= 0 makes f non-decreasing in the
Loewner order, so PSD (NSD) feature matrices still give monotone models.
"""

from __future__ import annotations

import torch

from ._api import _check_matrices, by_batch, check_eigval_index, refuse_transforms, select_backend_offering
from ._backend import EigenBackend

_BISECTIONS = {torch.float32: 40, torch.float64: 70}


def select_full_backend(backend: str, device) -> EigenBackend:
    """A backend giving every eigenpair on ``device`` ("auto": CuPy on CUDA where installed --
    torch.linalg loops over CUDA batches -- else torch.linalg)."""
    return select_backend_offering(backend, device, "eigh_all",
                                   "give every eigenpair (the smoothed eigenvalue needs them)")


def capped_simplex_projection(v: torch.Tensor, r: int) -> torch.Tensor:
    """argmin ||q - v|| over 0 <= q <= 1, sum(q) = r, for each row of v (..., n).

    q = clip(v - tau, 0, 1): tau by bisection (fixed steps, no host sync), then exact
    from the entries strictly between the caps.
    """
    n = v.shape[-1]
    if r <= 0:
        return torch.zeros_like(v)
    if r >= n:
        return torch.ones_like(v)
    lo = v.amin(dim=-1, keepdim=True) - 1.0  # every entry capped at 1: the sum is n > r
    hi = v.amax(dim=-1, keepdim=True)  # every entry 0: the sum is 0 < r
    for _ in range(_BISECTIONS.get(v.dtype, 70)):
        mid = 0.5 * (lo + hi)
        above = (v - mid).clamp(0.0, 1.0).sum(dim=-1, keepdim=True) > r
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    tau = 0.5 * (lo + hi)
    shifted = v - tau
    active = (shifted > 0) & (shifted < 1)
    n_active = active.sum(dim=-1, keepdim=True)
    n_top = (shifted >= 1).sum(dim=-1, keepdim=True)
    exact = ((v * active).sum(dim=-1, keepdim=True) + n_top - r) / n_active.clamp_min(1)
    tau = torch.where(n_active > 0, exact, tau)
    return (v - tau).clamp(0.0, 1.0)


def _smoothed_from_eigenvalues(values: torch.Tensor, r: int, alpha: float):
    """(S_r - S_{r-1}, w = q_r - q_{r-1}) from the eigenvalues (B, n)."""
    v = values / alpha
    q_r = capped_simplex_projection(v, r)
    q_below = capped_simplex_projection(v, r - 1)

    def capped_sum(q):
        return (q * values).sum(dim=-1) - 0.5 * alpha * (q * q).sum(dim=-1)

    return capped_sum(q_r) - capped_sum(q_below), q_r - q_below


class _SmoothedKthEigvalsh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, k, alpha, lower, backend):
        values, vectors = backend.eigh_all(A.detach(), lower)
        value, weights = _smoothed_from_eigenvalues(values, A.shape[-1] - k, alpha)
        ctx.save_for_backward(vectors, weights)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():
            raise RuntimeError("smoothed_kth_eigvalsh is differentiable once (no double backward).")
        vectors, weights = ctx.saved_tensors
        scaled = vectors * (weights * grad_value.unsqueeze(-1)).unsqueeze(-2)  # U diag(g w)
        return scaled @ vectors.transpose(-1, -2), None, None, None, None


def smoothed_kth_eigvalsh_unchecked(A: torch.Tensor, k: int, alpha: float, backend: EigenBackend,
                                    lower: bool = True) -> torch.Tensor:
    """:func:`smoothed_kth_eigvalsh` for validated inputs (the model's forward): k in [0, n)."""
    refuse_transforms("smoothed_kth_eigvalsh", A)
    n = A.shape[-1]
    return by_batch(A, 2, (), lambda batch: _SmoothedKthEigvalsh.apply(batch, k, float(alpha), lower, backend),
                    lambda batch: _smoothed_from_eigenvalues(backend.eigh_all(batch, lower)[0], n - k, float(alpha))[0])


def check_smoothing(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or alpha == float("inf"):
        raise ValueError(f"smoothing must be a positive finite number (or None for the exact eigenvalue), "
                         f"got {alpha!r}.")
    return float(alpha)


def smoothed_kth_eigvalsh(A: torch.Tensor, k: int, alpha: float, *, lower: bool = True,
                          backend: str = "auto") -> torch.Tensor:
    """The Moreau-smoothed k-th smallest eigenvalue of each symmetric matrix in ``A``.

    Parameters
    ----------
    A : Tensor of shape (..., n, n), float32 or float64
        Symmetric matrices, read from one triangle (``lower``).
    k : int
        Index in ascending order; negative values count from the largest.
    alpha : float > 0
        Smoothing: the gradient is 1/alpha-Lipschitz; alpha -> 0 gives lambda_k.
    backend : {"auto", "torch", "cupy"}, default "auto"
        Needs every eigenpair: CuPy's batched solver on CUDA ("auto" where
        installed), torch.linalg elsewhere.

    Returns
    -------
    Tensor of shape (...,); differentiable once, gradient U diag(q_r - q_{r-1}) U^T
    (module docstring). 1-Lipschitz in the spectral norm, like lambda_k itself.
    """
    n = _check_matrices(A)
    k = check_eigval_index(k, n)
    alpha = check_smoothing(alpha)
    return smoothed_kth_eigvalsh_unchecked(A, k, alpha, select_full_backend(backend, A.device), lower)
