"""The CPU kernel's compiled functions (Numba; imported on first use by _numba_backend).

Matrices are solved several at a time on SIMD lanes (``_numba_lanes``: Householder
tridiagonalisation for dense ones, multisection on Sturm counts and Newton for lambda_k,
inverse iteration and the back-transform for q_k; a C function compiled once per dtype, which
the kernels here call by the address their callers pass as ``solver``: _numba_lanes.lane_solver);
here the batch is split over threads and the gathered matrices are assembled (gathered_range and the
gradient's parts: C functions too, ``range_kernel`` and ``grad_kernel``; see _numba_cfuncs). Compiled per
dtype at first use and cached on disk.

Indices come as an int64 array ``ks`` (one or several): the reduction to tridiagonal form,
the O(n^3) part, is done once per matrix for all of them; each index then costs its own
Sturm sweeps, inverse iteration and back-transform (O(n^2)). Outputs have a trailing index
axis: values (..., K), vectors (..., K, n) (or (..., K, 1) without vectors).
"""

import functools
import os
import subprocess
import sys
import threading
from pathlib import Path

import numba
import numpy as np
from numba import types

from ._numba_lanes import (dense_range, identity_lane, identity_tridiagonal_lane, lane_block, lane_work, load_lane,
                            load_packed_lanes, load_tridiagonal_lane, solve_lanes, store_lane, tridiagonal_range)
from . import _numba_lanes
from .._kernel_cache import keep_kernel_cache_fresh
from ._numba_cfuncs import c_caller, compile_c_function
from ._simd import lane_count, load_at, minimum, splat, sqrt, store_at, where

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)

njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")


@njit
def simd_probe(values):
    """The first vector of values (a vector's width at least) = min(sqrt(v) + 1, 2): eig._simd's load,
    arithmetic, intrinsics and store, which every kernel here is built from. The backend's start-up
    check compiles this (about a second), not a kernel (tens of seconds, each at its first call)."""
    v = load_at(values, 0)
    store_at(values, 0, minimum(sqrt(v) + splat(values, 1.0), 2.0))


# bool(...) and int(0) in the calls below: run-time values, so each callee compiles once (_numba_support)
@njit
def run_serial(A, lower, ks, want_vector, values, vectors, solver):
    dense_range(A, lower, ks, want_vector, values, vectors, int(0), A.shape[0], solver)

@numba.njit(cache=True, nogil=True, parallel=True)
def run_parallel(A, lower, ks, want_vector, values, vectors, solver, chunks):
    B = A.shape[0]
    for c in numba.prange(chunks):  # one chunk per thread: work arrays allocated once per chunk
        dense_range(A, lower, ks, want_vector, values, vectors, c * B // chunks, (c + 1) * B // chunks, solver)


@njit
def tridiagonal_serial(diagonals, offs, ks, want_vector, values, vectors, solver):
    tridiagonal_range(diagonals, offs, ks, want_vector, values, vectors, int(0), diagonals.shape[0], solver)


@numba.njit(cache=True, nogil=True, parallel=True)
def tridiagonal_parallel(diagonals, offs, ks, want_vector, values, vectors, solver, chunks):
    B = diagonals.shape[0]
    for c in numba.prange(chunks):
        tridiagonal_range(diagonals, offs, ks, want_vector, values, vectors, c * B // chunks, (c + 1) * B // chunks,
                          solver)


# ---- gathered matrices: M = diag(mu) + sum_t w_t T[rows_t], assembled in place ----------------
# Rows index two tables, concatenated in thought: first ``table`` (its rows 0..R-1), then
# ``extra`` (rows R..); a row of -1 is a zero matrix (nothing to add). The kernels address rows
# by flat offsets (gather_terms): a row view per term would cost a reference count.
@njit
def gather_terms(table, extra, rows, weights, b, m, offsets, term_weights):
    """Row b's terms for model m: how many, their weights and flat offsets into table (>= 0) or,
    as -1 - offset, into extra."""
    return gather_terms_within(table, extra, rows, weights, b, m, offsets, term_weights, int(0),
                               table.shape[1] + extra.shape[1])


@njit
def gather_terms_within(table, extra, rows, weights, b, m, offsets, term_weights, lo, hi):
    """gather_terms, of the terms whose row (table's 0..R-1, then extra's) is in [lo, hi) only."""
    R, L = table.shape[1], table.shape[2]
    R_extra = extra.shape[1]
    count = 0
    for t in range(rows.shape[1]):
        w = weights[b, t]
        r = rows[b, t]
        if w == 0.0 or r < lo or r >= hi:  # (lo >= 0: a row of -1 is skipped)
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
    whole = L - L % width
    for i0 in range(full, whole, width):  # the rest of the whole vectors, one at a time
        a0 = zero
        for t in range(terms):
            w, o = term_weights[t], offsets[t]
            source = table if o >= 0 else extra
            o = o if o >= 0 else -1 - o
            a0 = a0 + w * load_at(source, o + i0)
        store_at(flat, i0, a0)
    for i in range(whole, L):
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
    whole = L - L % width
    for i0 in range(full, whole, width):  # the rest of the whole vectors, one at a time
        f0 = load_at(flat, i0)
        for t in range(terms):
            w, o = term_weights[t], offsets[t]
            target = table if o >= 0 else extra
            o = (o if o >= 0 else -1 - o) + i0
            store_at(target, o, load_at(target, o) + w * f0)
    for t in range(terms):
        w, o = term_weights[t], offsets[t]
        target = table if o >= 0 else extra
        o = o if o >= 0 else -1 - o
        for i in range(whole, L):
            target[o + i] += w * flat[i]


@njit
def gathered_range(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors, start, stop,
                   solver):
    """lambda_k (and q_k), k in ks, of M[b, m] = diag(diagonal[m]) + sum_t weights[b, t] T[m, rows[b, t]]
    (T: table, then extra) for rows b in [start, stop) and every model m, a vector's width of
    matrices at a time: model by model (its table rows stay in cache while its matrices are
    gathered), rows b in order within a model. Dense: a table row is an n x n matrix flattened
    (whole rows are summed: contiguous; the lower triangle is read) or, n(n+1)/2 long, the lower
    triangle packed row by row (half the bytes to gather); tridiagonal: a row is
    [diagonal (n), off-diagonal (n - 1), 0]."""
    n_models, n = diagonal.shape
    flat = np.zeros(table.shape[2], table.dtype)
    packed = dense and table.shape[2] != n * n
    A = flat[: n * n].reshape(n, n) if dense and not packed else flat[:1].reshape(1, 1)
    offsets, term_weights = np.zeros(rows.shape[1], np.int64), np.zeros(rows.shape[1], table.dtype)
    table1, extra1 = table.reshape(-1), extra.reshape(-1)
    work = lane_work(n, table)
    W = work[0]
    scale, status, lane_values, lane_vectors, several = lane_block(n, ks.shape[0], table)
    lanes = scale.shape[1]
    n_rows = stop - start
    last = n_rows * n_models
    # packed: every lane's triangle gathered into a row of stage, then loaded together (load_packed_lanes)
    stage = np.zeros((lanes if packed else 0, table.shape[2]), table.dtype)
    block = np.zeros(lanes * lanes, table.dtype)
    for p0 in range(0, last, lanes):
        used = min(lanes, last - p0)
        for lane in range(lanes):
            if lane < used:
                m, b = divmod(p0 + lane, n_rows)
                terms = gather_terms(table, extra, rows, weights, start + b, m, offsets, term_weights)
                gathered = stage[lane] if packed else flat
                gather_into(table1, extra1, terms, offsets, term_weights, gathered)
                for i in range(n):
                    gathered[(i * (i + 3) // 2 if packed else i * (n + 1)) if dense else i] += diagonal[m, i]
                if packed:
                    continue
                if dense:
                    status[lane] = load_lane(A, bool(True), W, lane, scale)
                else:
                    status[lane] = load_tridiagonal_lane(flat[:n], flat[n:], work, lane, scale)
            elif packed:
                break
            elif dense:
                identity_lane(W, lane, scale)
            else:
                identity_tridiagonal_lane(work, lane, scale)
        if packed:
            load_packed_lanes(stage, used, status, W, scale, block)
        solve_lanes(solver, dense, W, scale, ks, want_vector, work, lane_values, lane_vectors, several)
        for lane in range(used):
            m, b = divmod(p0 + lane, n_rows)
            store_lane(status[lane], lane, ks, want_vector, lane_values, lane_vectors, values[start + b, m],
                       vectors[start + b, m])


# gathered_range is called at four levels of a fit's call tree (below, and the training steps above them):
# as a C function it is compiled once per dtype, and these call it by the address their callers pass as
# ``range_kernel`` (gathered_range_kernel; see _numba_cfuncs).
def _gathered_range_c(table, t0, t1, t2, extra, x0, x1, x2, diagonal, d0, d1, rows, r0, r1, weights, w0, w1, ks, k0,
                      dense, want_vector, values, v0, v1, v2, vectors, q0, q1, q2, q3, start, stop, solver):
    gathered_range(numba.carray(table, (t0, t1, t2)), numba.carray(extra, (x0, x1, x2)),
                   numba.carray(diagonal, (d0, d1)), numba.carray(rows, (r0, r1)), numba.carray(weights, (w0, w1)),
                   numba.carray(ks, (k0,)), dense, want_vector, numba.carray(values, (v0, v1, v2)),
                   numba.carray(vectors, (q0, q1, q2, q3)), start, stop, solver)


def _gathered_range_types(dtype) -> tuple:
    """gathered_range's argument types as its C function takes them, for tables of ``dtype``."""
    return (dtype[:, :, ::1], dtype[:, :, ::1], dtype[:, ::1], types.int64[:, ::1], dtype[:, ::1], types.int64[::1],
            types.boolean, types.boolean, dtype[:, :, ::1], dtype[:, :, :, ::1], types.intp, types.intp, types.intp)


call_gathered_range = c_caller(_gathered_range_types)


@functools.cache
def gathered_range_kernel(dtype) -> int:
    """The address of gathered_range's C function for tables of float ``dtype``: the gathered kernels'
    ``range_kernel``."""
    return _c_function(_gathered_range_c, _gathered_range_types, np.dtype(dtype)).address


@functools.cache
def _c_function(py_func, argument_types_for, dtype: np.dtype):
    """py_func compiled (or loaded from Numba's cache, after any helper compiling it ahead has ended) once per
    dtype and kept: its code lives as long as the process."""
    _await_ahead(dtype)
    return compile_c_function(py_func, argument_types_for(numba.from_dtype(dtype)))


@njit
def gathered_serial(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors, solver,
                    range_kernel):
    call_gathered_range(range_kernel, table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors,
                        int(0), rows.shape[0], solver)


@numba.njit(cache=True, nogil=True, parallel=True)
def gathered_parallel(table, extra, diagonal, rows, weights, ks, dense, want_vector, values, vectors, solver,
                      range_kernel, chunks):
    B = rows.shape[0]
    for c in numba.prange(chunks):
        call_gathered_range(range_kernel, table, extra, diagonal, rows, weights, ks, dense, want_vector, values,
                            vectors, c * B // chunks, (c + 1) * B // chunks, solver)


@njit
def has_gradient(g_values, b, m):
    """Whether row b of model m has a nonzero gradient of any of its values (those without add nothing)."""
    for j in range(g_values.shape[2]):
        if g_values[b, m, j] != 0.0:
            return True
    return False


@njit
def row_gradients(g_values, vectors, dense, L, dMs, start, stop):
    """dMs[b, m, :L] for rows b in [start, stop) and every model m: the gradient of sum_j g_values[b, m, j] *
    lambda_kj(M[b, m]) in the table-row layout (L entries): sum_j g_j q_j q_j^T (dense, full), its lower
    triangle packed with the off-diagonal entries doubled (an entry stands for both a_ij and a_ji: 2 g q_i
    q_j), or [g q_i^2, 2 g q_i q_{i+1}, 0] (tridiagonal), summed over j. Rows whose g is all zero are left
    as they are (gathered_grad_model skips them). dMs' rows hold a vector's width more than L: several
    indices' packed triangles are written a vector at a time (packed_row_gradient)."""
    n_models = dMs.shape[1]
    n = vectors.shape[3]
    packed = dense and L != n * n
    several = packed and g_values.shape[2] > 1
    width = lane_count(dMs)
    q_padded = np.zeros((g_values.shape[2], n + width), dMs.dtype)
    lane_ids = np.arange(width).astype(dMs.dtype)
    for b in range(start, stop):
        for m in range(n_models):
            if not has_gradient(g_values, b, m):
                continue
            if several:
                packed_row_gradient(g_values, vectors, b, m, dMs[b, m], q_padded, lane_ids)
                continue
            dM = dMs[b, m, :L]
            dM[:] = 0.0
            for kj in range(g_values.shape[2]):
                g = g_values[b, m, kj]
                q = vectors[b, m, kj]
                if packed:
                    p = 0
                    for i in range(n):
                        gq = g * q[i]
                        for j in range(i):
                            product = gq * q[j]
                            dM[p] += product + product
                            p += 1
                        dM[p] += gq * q[i]
                        p += 1
                elif dense:
                    for i in range(n):
                        gq = g * q[i]
                        for j in range(n):
                            dM[i * n + j] += gq * q[j]
                else:
                    for i in range(n):
                        dM[i] += g * q[i] * q[i]
                    for i in range(n - 1):
                        dM[n + i] += 2.0 * g * q[i] * q[i + 1]


# Several indices' gradient, sum_j g_j q_j q_j^T, has K times one index's products: there a matrix row's
# entries a vector at a time (row_gradients' element by element loop, ~2x the time for three indices).
@njit
def packed_row_gradient(g_values, vectors, b, m, dM, q_padded, lane_ids):
    """row_gradients' packed triangle of row b, model m into dM (L + width - 1 entries at least), a vector's
    width of a matrix row's entries at a time, each entry's terms added in row_gradients' order (from 0,
    index by index: the same bits). A vector past a row's end writes entries of the next row, which that
    row's vectors then write (past the last row: dM's padding). q_padded (K, n + width): the indices' vectors,
    zeros after them; lane_ids: 0, 1, ..., width - 1 in dM's dtype."""
    n = vectors.shape[3]
    K = g_values.shape[2]
    width = lane_count(dM)
    zero = splat(dM, 0.0)
    for kj in range(K):
        for i in range(n):
            q_padded[kj, i] = vectors[b, m, kj, i]
    start = 0  # row i's first entry
    for i in range(n):
        for j0 in range(0, i + 1, width):
            diagonal = load_at(lane_ids, 0) == splat(dM, i - j0)  # the lane of entry (i, i), if any
            total = zero
            for kj in range(K):
                gq = g_values[b, m, kj] * q_padded[kj, i]
                product = splat(dM, gq) * load_at(q_padded[kj], j0)
                total = total + where(diagonal, product, product + product)
            store_at(dM, start + j0, total)
        start += i + 1


@njit
def gathered_grad_model(grad, grad_extra, grad_diagonal, g_values, vectors, rows, weights, dMs, m, lo, hi):
    """Model m's slices of grad and grad_extra (zeroed here first: the caller's may be uninitialised)
    = the sum over (b, t) with rows[b, t] = r of weights[b, t] * dMs[b, m] (row_gradients), and
    grad_diagonal[m, i] = the sum over b and j of g_j q_ji^2 (the diagonal's gradient). Only the table
    rows r in [lo, hi) (table's, then extra's), and the diagonal where lo == 0: a model's table rows are
    split over threads (gathered_grad_parallel). Each entry sums its terms in order (b, then t), the
    same additions wherever the split falls: the sums do not depend on how work is spread over threads."""
    K = rows.shape[1]
    n = vectors.shape[3]
    R = grad.shape[1]
    grad[m, min(lo, R):min(hi, R)] = 0.0
    grad_extra[m, max(lo - R, 0):max(hi - R, 0)] = 0.0
    with_diagonal = lo == 0
    diagonal = grad_diagonal[m]
    if with_diagonal:
        diagonal[:] = 0.0
    offsets, term_weights = np.zeros(K, np.int64), np.zeros(K, grad.dtype)
    grad1, extra1 = grad.reshape(-1), grad_extra.reshape(-1)
    for b in range(rows.shape[0]):
        if not has_gradient(g_values, b, m):
            continue
        if with_diagonal:
            for kj in range(g_values.shape[2]):
                g = g_values[b, m, kj]
                q = vectors[b, m, kj]
                for i in range(n):
                    diagonal[i] += g * q[i] * q[i]
        terms = gather_terms_within(grad, grad_extra, rows, weights, b, m, offsets, term_weights, lo, hi)
        scatter_into(grad1, extra1, terms, offsets, term_weights, dMs[b, m, :grad.shape[2]])


@njit
def grad_row_bounds(rows, weights, n_rows, parts, bounds):
    """bounds (parts + 1,): table rows [bounds[p], bounds[p + 1]) for part p of a model's gradient, cut
    where the terms of the batch's first rows (at most 256: enough to balance, little to count) are
    shared about equally; the sums do not depend on where (see gathered_grad_model)."""
    counts = np.zeros(n_rows + 1, np.int64)
    sample = min(rows.shape[0], 256)
    for b in range(sample):
        for t in range(rows.shape[1]):
            r = rows[b, t]
            if weights[b, t] != 0.0 and 0 <= r < n_rows:
                counts[r + 1] += 1
    for r in range(n_rows):
        counts[r + 1] += counts[r]
    bounds[0], bounds[parts] = 0, n_rows
    r = 0
    for p in range(1, parts):
        while r < n_rows and counts[r] * parts < counts[n_rows] * p:
            r += 1
        bounds[p] = r


@njit
def grad_parts(n_models, chunks):
    """Parts per model so that models x parts spreads evenly over ``chunks`` threads: their least common
    multiple over n_models (one where the models alone do: 4 models on 2 threads; 2 for 3 or 1)."""
    a, b = n_models, chunks
    while b:
        a, b = b, a % b
    return chunks // a


# row_gradients and gathered_grad_model as one C function, compiled once per dtype (as gathered_range above):
# part 0 the former (rows [lo, hi)), part 1 the latter (model m's table rows [lo, hi)).
def _gathered_grad_c(part, grad, g0, g1, g2, grad_extra, x0, x1, x2, grad_diagonal, d0, d1, g_values, v0, v1, v2,
                     vectors, q0, q1, q2, q3, rows, r0, r1, weights, w0, w1, dMs, s0, s1, s2, dense, m, lo, hi):
    grad_, dMs_ = numba.carray(grad, (g0, g1, g2)), numba.carray(dMs, (s0, s1, s2))
    g_values_, vectors_ = numba.carray(g_values, (v0, v1, v2)), numba.carray(vectors, (q0, q1, q2, q3))
    if part == 0:
        row_gradients(g_values_, vectors_, dense, g2, dMs_, lo, hi)
    else:
        gathered_grad_model(grad_, numba.carray(grad_extra, (x0, x1, x2)), numba.carray(grad_diagonal, (d0, d1)),
                            g_values_, vectors_, numba.carray(rows, (r0, r1)), numba.carray(weights, (w0, w1)), dMs_,
                            m, lo, hi)


def _gathered_grad_types(dtype) -> tuple:
    """The gradient's C function's argument types, for tables of ``dtype``."""
    return (types.intp, dtype[:, :, ::1], dtype[:, :, ::1], dtype[:, ::1], dtype[:, :, ::1], dtype[:, :, :, ::1],
            types.int64[:, ::1], dtype[:, ::1], dtype[:, :, ::1], types.boolean, types.intp, types.intp, types.intp)


call_gathered_grad = c_caller(_gathered_grad_types)


@functools.cache
def gathered_grad_kernel(dtype) -> int:
    """The address of the gradient's C function for tables of float ``dtype``: the gradient kernels'
    ``grad_kernel``."""
    return _c_function(_gathered_grad_c, _gathered_grad_types, np.dtype(dtype)).address


@functools.cache
def lane_solver(dtype) -> int:
    """The address of the lanes' solve for float ``dtype`` (_numba_lanes.lane_solver): the kernels' ``solver``."""
    _await_ahead(np.dtype(dtype))
    return _numba_lanes.lane_solver(dtype)


# ---- the C functions compiled ahead, in a helper process ---------------------------------------------
# They are ~15 s of a first fit's ~33 s of compiling on an empty Numba cache, and nothing else's compile
# needs them: the training steps take their addresses at run time. Where none is in the cache yet, a helper
# process compiles them into it while the fit's process compiles the training steps (GatheredSteps starts
# it; CompiledSteps compiles its kernel meanwhile). The process that needs an address waits for the helper,
# then loads the function from the cache -- or, where the helper did not save it, compiles it itself.
_AHEAD_CODE = ("import sys\n"
               "from skspectral.eig import _numba_kernels as kernels\n"
               "for address in (kernels.lane_solver, kernels.gathered_range_kernel, kernels.gathered_grad_kernel):\n"
               "    address(sys.argv[1])\n")
_AHEAD_WAIT_S = 600
_ahead: dict = {}  # np.dtype -> the helper process compiling its C functions
_looked_for: set = set()  # the dtypes whose C functions this process has looked for in the cache
_ahead_lock = threading.Lock()


def _in_cache(py_func, dtype: np.dtype) -> bool:
    """Whether Numba's disk cache holds ``py_func``'s cfunc for ``dtype``, fresh (its index, read without
    loading the code). Numba's cache internals: where they differ, True (nothing is compiled ahead)."""
    try:
        from numba.core.caching import FunctionCache

        index = FunctionCache(py_func)._cache_file._load_index()
        name = str(numba.from_dtype(dtype))
        return any(name in str(key[0]) for key in index)
    except Exception:
        return True


def compile_c_functions_ahead(dtype) -> bool:
    """Start a helper process that compiles the C functions for float ``dtype`` into Numba's disk cache,
    where one of them is missing there (a first fit after an install or an update) and a second core can
    take it. Returns whether a helper started. Any failure leaves the compile to this process. Once a process
    and dtype (a fit's every GatheredSteps calls it): the C functions are then in the cache, or on their way."""
    dtype = np.dtype(dtype)
    with _ahead_lock:
        if dtype in _looked_for:
            return False
        _looked_for.add(dtype)
        if all(_in_cache(py_func, dtype) for py_func in (_numba_lanes._solve_lanes, _gathered_range_c,
                                                         _gathered_grad_c)):
            return False
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if cores < 2 or not sys.executable:
            return False
        root = str(Path(__file__).resolve().parents[2])  # where this skspectral imports from
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        try:
            _ahead[dtype] = subprocess.Popen([sys.executable, "-c", _AHEAD_CODE, dtype.name], env=env,
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
        except OSError:
            return False
        return True


def compiling_ahead(dtype) -> bool:
    """Whether a helper is compiling the C functions for ``dtype`` (compile_c_functions_ahead)."""
    return np.dtype(dtype) in _ahead


def _await_ahead(dtype: np.dtype) -> None:
    """Wait for the helper compiling ``dtype``'s C functions, if any (at most _AHEAD_WAIT_S; then stopped)."""
    if not _ahead:
        return
    with _ahead_lock:  # (another thread's fit waits here too, until the helper is done)
        helper = _ahead.get(dtype)
        if helper is None:
            return
        try:
            helper.wait(timeout=_AHEAD_WAIT_S)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        # named until done: a fit on another thread that found it gone would have compiled them itself meanwhile
        del _ahead[dtype]


@njit
def gathered_grad_serial(grad, grad_extra, grad_diagonal, g_values, vectors, rows, weights, dense, grad_kernel):
    """The gradients of the gathered tables and the diagonal (gathered_grad_model), on this thread."""
    B, n_models = rows.shape[0], grad.shape[0]
    dMs = np.empty((B, n_models, grad.shape[2] + lane_count(grad)), grad.dtype)  # (see row_gradients)
    call_gathered_grad(grad_kernel, int(0), grad, grad_extra, grad_diagonal, g_values, vectors, rows, weights, dMs,
                       dense, int(0), int(0), B)
    for m in range(n_models):
        call_gathered_grad(grad_kernel, int(1), grad, grad_extra, grad_diagonal, g_values, vectors, rows, weights, dMs,
                           dense, m, int(0), grad.shape[1] + grad_extra.shape[1])


@numba.njit(cache=True, nogil=True, parallel=True)
def gathered_grad_parallel(grad, grad_extra, grad_diagonal, g_values, vectors, rows, weights, dense, grad_kernel,
                           chunks):
    """gathered_grad_serial's results over ``chunks`` threads: the rows' gradients split by rows, then the
    sums split by model and, where the models are fewer than the threads, by table rows (grad_parts)."""
    B, n_models, n_rows = rows.shape[0], grad.shape[0], grad.shape[1] + grad_extra.shape[1]
    dMs = np.empty((B, n_models, grad.shape[2] + lane_count(grad)), grad.dtype)  # (see row_gradients)
    for c in numba.prange(chunks):
        call_gathered_grad(grad_kernel, int(0), grad, grad_extra, grad_diagonal, g_values, vectors, rows, weights,
                           dMs, dense, int(0), c * B // chunks, (c + 1) * B // chunks)
    parts = grad_parts(n_models, chunks)
    bounds = np.empty(parts + 1, np.int64)
    grad_row_bounds(rows, weights, n_rows, parts, bounds)
    tasks = n_models * parts
    for c in numba.prange(chunks):
        for task in range(c * tasks // chunks, (c + 1) * tasks // chunks):
            m, p = task // parts, task % parts
            call_gathered_grad(grad_kernel, int(1), grad, grad_extra, grad_diagonal, g_values, vectors, rows,
                               weights, dMs, dense, m, bounds[p], bounds[p + 1])
