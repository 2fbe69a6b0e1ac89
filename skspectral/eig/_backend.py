"""What an eigen backend declares about itself, and the registry that "auto" reads.

A backend is one file in this package exposing ``BACKEND``, an :class:`EigenBackend`.
Its declared properties -- the device types it runs on, the largest n it handles,
whether its calls can be captured in a CUDA graph, and when "auto" should prefer
it -- are all the rest of the package knows about it: adding a backend is one new
file and one line in ``_api.REGISTRY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _always(n: int, dtype: torch.dtype, batch_size: int | None) -> bool:
    return True


def _nothing_to_import() -> None:
    return None


@dataclass(frozen=True)
class EigenBackend:
    """A k-th eigenpair solver for contiguous (B, n, n) batches.

    ``eigvalsh_k(A, k, lower) -> values (B,)`` and ``eigh_k(A, k, lower) ->
    (values (B,), unit vectors (B, n))``; k is already in [0, n), A is
    contiguous, on a supported device, float32 or float64, and non-finite
    entries in the triangle that is read must give NaN for that matrix.
    A backend with ``several_k`` also takes k as a tuple of K ascending indices
    in ``eigvalsh_k``, ``eigh_k`` and ``gathered_k`` -- values (B, K), vectors
    (B, K, n), each matrix reduced once for all of them; for the others the
    caller solves one index at a time.
    """

    name: str
    eigvalsh_k: Callable
    eigh_k: Callable
    device_types: frozenset
    max_n: int | None = None
    # Its forward and backward run on torch's current stream with no host
    # synchronisation and torch-allocated outputs: a CUDA graph can capture them.
    capture_safe: bool = False
    # Importable and usable on this machine (e.g. CuPy installed and a GPU seen).
    is_available: Callable[[], bool] = lambda: True
    # Raises a clear ImportError naming what to install, when explicitly chosen but missing.
    require: Callable[[], None] = _nothing_to_import
    # Measured rule: among the available backends that support a call, "auto"
    # takes the first (in registry order) whose rule says it is the fastest.
    preferred_for: Callable[[int, torch.dtype, int | None], bool] = _always
    # Symmetric tridiagonal matrices (any n): ``tridiagonal_k(diagonal (B, n), off (B, n - 1),
    # k, want_vector) -> (values (B,), unit vectors (B, n) or None)``; None where not offered.
    # "auto" takes the first available backend (registry order) that offers it on the device.
    tridiagonal_k: Callable | None = None
    # Every eigenpair (the smoothed eigenvalue needs them): ``eigh_all(A, lower) -> (values
    # (B, n) ascending, vectors (B, n, n))``; None where not offered.
    eigh_all: Callable | None = None
    # Matrices assembled from tables by gathering (``_gathered``): ``gathered_k(table, extra,
    # diagonal, rows, weights, k, dense, want_vector, out=None) -> (values (B, models), unit vectors
    # (B, models, n) or None)`` and ``gathered_grad(g, vectors, rows, weights, table_shape,
    # extra_shape, dense, out=None) -> (table gradient, extra gradient, diagonal gradient (models,
    # n))`` (``out``: tensors to write instead of new ones, see the Numba backend); None where not
    # offered (the model then assembles dense matrices with a matmul).
    gathered_k: Callable | None = None
    gathered_grad: Callable | None = None
    # Both for a training step's tensors that keep their storage (dense tables, vectors wanted):
    # ``gathered_steps(table, extra, diagonal, k, grad_table, grad_extra, grad_diagonal)`` -> an
    # object with ``values(rows, weights, values, vectors)`` and ``grad(g, vectors, rows, weights)``
    # writing the given tensors; None where not offered (the caller calls the two above).
    gathered_steps: Callable | None = None
    # Takes a tuple of indices in one call (see above): one reduction for several eigenvalues.
    several_k: bool = False
    # Matrices given as their lower triangles row by row (the model's symmetric matrices assembled on
    # CUDA, half the entries): ``packed_k(P (B, n (n + 1) / 2), n, k, want_vector) -> (values, unit
    # vectors or None)`` as eigh_k's, and ``packed_grad(vectors, g) -> (B, n (n + 1) / 2)``, the gradient
    # of sum g lambda_k with respect to the packed entries (an off-diagonal one stands for a_ij and
    # a_ji); None where not offered.
    packed_k: Callable | None = None
    packed_grad: Callable | None = None

    def supports(self, device_type: str, n: int) -> bool:
        return device_type in self.device_types and (self.max_n is None or n <= self.max_n)
