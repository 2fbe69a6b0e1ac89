"""The encoder's compiled passes on the CPU (Numba; imported on first use by skspectral.encoding
where Numba imports). Module-level functions: Numba's disk cache finds them again in every
process (functions made inside a factory that call one another were compiled anew in each).

- ``terms``: :meth:`FeatureEncoder.terms` in one pass over the rows: the same arithmetic as
  torch's version, without its (rows, features, bins) temporaries;
- ``prefix_forward_*`` / ``prefix_backward_*``: the prefix sums of each piecewise feature's
  bin matrices and their gradient over the independent (model, feature) pairs, on the calling
  thread (``_serial``) or in chunks over Numba's threads (``_parallel``, which takes a chunk
  count, as the eigen kernels do).

- ``symmetric_forward_*`` / ``symmetric_backward_*``: the same for the symmetric parts
  A = 0.5 (W + W^T) of square matrices W, their lower triangles packed row by row (half the
  bytes of a full matrix for every pass after), made in the same pass as their prefix sums
  (and, in the backward, W's gradient made from both outputs' in one pass): torch's
  symmetrisation and its backward were four passes over every full matrix at every step.

forward: out[m, f T + t] = sum over s <= t of columns[m, bin_columns[f, s]] (a padding bin,
column index n_columns, adds nothing); backward: grad[m, c] += the sum over t >= s of
grad_out[m, f T + t] for each (f, s) with bin_columns[f, s] = c (a reversed running sum).
Symmetric: columns[m, c] = the packed lower triangle of 0.5 (W[m, c] + W[m, c]^T), for every
column (``other`` lists those in no feature's bins); with dA = grad_columns plus the reversed
running sum (packed), grad_W[i, j] = grad_W[j, i] = 0.5 dA_ij off the diagonal and 0.5 dA_ii +
0.5 dA_ii on it: torch's arithmetic for the same graph (symmetrise, pack), so the same bits; or,
for compiled training steps that keep a symmetric W as its lower triangles, those entries packed.
"""

import functools

import numba
import numpy as np

from ._kernel_cache import keep_kernel_cache_fresh

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)
njit = functools.partial(numba.njit, cache=True, nogil=True)
njit_parallel = functools.partial(numba.njit, cache=True, nogil=True, parallel=True)


@njit
def terms(X, linear_index, linear_columns, piecewise_index, bin_left, bin_width, n_bins_of, prefix_rows,
          bin_rows, missing_index, missing_columns, categorical_index, level_other, level_missing,
          level_columns, rows, weights):
    for b in range(X.shape[0]):
        t = 0
        for i in range(linear_index.shape[0]):
            x = X[b, linear_index[i]]
            rows[b, t] = linear_columns[i]
            weights[b, t] = 0.0 if x != x else x
            t += 1
        n_piecewise = piecewise_index.shape[0]
        for f in range(n_piecewise):
            x = X[b, piecewise_index[f]]
            passed, fraction = 0, 0.0
            if x == x:
                for j in range(n_bins_of[f]):  # z_j = clip((x - left) / width, 0, 1): ones, then the fraction
                    z = min(max((x - bin_left[f, j]) / bin_width[f, j], 0.0), 1.0)
                    if z >= 1.0:
                        passed += 1
                    elif j == passed:
                        fraction = z
            rows[b, t + f] = prefix_rows[f, passed]  # every prefix term, then every bin term (torch's order)
            weights[b, t + f] = 1.0
            rows[b, t + n_piecewise + f] = bin_rows[f, passed]
            weights[b, t + n_piecewise + f] = fraction
        t += 2 * n_piecewise
        for i in range(missing_index.shape[0]):
            x = X[b, missing_index[i]]
            rows[b, t] = missing_columns[i]
            weights[b, t] = 1.0 if x != x else 0.0
            t += 1
        for i in range(categorical_index.shape[0]):
            code = int(X[b, categorical_index[i]])
            if code == -1:
                code = level_other[i]
            elif code == -2:
                code = level_missing[i]
            rows[b, t] = level_columns[i] + code
            weights[b, t] = 1.0
            t += 1


@njit
def prefix_pair(columns, bin_columns, out, m, f):
    """out[m, f T + t] = the sum of model m's columns[m, bin_columns[f, s]] over s <= t, in order."""
    n_columns, L = columns.shape[1], columns.shape[2]
    T = bin_columns.shape[1]
    for t in range(T):
        row = out[m, f * T + t]
        c = bin_columns[f, t]
        if t == 0:
            for i in range(L):
                row[i] = 0.0
        else:
            before = out[m, f * T + t - 1]
            for i in range(L):
                row[i] = before[i]
        if c < n_columns:
            source = columns[m, c]
            for i in range(L):
                row[i] += source[i]


@njit
def prefix_forward_pairs(columns, bin_columns, out, start, stop):
    F = bin_columns.shape[0]
    for p in range(start, stop):
        prefix_pair(columns, bin_columns, out, p // F, p % F)


@njit
def prefix_backward_pairs(grad_out, bin_columns, grad, start, stop):
    n_columns, L = grad.shape[1], grad.shape[2]
    F, T = bin_columns.shape
    running = np.empty(L, grad.dtype)
    for p in range(start, stop):
        m, f = p // F, p % F
        running[:] = 0.0
        for t in range(T - 1, -1, -1):
            source = grad_out[m, f * T + t]
            for i in range(L):
                running[i] += source[i]
            c = bin_columns[f, t]
            if c < n_columns:  # each column is one feature's bin: the pairs write apart
                target = grad[m, c]
                for i in range(L):
                    target[i] += running[i]


# The serial kernels start at int(0), not 0: the parallel ones' int64 start, so each range function
# compiles once (a literal 0 is a type of its own to Numba; skspectral.eig._numba_support).
@njit
def prefix_forward_serial(columns, bin_columns, out):
    prefix_forward_pairs(columns, bin_columns, out, int(0), columns.shape[0] * bin_columns.shape[0])


@njit_parallel
def prefix_forward_parallel(columns, bin_columns, out, chunks):
    pairs = columns.shape[0] * bin_columns.shape[0]
    for c in numba.prange(chunks):
        prefix_forward_pairs(columns, bin_columns, out, c * pairs // chunks, (c + 1) * pairs // chunks)


@njit
def prefix_backward_serial(grad_out, bin_columns, grad):
    prefix_backward_pairs(grad_out, bin_columns, grad, int(0), grad.shape[0] * bin_columns.shape[0])


@njit_parallel
def prefix_backward_parallel(grad_out, bin_columns, grad, chunks):
    pairs = grad.shape[0] * bin_columns.shape[0]
    for c in numba.prange(chunks):
        prefix_backward_pairs(grad_out, bin_columns, grad, c * pairs // chunks, (c + 1) * pairs // chunks)


@njit
def symmetrise_into(W, target, half):
    """target (n(n+1)/2) = the lower triangle of half (W + W^T), packed row by row, for one n x n
    matrix W (half: 0.5 in W's dtype, so that float32 stays float32, as in torch)."""
    n = W.shape[0]
    p = 0
    for i in range(n):
        for j in range(i + 1):
            target[p] = half * (W[i, j] + W[j, i])
            p += 1


@njit
def symmetric_forward_pairs(weight, bin_columns, other, columns, out, half, start, stop):
    """Pairs p in [start, stop): (model, feature) for p < models * F -- the feature's bins'
    symmetric parts, then their prefix sums -- then (model, other column)."""
    n_columns = columns.shape[1]
    F, T = bin_columns.shape
    n_feature_pairs = columns.shape[0] * F
    for p in range(start, stop):
        if p >= n_feature_pairs:
            m, i = divmod(p - n_feature_pairs, other.shape[0])
            symmetrise_into(weight[m, other[i]], columns[m, other[i]], half)
            continue
        m, f = p // F, p % F
        for t in range(T):
            c = bin_columns[f, t]
            if c < n_columns:
                symmetrise_into(weight[m, c], columns[m, c], half)
        prefix_pair(columns, bin_columns, out, m, f)


@njit
def weight_gradient(dA, target, half):
    """target = W's gradient from dA, the gradient of symmetrise_into's packed triangle: n x n
    row-major (target of n * n: grad_W[i, j] = grad_W[j, i] = 0.5 dA_ij off the diagonal, 0.5 dA_ii
    + 0.5 dA_ii on it) or, where W is symmetric and kept as its lower triangle (compiled training
    steps, see skspectral._training.compiled_steps), that triangle packed row by row (target of
    n(n+1)/2): the same numbers."""
    n = (int(np.sqrt(8 * dA.shape[0] + 1)) - 1) // 2  # dA.shape[0] = n (n + 1) / 2
    if target.shape[0] == dA.shape[0]:  # packed: one loop that vectorises, then the diagonal's other half
        for p in range(dA.shape[0]):
            target[p] = half * dA[p]
        for i in range(n):
            d = i * (i + 1) // 2 + i
            target[d] = half * dA[d] + half * dA[d]
        return
    p = 0
    for i in range(n):
        for j in range(i):
            target[i * n + j] = target[j * n + i] = half * dA[p]
            p += 1
        target[i * n + i] = half * dA[p] + half * dA[p]
        p += 1


@njit
def symmetric_backward_pairs(grad_columns, grad_out, bin_columns, other, grad, half, start, stop):
    """grad (models, n_columns, n * n or n(n+1)/2: see weight_gradient) of W from the outputs'
    gradients, pairs as the forward's."""
    n_columns, L = grad_columns.shape[1], grad_columns.shape[2]
    F, T = bin_columns.shape
    n_feature_pairs = grad_columns.shape[0] * F
    running = np.empty(L, grad.dtype)
    dA = np.empty(L, grad.dtype)
    for p in range(start, stop):
        if p >= n_feature_pairs:
            m, i = divmod(p - n_feature_pairs, other.shape[0])
            weight_gradient(grad_columns[m, other[i]], grad[m, other[i]], half)
            continue
        m, f = p // F, p % F
        running[:] = 0.0
        for t in range(T - 1, -1, -1):
            source = grad_out[m, f * T + t]
            for i in range(L):
                running[i] += source[i]
            c = bin_columns[f, t]
            if c < n_columns:  # each column is one feature's bin: the pairs write apart
                direct = grad_columns[m, c]
                for i in range(L):
                    dA[i] = direct[i] + running[i]
                weight_gradient(dA, grad[m, c], half)


@njit
def lower_triangles(full, packed):
    """packed (..., n(n+1)/2) = the lower triangles of full (..., n, n) (3-d and 4-d stacks
    flattened to (matrices, n, n) and (matrices, L) by the caller), row by row."""
    n = full.shape[1]
    for k in range(full.shape[0]):
        p = 0
        for i in range(n):
            for j in range(i + 1):
                packed[k, p] = full[k, i, j]
                p += 1


@njit
def symmetric_from_lower(packed, full):
    """full (matrices, n, n) = the symmetric matrices whose lower triangles are packed (matrices, L)."""
    n = full.shape[1]
    for k in range(full.shape[0]):
        p = 0
        for i in range(n):
            for j in range(i + 1):
                full[k, i, j] = full[k, j, i] = packed[k, p]
                p += 1


@njit
def symmetric_forward_serial(weight, bin_columns, other, columns, out, half):
    pairs = weight.shape[0] * (bin_columns.shape[0] + other.shape[0])
    symmetric_forward_pairs(weight, bin_columns, other, columns, out, half, int(0), pairs)


@njit_parallel
def symmetric_forward_parallel(weight, bin_columns, other, columns, out, half, chunks):
    pairs = weight.shape[0] * (bin_columns.shape[0] + other.shape[0])
    for c in numba.prange(chunks):
        symmetric_forward_pairs(weight, bin_columns, other, columns, out, half, c * pairs // chunks,
                                (c + 1) * pairs // chunks)


@njit
def symmetric_backward_serial(grad_columns, grad_out, bin_columns, other, grad, half):
    pairs = grad.shape[0] * (bin_columns.shape[0] + other.shape[0])
    symmetric_backward_pairs(grad_columns, grad_out, bin_columns, other, grad, half, int(0), pairs)


@njit_parallel
def symmetric_backward_parallel(grad_columns, grad_out, bin_columns, other, grad, half, chunks):
    pairs = grad.shape[0] * (bin_columns.shape[0] + other.shape[0])
    for c in numba.prange(chunks):
        symmetric_backward_pairs(grad_columns, grad_out, bin_columns, other, grad, half, c * pairs // chunks,
                                 (c + 1) * pairs // chunks)
