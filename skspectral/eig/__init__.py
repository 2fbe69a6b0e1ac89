"""Batched, differentiable k-th eigenvalue of symmetric matrices (no sklearn needed)."""

from ._api import BACKENDS, check_eigval_index, kth_eigvalsh, resolve_backend

__all__ = ["BACKENDS", "check_eigval_index", "kth_eigvalsh", "resolve_backend"]
