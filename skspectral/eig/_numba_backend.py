"""The CPU kernel: the k-th eigenpair of each matrix, compiled with Numba.

The algorithm of the CUDA kernel: Householder tridiagonalisation, Sturm-count
multisection and Newton for lambda_k alone, inverse iteration and the
back-transform for q_k alone -- the syevx route, about (4/3) n^3 flops per
matrix instead of a full eigendecomposition. On a core, a vector's width of
matrices at once, one per SIMD lane (``_numba_lanes``: 4 float64 or 8 float32
with AVX2); the batch spread over cores (Numba's prange; no nested threading).
A matrix gets the same bits whatever shares its vector.

Same contract as the other backends: NaN/inf in the triangle that is read
gives NaN for that matrix; the matrix is scaled by a power of two (exact) so
that max |a_ij| lies in [0.5, 1); a zero matrix gives lambda = 0, q = e_k.
Works on the tensors' memory without copies. Compiled at first use per dtype
and cached on disk (Numba's cache).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ._backend import EigenBackend
from . import _numba_support
from ._numba_support import numba_module, parallel_chunks, run_kernel

# Below this much work (batch * n**3) "auto" leaves a call to torch.linalg.
_PREFERRED_MIN_WORK = 16 * 15**3


@functools.cache
def _numba():
    """The numba module, or None when it is missing or broken (auto then uses torch)."""
    numba = numba_module()
    if numba is None:
        from .._warn import warn

        warn(f"skspectral's CPU kernel needs Numba, which failed to import ({_numba_support.import_error}); "
             "kth_eigvalsh falls back to torch.linalg on the CPU.", RuntimeWarning)
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
    """The compiled module, or None where Numba is missing or its SIMD building blocks do not build."""
    if _numba() is None:
        return None
    try:
        from . import _numba_kernels

        # that the kernels' SIMD building blocks compile and compute here; each kernel itself compiles
        # (or loads from Numba's cache) at its first call: a fit needs the gathered ones only, and
        # kth_eigvalsh the dense ones (a probe that compiled a kernel cost the other caller seconds)
        from ._simd import VECTOR_BYTES

        values = np.arange(64, dtype=np.float32) / 8
        expected = values.copy()
        width = VECTOR_BYTES // values.itemsize
        expected[:width] = np.minimum(np.sqrt(expected[:width]) + 1, 2)
        _numba_kernels.simd_probe(values)
        if not np.array_equal(values, expected):
            raise RuntimeError(f"a SIMD probe computed {values[:width].tolist()}, not {expected[:width].tolist()}")
        return _numba_kernels
    except Exception as exc:
        from .._warn import warn

        warn(f"skspectral's CPU kernel failed to build ({exc}); kth_eigvalsh falls back to torch.linalg.",
             RuntimeWarning)
        return None


def _indices(k) -> np.ndarray:
    """k (an int) or several indices (a tuple) as the kernels' int64 array."""
    return np.atleast_1d(np.asarray(k, dtype=np.int64))


def _outputs(lead: tuple, k, n: int, want_vector: bool, dtype):
    """Values (*lead, K) and vectors (*lead, K, n or 1) for the kernels, and the shapes the caller
    gets: without the index axis for one index (an int k)."""
    K = len(_indices(k))
    values = torch.empty(*lead, K, dtype=dtype)
    vectors = torch.empty(*lead, K, n if want_vector else 1, dtype=dtype)
    return values, vectors


def _returned(values, vectors, k, want_vector: bool):
    if isinstance(k, tuple):
        return values, (vectors if want_vector else None)
    return values.squeeze(-1), (vectors.squeeze(-2) if want_vector else None)


def _launch(A: torch.Tensor, k, lower: bool, want_vector: bool):
    kernels = _kernels()
    B, n = A.shape[0], A.shape[-1]
    values, vectors = _outputs((B,), k, n, want_vector, A.dtype)
    A = A.numpy()
    args = (A, lower, _indices(k), want_vector, values.numpy(), vectors.numpy(), kernels.lane_solver(A.dtype))
    run_kernel(kernels.run_serial, kernels.run_parallel, args, B, B * n**3)
    return _returned(values, vectors, k, want_vector)


def eigvalsh_k(A: torch.Tensor, k, lower: bool) -> torch.Tensor:
    """k-th eigenvalue (B,) of each matrix of a contiguous CPU (B, n, n) batch, or (B, K) for a
    tuple of K indices (one reduction for all); NaN where A is not finite."""
    return _launch(A, k, lower, want_vector=False)[0]


def eigh_k(A: torch.Tensor, k, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous CPU batch; (B, K) and
    (B, K, n) for a tuple of K indices."""
    return _launch(A, k, lower, want_vector=True)


def tridiagonal_k(diagonal: torch.Tensor, off: torch.Tensor, k, want_vector: bool):
    """k-th eigenvalue (B,) and, with want_vector, unit eigenvector (B, n) of symmetric
    tridiagonal matrices: contiguous CPU diagonals (B, n) and off-diagonals (B, n - 1); an
    index axis after B for a tuple of indices."""
    kernels = _kernels()
    B, n = diagonal.shape
    values, vectors = _outputs((B,), k, n, want_vector, diagonal.dtype)
    diagonal = diagonal.numpy()
    args = (diagonal, off.numpy(), _indices(k), want_vector, values.numpy(), vectors.numpy(),
            kernels.lane_solver(diagonal.dtype))
    # a Sturm sweep is O(n) and tens of sweeps find lambda_k: about n**2 work per matrix
    run_kernel(kernels.tridiagonal_serial, kernels.tridiagonal_parallel, args, B, B * n * n * len(_indices(k)))
    return _returned(values, vectors, k, want_vector)


def gathered_k(table: torch.Tensor, extra: torch.Tensor, diagonal: torch.Tensor, rows: torch.Tensor,
               weights: torch.Tensor, k, dense: bool, want_vector: bool, out: tuple | None = None):
    """lambda_k (B, models) and, with want_vector, unit q_k (B, models, n) of the matrices
    diag(diagonal[m]) + sum_t weights[b, t] T[m, rows[b, t]], T the rows of ``table`` then of
    ``extra`` (see :mod:`._gathered`), assembled in place: no (B, models, n, n) tensor. A tuple
    of K indices: (B, models, K) and (B, models, K, n), each matrix assembled and reduced once.
    ``out``: (values (B, models, K), vectors (B, models, K, n or 1)) to write instead of new ones."""
    n_models, n = diagonal.shape
    values, vectors = out if out is not None else _outputs((rows.shape[0], n_models), k, n, want_vector, table.dtype)
    _launch_gathered((table.numpy(), extra.numpy(), diagonal.numpy()), rows, weights, _indices(k), dense,
                     want_vector, values, vectors)
    return _returned(values, vectors, k, want_vector)


def gathered_grad(g: torch.Tensor, vectors: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor,
                  table_shape: tuple, extra_shape: tuple, dense: bool, out: tuple | None = None):
    """The gradients of sum_bm g[b, m] lambda_k(M[b, m]) with respect to the table, the extra rows
    (their shapes) and the diagonal (models, n), accumulated in a fixed order whatever the threads.
    Several indices: g (B, models, K) and vectors (B, models, K, n), the gradient of the sum over
    them. ``out``: the three tensors to write (contiguous, any contents), else new ones."""
    n_models, n = table_shape[0], vectors.shape[-1]
    if out is None:  # the kernel writes every element: no zero fill
        out = (torch.empty(table_shape, dtype=vectors.dtype), torch.empty(extra_shape, dtype=vectors.dtype),
               torch.empty((n_models, n), dtype=vectors.dtype))
    if g.dim() == 2:  # one index: the kernels' index axis of length 1
        g, vectors = g.unsqueeze(-1), vectors.unsqueeze(-2)
    _launch_gathered_grad(tuple(t.numpy() for t in out), g.contiguous(), vectors.contiguous(), rows, weights, dense)
    return out


def _launch_gathered(tables: tuple, rows, weights, ks: np.ndarray, dense: bool, want_vector: bool, values,
                     vectors) -> None:
    """The gathered eigenpairs' kernel: tables (table, extra, diagonal) as arrays, the rest tensors."""
    kernels = _kernels()
    dtype = tables[0].dtype
    run_kernel(kernels.gathered_serial, kernels.gathered_parallel,
               (*tables, rows.numpy(), weights.numpy(), ks, dense, want_vector, values.numpy(), vectors.numpy(),
                kernels.lane_solver(dtype), kernels.gathered_range_kernel(dtype)),
               *_gathered_size(rows.shape[0], tables[2].shape, dense))


def _gathered_size(B: int, diagonal_shape: tuple, dense: bool) -> tuple:
    """The gathered eigenpairs' (items, work) for run_kernel: B rows of models x (n x n) matrices."""
    n_models, n = diagonal_shape
    return B, B * n_models * (n**3 if dense else n * n)


def _gathered_grad_size(B: int, K: int, grad_table_shape: tuple) -> tuple:
    """Their gradient's: B x K terms of a table row's length each for every model, spread over threads by
    model and by table rows (a model's rows in parts: one model keeps every thread busy)."""
    n_models, n_rows, row_length = grad_table_shape
    return n_models * n_rows, B * K * n_models * row_length


def _launch_gathered_grad(grads: tuple, g, vectors, rows, weights, dense: bool) -> None:
    """Their gradient's kernel: grads (table, extra, diagonal gradients) as arrays, the rest contiguous
    tensors with the index axis; each entry's sum in a fixed order, whatever the threads."""
    kernels = _kernels()
    run_kernel(kernels.gathered_grad_serial, kernels.gathered_grad_parallel,
               (*grads, g.numpy(), vectors.numpy(), rows.numpy(), weights.numpy(), dense,
                kernels.gathered_grad_kernel(grads[0].dtype)),
               *_gathered_grad_size(*rows.shape, grads[0].shape))


class GatheredSteps:
    """:func:`gathered_k` and :func:`gathered_grad` (dense tables, vectors wanted) for a training
    step's tensors that keep their storage from step to step -- the tables, the diagonal and the
    three gradients: their arrays found once, so a step converts only its batch's. A compiled caller
    that runs the kernels itself (``skspectral._step_kernels.training_pass``) takes ``tables``,
    ``grads``, ``ks``, ``c_functions`` (the addresses of the C functions the kernels call: the lanes'
    solve, ``_numba_lanes.lane_solver``, gathered_range's and the gradient's, ``_numba_kernels``) and the
    thread split of ``chunks``."""

    def __init__(self, table, extra, diagonal, k, grad_table, grad_extra, grad_diagonal):
        self.ks = _indices(k)
        self.tables = (table.numpy(), extra.numpy(), diagonal.numpy())
        self.grads = (grad_table.numpy(), grad_extra.numpy(), grad_diagonal.numpy())
        # on an empty Numba cache a helper process compiles the C functions meanwhile (see _numba_kernels)
        _kernels().compile_c_functions_ahead(self.tables[0].dtype)

    @functools.cached_property
    def c_functions(self) -> tuple:
        """The C functions' addresses (waiting for a helper compiling them, if any)."""
        kernels, dtype = _kernels(), self.tables[0].dtype
        return kernels.lane_solver(dtype), kernels.gathered_range_kernel(dtype), kernels.gathered_grad_kernel(dtype)

    def compiling_ahead(self) -> bool:
        """Whether a helper process is compiling the C functions (c_functions would wait for it)."""
        return "c_functions" not in self.__dict__ and _kernels().compiling_ahead(self.tables[0].dtype)

    def values(self, rows: torch.Tensor, weights: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor,
               want_vector: bool = True) -> None:
        """values (B, models, K) and (with ``want_vector``) vectors (B, models, K, n) of the batch's
        terms (contiguous)."""
        _launch_gathered(self.tables, rows, weights, self.ks, True, want_vector, values, vectors)

    def grad(self, g: torch.Tensor, vectors: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> None:
        """The three gradients from g (B, models, K) and the vectors of :meth:`values` (contiguous)."""
        _launch_gathered_grad(self.grads, g, vectors, rows, weights, True)

    def chunks(self, B: int, K: int) -> tuple:
        """(values', grad's) chunks over Numba's threads for a batch of B rows of K terms, 0 where a
        kernel runs on the calling thread: run_kernel's choice."""
        return (parallel_chunks(*_gathered_size(B, self.tables[2].shape, True)),
                parallel_chunks(*_gathered_grad_size(B, K, self.grads[0].shape)))


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
    gathered_k=gathered_k,
    gathered_grad=gathered_grad,
    gathered_steps=GatheredSteps,
    several_k=True,
)
