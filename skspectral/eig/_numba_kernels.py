"""The CPU kernel's compiled functions (Numba; imported on first use by _numba_backend).

Dense matrices are solved several at a time on SIMD lanes (``_numba_lanes``: Householder
tridiagonalisation, multisection on Sturm counts for lambda_k, inverse iteration and the
back-transform for q_k); the tridiagonal structure's matrices one at a time here (Sturm
multisection, Newton once lambda_k is isolated, inverse iteration). Compiled per dtype at
first use and cached on disk.

Indices come as an int64 array ``ks`` (one or several): the reduction to tridiagonal form,
the O(n^3) part, is done once per matrix for all of them; each index then costs its own
Sturm sweeps, inverse iteration and back-transform (O(n^2)). Outputs have a trailing index
axis: values (..., K), vectors (..., K, n) (or (..., K, 1) without vectors).
"""

import functools
import math

import numba
import numpy as np

from ._numba_lanes import dense_range, identity_lane, lane_work, load_lane, pairs, store_lane
from ._simd import lane_count, load_at, splat, store_at

# Points evaluated per multisection sweep: independent chains of divisions that the
# core overlaps; each sweep shrinks the bracket by POINTS + 1.
POINTS = 4

njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")


@njit
def sturm_counts(d, e2, n, xs, counts, pivmin):
    """Sturm counts at POINTS points at once: independent chains, interleaved."""
    qs = np.empty(POINTS, d.dtype)
    for p in range(POINTS):
        q = d[0] - xs[p]
        if abs(q) < pivmin:
            q = -pivmin
        qs[p] = q
        counts[p] = 1 if q < 0 else 0
    for i in range(1, n):
        for p in range(POINTS):
            q = d[i] - xs[p] - e2[i - 1] / qs[p]
            if abs(q) < pivmin:
                q = -pivmin
            qs[p] = q
            if q < 0:
                counts[p] += 1

@njit
def newton_sweep(d, e2, n, x, pivmin):
    """Sturm count below x and d/dx log|det(T - x I)| = sum_i q_i' / q_i, one division per row."""
    q = d[0] - x
    if abs(q) < pivmin:
        q = -pivmin
    dq = -1.0
    count = 1 if q < 0 else 0
    slope = 0.0
    for i in range(1, n):
        inv = 1.0 / q
        slope += dq * inv
        t = e2[i - 1] * inv
        dq = -1.0 + t * dq * inv
        q = d[i] - x - t
        if abs(q) < pivmin:
            q = -pivmin
        if q < 0:
            count += 1
    return count, slope + dq / q


@njit
def tridiagonal_work(n, like):
    """Work arrays of tridiagonal_eigenpair for n x n matrices of like's dtype."""
    dtype = like.dtype
    return (np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(n, np.int8),
            np.zeros(n, dtype), np.zeros(n, dtype), np.zeros(POINTS, dtype), np.zeros(POINTS, np.int64))


@njit
def unit_into(y, n, out):
    """out = y / ||y||_2."""
    norm = 0.0
    for i in range(n):
        norm += y[i] * y[i]
    norm = math.sqrt(norm)
    for i in range(n):
        out[i] = y[i] / norm


@njit
def tridiagonal_eigenpair(d, e, e2, n, k, want_vector, lu, y, piv, up1, up2, xs, counts):
    """lambda_k of the symmetric tridiagonal T (diagonal d[:n], off-diagonal e[:n-1], entries
    of order one) and, with want_vector, an eigenvector of T into y (max |y_i| = 1, not unit).

    Multisection on Sturm counts from Gershgorin bounds, Newton once lambda_k is isolated,
    inverse iteration (two solves); lu is an (n, >= 2) work array.
    """
    eps = np.finfo(d.dtype).eps
    tiny = np.finfo(d.dtype).tiny
    # lambda_k of T by multisection on Sturm counts, from Gershgorin bounds
    lo, hi, emax2 = d[0], d[0], 0.0
    for i in range(n):
        radius = (abs(e[i - 1]) if i > 0 else 0.0) + (abs(e[i]) if i < n - 1 else 0.0)
        lo = min(lo, d[i] - radius)
        hi = max(hi, d[i] + radius)
    for i in range(n - 1):
        e2[i] = e[i] * e[i]
        emax2 = max(emax2, e2[i])
    pivmin = tiny * max(1.0, emax2)
    gnorm = max(abs(lo), abs(hi))
    width = 2.0 * eps * gnorm + 2.0 * pivmin
    lo -= width
    hi += width
    count_lo, count_hi = 0, n
    # multisection until lambda_k is the only eigenvalue in (lo, hi), or the bracket is tight
    # (a repeated eigenvalue never isolates: plain multisection to the end)
    while hi - lo > max(2.0 * eps * max(abs(lo), abs(hi)), eps * gnorm, pivmin):
        if count_lo == k and count_hi == k + 1:
            break
        step = (hi - lo) / (POINTS + 1)
        for p in range(POINTS):
            xs[p] = lo + (p + 1) * step
        sturm_counts(d, e2, n, xs, counts, pivmin)
        new_lo, new_hi = lo, hi
        for p in range(POINTS):  # counts rise with x: the last point at or below k, the first above
            if counts[p] <= k:
                new_lo, count_lo = xs[p], counts[p]
            elif new_hi == hi:
                new_hi, count_hi = xs[p], counts[p]
        if new_lo == lo and new_hi == hi:  # no representable point strictly inside: done
            break
        lo, hi = new_lo, new_hi
    if count_lo == k and count_hi == k + 1:
        # isolated: Newton on det(T - x I), safeguarded as rtsafe: a step that leaves the
        # bracket or does not halve the one before it is replaced by bisection (far from
        # lambda_k a degree-n determinant converges only linearly), ~5 sweeps when close
        x = 0.5 * (lo + hi)
        step_before = hi - lo
        for _ in range(100):
            count, slope = newton_sweep(d, e2, n, x, pivmin)
            if count <= k:
                lo = x
            else:
                hi = x
            tol = max(2.0 * eps * abs(x), eps * gnorm, pivmin)
            if hi - lo <= tol:
                break
            step = -1.0 / slope if slope != 0.0 else hi - lo
            if abs(step) <= tol:  # converged: the step is below the resolution at x
                x = min(max(x + step, lo), hi)
                break
            if lo < x + step < hi and 2.0 * abs(step) <= step_before:
                step_before = abs(step)
                x = x + step
            else:
                step_before = 0.5 * (hi - lo)
                x = 0.5 * (lo + hi)
        lo = hi = x
    lam = 0.5 * (lo + hi)
    if want_vector:
        # inverse iteration on T - lam I: LU with partial pivoting (tiny pivots -> eps |T|)
        floor = eps * gnorm
        if floor == 0.0:
            floor = tiny
        # rows i: (diag, upper, upper2) after elimination; piv[i]: row i swapped with i+1
        dd = d[0] - lam
        ud = e[0] if n > 1 else 0.0
        for i in range(n - 1):
            sub = e[i]
            next_d = d[i + 1] - lam
            next_u = e[i + 1] if i + 1 < n - 1 else 0.0
            if abs(sub) > abs(dd):  # swap rows i and i+1
                piv[i] = 1
                factor = dd / sub
                lu[i, 0] = sub  # pivot
                up1[i] = next_d
                up2[i] = next_u
                dd = ud - factor * next_d
                ud = -factor * next_u
            else:
                piv[i] = 0
                if abs(dd) < floor:
                    dd = floor
                factor = sub / dd
                lu[i, 0] = dd
                up1[i] = ud
                up2[i] = 0.0
                dd = next_d - factor * ud
                ud = next_u
            lu[i, 1] = factor
        if abs(dd) < floor:
            dd = floor
        lu[n - 1, 0] = dd
        for i in range(n):  # a fixed start with no special direction
            y[i] = 1.0 + 0.1 * ((i * 7) % 11)
        for _ in range(2):
            for i in range(n - 1):  # forward: apply the row operations
                if piv[i]:
                    y[i], y[i + 1] = y[i + 1], y[i]
                y[i + 1] -= lu[i, 1] * y[i]
            # back substitution with the upper band (diag, up1, up2)
            y[n - 1] /= lu[n - 1, 0]
            if n > 1:
                y[n - 2] = (y[n - 2] - up1[n - 2] * y[n - 1]) / lu[n - 2, 0]
            for i in range(n - 3, -1, -1):
                y[i] = (y[i] - up1[i] * y[i + 1] - up2[i] * y[i + 2]) / lu[i, 0]
            norm = 0.0
            for i in range(n):
                norm = max(norm, abs(y[i]))
            for i in range(n):
                y[i] /= norm
    return lam


@njit
def zero_matrix(ks, want_vector, out_values, out_vectors):
    """The zero matrix: every eigenvalue 0 exactly, q_k = e_k."""
    out_values[:] = 0.0
    if want_vector:
        out_vectors[:] = 0.0
        for j in range(ks.shape[0]):
            out_vectors[j, ks[j]] = 1.0

@njit
def run_range(A, lower, ks, want_vector, values, vectors, start, stop):
    dense_range(A, lower, ks, want_vector, values, vectors, start, stop)


@njit
def run_serial(A, lower, ks, want_vector, values, vectors):
    run_range(A, lower, ks, want_vector, values, vectors, 0, A.shape[0])

@numba.njit(cache=True, nogil=True, parallel=True)
def run_parallel(A, lower, ks, want_vector, values, vectors, chunks):
    B = A.shape[0]
    for c in numba.prange(chunks):  # one chunk per thread: work arrays allocated once per chunk
        run_range(A, lower, ks, want_vector, values, vectors, c * B // chunks, (c + 1) * B // chunks)


@njit
def one_tridiagonal(diagonal, off, ks, want_vector, d, e, e2, lu, y, piv, up1, up2, xs, counts, out_values,
                    out_vectors):
    """lambda_k for each k of ks (into out_values) and, with want_vector, q_k (into the rows of
    out_vectors) of one symmetric tridiagonal matrix given by its diagonal (n,) and
    off-diagonal (n - 1,)."""
    n = diagonal.shape[0]
    largest = 0.0
    for i in range(n):
        a = diagonal[i]
        b = off[i] if i < n - 1 else 0.0
        if not (np.isfinite(a) and np.isfinite(b)):
            out_values[:] = np.nan
            if want_vector:
                out_vectors[:] = np.nan
            return
        largest = max(largest, abs(a), abs(b))
    if largest == 0.0:
        zero_matrix(ks, want_vector, out_values, out_vectors)
        return
    scale = math.ldexp(1.0, -math.frexp(largest)[1])  # exact: max entry in [0.5, 1)
    for i in range(n):
        d[i] = diagonal[i] * scale
        e[i] = off[i] * scale if i < n - 1 else 0.0
    for j in range(ks.shape[0]):
        lam = tridiagonal_eigenpair(d, e, e2, n, ks[j], want_vector, lu, y, piv, up1, up2, xs, counts)
        out_values[j] = lam / scale
        if want_vector:
            unit_into(y, n, out_vectors[j])


@njit
def tridiagonal_range(diagonals, offs, ks, want_vector, values, vectors, start, stop):
    n = diagonals.shape[1]
    lu = np.zeros((n, 2), diagonals.dtype)
    d, e, e2, y, piv, up1, up2, xs, counts = tridiagonal_work(n, diagonals)
    for b in range(start, stop):
        one_tridiagonal(diagonals[b], offs[b], ks, want_vector, d, e, e2, lu, y, piv, up1, up2, xs, counts,
                        values[b], vectors[b])


@njit
def tridiagonal_serial(diagonals, offs, ks, want_vector, values, vectors):
    tridiagonal_range(diagonals, offs, ks, want_vector, values, vectors, 0, diagonals.shape[0])


@numba.njit(cache=True, nogil=True, parallel=True)
def tridiagonal_parallel(diagonals, offs, ks, want_vector, values, vectors, chunks):
    B = diagonals.shape[0]
    for c in numba.prange(chunks):
        tridiagonal_range(diagonals, offs, ks, want_vector, values, vectors, c * B // chunks, (c + 1) * B // chunks)


# ---- gathered matrices: M = diag(mu) + sum_t w_t T[rows_t], assembled in place ----------------
# Rows index two tables, concatenated in thought: first ``table`` (its rows 0..R-1), then
# ``extra`` (rows R..); a row of -1 is a zero matrix (nothing to add). The kernels address rows
# by flat offsets (gather_terms): a row view per term would cost a reference count.
@njit
def gather_terms(table, extra, rows, weights, b, m, offsets, term_weights):
    """Row b's terms for model m: how many, their weights and flat offsets into table (>= 0) or,
    as -1 - offset, into extra."""
    R, L = table.shape[1], table.shape[2]
    R_extra = extra.shape[1]
    count = 0
    for t in range(rows.shape[1]):
        w = weights[b, t]
        r = rows[b, t]
        if w == 0.0 or r < 0:
            continue
        term_weights[count] = w
        offsets[count] = (m * R + r) * L if r < R else -1 - (m * R_extra + r - R) * L
        count += 1
    return count


@njit
def gather_into(table, extra, terms, offsets, term_weights, flat):
    """flat = the sum of the gathered terms (see gather_terms; table and extra flattened, 1-d).
    Blocked: four vectors of flat stay in registers over all terms and are stored once."""
    L = flat.shape[0]
    width = lane_count(flat)
    block = 4 * width
    zero = splat(flat, 0.0)
    full = L - L % block
    for i0 in range(0, full, block):
        a0, a1, a2, a3 = zero, zero, zero, zero
        for t in range(terms):
            w, o = term_weights[t], offsets[t]
            source = table if o >= 0 else extra
            o = o if o >= 0 else -1 - o
            a0 = a0 + w * load_at(source, o + i0)
            a1 = a1 + w * load_at(source, o + i0 + width)
            a2 = a2 + w * load_at(source, o + i0 + 2 * width)
            a3 = a3 + w * load_at(source, o + i0 + 3 * width)
        store_at(flat, i0, a0)
        store_at(flat, i0 + width, a1)
        store_at(flat, i0 + 2 * width, a2)
        store_at(flat, i0 + 3 * width, a3)
    for i in range(full, L):
        s = 0.0
        for t in range(terms):
            o = offsets[t]
            s += term_weights[t] * (table[o + i] if o >= 0 else extra[-1 - o + i])
        flat[i] = s


@njit
def scatter_into(table, extra, terms, offsets, term_weights, flat):
    """The gathered rows (see gather_terms; table and extra flattened) += their weight * flat, term
    by term in order. Blocked: four vectors of flat stay in registers over all terms."""
    L = flat.shape[0]
    width = lane_count(flat)
    block = 4 * width
    full = L - L % block
    for i0 in range(0, full, block):
        f0, f1 = load_at(flat, i0), load_at(flat, i0 + width)
        f2, f3 = load_at(flat, i0 + 2 * width), load_at(flat, i0 + 3 * width)
        for t in range(terms):
            w, o = term_weights[t], offsets[t]
            target = table if o >= 0 else extra
            o = (o if o >= 0 else -1 - o) + i0
            store_at(target, o, load_at(target, o) + w * f0)
            store_at(target, o + width, load_at(target, o + width) + w * f1)
            store_at(target, o + 2 * width, load_at(target, o + 2 * width) + w * f2)
            store_at(target, o + 3 * width, load_at(target, o + 3 * width) + w * f3)
    for t in range(terms):
        w, o = term_weights[t], offsets[t]
        target = table if o >= 0 else extra
        o = o if o >= 0 else -1 - o
        for i in range(full, L):
            target[o + i] += w * flat[i]


@njit
def gathered_range(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors, start, stop):
    """lambda_k (and q_k), k in ks, of M[b, m] = diag(diagonal[m]) + sum_t weights[b, t] T[m, rows[b, t]]
    (T: table, then extra) for rows b in [start, stop) and every model m. Dense: a table row is
    an n x n matrix flattened (whole rows are summed: contiguous; the lower triangle is read),
    solved a vector's width of matrices at a time; tridiagonal: a row is [diagonal (n),
    off-diagonal (n - 1), 0]."""
    if dense:
        gathered_dense_range(table, extra, diagonal, rows, weights, ks, want_vector, values, vectors, start, stop)
        return
    n_models, n = diagonal.shape
    flat = np.zeros(table.shape[2], table.dtype)
    offsets, term_weights = np.zeros(rows.shape[1], np.int64), np.zeros(rows.shape[1], table.dtype)
    table1, extra1 = table.reshape(-1), extra.reshape(-1)
    lu = np.zeros((n, 2), table.dtype)
    d, e, e2, y, piv, up1, up2, xs, counts = tridiagonal_work(n, table)
    for b in range(start, stop):
        for m in range(n_models):
            terms = gather_terms(table, extra, rows, weights, b, m, offsets, term_weights)
            gather_into(table1, extra1, terms, offsets, term_weights, flat)
            for i in range(n):
                flat[i] += diagonal[m, i]
            one_tridiagonal(flat[:n], flat[n:], ks, want_vector, d, e, e2, lu, y, piv, up1, up2, xs, counts,
                            values[b, m], vectors[b, m])


@njit
def gathered_dense_range(table, extra, diagonal, rows, weights, ks, want_vector, values, vectors, start, stop):
    """gathered_range's dense matrices, a vector's width at a time: model by model (its table rows
    stay in cache while its matrices are gathered), rows b in order within a model."""
    n_models, n = diagonal.shape
    K = ks.shape[0]
    flat = np.zeros(table.shape[2], table.dtype)
    A = flat[: n * n].reshape(n, n)
    offsets, term_weights = np.zeros(rows.shape[1], np.int64), np.zeros(rows.shape[1], table.dtype)
    table1, extra1 = table.reshape(-1), extra.reshape(-1)
    work = lane_work(n, table)
    W = work[0]
    lanes = W.shape[2]
    scale = np.ones((1, lanes), table.dtype)
    status = np.zeros(lanes, np.int64)
    lane_values = np.zeros((K, lanes), table.dtype)
    lane_vectors = np.zeros((K, n, lanes), table.dtype)
    n_rows = stop - start
    last = n_rows * n_models
    for p0 in range(0, last, lanes):
        used = min(lanes, last - p0)
        for lane in range(lanes):
            if lane < used:
                m, b = divmod(p0 + lane, n_rows)
                b += start
                terms = gather_terms(table, extra, rows, weights, b, m, offsets, term_weights)
                gather_into(table1, extra1, terms, offsets, term_weights, flat)
                for i in range(n):
                    A[i, i] += diagonal[m, i]
                status[lane] = load_lane(A, True, W, lane, scale)
            else:
                identity_lane(W, lane)
                scale[0, lane] = 1.0
        pairs(W, scale, ks, want_vector, work, lane_values, lane_vectors)
        for lane in range(used):
            m, b = divmod(p0 + lane, n_rows)
            store_lane(status[lane], lane, ks, want_vector, lane_values, lane_vectors, values[start + b, m],
                       vectors[start + b, m])


@njit
def gathered_serial(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors):
    gathered_range(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors, 0, rows.shape[0])


@numba.njit(cache=True, nogil=True, parallel=True)
def gathered_parallel(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors, chunks):
    B = rows.shape[0]
    for c in numba.prange(chunks):
        gathered_range(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors,
                       c * B // chunks, (c + 1) * B // chunks)


@njit
def gathered_grad_model(grad, grad_extra, g_values, vectors, rows, weights, dense, m):
    """grad (and grad_extra, for extra's rows)[m, r, :] += sum over (b, t) with rows[b, t] = r of
    weights[b, t] * dM[b], dM the gradient of sum_j g_values[b, m, j] * lambda_kj(M[b, m]) in the
    table-row layout: sum_j g_j q_j q_j^T (dense, full) or [g q_i^2, 2 g q_i q_{i+1}, 0] summed over
    j (tridiagonal). One model, rows in order: the sums do not depend on how models are spread
    over threads."""
    B, K = rows.shape
    L = grad.shape[2]
    n = vectors.shape[3]
    dM = np.zeros(L, grad.dtype)
    offsets, term_weights = np.zeros(K, np.int64), np.zeros(K, grad.dtype)
    grad1, extra1 = grad.reshape(-1), grad_extra.reshape(-1)
    for b in range(B):
        nonzero = False
        for j in range(g_values.shape[2]):
            nonzero = nonzero or g_values[b, m, j] != 0.0
        if not nonzero:
            continue
        dM[:] = 0.0
        for kj in range(g_values.shape[2]):
            g = g_values[b, m, kj]
            q = vectors[b, m, kj]
            if dense:
                for i in range(n):
                    gq = g * q[i]
                    for j in range(n):
                        dM[i * n + j] += gq * q[j]
            else:
                for i in range(n):
                    dM[i] += g * q[i] * q[i]
                for i in range(n - 1):
                    dM[n + i] += 2.0 * g * q[i] * q[i + 1]
        terms = gather_terms(grad, grad_extra, rows, weights, b, m, offsets, term_weights)
        scatter_into(grad1, extra1, terms, offsets, term_weights, dM)


@njit
def gathered_grad_serial(grad, grad_extra, g_values, vectors, rows, weights, dense):
    for m in range(grad.shape[0]):
        gathered_grad_model(grad, grad_extra, g_values, vectors, rows, weights, dense, m)


@numba.njit(cache=True, nogil=True, parallel=True)
def gathered_grad_parallel(grad, grad_extra, g_values, vectors, rows, weights, dense, chunks):
    n_models = grad.shape[0]
    for c in numba.prange(chunks):
        for m in range(c * n_models // chunks, (c + 1) * n_models // chunks):
            gathered_grad_model(grad, grad_extra, g_values, vectors, rows, weights, dense, m)
