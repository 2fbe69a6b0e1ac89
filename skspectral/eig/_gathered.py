"""The k-th eigenvalue of matrices gathered from tables: validation-free core, autograd.

    M[b, m] = diag(diagonal[m]) + sum_t weights[b, t] * T[m, rows[b, t]]

with T the rows of ``table`` followed by the rows of ``extra`` (two tensors, so that a
model's own matrices need no copy: ``extra`` holds what it derives from them), and row -1
a zero matrix. A row of an affine matrix model touches a few matrices (a piecewise-linear
feature: the prefix sum of its bins up to the row's bin and a fraction of that bin's
matrix; a categorical feature: its level's matrix), so gathering them costs O(terms * n^2)
per row where a dense product with every encoded column costs O(columns * n^2). A backend
offering ``gathered_k`` (Numba on the CPU) assembles each matrix in place next to its
eigensolver; the reference here (any device) gathers with torch and calls the dense or
tridiagonal op. Table rows: dense, an n x n matrix flattened (its lower triangle is read) or,
n(n+1)/2 long, the lower triangle packed row by row (a_00, a_10, a_11, a_20, ...; half the bytes
to gather and scatter); tridiagonal, [diagonal (n), off-diagonal (n - 1), 0].

Backward: d lambda / d M = q q^T (the dense op's), folded onto the table rows that built
M (a packed entry stands for a_ij and a_ji: 2 q_i q_j off the diagonal); d lambda / d diagonal = q^2. No gradient for the weights (they are data).
"""

from __future__ import annotations

import torch

from ._api import kth_eigvalsh_unchecked
from ._backend import EigenBackend
from ._tridiagonal import kth_eigvalsh_tridiagonal_unchecked


class _KthEigvalshGathered(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, extra, diagonal, rows, weights, k, dense, backend):
        values, vectors = backend.gathered_k(table.detach(), extra.detach(), diagonal.detach(), rows, weights, k,
                                             dense, True)
        ctx.save_for_backward(vectors, rows, weights)
        ctx.shapes, ctx.dense, ctx.backend = (tuple(table.shape), tuple(extra.shape)), dense, backend
        return values

    @staticmethod
    def backward(ctx, grad_values):
        if torch.is_grad_enabled():
            raise RuntimeError("kth_eigvalsh_gathered is differentiable once (no double backward).")
        vectors, rows, weights = ctx.saved_tensors
        g = grad_values.contiguous()
        grad_table, grad_extra, grad_diagonal = ctx.backend.gathered_grad(g, vectors, rows, weights, *ctx.shapes,
                                                                          ctx.dense)
        return grad_table, grad_extra, grad_diagonal, None, None, None, None, None


def gathered_matrices(table: torch.Tensor, extra: torch.Tensor, diagonal: torch.Tensor, rows: torch.Tensor,
                      weights: torch.Tensor, dense: bool = True):
    """The gathered matrices with torch ops (the reference): dense (B, models, n, n); tridiagonal
    (diagonals (B, models, n), off-diagonals (B, models, n - 1))."""
    n = diagonal.shape[-1]
    rows_of_both = torch.cat([table, extra, table.new_zeros(table.shape[0], 1, table.shape[2])], dim=1)
    index = torch.where(rows < 0, rows_of_both.shape[1] - 1, rows)  # -1: the zero row
    summed = torch.einsum("bt,mbtl->bml", weights, rows_of_both[:, index])  # (B, models, row length)
    if dense:
        if summed.shape[-1] != n * n:  # packed lower triangles: each entry to (i, j) and (j, i)
            summed = summed[..., packed_index(n, summed.device)]
        return summed.view(rows.shape[0], diagonal.shape[0], n, n) + torch.diag_embed(diagonal)
    return summed[..., :n] + diagonal, summed[..., n : 2 * n - 1]


def packed_index(n: int, device=None) -> torch.Tensor:
    """For each entry (i, j) of an n x n matrix, row-major, its position in the lower triangle
    packed row by row: (max(i, j), min(i, j)) -> max (max + 1) / 2 + min."""
    i, j = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device), indexing="ij")
    high, low = torch.maximum(i, j), torch.minimum(i, j)
    return (high * (high + 1) // 2 + low).reshape(-1)


def kth_eigvalsh_stacked(matrices: torch.Tensor, k, backend: EigenBackend) -> torch.Tensor:
    """kth_eigvalsh_unchecked(matrices, k, backend) of a (..., n, n) stack (lower triangles read) through
    the backend's gathered kernel: one table of the matrices, each a row taken once with weight one, and
    a zero diagonal -- the same matrices, the same values. For a backend with ``gathered_k``: a fit
    compiles that kernel anyway, and the dense one (Numba's run_serial and run_parallel, ~3.5 s to
    compile beside the lanes' solve they share) is then not needed for the norms of its certified bounds."""
    n = matrices.shape[-1]
    table = matrices.reshape(1, -1, n * n)
    B = table.shape[1]
    rows = torch.arange(B, device=table.device).unsqueeze(-1)
    weights = torch.ones(B, 1, dtype=table.dtype, device=table.device)
    values = kth_eigvalsh_gathered(table, table.new_zeros(1, 0, n * n), table.new_zeros(1, n), rows, weights, k,
                                   backend)
    return values.reshape(*matrices.shape[:-2], *values.shape[2:])


def kth_eigvalsh_gathered(table: torch.Tensor, extra: torch.Tensor, diagonal: torch.Tensor, rows: torch.Tensor,
                          weights: torch.Tensor, k, backend: EigenBackend, *, dense: bool = True) -> torch.Tensor:
    """lambda_k of every gathered matrix, shape (B, models), for validated inputs: table (models,
    R, n*n, n(n+1)/2 or 2n) and extra (models, R', same) of one dtype, diagonal (models, n), rows (B, T) int64
    in [-1, R + R'), weights (B, T) of table's dtype, k in [0, n) -- or a tuple of ascending
    indices: (B, models, K), each matrix assembled once (and reduced once where the backend has
    ``several_k``). A backend without ``gathered_k`` gets the torch reference: the gathered
    matrices, then its own dense or tridiagonal solver. Weights of another float dtype (a float64 X through
    a float32 module) and rows of another integer dtype are converted (the compiled kernels take one
    signature a dtype)."""
    rows, weights = rows.to(torch.int64), weights.to(table.dtype)
    if backend.gathered_k is None or table.device.type not in backend.device_types:
        if dense:
            return kth_eigvalsh_unchecked(gathered_matrices(table, extra, diagonal, rows, weights, True), k, backend)
        d, e = gathered_matrices(table, extra, diagonal, rows, weights, False)
        if isinstance(k, tuple):
            return torch.stack([kth_eigvalsh_tridiagonal_unchecked(d, e, kj, backend) for kj in k], dim=-1)
        return kth_eigvalsh_tridiagonal_unchecked(d, e, k, backend)
    if isinstance(k, tuple) and not backend.several_k:
        return torch.stack([kth_eigvalsh_gathered(table, extra, diagonal, rows, weights, kj, backend, dense=dense)
                            for kj in k], dim=-1)
    rows, weights, diagonal = rows.contiguous(), weights.contiguous(), diagonal.contiguous()
    table, extra = table.contiguous(), extra.contiguous()
    if rows.shape[0] == 0:
        return (table.new_empty((0, diagonal.shape[0]) + ((len(k),) if isinstance(k, tuple) else ()))
                + 0 * (table.sum() + extra.sum() + diagonal.sum()))
    if torch.is_grad_enabled() and (table.requires_grad or extra.requires_grad or diagonal.requires_grad):
        return _KthEigvalshGathered.apply(table, extra, diagonal, rows, weights, k, dense, backend)
    return backend.gathered_k(table.detach(), extra.detach(), diagonal.detach(), rows, weights, k, dense, False)[0]
