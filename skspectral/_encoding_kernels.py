"""The encoder's compiled passes on the CPU (Numba; imported on first use by skspectral.encoding
where Numba imports). Module-level functions: Numba's disk cache finds them again in every
process (functions made inside a factory that call one another were compiled anew in each).

- ``terms``: :meth:`FeatureEncoder.terms` in one pass over the rows: the same arithmetic as
  torch's version, without its (rows, features, bins) temporaries;
- ``prefix_forward_*`` / ``prefix_backward_*``: the prefix sums of each piecewise feature's
  bin matrices and their gradient over the independent (model, feature) pairs, on the calling
  thread (``_serial``) or in chunks over Numba's threads (``_parallel``, which takes a chunk
  count, as the eigen kernels do).

forward: out[m, f T + t] = sum over s <= t of columns[m, bin_columns[f, s]] (a padding bin,
column index n_columns, adds nothing); backward: grad[m, c] += the sum over t >= s of
grad_out[m, f T + t] for each (f, s) with bin_columns[f, s] = c (a reversed running sum).
"""

import functools

import numba
import numpy as np

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
def prefix_forward_pairs(columns, bin_columns, out, start, stop):
    n_columns, L = columns.shape[1], columns.shape[2]
    F, T = bin_columns.shape
    for p in range(start, stop):
        m, f = p // F, p % F
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


@njit
def prefix_forward_serial(columns, bin_columns, out):
    prefix_forward_pairs(columns, bin_columns, out, 0, columns.shape[0] * bin_columns.shape[0])


@njit_parallel
def prefix_forward_parallel(columns, bin_columns, out, chunks):
    pairs = columns.shape[0] * bin_columns.shape[0]
    for c in numba.prange(chunks):
        prefix_forward_pairs(columns, bin_columns, out, c * pairs // chunks, (c + 1) * pairs // chunks)


@njit
def prefix_backward_serial(grad_out, bin_columns, grad):
    prefix_backward_pairs(grad_out, bin_columns, grad, 0, grad.shape[0] * bin_columns.shape[0])


@njit_parallel
def prefix_backward_parallel(grad_out, bin_columns, grad, chunks):
    pairs = grad.shape[0] * bin_columns.shape[0]
    for c in numba.prange(chunks):
        prefix_backward_pairs(grad_out, bin_columns, grad, c * pairs // chunks, (c + 1) * pairs // chunks)
