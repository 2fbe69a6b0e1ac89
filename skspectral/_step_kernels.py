"""Small compiled pieces of the CPU's compiled training step (Numba; imported on first use where
Numba imports): the model's diagonal mu and its gradient, and every loss's value and gradient
(the classifiers' and each regression loss). Each replaces a dozen torch ops of ~10 us each on a 2-core
machine (more than the arithmetic) with one call; the same formulas as the torch ops, summed in order (so equal to
them to rounding, not to the bit: sums are float64, in order). ``training_pass`` runs a whole step's
kernels (these, the symmetric tables' and the Numba backend's gathered eigenpairs) in one call.
"""

import functools
import math

import numba
import numpy as np

from ._kernel_cache import keep_kernel_cache_fresh
from ._encoding_kernels import (prefix_forward_parallel, prefix_forward_serial, symmetric_backward_parallel,
                                symmetric_backward_serial, symmetric_forward_parallel, symmetric_forward_serial)
from ._loss_codes import TRAINING_LOSSES
from .eig._numba_kernels import gathered_grad_parallel, gathered_grad_serial, gathered_parallel, gathered_serial

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)

njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")

# torch's softplus: x above this is returned as it is (log1p(exp(x)) == x there in float64 too)
SOFTPLUS_THRESHOLD = 20.0
# weighted_mean's floor of a weight sum: a batch of zero-weight rows contributes nothing, not 0/0
_TINY = float(np.finfo(np.float32).tiny)


@njit
def diagonal(start, increments, out):
    """out (models, n) = [s, s + cumsum(softplus(u))] per model: SpectralModel.mu's formula, from
    mu_start (models, 1) and mu_increments (models, n - 1)."""
    for m in range(out.shape[0]):
        value = start[m, 0]
        out[m, 0] = value
        total = 0.0
        for i in range(increments.shape[1]):
            u = increments[m, i]
            total += u if u > SOFTPLUS_THRESHOLD else math.log1p(math.exp(u))
            out[m, i + 1] = value + total


@njit
def diagonal_grad(grad, increments, grad_start, grad_increments):
    """The gradients of mu_start and mu_increments from mu's (grad, (models, n)): the start's is the
    sum of every entry's; an increment's the sum of the entries after it times softplus' slope."""
    for m in range(grad.shape[0]):
        after = 0.0
        for i in range(increments.shape[1] - 1, -1, -1):
            after += grad[m, i + 1]
            u = increments[m, i]
            grad_increments[m, i] = after if u > SOFTPLUS_THRESHOLD else after / (1.0 + math.exp(-u))
        grad_start[m, 0] = grad[m, 0] + after


# The losses' value-and-gradient kernels: (output, target (B,), weight (B,), parameters, gradient) -> the
# loss; ``parameters`` (a float64 array) holds a loss's constants (huber's threshold, the quantile
# levels), empty for the others. A row's target and weight count for every member (and quantile).
@njit
def squared_error_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean of (output - target)^2 over rows b and members m (output (B, M), a row's
    target and weight for every member) and its gradient into gradient (B, M)."""
    B, M = output.shape
    total = weights = 0.0
    for b in range(B):
        for m in range(M):
            difference = output[b, m] - target[b]
            total += difference * difference * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            gradient[b, m] = 2.0 * (output[b, m] - target[b]) * (weight[b] * scale)
    return total * scale


@njit
def binary_log_loss_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean log-loss of logits output (B, M) against 0/1 targets (a row's for every
    member), computed stably, and its gradient (sigmoid(output) - target, weighted) into gradient."""
    B, M = output.shape
    total = weights = 0.0
    for b in range(B):
        for m in range(M):
            z = output[b, m]
            total += (max(z, 0.0) - z * target[b] + math.log1p(math.exp(-abs(z)))) * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            z = output[b, m]
            e = math.exp(-abs(z))
            probability = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
            gradient[b, m] = (probability - target[b]) * (weight[b] * scale)
    return total * scale


@njit
def _log_sum_exp(logits):
    """log sum exp of the logits, summed from the largest (no overflow)."""
    top = logits[0]
    for c in range(1, logits.shape[0]):
        top = max(top, logits[c])
    s = 0.0
    for c in range(logits.shape[0]):
        s += math.exp(logits[c] - top)
    return top + math.log(s)


@njit
def multiclass_log_loss_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean softmax cross-entropy of logits output (B, M, C) against class indices
    (target (B,), a row's for every member), and its gradient (softmax(output) - one-hot, weighted)
    into gradient (B, M, C)."""
    B, M, C = output.shape
    total = weights = 0.0
    for b in range(B):
        t = int(target[b])
        for m in range(M):
            log_total = _log_sum_exp(output[b, m])
            total += (log_total - output[b, m, t]) * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        t = int(target[b])
        for m in range(M):
            log_total = _log_sum_exp(output[b, m])
            for c in range(C):
                probability = math.exp(output[b, m, c] - log_total)
                gradient[b, m, c] = (probability - (1.0 if c == t else 0.0)) * (weight[b] * scale)
    return total * scale


@njit
def absolute_error_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean of |output - target| (output (B, M)) and its gradient, sign(output - target)
    weighted (0 where they are equal, as torch's abs)."""
    B, M = output.shape
    total = weights = 0.0
    for b in range(B):
        for m in range(M):
            total += abs(output[b, m] - target[b]) * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            difference = output[b, m] - target[b]
            sign = 1.0 if difference > 0 else (-1.0 if difference < 0 else 0.0)
            gradient[b, m] = sign * (weight[b] * scale)
    return total * scale


@njit
def huber_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean Huber loss of output (B, M) with threshold parameters[0] (d): 0.5 r^2 where
    r = |output - target| <= d, else d (r - 0.5 d); its gradient output - target, or d sign(...)."""
    B, M = output.shape
    delta = parameters[0]
    total = weights = 0.0
    for b in range(B):
        for m in range(M):
            r = abs(output[b, m] - target[b])
            total += (0.5 * r * r if r <= delta else delta * (r - 0.5 * delta)) * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            difference = output[b, m] - target[b]
            if abs(difference) <= delta:
                slope = difference
            else:
                slope = delta if difference > 0 else -delta
            gradient[b, m] = slope * (weight[b] * scale)
    return total * scale


@njit
def pinball_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean pinball loss of output (B, M, Q) -- a member's values of Q indices, made
    non-decreasing along Q first as the model orders them (a running maximum, the last of equal values
    taking the gradient, as torch's cummax) -- at the levels parameters (Q,), averaged over members
    and levels, and its gradient with respect to the values (B, M, Q). Pinball max(q r, (q - 1) r)
    of r = target - output has slope -q where r > 0, 1 - q where r < 0 and their mean at r = 0 (torch's
    maximum splits a tie's gradient)."""
    B, M, Q = output.shape
    source = np.empty(Q, dtype=np.int64)
    total = weights = 0.0
    for b in range(B):
        for m in range(M):
            best = -np.inf
            for q in range(Q):
                value = output[b, m, q]
                if value >= best or value != value:  # (a NaN propagates, as in cummax)
                    best = value
                r = target[b] - best
                level = parameters[q]
                total += max(level * r, (level - 1.0) * r) * weight[b]
                weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            best = -np.inf
            for q in range(Q):
                value = output[b, m, q]
                if value >= best or value != value:
                    best = value
                    source[q] = q
                else:
                    source[q] = source[q - 1]
                gradient[b, m, q] = 0.0
            for q in range(Q):
                value = output[b, m, source[q]]
                r = target[b] - value
                level = parameters[q]
                above, below = level * r, (level - 1.0) * r
                slope = -level if above > below else (1.0 - level if above < below else 0.5 - level)
                gradient[b, m, source[q]] += slope * (weight[b] * scale)
    return total * scale


@njit
def poisson_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean Poisson unit deviance 2 (y log(y / mu) - y + mu) of mu = exp(output) (B, M)
    and its gradient 2 (mu - y)."""
    B, M = output.shape
    total = weights = 0.0
    for b in range(B):
        y = target[b]
        y_log_y = y * math.log(y) if y > 0 else 0.0  # (xlogy: 0 at y = 0)
        for m in range(M):
            total += 2.0 * (y_log_y - y * output[b, m] - y + math.exp(output[b, m])) * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            gradient[b, m] = 2.0 * (math.exp(output[b, m]) - target[b]) * (weight[b] * scale)
    return total * scale


@njit
def gamma_and_gradient(output, target, weight, parameters, gradient):
    """The weighted mean gamma unit deviance 2 (log(mu / y) + y / mu - 1) of mu = exp(output) (B, M)
    (y > 0) and its gradient 2 (1 - y / mu)."""
    B, M = output.shape
    total = weights = 0.0
    for b in range(B):
        y = target[b]
        log_y = math.log(y)
        for m in range(M):
            total += 2.0 * (output[b, m] - log_y + y * math.exp(-output[b, m]) - 1.0) * weight[b]
            weights += weight[b]
    scale = 1.0 / max(weights, _TINY)
    for b in range(B):
        for m in range(M):
            gradient[b, m] = 2.0 * (1.0 - target[b] * math.exp(-output[b, m])) * (weight[b] * scale)
    return total * scale


@njit
def add_frobenius_penalty(columns, grad_columns, factor):
    """0.5 factor sum ||A||_F^2 over packed lower triangles columns (models, C, n(n+1)/2), its
    gradient added to grad_columns (an off-diagonal entry stands for a_ij and a_ji: twice)."""
    add_frobenius_gradient(columns, grad_columns, factor)
    return frobenius_value(columns, factor)


@njit
def _twice(L):
    """A packed lower triangle's entries' weights in ||A||_F^2: 1 on the diagonal, 2 off it."""
    n = int(round((math.sqrt(8 * L + 1) - 1) / 2))
    twice = np.empty(L)
    p = 0
    for i in range(n):
        for j in range(i + 1):
            twice[p] = 1.0 if i == j else 2.0
            p += 1
    return twice


@njit
def add_frobenius_gradient(columns, grad_columns, factor):
    """add_frobenius_penalty's gradient alone, added to grad_columns (each model's apart: a group of
    models' on its thread, see grouped_backward)."""
    twice = _twice(columns.shape[2])
    for m in range(columns.shape[0]):
        for c in range(columns.shape[1]):
            a, grad = columns[m, c], grad_columns[m, c]
            for p in range(columns.shape[2]):
                grad[p] += factor * twice[p] * a[p]


@njit
def frobenius_value(columns, factor):
    """add_frobenius_penalty's value alone, over every model."""
    return 0.5 * factor * _weighted_squares(columns, _twice(columns.shape[2]))


# fastmath "reassoc" lets the sum vectorise: one running sum in order was a chain of dependent adds, ~0.1 ms a
# step on the 100k entries of a classifier's default penalty (churn's), ~10 times the arithmetic. The order is
# then the compiler's: fixed for a build of the kernel (every fit on a machine the same), its last bits free to
# differ between CPUs of other vector widths. Only the objective's value reads it, never a gradient.
@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _weighted_squares(columns, twice):
    """sum twice[p] columns[m, c, p]^2 over every entry, in float64."""
    total = 0.0
    for m in range(columns.shape[0]):
        for c in range(columns.shape[1]):
            a = columns[m, c]
            row = 0.0
            for p in range(columns.shape[2]):
                x = np.float64(a[p])
                row += twice[p] * x * x
            total += row
    return total


# The losses training_pass computes, by index (skspectral._loss_codes): a loss's value-and-gradient kernel above.
SQUARED_ERROR_LOSS = TRAINING_LOSSES.index("squared_error_and_gradient")
BINARY_LOG_LOSS = TRAINING_LOSSES.index("binary_log_loss_and_gradient")
MULTICLASS_LOSS = TRAINING_LOSSES.index("multiclass_log_loss_and_gradient")
ABSOLUTE_ERROR_LOSS = TRAINING_LOSSES.index("absolute_error_and_gradient")
HUBER_LOSS = TRAINING_LOSSES.index("huber_and_gradient")
PINBALL_LOSS = TRAINING_LOSSES.index("pinball_and_gradient")
POISSON_LOSS = TRAINING_LOSSES.index("poisson_and_gradient")
# the losses whose kernel takes (B, members, a last axis): classes; quantiles, several indices the pinball
# kernel orders as the model does (its output need not be a view of the values), or one
LAST_AXIS_LOSSES = (MULTICLASS_LOSS, PINBALL_LOSS)


@njit(inline="always")
def loss_and_gradient(loss, output, grad_output, target, weight, loss_parameters):
    """The loss TRAINING_LOSSES[loss] of ``output`` (B, members, classes, quantiles or 1) and its gradient
    into ``grad_output`` (the same shape): the kernel the loss's index names. Returns the loss."""
    B = output.shape[0]
    if loss == MULTICLASS_LOSS:
        return multiclass_log_loss_and_gradient(output, target, weight, loss_parameters, grad_output)
    elif loss == PINBALL_LOSS:
        return pinball_and_gradient(output, target, weight, loss_parameters, grad_output)
    else:  # (B, members)
        flat = output.reshape((B, output.shape[1] * output.shape[2]))
        grad_flat = grad_output.reshape((B, output.shape[1] * output.shape[2]))
        if loss == SQUARED_ERROR_LOSS:
            return squared_error_and_gradient(flat, target, weight, loss_parameters, grad_flat)
        elif loss == BINARY_LOG_LOSS:
            return binary_log_loss_and_gradient(flat, target, weight, loss_parameters, grad_flat)
        elif loss == ABSOLUTE_ERROR_LOSS:
            return absolute_error_and_gradient(flat, target, weight, loss_parameters, grad_flat)
        elif loss == HUBER_LOSS:
            return huber_and_gradient(flat, target, weight, loss_parameters, grad_flat)
        elif loss == POISSON_LOSS:
            return poisson_and_gradient(flat, target, weight, loss_parameters, grad_flat)
        else:
            return gamma_and_gradient(flat, target, weight, loss_parameters, grad_flat)


# inline="always": training_steps, a fit's one caller, takes this body into its own compilation, so the
# pass is not compiled (and its callees' code optimised again) as a library of its own first: a first fit
# on an empty cache ~5-10 s shorter. Called from Python (CompiledDensePass.step), it compiles as any kernel.
@njit(inline="always")
def training_pass(loss, target, weight, rows, weights, frobenius_factor, state):
    """A compiled training step's pass in one call: the kernels CompiledDensePass otherwise calls one
    by one from Python (~0.15 ms of Python and dispatch a step), in the same order on the same arrays,
    so the same numbers. The batch: its targets, sample weights and gathered terms (rows, weights);
    ``state`` (:meth:`skspectral._compiled_pass.CompiledDensePass.step_state`): what stays from step to
    step -- the loss's views of the values and of their gradient, the symmetric tables' kernel
    arguments (weight, columns and prefix, the gathered tables) and thread split, the diagonal mu and
    its parameters, the indices and the C functions' addresses (the lanes' solve, gathered_range's and the
    gradient's: eig._numba_backend.GatheredSteps.c_functions), the value, vector
    and gradient buffers, the kernels' thread splits, and ``packed``: whether the columns hold the
    parameters themselves (the lower triangles of a symmetric weight, see the pass's ``pack``), whose
    gradient then goes to ``grad_packed``, and the loss's constants (``loss_parameters``). It runs the
    symmetric tables (packed: only the prefix sums), the diagonal mu, the batch's gathered
    eigenpairs (the Numba backend's kernel), the loss TRAINING_LOSSES[loss] and its gradient with
    respect to the output (B, members, classes, quantiles or 1: a view of the values), the eigenvalues' gradient
    into the columns', prefix' and mu's, a Frobenius penalty's (frobenius_factor != 0), the tables'
    backward and the diagonal's. A kernel runs in ``*_chunks`` over Numba's threads, or on this
    thread where 0 (run_kernel's choice, made by the caller). Returns (the loss, the penalty)."""
    (output, grad_output, tables_forward, forward_chunks, mu_start, mu_increments, mu, ks, c_functions, values,
     vectors, values_chunks, grad_values, grads, grad_chunks, tables_backward, backward_chunks, grad_start,
     grad_increments, packed, grad_packed, loss_parameters) = state
    solver, range_kernel, grad_kernel = c_functions
    columns, prefix = tables_forward[3], tables_forward[4]
    if packed:  # the columns are the parameters: their prefix sums only
        if forward_chunks > 0:
            prefix_forward_parallel(columns, tables_forward[1], prefix, forward_chunks)
        else:
            prefix_forward_serial(columns, tables_forward[1], prefix)
    elif forward_chunks > 0:
        symmetric_forward_parallel(*tables_forward, forward_chunks)
    else:
        symmetric_forward_serial(*tables_forward)
    diagonal(mu_start, mu_increments, mu)
    # bool(True): a run-time flag, so these callees compile once for every caller (_numba_support)
    if values_chunks > 0:
        gathered_parallel(columns, prefix, mu, rows, weights, ks, bool(True), bool(True), values, vectors, solver,
                          range_kernel, values_chunks)
    else:
        gathered_serial(columns, prefix, mu, rows, weights, ks, bool(True), bool(True), values, vectors, solver,
                        range_kernel)
    data_loss = loss_and_gradient(loss, output, grad_output, target, weight, loss_parameters)
    grad_columns, grad_prefix, grad_mu = grads
    if grad_chunks > 0:
        gathered_grad_parallel(grad_columns, grad_prefix, grad_mu, grad_values, vectors, rows, weights, bool(True),
                               grad_kernel, grad_chunks)
    else:
        gathered_grad_serial(grad_columns, grad_prefix, grad_mu, grad_values, vectors, rows, weights, bool(True),
                             grad_kernel)
    penalty = 0.0
    if frobenius_factor != 0.0:  # the columns still hold this step's matrices
        penalty = add_frobenius_penalty(columns, grad_columns, frobenius_factor)
    grad_columns, grad_prefix, bin_columns, other, grad_weight, half = tables_backward
    grad_weight = grad_packed if packed else grad_weight  # (the packed parameters' gradient, or W's)
    if backward_chunks > 0:
        symmetric_backward_parallel(grad_columns, grad_prefix, bin_columns, other, grad_weight, half, backward_chunks)
    else:
        symmetric_backward_serial(grad_columns, grad_prefix, bin_columns, other, grad_weight, half)
    diagonal_grad(grad_mu, mu_increments, grad_start, grad_increments)
    return data_loss, penalty


# ---- members that share their matrices (skspectral._compiled_pass.SharedMembersPass) -------------------
# Every model's matrices as (models, columns, entries): the own models first, then for each sharing member
# m its outputs' r_{m,j} S_{o,j}. Entries are full matrices (n n, each weighing 1) or packed lower
# triangles (an off-diagonal entry stands for two of the matrix's, so it weighs 2 in an inner product).
@njit
def compose_shared(columns, shared, scales, gain, n_own):
    """columns[n_own + m O + o, j] = gain scales[m, j] shared[o, j] for the sharing members m and outputs o
    (the factors r are stored divided by ``gain``: SpectralModel.shared_factor_gain)."""
    n_outputs, n_columns, n_entries = shared.shape
    for m in range(scales.shape[0]):
        for o in range(n_outputs):
            model = n_own + m * n_outputs + o
            for j in range(n_columns):
                r = gain * scales[m, j]
                for e in range(n_entries):
                    columns[model, j, e] = r * shared[o, j, e]


@njit
def shared_grads(grad, shared, scales, gain, entry_weights, n_own, grad_shared, grad_scales):
    """The chain rule from every model's matrices' gradient ``grad`` to the shared set's and the stored
    factors': with r = gain scales, grad_shared[o, j] = sum_m r[m, j] grad[n_own + m O + o, j]; grad_scales[m, j]
    = gain sum_o <shared[o, j], grad[n_own + m O + o, j]> (entry_weights: each entry's weight in the inner
    product). Sums in float64, each over m in order (the entries side by side: a loop over the members'
    rows, each contiguous, that vectorises; ~4x faster than an entry's members innermost, the same bits)."""
    n_outputs, n_columns, n_entries = shared.shape
    n_shared = scales.shape[0]
    totals = np.empty(n_entries, np.float64)
    for o in range(n_outputs):
        for j in range(n_columns):
            totals[:] = 0.0
            for m in range(n_shared):
                r = gain * scales[m, j]
                member_grad = grad[n_own + m * n_outputs + o, j]
                for e in range(n_entries):
                    totals[e] += r * member_grad[e]
            for e in range(n_entries):
                grad_shared[o, j, e] = totals[e]
    for m in range(n_shared):
        for j in range(n_columns):
            total = 0.0
            for o in range(n_outputs):
                model = n_own + m * n_outputs + o
                for e in range(n_entries):
                    total += entry_weights[e] * shared[o, j, e] * grad[model, j, e]
            grad_scales[m, j] = gain * total


@njit
def add_factor_pull(scales, grad_scales, rounded, factor_l1, data_loss):
    """The shared factors' pull (shared_factor_l1): grad_scales += pull sign(scales) with pull = factor_l1
    data_loss, each rounded to the factors' dtype first as autograd's penalty rounds them (``rounded``: two
    entries of that dtype to round in), so the gradient is the autograd path's to the bit. Returns the
    pull's value, pull sum |scales| (float64)."""
    rounded[0] = data_loss
    rounded[1] = factor_l1
    rounded[0] = rounded[0] * rounded[1]
    pull = rounded[0]
    total = 0.0
    for m in range(scales.shape[0]):
        for j in range(scales.shape[1]):
            r = scales[m, j]
            if r > 0:
                grad_scales[m, j] += pull
            elif r < 0:
                grad_scales[m, j] -= pull
            total += abs(np.float64(r))
    return np.float64(pull) * total


# ---- a step's models in groups, a group a thread (skspectral._training._steps_kernel.grouped_step) ------
# training_pass's kernels for models [m0, m1) alone, on the calling thread: every kernel but the loss works
# model by model, so a group's numbers are the whole pass's. A group's values, their gradient and vectors sit
# in flat buffers, the group's block (B, m1 - m0, K[, n]) from B K m0 (B K n m0) on.
@njit
def group_block(flat, B, m0, m1, inner):
    """The group's (B, m1 - m0, inner) block of a flat buffer (see above)."""
    return flat[B * inner * m0:B * inner * m1].reshape((B, m1 - m0, inner))


@njit
def group_forward(m0, m1, columns, bin_columns, prefix, mu_start, mu_increments, mu, ks, solver, range_kernel, rows,
                  weights, group_values, group_vectors):
    """The packed columns' prefix sums, the diagonal mu and the gathered eigenpairs of models [m0, m1)
    (training_pass's forward, its arrays by name; the columns are the parameters, see its ``packed``)."""
    B, K, n = rows.shape[0], ks.shape[0], mu.shape[1]
    prefix_forward_serial(columns[m0:m1], bin_columns, prefix[m0:m1])
    diagonal(mu_start[m0:m1], mu_increments[m0:m1], mu[m0:m1])
    vectors = group_block(group_vectors, B, m0, m1, K * n).reshape((B, m1 - m0, K, n))
    gathered_serial(columns[m0:m1], prefix[m0:m1], mu[m0:m1], rows, weights, ks, bool(True), bool(True),
                    group_block(group_values, B, m0, m1, K), vectors, solver, range_kernel)


@njit
def group_backward(m0, m1, columns, grad_columns, grad_prefix, grad_mu, bin_columns, other, grad_packed, half,
                   mu_increments, grad_start, grad_increments, grad_kernel, rows, weights, frobenius_factor,
                   group_grad_values, group_vectors):
    """The gradients of models [m0, m1) from their values' (training_pass's backward, its arrays by name):
    the gathered tables' and the diagonal's, a Frobenius penalty's gradient, the tables' backward into the
    packed parameters' gradient, the diagonal parameters'."""
    B, K, n = rows.shape[0], group_grad_values.shape[0] // (rows.shape[0] * grad_mu.shape[0]), grad_mu.shape[1]
    vectors = group_block(group_vectors, B, m0, m1, K * n).reshape((B, m1 - m0, K, n))
    gathered_grad_serial(grad_columns[m0:m1], grad_prefix[m0:m1], grad_mu[m0:m1],
                         group_block(group_grad_values, B, m0, m1, K), vectors, rows, weights, bool(True), grad_kernel)
    if frobenius_factor != 0.0:
        add_frobenius_gradient(columns[m0:m1], grad_columns[m0:m1], frobenius_factor)
    symmetric_backward_serial(grad_columns[m0:m1], grad_prefix[m0:m1], bin_columns, other, grad_packed[m0:m1], half)
    diagonal_grad(grad_mu[m0:m1], mu_increments[m0:m1], grad_start[m0:m1], grad_increments[m0:m1])


@njit
def copy_groups(bounds, group_flat, full, into_full):
    """Between full (B, models, K) and the groups' blocks of a flat buffer: the blocks into full where
    ``into_full`` (the values, for the loss), else full into the blocks (the values' gradient)."""
    B, K = full.shape[0], full.shape[2]
    for g in range(bounds.shape[0] - 1):
        block = group_block(group_flat, B, bounds[g], bounds[g + 1], K)
        for b in range(B):
            for j in range(block.shape[1]):
                for k in range(K):
                    if into_full:
                        full[b, bounds[g] + j, k] = block[b, j, k]
                    else:
                        block[b, j, k] = full[b, bounds[g] + j, k]
