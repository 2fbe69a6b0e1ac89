"""The CPU kernel on SIMD lanes: several matrices at once, one per lane of a vector.

The syevx route of the CUDA kernel (Householder tridiagonalisation, multisection on
Sturm counts for lambda_k, inverse iteration and the back-transform for q_k), written on
``_simd`` vectors: every array has a trailing lane axis of the vector width (4 float64 or 8
float32 matrices, 32 bytes), and each operation acts on all lanes in one instruction. Where the
one-matrix code branches, every lane computes both sides and selects (a zero Householder
column, a row swap in the LU of T - lambda I). The multisection runs until the slowest lane's
bracket has isolated lambda_k (or is tight), then safeguarded Newton steps run until the slowest
lane has converged; a lane that is done keeps its value. Several indices of one matrix share its
reduction; their Newton steps, inverse iterations and back-transforms then run side by side
(``several_pairs``), giving each index the bits it gets alone.

Scaling, NaN/inf and zero matrices are handled per lane on the way in (``load_lane``): the
lanes get finite matrices with max |a_ij| in [0.5, 1) or, for a lane with nothing to solve,
the identity; ``store_lane`` writes each lane's answer (NaN, or lambda = 0 and q = e_k for a
zero matrix).
"""

import functools
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._kernel_cache import keep_kernel_cache_fresh
from ._simd import (absolute, all_true, any_true, copysign, lane_count, largest_lane, load, load_at, maximum, minimum,
                    splat, sqrt, store, store_at, transpose_block, where)

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)

njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")


@njit
def householder(W, V, tau, d, e, y):
    """The lower triangles of W (n, n, lanes) -> tridiagonal (d, e); the reflectors in V (row r:
    v_r over r+1..n-1) and tau. W is overwritten. Entries are addressed by flat offsets (row i's
    entry j of W at (i n + j) lanes): a row view per inner loop cost ~15 % of the reduction."""
    n = W.shape[0]
    lanes = lane_count(W)
    Wf, Vf, yf = W.reshape(-1), V.reshape(-1), y.reshape(-1)
    zero = splat(W, 0.0)
    for r in range(n - 2):
        alpha = load_at(Wf, ((r + 1) * n + r) * lanes)
        x2 = zero
        for i in range(r + 2, n):
            c = load_at(Wf, (i * n + r) * lanes)
            x2 = x2 + c * c
        beta = -copysign(sqrt(alpha * alpha + x2), alpha)
        none = x2 == 0.0  # nothing below the subdiagonal: no reflection (tau = 0)
        t = where(none, zero, (beta - alpha) / beta)
        inv = where(none, zero, 1.0 / (alpha - beta))
        store(e, r, where(none, alpha, beta))
        store(tau, r, t)
        v = r * n * lanes  # V[r]'s offset
        store_at(Vf, v + (r + 1) * lanes, splat(W, 1.0))
        for i in range(r + 2, n):
            store_at(Vf, v + i * lanes, load_at(Wf, (i * n + r) * lanes) * inv)
        # p = tau W v from the lower triangle, then w = p - (tau/2)(p.v) v; W -= v w^T + w v^T
        for i in range(r + 1, n):
            store_at(yf, i * lanes, zero)
        for i in range(r + 1, n):
            row = i * n * lanes
            vi = load_at(Vf, v + i * lanes)
            s = load_at(Wf, row + i * lanes) * vi
            for j in range(r + 1, i):
                wij = load_at(Wf, row + j * lanes)
                s = s + wij * load_at(Vf, v + j * lanes)
                store_at(yf, j * lanes, load_at(yf, j * lanes) + wij * vi)
            store_at(yf, i * lanes, load_at(yf, i * lanes) + s)
        pv = zero
        for i in range(r + 1, n):
            yi = load_at(yf, i * lanes) * t
            store_at(yf, i * lanes, yi)
            pv = pv + yi * load_at(Vf, v + i * lanes)
        half = -0.5 * t * pv
        for i in range(r + 1, n):
            store_at(yf, i * lanes, load_at(yf, i * lanes) + half * load_at(Vf, v + i * lanes))
        for i in range(r + 1, n):
            row = i * n * lanes
            vi, wi = load_at(Vf, v + i * lanes), load_at(yf, i * lanes)
            for j in range(r + 1, i + 1):
                store_at(Wf, row + j * lanes,
                         load_at(Wf, row + j * lanes) - (vi * load_at(yf, j * lanes) + wi * load_at(Vf, v + j * lanes)))
    for i in range(n):
        store(d, i, load_at(Wf, (i * n + i) * lanes))
    if n > 1:
        store(e, n - 2, load_at(Wf, ((n - 1) * n + n - 2) * lanes))


@njit
def sturm_first(d0, x, pivmin, one, zero):
    """The first term of the Sturm sequence of T - x I (a tiny pivot replaced by -pivmin) and its count
    of negative terms."""
    q = d0 - x
    q = where(absolute(q) < pivmin, -pivmin, q)
    return q, where(q < 0.0, one, zero)


@njit
def sturm_next(di, x, e2i, q, count, pivmin, one, zero):
    """The next term of the sequence after q, and the count with it."""
    q = di - x - e2i / q
    q = where(absolute(q) < pivmin, -pivmin, q)
    return q, count + where(q < 0.0, one, zero)


@njit
def bracket_end(moves, x, count, end, end_count):
    """A bracket's end (and its Sturm count) moved to the point x where ``moves``."""
    return where(moves, x, end), where(moves, count, end_count)


@njit
def newton_sweep(d, e2, x, pivmin):
    """Per lane: the Sturm count below x (float) and d/dx log|det(T - x I)| = sum_i q_i' / q_i,
    one division per row (the one-matrix kernel's newton_sweep on lanes)."""
    n = d.shape[0]
    one, zero = splat(d, 1.0), splat(d, 0.0)
    q, count = sturm_first(load(d, 0), x, pivmin, one, zero)
    dq = -one
    slope = zero
    for i in range(1, n):
        inv = 1.0 / q
        slope = slope + dq * inv
        t = load(e2, i - 1) * inv
        dq = -1.0 + t * dq * inv
        q = load(d, i) - x - t
        q = where(absolute(q) < pivmin, -pivmin, q)
        count = count + where(q < 0.0, one, zero)
    return count, slope + dq / q


@njit
def isolate(d, e, e2, k):
    """kth_value's bracket of lambda_k in each lane: (lo, hi, newton: the lanes where Newton steps
    follow, gnorm = ||T|| (Gershgorin), pivmin); e2 = e^2 written."""
    n = d.shape[0]
    eps = np.finfo(d.dtype).eps
    tiny = np.finfo(d.dtype).tiny
    zero = splat(d, 0.0)
    lo, hi = load(d, 0), load(d, 0)
    for i in range(n):
        radius = zero
        if i > 0:
            radius = radius + absolute(load(e, i - 1))
        if i < n - 1:
            radius = radius + absolute(load(e, i))
        lo = minimum(lo, load(d, i) - radius)
        hi = maximum(hi, load(d, i) + radius)
    emax2 = zero
    for i in range(n - 1):
        ei = load(e, i)
        store(e2, i, ei * ei)
        emax2 = maximum(emax2, ei * ei)
    pivmin = tiny * maximum(emax2, 1.0)
    gnorm = maximum(absolute(lo), absolute(hi))
    width = 2.0 * eps * gnorm + 2.0 * pivmin
    lo = lo - width
    hi = hi + width
    tol = maximum(eps * gnorm, pivmin)
    one = splat(d, 1.0)
    count_lo, count_hi = zero, splat(d, float(n))
    isolated = (count_lo == k) & (count_hi == k + 1)
    for _ in range(400):  # at most ~23 sweeps of 4 points from a Gershgorin bracket to eps
        wide = hi - lo > maximum(2.0 * eps * maximum(absolute(lo), absolute(hi)), tol)
        isolated = (count_lo == k) & (count_hi == k + 1)
        active = wide & ~isolated
        if not any_true(active):
            break
        # four points a sweep, their Sturm sequences side by side in registers: independent chains of
        # divisions (the latency of one chain would otherwise bound the sweep); the bracket shrinks 5 times
        step = (hi - lo) / 5
        x0, x1, x2, x3 = lo + step, lo + 2 * step, lo + 3 * step, lo + 4 * step
        d0 = load(d, 0)
        q0, c0 = sturm_first(d0, x0, pivmin, one, zero)
        q1, c1 = sturm_first(d0, x1, pivmin, one, zero)
        q2, c2 = sturm_first(d0, x2, pivmin, one, zero)
        q3, c3 = sturm_first(d0, x3, pivmin, one, zero)
        for i in range(1, n):
            di, e2i = load(d, i), load(e2, i - 1)
            q0, c0 = sturm_next(di, x0, e2i, q0, c0, pivmin, one, zero)
            q1, c1 = sturm_next(di, x1, e2i, q1, c1, pivmin, one, zero)
            q2, c2 = sturm_next(di, x2, e2i, q2, c2, pivmin, one, zero)
            q3, c3 = sturm_next(di, x3, e2i, q3, c3, pivmin, one, zero)
        # counts rise with x: lo moves to the last point at or below k, hi to the first above
        new_lo, new_count_lo = bracket_end(c0 <= k, x0, c0, lo, count_lo)
        new_lo, new_count_lo = bracket_end(c1 <= k, x1, c1, new_lo, new_count_lo)
        new_lo, new_count_lo = bracket_end(c2 <= k, x2, c2, new_lo, new_count_lo)
        new_lo, new_count_lo = bracket_end(c3 <= k, x3, c3, new_lo, new_count_lo)
        new_hi, new_count_hi = bracket_end(c3 > k, x3, c3, hi, count_hi)
        new_hi, new_count_hi = bracket_end(c2 > k, x2, c2, new_hi, new_count_hi)
        new_hi, new_count_hi = bracket_end(c1 > k, x1, c1, new_hi, new_count_hi)
        new_hi, new_count_hi = bracket_end(c0 > k, x0, c0, new_hi, new_count_hi)
        if not any_true(active & ((new_lo != lo) | (new_hi != hi))):
            break  # no representable point strictly inside any bracket still to shrink
        lo, hi = where(active, new_lo, lo), where(active, new_hi, hi)
        count_lo, count_hi = where(active, new_count_lo, count_lo), where(active, new_count_hi, count_hi)
    wide = hi - lo > maximum(2.0 * eps * maximum(absolute(lo), absolute(hi)), tol)
    return lo, hi, wide & isolated, gnorm, pivmin


@njit
def newton_step(d, k, count, slope, lo, hi, x, step_before, done, gnorm, pivmin):
    """One safeguarded Newton step of kth_value from a sweep's count and slope at x (newton_sweep):
    the new (lo, hi, x, step_before, done); a lane that is done keeps its values."""
    eps = np.finfo(d.dtype).eps
    lo = where(done | (count > k), lo, x)
    hi = where(done | (count <= k), hi, x)
    tol_x = maximum(maximum(2.0 * eps * absolute(x), eps * gnorm), pivmin)
    tight = hi - lo <= tol_x
    step = where(slope != 0.0, -1.0 / slope, hi - lo)
    converged = absolute(step) <= tol_x  # the step is below the resolution at x
    ahead = x + step
    good = (lo < ahead) & (ahead < hi) & (2.0 * absolute(step) <= step_before)
    moving = ~(done | tight)
    x = where(moving & converged, minimum(maximum(ahead, lo), hi),
              where(moving, where(good, ahead, 0.5 * (lo + hi)), x))
    step_before = where(moving & good, absolute(step), where(moving, 0.5 * (hi - lo), step_before))
    return lo, hi, x, step_before, done | tight | converged


@njit
def kth_value(d, e, e2, k):
    """lambda_k of each lane's tridiagonal T (d, e), and ||T|| (Gershgorin). Multisection on
    Sturm counts from Gershgorin bounds until lambda_k is the only eigenvalue in a lane's
    bracket (or the bracket is tight: a repeated eigenvalue never isolates; isolate), then safeguarded
    Newton on det(T - x I) in the isolated lanes, as the one-matrix kernel: a step that leaves
    the bracket or does not halve the one before is replaced by bisection (newton_step). Every lane
    runs until the slowest is done; a lane that is done keeps its value."""
    lo, hi, newton, gnorm, pivmin = isolate(d, e, e2, k)
    if not any_true(newton):
        return 0.5 * (lo + hi), gnorm
    x = 0.5 * (lo + hi)
    step_before = hi - lo
    done = ~newton
    for _ in range(100):
        count, slope = newton_sweep(d, e2, x, pivmin)
        lo, hi, x, step_before, done = newton_step(d, k, count, slope, lo, hi, x, step_before, done, gnorm, pivmin)
        if all_true(done):
            break
    return where(newton, x, 0.5 * (lo + hi)), gnorm


# Several indices (ks of K > 1) after one reduction: each index's Newton steps, inverse iteration and
# back-transform are chains of dependent divisions or sums along the matrix; one index after another,
# each chain waits on its own latency. Side by side, row by row, the indices' chains overlap. The same
# operations on each index's numbers in the same order: the same bits as one index at a time.
@njit
def kth_values(d, e, e2, ks, lams, state):
    """kth_value for each k of ks into lams (K, lanes); returns ||T||. Each index's bracket as
    kth_value finds it (isolate), then the indices' Newton steps side by side: their sweeps
    (newton_sweep's operations) row by row, then each index's step; an index whose lanes are all done
    stops, as kth_value's loop does. Scratch: state (10K, lanes) -- an index's lo, hi, x, step before,
    done and Newton lanes, then its sweep's q, dq, slope and count."""
    n = d.shape[0]
    K = ks.shape[0]
    one, zero = splat(d, 1.0), splat(d, 0.0)
    gnorm = pivmin = zero
    for j in range(K):
        lo, hi, newton, gnorm, pivmin = isolate(d, e, e2, ks[j])
        store(state, 6 * j, lo)
        store(state, 6 * j + 1, hi)
        store(state, 6 * j + 2, 0.5 * (lo + hi))
        store(state, 6 * j + 3, hi - lo)
        store(state, 6 * j + 4, where(newton, zero, one))  # done: the lanes without Newton steps
        store(state, 6 * j + 5, where(newton, one, zero))
    sweep = 6 * K  # index j's sweep: state's rows sweep + 4 j to sweep + 4 j + 3
    for _ in range(100):
        running = 0
        for j in range(K):
            if not all_true(load(state, 6 * j + 4) != 0.0):
                running += 1
                q, count = sturm_first(load(d, 0), load(state, 6 * j + 2), pivmin, one, zero)
                store(state, sweep + 4 * j, q)
                store(state, sweep + 4 * j + 1, -one)
                store(state, sweep + 4 * j + 2, zero)
                store(state, sweep + 4 * j + 3, count)
        if running == 0:
            break
        for i in range(1, n):
            di, e2i = load(d, i), load(e2, i - 1)
            for j in range(K):
                if not all_true(load(state, 6 * j + 4) != 0.0):
                    q, dq = load(state, sweep + 4 * j), load(state, sweep + 4 * j + 1)
                    inv = 1.0 / q
                    store(state, sweep + 4 * j + 2, load(state, sweep + 4 * j + 2) + dq * inv)
                    t = e2i * inv
                    store(state, sweep + 4 * j + 1, -1.0 + t * dq * inv)
                    q = di - load(state, 6 * j + 2) - t
                    q = where(absolute(q) < pivmin, -pivmin, q)
                    store(state, sweep + 4 * j, q)
                    store(state, sweep + 4 * j + 3, load(state, sweep + 4 * j + 3) + where(q < 0.0, one, zero))
        for j in range(K):
            done = load(state, 6 * j + 4) != 0.0
            if all_true(done):
                continue
            slope = load(state, sweep + 4 * j + 2) + load(state, sweep + 4 * j + 1) / load(state, sweep + 4 * j)
            lo, hi, x, step_before, done = newton_step(
                d, ks[j], load(state, sweep + 4 * j + 3), slope, load(state, 6 * j), load(state, 6 * j + 1),
                load(state, 6 * j + 2), load(state, 6 * j + 3), done, gnorm, pivmin)
            store(state, 6 * j, lo)
            store(state, 6 * j + 1, hi)
            store(state, 6 * j + 2, x)
            store(state, 6 * j + 3, step_before)
            store(state, 6 * j + 4, where(done, one, zero))
    for j in range(K):
        lo, hi = load(state, 6 * j), load(state, 6 * j + 1)
        store(lams, j, where(load(state, 6 * j + 5) != 0.0, load(state, 6 * j + 2), 0.5 * (lo + hi)))
    return gnorm


@njit
def inverse_iteration(d, e, lam, gnorm, lu, y):
    """An eigenvector of each lane's T for lambda = lam into y (max |y_i| = 1): LU of T - lam I
    with partial pivoting (both pivots computed, one selected; tiny pivots -> eps ||T||), two
    solves from a fixed start. lu (n, 5, lanes): each row's pivot, factor, two upper entries
    and whether it was swapped (1.0)."""
    n = d.shape[0]
    eps = np.finfo(d.dtype).eps
    tiny = np.finfo(d.dtype).tiny
    zero = splat(d, 0.0)
    one = splat(d, 1.0)
    floor = eps * gnorm
    floor = where(floor == 0.0, splat(d, tiny), floor)
    dd = load(d, 0) - lam
    ud = load(e, 0) if n > 1 else zero
    for i in range(n - 1):
        row = lu[i]
        sub = load(e, i)
        next_d = load(d, i + 1) - lam
        next_u = load(e, i + 1) if i + 1 < n - 1 else zero
        swap = absolute(sub) > absolute(dd)
        kept = where(absolute(dd) < floor, floor, dd)
        factor = where(swap, dd / sub, sub / kept)
        store(row, 0, where(swap, sub, kept))
        store(row, 1, factor)
        store(row, 2, where(swap, next_d, ud))
        store(row, 3, where(swap, next_u, zero))
        store(row, 4, where(swap, one, zero))
        new_dd = where(swap, ud - factor * next_d, next_d - factor * ud)
        ud = where(swap, -factor * next_u, next_u)
        dd = new_dd
    store(lu[n - 1], 0, where(absolute(dd) < floor, floor, dd))
    for i in range(n):  # a fixed start with no special direction
        store(y, i, splat(d, 1.0 + 0.1 * ((i * 7) % 11)))
    for _ in range(2):
        for i in range(n - 1):
            row = lu[i]
            a, b = load(y, i), load(y, i + 1)
            swap = load(row, 4) != 0.0
            first = where(swap, b, a)
            store(y, i, first)
            store(y, i + 1, where(swap, a, b) - load(row, 1) * first)
        store(y, n - 1, load(y, n - 1) / load(lu[n - 1], 0))
        if n > 1:
            row = lu[n - 2]
            store(y, n - 2, (load(y, n - 2) - load(row, 2) * load(y, n - 1)) / load(row, 0))
        for i in range(n - 3, -1, -1):
            row = lu[i]
            store(y, i, (load(y, i) - load(row, 2) * load(y, i + 1) - load(row, 3) * load(y, i + 2)) / load(row, 0))
        norm = zero
        for i in range(n):
            norm = maximum(norm, absolute(load(y, i)))
        for i in range(n):
            store(y, i, load(y, i) / norm)


@njit
def back_transform(V, tau, y):
    """y <- H_0 ... H_{n-3} y in each lane (the last reflector first); V's rows by flat offsets."""
    n = V.shape[0]
    lanes = lane_count(V)
    Vf = V.reshape(-1)
    for r in range(n - 3, -1, -1):
        v = r * n * lanes  # V[r]'s offset
        s = splat(y, 0.0)
        for i in range(r + 1, n):
            s = s + load_at(Vf, v + i * lanes) * load(y, i)
        s = s * load(tau, r)
        for i in range(r + 1, n):
            store(y, i, load(y, i) - s * load_at(Vf, v + i * lanes))


@njit
def inverse_iterations(d, e, lams, gnorm, lu, y, state):
    """inverse_iteration for each index j of lams (K, lanes) into y[j] (y (K, n, lanes), lu (K, n, 5,
    lanes)): its LU and solves side by side with the other indices', row by row (each a chain of
    divisions along the matrix; several overlap), each index's operations those of inverse_iteration.
    Scratch: state (2K, lanes), an index's pivot and upper entry carried from row to row."""
    n = d.shape[0]
    K = lams.shape[0]
    eps = np.finfo(d.dtype).eps
    tiny = np.finfo(d.dtype).tiny
    zero = splat(d, 0.0)
    one = splat(d, 1.0)
    floor = eps * gnorm
    floor = where(floor == 0.0, splat(d, tiny), floor)
    for j in range(K):
        store(state, 2 * j, load(d, 0) - load(lams, j))
        store(state, 2 * j + 1, load(e, 0) if n > 1 else zero)
    for i in range(n - 1):
        sub = load(e, i)
        next_u = load(e, i + 1) if i + 1 < n - 1 else zero
        for j in range(K):
            dd, ud = load(state, 2 * j), load(state, 2 * j + 1)
            row = lu[j, i]
            next_d = load(d, i + 1) - load(lams, j)
            swap = absolute(sub) > absolute(dd)
            kept = where(absolute(dd) < floor, floor, dd)
            factor = where(swap, dd / sub, sub / kept)
            store(row, 0, where(swap, sub, kept))
            store(row, 1, factor)
            store(row, 2, where(swap, next_d, ud))
            store(row, 3, where(swap, next_u, zero))
            store(row, 4, where(swap, one, zero))
            store(state, 2 * j, where(swap, ud - factor * next_d, next_d - factor * ud))
            store(state, 2 * j + 1, where(swap, -factor * next_u, next_u))
    for j in range(K):
        dd = load(state, 2 * j)
        store(lu[j, n - 1], 0, where(absolute(dd) < floor, floor, dd))
        for i in range(n):  # inverse_iteration's fixed start
            store(y[j], i, splat(d, 1.0 + 0.1 * ((i * 7) % 11)))
    for _ in range(2):
        for i in range(n - 1):
            for j in range(K):
                row, yj = lu[j, i], y[j]
                a, b = load(yj, i), load(yj, i + 1)
                swap = load(row, 4) != 0.0
                first = where(swap, b, a)
                store(yj, i, first)
                store(yj, i + 1, where(swap, a, b) - load(row, 1) * first)
        for j in range(K):
            yj = y[j]
            store(yj, n - 1, load(yj, n - 1) / load(lu[j, n - 1], 0))
            if n > 1:
                row = lu[j, n - 2]
                store(yj, n - 2, (load(yj, n - 2) - load(row, 2) * load(yj, n - 1)) / load(row, 0))
        for i in range(n - 3, -1, -1):
            for j in range(K):
                row, yj = lu[j, i], y[j]
                store(yj, i, (load(yj, i) - load(row, 2) * load(yj, i + 1) - load(row, 3) * load(yj, i + 2))
                      / load(row, 0))
        for j in range(K):
            yj = y[j]
            norm = zero
            for i in range(n):
                norm = maximum(norm, absolute(load(yj, i)))
            for i in range(n):
                store(yj, i, load(yj, i) / norm)


@njit
def back_transforms(V, tau, y):
    """back_transform of each y[j] (y (K, n, lanes)), a reflector read once for all of them."""
    n = V.shape[0]
    lanes = lane_count(V)
    Vf = V.reshape(-1)
    for r in range(n - 3, -1, -1):
        v = r * n * lanes  # V[r]'s offset
        t = load(tau, r)
        for j in range(y.shape[0]):
            yj = y[j]
            s = splat(yj, 0.0)
            for i in range(r + 1, n):
                s = s + load_at(Vf, v + i * lanes) * load(yj, i)
            s = s * t
            for i in range(r + 1, n):
                store(yj, i, load(yj, i) - s * load_at(Vf, v + i * lanes))


@njit
def unit_into(y, out):
    """out (n, lanes) = each lane's y / ||y||_2 (out may be y)."""
    norm = splat(y, 0.0)
    for i in range(y.shape[0]):
        yi = load(y, i)
        norm = norm + yi * yi
    norm = sqrt(norm)
    for i in range(y.shape[0]):
        store(out, i, load(y, i) / norm)


@njit
def lane_work(n, like):
    """Work arrays of pairs for n x n matrices of like's dtype, lanes last: W (n, n), V (n, n),
    lu (n, 5) and rows (5, n: tau, d, e, e2, y)."""
    dtype = like.dtype
    lanes = lane_count(like)
    return (np.zeros((n, n, lanes), dtype), np.zeros((n, n, lanes), dtype), np.zeros((n, 5, lanes), dtype),
            np.zeros((5, n, lanes), dtype))


@njit
def lane_block(n, K, like):
    """A block's per-lane state for K indices of n x n matrices of like's dtype: scale (1,
    lanes), status (lanes,), values (K, lanes), vectors (K, n, lanes) and several_pairs' scratch
    (lu (K, n, 5, lanes), state (10K, lanes); not in lane_work's tuple, which every call of pairs
    passes and unpacks: a larger one made one index's solve ~15 % slower)."""
    lanes = lane_count(like)
    several = (np.zeros((K, n, 5, lanes), like.dtype), np.zeros((10 * K, lanes), like.dtype))
    return (np.ones((1, lanes), like.dtype), np.zeros(lanes, np.int64), np.zeros((K, lanes), like.dtype),
            np.zeros((K, n, lanes), like.dtype), several)


# inline="always": _solve_lanes, its one caller, takes this body into its own compilation, so pairs is not
# compiled (and its callees' code optimised again) as a library of its own first: a first fit ~1.3 s shorter
@njit(inline="always")
def pairs(W, scale, ks, want_vector, work, out_values, out_vectors, several):
    """lambda_k for each k of ks and, with want_vector, unit q_k of each lane's matrix: W (n, n,
    lanes) holds finite lower triangles with max |a_ij| <= 1, scaled by scale (1, lanes; the
    values are divided by it). Outputs: out_values (K, lanes), out_vectors (K, n, lanes). W is
    overwritten. ``several``: lane_block's scratch for several indices (see several_pairs)."""
    rows = work[3]
    householder(W, work[1], rows[0], rows[1], rows[2], rows[4])
    # bool(...): a run-time flag, one compilation for both callers (_numba_support)
    tridiagonal_pairs(scale, ks, want_vector, bool(True), work, out_values, out_vectors, several)


@njit
def several_pairs(scale, ks, want_vector, transform, work, out_values, out_vectors, several):
    """tridiagonal_pairs for several indices (K > 1), the indices side by side (kth_values,
    inverse_iterations, back_transforms): each index's numbers as one index at a time gives them. The
    values and vectors are worked on in out_values and out_vectors; ``several``: lane_block's scratch."""
    _, V, _, rows = work
    tau, d, e, e2 = rows[0], rows[1], rows[2], rows[3]
    lu, state = several
    gnorm = kth_values(d, e, e2, ks, out_values, state)
    if want_vector:
        inverse_iterations(d, e, out_values, gnorm, lu, out_vectors, state)
        if transform:
            back_transforms(V, tau, out_vectors)
        for j in range(ks.shape[0]):
            unit_into(out_vectors[j], out_vectors[j])
    for j in range(ks.shape[0]):
        store(out_values, j, load(out_values, j) / load(scale, 0))


@njit
def tridiagonal_pairs(scale, ks, want_vector, transform, work, out_values, out_vectors, several):
    """pairs for the tridiagonal matrices held in work's rows d and e (finite, scaled by scale);
    with transform, the vectors are taken back through the reflectors of ``householder``; several
    indices go to several_pairs (``several``: its scratch)."""
    _, V, lu, rows = work
    tau, d, e, e2, y = rows[0], rows[1], rows[2], rows[3], rows[4]
    if ks.shape[0] > 1:  # the indices side by side (several_pairs): the same numbers
        several_pairs(scale, ks, want_vector, transform, work, out_values, out_vectors, several)
        return
    for j in range(ks.shape[0]):
        lam, gnorm = kth_value(d, e, e2, ks[j])
        store(out_values, j, lam / load(scale, 0))
        if want_vector:
            inverse_iteration(d, e, lam, gnorm, lu, y)
            if transform:
                back_transform(V, tau, y)
            unit_into(y, out_vectors[j])


# ---- the lanes' solve as a C function, compiled once per dtype ------------------------------------
# Numba copies a jitted callee's code into its caller's and optimises and compiles it again there: the
# code of pairs and tridiagonal_pairs (~0.7 MB of LLVM IR a dtype) was processed again at each of seven
# levels of a fit's call tree (the gathered kernels, the parallel one's gufunc and its wrappers, the
# training steps; benchmarks/RESULTS.md, section 9). As a cfunc it is optimised and compiled once per
# dtype, and the kernels call it by its address, which their callers pass as an integer: nothing is
# baked into the kernels' cached code. (Numba's first-class functions pass the cfunc object itself, but
# typing and unboxing it cost ~20 us a call from Python: a small kth_eigvalsh call took 47 us, not 26.)
def _solve_lanes(W, V, lu, rows, scale, ks, out_values, out_vectors, several_lu, several_state, n, K,
                 want_vector, dense):
    """pairs (dense: W holds the lower triangles) or tridiagonal_pairs (work's rows d and e) of a block
    of lanes, from the pointers to lane_work's and lane_block's arrays (their shapes from n and K)."""
    lanes = lane_count(numba.carray(scale, (1,)))
    work = (numba.carray(W, (n, n, lanes)), numba.carray(V, (n, n, lanes)), numba.carray(lu, (n, 5, lanes)),
            numba.carray(rows, (5, n, lanes)))
    several = (numba.carray(several_lu, (K, n, 5, lanes)), numba.carray(several_state, (10 * K, lanes)))
    block_scale, block_ks = numba.carray(scale, (1, lanes)), numba.carray(ks, (K,))
    values, vectors = numba.carray(out_values, (K, lanes)), numba.carray(out_vectors, (K, n, lanes))
    if dense:
        pairs(work[0], block_scale, block_ks, want_vector, work, values, vectors, several)
    else:
        tridiagonal_pairs(block_scale, block_ks, want_vector, bool(False), work, values, vectors, several)


def _solver_arguments(dtype) -> list:
    """_solve_lanes' C arguments (Numba types) for arrays of ``dtype`` (a Numba float type)."""
    pointer = types.CPointer(dtype)
    return [pointer] * 5 + [types.CPointer(types.int64)] + [pointer] * 4 + [types.intp] * 2 + [types.boolean] * 2


@functools.cache
def lane_solver(dtype) -> int:
    """The address of the lanes' solve for float ``dtype`` as a C function: what the kernels below and
    their callers take as ``solver``."""
    return _lane_solver_cfunc(np.dtype(dtype)).address


@functools.cache
def _lane_solver_cfunc(dtype: np.dtype):
    """_solve_lanes as a Numba cfunc for arrays of ``dtype`` (compiled, or loaded from Numba's cache, at the
    first call for a dtype; kept here, so its code lives as long as the process)."""
    signature = types.void(*_solver_arguments(numba.from_dtype(dtype)))
    return numba.cfunc(signature, cache=True, error_model="numpy")(_solve_lanes)


@intrinsic
def call_solver(typingctx, solver, W, V, lu, rows, scale, ks, out_values, out_vectors, several_lu, several_state,
                n, K, want_vector, dense):
    """_solve_lanes at address ``solver`` (lane_solver's for the arrays' dtype) on the arrays' memory
    (C-contiguous), called as Numba calls a cfunc's wrapper: its arguments' LLVM value types."""
    arrays = (W, V, lu, rows, scale, ks, out_values, out_vectors, several_lu, several_state)
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in arrays):
        return None  # a typing error: only a contiguous array's memory is one pointer's
    if ks.dtype != types.int64 or any(a.dtype != W.dtype for a in arrays if a is not ks):
        return None
    arguments = _solver_arguments(W.dtype)

    def codegen(context, builder, sig, args):
        values = [context.make_array(t)(context, builder, a).data for t, a in zip(sig.args[1:11], args[1:11])]
        values += args[11:]  # intp, intp, boolean, boolean: the signature's below
        function_type = ir.FunctionType(context.get_value_type(types.void),
                                        [context.get_value_type(t) for t in arguments])
        builder.call(builder.inttoptr(args[0], function_type.as_pointer()), values)
        return context.get_dummy_value()

    return types.void(types.intp, *arrays, *arguments[10:]), codegen


@njit
def solve_lanes(solver, dense, W, scale, ks, want_vector, work, out_values, out_vectors, several):
    """pairs (dense) or tridiagonal_pairs (not transformed) of a block through ``solver`` (lane_solver's
    address for the arrays' dtype): the same numbers as calling them here."""
    _, V, lu, rows = work
    call_solver(solver, W, V, lu, rows, scale, ks, out_values, out_vectors, several[0], several[1], W.shape[0],
                ks.shape[0], want_vector, dense)


@njit
def identity_lane(W, lane, scale):
    """Lane ``lane`` of W the identity, unscaled: what an unused, zero or non-finite lane solves
    (quickly; the caller writes its own answer)."""
    n = W.shape[0]
    for i in range(n):
        for j in range(i):
            W[i, j, lane] = 0.0
        W[i, i, lane] = 1.0
    scale[0, lane] = 1.0


@njit
def load_lane(A, lower, W, lane, scale):
    """The triangle of A (n, n) that is read into lane ``lane`` of W's lower triangle, scaled by
    a power of two to max |a| in [0.5, 1) (scale[0, lane]); returns 0, or 1 (a NaN/inf entry) or 2
    (a zero matrix), leaving the identity in the lane."""
    n = A.shape[0]
    largest = 0.0
    for i in range(n):
        for j in range(i + 1):
            a = A[i, j] if lower else A[j, i]
            if not np.isfinite(a):
                identity_lane(W, lane, scale)
                return 1
            W[i, j, lane] = a
            largest = max(largest, abs(a))
    return scale_lane(W, lane, scale, largest)


@njit
def packed_lane_scale(packed, lane, scale):
    """The checks of a lower triangle packed row by row (a_00, a_10, a_11, a_20, ...: n(n+1)/2 entries,
    all of ``packed``) as load_lane makes them: 0 with scale[0, lane] the power of two that takes max |a|
    to [0.5, 1), 1 (a NaN/inf entry) or 2 (a zero matrix), scale left as it is. The largest |a| and the
    checks a vector of entries at a time."""
    L = packed.shape[0]
    width = lane_count(packed)
    whole = L - L % width
    largest_vector = splat(packed, 0.0)
    finite = largest_vector == 0.0
    for p0 in range(0, whole, width):
        a = absolute(load_at(packed, p0))
        finite = finite & (a < np.inf)  # false for NaN and inf
        largest_vector = maximum(largest_vector, a)
    largest = largest_lane(largest_vector) if whole else 0.0
    ok = all_true(finite)
    for p in range(whole, L):
        a = abs(packed[p])
        ok = ok and a < np.inf
        largest = max(largest, a)
    if not ok:
        return 1
    if largest == 0.0:
        return 2
    scale[0, lane] = math.ldexp(1.0, -math.frexp(largest)[1])
    return 0


@njit
def load_packed_lanes(stage, used, status, W, scale, block):
    """Lanes 0..used-1 of W's lower triangle from the triangles packed row by row in stage's rows (lanes,
    n(n+1)/2), checked and scaled as load_lane does (status[lane]: 0, 1 or 2), the other lanes and those
    of status 1 or 2 the identity. A vector's width of entries of every lane at a time is transposed in
    registers (transpose_block, through ``block``: width x width) and stored as one vector an entry:
    the scalar store of each entry of each lane was half the loading of a gathered lane. Every stored
    value is the entry times its lane's power of two, as a lane loaded alone."""
    n, lanes = W.shape[0], W.shape[2]
    L = stage.shape[1]
    for lane in range(used):
        status[lane] = packed_lane_scale(stage[lane], lane, scale)
    stage1, W1 = stage.reshape(-1), W.reshape(-1)
    factor = load(scale, 0)  # (the lanes that become the identity multiply what is overwritten below)
    whole = L - L % lanes
    i = j = 0  # the entry's place in the triangle
    for p0 in range(0, whole, lanes):
        transpose_block(stage1, p0, L, block)
        for k in range(lanes):
            store_at(W1, (i * n + j) * lanes, load_at(block, k * lanes) * factor)
            j += 1
            if j > i:
                i, j = i + 1, 0
    for p in range(whole, L):
        for lane in range(lanes):
            W[i, j, lane] = stage[lane, p] * scale[0, lane]
        j += 1
        if j > i:
            i, j = i + 1, 0
    for lane in range(lanes):
        if lane >= used or status[lane] != 0:
            identity_lane(W, lane, scale)


@njit
def scale_lane(W, lane, scale, largest):
    """A loaded lane scaled by a power of two to max |a| (``largest``) in [0.5, 1); 2 and the
    identity where it is a zero matrix, else 0."""
    n = W.shape[0]
    if largest == 0.0:
        identity_lane(W, lane, scale)
        return 2
    s = math.ldexp(1.0, -math.frexp(largest)[1])
    scale[0, lane] = s
    for i in range(n):
        for j in range(i + 1):
            W[i, j, lane] *= s
    return 0


@njit
def load_tridiagonal_lane(diagonal, off, work, lane, scale):
    """A tridiagonal matrix -- diagonal (n,), off-diagonal off[:n - 1] -- into lane ``lane`` of
    work's rows d and e, scaled as load_lane does; the same status (1: NaN/inf, 2: zero, which
    leave the identity in the lane)."""
    rows = work[3]
    d, e = rows[1], rows[2]
    n = diagonal.shape[0]
    largest = 0.0
    for i in range(n):
        a = diagonal[i]
        b = off[i] if i < n - 1 else 0.0
        if not (np.isfinite(a) and np.isfinite(b)):
            identity_tridiagonal_lane(work, lane, scale)
            return 1
        largest = max(largest, abs(a), abs(b))
    if largest == 0.0:
        identity_tridiagonal_lane(work, lane, scale)
        return 2
    s = math.ldexp(1.0, -math.frexp(largest)[1])
    scale[0, lane] = s
    for i in range(n):
        d[i, lane] = diagonal[i] * s
        e[i, lane] = off[i] * s if i < n - 1 else 0.0
    return 0


@njit
def identity_tridiagonal_lane(work, lane, scale):
    """identity_lane for work's tridiagonal rows d and e."""
    rows = work[3]
    for i in range(rows.shape[1]):
        rows[1, i, lane] = 1.0
        rows[2, i, lane] = 0.0
    scale[0, lane] = 1.0


@njit
def store_lane(status, lane, ks, want_vector, lane_values, lane_vectors, values, vectors):
    """Lane ``lane``'s answer into values (K,) and vectors (K, n): the solved pair, NaN (status
    1) or lambda = 0 and q = e_k (status 2)."""
    n = lane_vectors.shape[1]
    for j in range(ks.shape[0]):
        if status == 0:
            values[j] = lane_values[j, lane]
        else:
            values[j] = np.nan if status == 1 else 0.0
        if want_vector:
            for i in range(n):
                if status == 0:
                    vectors[j, i] = lane_vectors[j, i, lane]
                elif status == 1:
                    vectors[j, i] = np.nan
                else:
                    vectors[j, i] = 1.0 if i == ks[j] else 0.0


@njit
def dense_range(A, lower, ks, want_vector, values, vectors, start, stop, solver):
    """Every matrix A[b], b in [start, stop), a vector's width of them at a time (``solver``: lane_solver's)."""
    n = A.shape[1]
    work = lane_work(n, A)
    W = work[0]
    scale, status, lane_values, lane_vectors, several = lane_block(n, ks.shape[0], A)
    lanes = scale.shape[1]
    for b0 in range(start, stop, lanes):
        used = min(lanes, stop - b0)
        for lane in range(lanes):
            if lane < used:
                status[lane] = load_lane(A[b0 + lane], lower, W, lane, scale)
            else:
                identity_lane(W, lane, scale)
        solve_lanes(solver, bool(True), W, scale, ks, want_vector, work, lane_values, lane_vectors, several)
        for lane in range(used):
            store_lane(status[lane], lane, ks, want_vector, lane_values, lane_vectors, values[b0 + lane],
                       vectors[b0 + lane])


@njit
def tridiagonal_range(diagonals, offs, ks, want_vector, values, vectors, start, stop, solver):
    """Every tridiagonal matrix (diagonals[b], offs[b]), b in [start, stop), a vector's width of
    them at a time (``solver``: lane_solver's)."""
    n = diagonals.shape[1]
    work = lane_work(n, diagonals)
    scale, status, lane_values, lane_vectors, several = lane_block(n, ks.shape[0], diagonals)
    lanes = scale.shape[1]
    for b0 in range(start, stop, lanes):
        used = min(lanes, stop - b0)
        for lane in range(lanes):
            if lane < used:
                status[lane] = load_tridiagonal_lane(diagonals[b0 + lane], offs[b0 + lane], work, lane, scale)
            else:
                identity_tridiagonal_lane(work, lane, scale)
        solve_lanes(solver, bool(False), work[0], scale, ks, want_vector, work, lane_values, lane_vectors, several)
        for lane in range(used):
            store_lane(status[lane], lane, ks, want_vector, lane_values, lane_vectors, values[b0 + lane],
                       vectors[b0 + lane])
