"""Batched, differentiable k-th eigenvalue of symmetric matrices (no sklearn needed)."""

from ._api import (
    BACKENDS,
    REGISTRY,
    check_eigval_index,
    kth_eigvalsh,
    kth_eigvalsh_packed_unchecked,
    kth_eigvalsh_unchecked,
    resolve_backend,
    select_backend,
)
from ._backend import EigenBackend
from ._smoothed import smoothed_kth_eigvalsh, smoothed_kth_eigvalsh_unchecked
from ._tridiagonal import kth_eigvalsh_tridiagonal, kth_eigvalsh_tridiagonal_unchecked

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "EigenBackend",
    "check_eigval_index",
    "kth_eigvalsh",
    "kth_eigvalsh_packed_unchecked",
    "kth_eigvalsh_tridiagonal",
    "kth_eigvalsh_tridiagonal_unchecked",
    "kth_eigvalsh_unchecked",
    "resolve_backend",
    "select_backend",
    "smoothed_kth_eigvalsh",
    "smoothed_kth_eigvalsh_unchecked",
]
