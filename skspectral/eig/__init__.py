"""Batched, differentiable k-th eigenvalue of symmetric matrices (no sklearn needed)."""

from ._api import (
    BACKENDS,
    REGISTRY,
    check_eigval_index,
    kth_eigvalsh,
    kth_eigvalsh_unchecked,
    resolve_backend,
    select_backend,
)
from ._backend import EigenBackend

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "EigenBackend",
    "check_eigval_index",
    "kth_eigvalsh",
    "kth_eigvalsh_unchecked",
    "resolve_backend",
    "select_backend",
]
