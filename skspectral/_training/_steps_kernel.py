"""Consecutive CPU training steps in one compiled call (Numba; imported on first use by
.compiled_steps where Numba imports): each step the model's compiled pass
(``skspectral._step_kernels.training_pass``: forward, loss, backward) on its batch, then the
CPU Adam's update (``._adam_kernel.adam_update``) of every parameter. The same two kernels the
one-step path calls from Python, in the same order on the same arrays: the same numbers, without
~0.3 ms of Python, dispatch and torch's small ops around every step of ~1-2 ms. The rows' terms come
packed as the fit keeps them (floats) and each step unpacks its batch's: torch's conversions of a
block's (an integer copy of the table rows, a contiguous one of the weights) took 8-10 % of a fit.

With several threads and models that divide among them evenly, a step runs its models in groups, a group a
thread (``grouped_step``), rather than each kernel's rows over the threads: the same numbers (every kernel but
the loss works model by model; the loss runs on one thread), and a group's tables, gradients and Adam update
stay on its own thread all through a step. On a 2-core VM whose second vCPU at times shares a busy core, two
threads over the rows then gained nothing (their kernels read what the other thread wrote a moment before),
while two models a thread each ran 1.8x as fast (benchmarks/RESULTS.md, section 9). Those steps are a kernel of
their own (``grouped_training_steps``), which also runs such a fit's one-thread steps as one group: a process
compiles only the kernel its fits run.
"""

import numba
import numpy as np

from .._step_kernels import (add_factor_pull, compose_shared, copy_groups, frobenius_value, group_backward,
                             group_forward, loss_and_gradient, shared_grads, training_pass)
from .._kernel_cache import keep_kernel_cache_fresh
from ._adam_kernel import adam_update

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def training_steps(n_steps, batch_size, loss, targets, sample_weights, terms, batch, frobenius_factor, state,
                   adam_arrays, adam_scalars, step_losses, shared):
    """``n_steps`` steps on consecutive batches of ``batch_size`` rows: step s takes rows
    [s batch_size, (s + 1) batch_size) of targets, sample_weights and terms (rows, 2, K: each row's table
    rows as floats, exact, then their weights; unpacked into ``batch``'s table rows and weights, batch_size
    rows each), runs training_pass (its ``loss``, ``frobenius_factor`` and ``state``: its kernels on the
    calling thread or their rows over the threads), then adam_update on each parameter's (param, grad,
    exp_avg, exp_avg_sq) flat arrays of ``adam_arrays`` with the step's scalars ``adam_scalars[s]``
    (``._adam_kernel.step_scalars``). step_losses[s] = (the data loss, the penalty) of step s. ``shared``:
    members that share their matrices (skspectral._compiled_pass.SharedMembersPass.shared_state; none where
    its count is 0): after the pass the packed gradient goes to the shared set and the factors
    (shared_grads), the factors' pull is added where its factor is not 0 (add_factor_pull: its value into
    the step's penalty), and after Adam the sharing members' packed columns are composed again
    (compose_shared)."""
    (n_shared, n_own, grad_packed, columns, shared_columns, grad_shared, scales, gain, grad_scales,
     entry_weights, factor_l1, rounded) = shared
    batch_rows, batch_term_weights = batch
    for s in range(n_steps):
        first, last = s * batch_size, (s + 1) * batch_size
        unpack_batch(terms, first, batch_rows, batch_term_weights)
        scalars = adam_scalars[s]
        data_loss, penalty = training_pass(loss, targets[first:last], sample_weights[first:last], batch_rows,
                                           batch_term_weights, frobenius_factor, state)
        step_losses[s, 0] = data_loss
        step_losses[s, 1] = penalty
        if n_shared > 0:
            shared_grads(grad_packed, shared_columns, scales, gain, entry_weights, n_own, grad_shared, grad_scales)
            if factor_l1 != 0.0:
                step_losses[s, 1] += add_factor_pull(scales, grad_scales, rounded, factor_l1, data_loss)
        for p in range(len(adam_arrays)):
            param, grad, exp_avg, exp_avg_sq = adam_arrays[p]
            adam_update(param, grad, exp_avg, exp_avg_sq, scalars[0], scalars[1], scalars[2], scalars[3], scalars[4],
                        scalars[5], scalars[6])
        if n_shared > 0:
            compose_shared(columns, shared_columns, scales, gain, n_own)


# A kernel of its own, not a branch of training_steps: a process compiles only the one its fits run (a fit
# whose models run in groups runs its one-thread steps as one group too; see CompiledSteps._groups), and
# each is ~10 s of a first fit's compile on an empty Numba cache.
@numba.njit(cache=True, nogil=True, error_model="numpy")
def grouped_training_steps(n_steps, batch_size, loss, targets, sample_weights, terms, batch, frobenius_factor, state,
                           adam_arrays, adam_scalars, step_losses, shared, groups, adam_slots):
    """training_steps' steps with the models in groups, a group a thread (grouped_step; ``groups``: the
    bounds of the G >= 1 groups, G + 1 model indices; ``adam_slots``: see grouped_step): the same numbers
    (every kernel but the loss works model by model; the loss runs on the calling thread)."""
    batch_rows, batch_term_weights = batch
    values = state[9]
    group_values, group_grad_values = np.empty(values.size, values.dtype), np.empty(values.size, values.dtype)
    pull = np.zeros(1)  # (grouped_step's: the shared factors' pull's value)
    for s in range(n_steps):
        first, last = s * batch_size, (s + 1) * batch_size
        unpack_batch(terms, first, batch_rows, batch_term_weights)
        data_loss, penalty = grouped_step(loss, targets[first:last], sample_weights[first:last], batch_rows,
                                          batch_term_weights, frobenius_factor, state, shared, groups, group_values,
                                          group_grad_values, adam_arrays, adam_slots, adam_scalars[s], pull)
        step_losses[s, 0] = data_loss
        step_losses[s, 1] = penalty


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def unpack_batch(terms, first, batch_rows, batch_term_weights):
    """A step's table rows and their weights from its rows' packed terms, from row ``first`` on."""
    n_terms = terms.shape[2]
    for i in range(batch_rows.shape[0]):
        packed = terms[first + i]
        for t in range(n_terms):
            batch_rows[i, t] = np.int64(packed[0, t])  # (torch's .long(): the floats are exact integers)
            batch_term_weights[i, t] = packed[1, t]


# The slots of grouped_step's adam_slots: a parameter's index in adam_arrays (-1: none), and for the first three
# how many models lead its flat array (its entries model by model: a group's Adam updates its own models').
SLOT_WEIGHT, SLOT_MU_START, SLOT_MU_INCREMENTS, SLOT_SHARED_WEIGHT, SLOT_MEMBER_SCALES = range(5)


# inline="always", as training_pass (one caller: grouped_training_steps)
@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def grouped_step(loss, target, weight, rows, weights, frobenius_factor, state, shared, groups, group_values,
                 group_grad_values, adam_arrays, adam_slots, scalars, pull):
    """One step of training_steps (its pass, the shared set's chain rule and pull, Adam, the composed sharing
    members) with the models in groups, a group a thread (``groups``: their bounds): each group's forward
    (group_forward), then on this thread the loss over every model and a Frobenius penalty's value, then each
    group's backward and Adam update of its models' entries (group_backward, group_adam); the group that
    holds every sharing member also runs the shared set's steps (shared_group_step), else this thread does
    after the groups. ``adam_slots`` (2, 5): the parameters' indices in adam_arrays and the leading models'
    counts (see the SLOT_ names); ``pull`` (1,): the buffer of the pull's value. Returns (the loss, the penalty:
    the pull's value included)."""
    (output, grad_output, tables_forward, _, mu_start, mu_increments, mu, ks, c_functions, values, vectors, _,
     grad_values, grads, _, tables_backward, _, grad_start, grad_increments, _, grad_packed, loss_parameters) = state
    (n_shared, n_own, _, _, shared_columns, grad_shared, scales, gain, grad_scales, entry_weights, factor_l1,
     rounded) = shared
    solver, range_kernel, grad_kernel = c_functions
    columns, prefix = tables_forward[3], tables_forward[4]
    grad_columns, grad_prefix, grad_mu = grads
    bin_columns, other, half = tables_backward[2], tables_backward[3], tables_backward[5]
    flat_vectors = vectors.reshape(-1)  # (the groups' vectors: vectors' own buffer, not read otherwise here)
    # one group (a step on one thread) without a parallel region: a region each step kept Numba's other
    # threads spinning between them, a core busy for nothing (and the thread tuner read the machine as busy)
    one_group = groups.shape[0] == 2
    if one_group:
        group_forward(groups[0], groups[1], columns, bin_columns, prefix, mu_start, mu_increments, mu, ks, solver,
                      range_kernel, rows, weights, group_values, flat_vectors)
    else:
        grouped_forward(groups, columns, bin_columns, prefix, mu_start, mu_increments, mu, ks, solver, range_kernel,
                        rows, weights, group_values, flat_vectors)
    copy_groups(groups, group_values, values, bool(True))  # (bool(...): a run-time flag, see _numba_support)
    data_loss = loss_and_gradient(loss, output, grad_output, target, weight, loss_parameters)
    penalty = 0.0
    if frobenius_factor != 0.0:  # before the groups' Adam moves the columns
        penalty = frobenius_value(columns, frobenius_factor)
    copy_groups(groups, group_grad_values, grad_values, bool(False))
    # a parallel region takes arrays, not tuples of them: each parameter's by name (the shared set's: the
    # weight's stand in where there is none, never read)
    index, models = adam_slots[0], adam_slots[1]
    w, w_grad, w_avg, w_avg_sq = adam_arrays[index[SLOT_WEIGHT]]
    s, s_grad, s_avg, s_avg_sq = adam_arrays[index[SLOT_MU_START]]
    i, i_grad, i_avg, i_avg_sq = adam_arrays[index[SLOT_MU_INCREMENTS]]
    shared_slot = index[SLOT_SHARED_WEIGHT] if n_shared > 0 else index[SLOT_WEIGHT]
    scales_slot = index[SLOT_MEMBER_SCALES] if n_shared > 0 else index[SLOT_WEIGHT]
    h, h_grad, h_avg, h_avg_sq = adam_arrays[shared_slot]
    r, r_grad, r_avg, r_avg_sq = adam_arrays[scales_slot]
    # the group that holds every sharing member (the last, where it starts at or before the first of them)
    shared_group = groups.shape[0] - 2 if n_shared > 0 and groups[groups.shape[0] - 2] <= n_own else -1
    pull[0] = 0.0
    if one_group:  # grouped_backward's body for its one group, on this thread (a call of its own compiled slower)
        first, last = groups[0], groups[1]
        group_backward(first, last, columns, grad_columns, grad_prefix, grad_mu, bin_columns, other, grad_packed,
                       half, mu_increments, grad_start, grad_increments, grad_kernel, rows, weights, frobenius_factor,
                       group_grad_values, flat_vectors)
        group_adam(first, last, w, w_grad, w_avg, w_avg_sq, models[SLOT_WEIGHT], scalars)
        group_adam(first, last, s, s_grad, s_avg, s_avg_sq, models[SLOT_MU_START], scalars)
        group_adam(first, last, i, i_grad, i_avg, i_avg_sq, models[SLOT_MU_INCREMENTS], scalars)
        if n_shared > 0:  # (the one group holds every sharing member)
            shared_group_step(n_own, columns, grad_packed, shared_columns, grad_shared, scales, gain, grad_scales,
                              entry_weights, factor_l1, rounded, data_loss, h, h_grad, h_avg, h_avg_sq, r, r_grad,
                              r_avg, r_avg_sq, scalars, pull)
        return data_loss, penalty + pull[0]
    grouped_backward(groups, columns, grad_columns, grad_prefix, grad_mu, bin_columns, other, grad_packed, half,
                     mu_increments, grad_start, grad_increments, grad_kernel, rows, weights, frobenius_factor,
                     group_grad_values, flat_vectors, w, w_grad, w_avg, w_avg_sq, models[SLOT_WEIGHT], s, s_grad,
                     s_avg, s_avg_sq, models[SLOT_MU_START], i, i_grad, i_avg, i_avg_sq, models[SLOT_MU_INCREMENTS],
                     scalars, shared_group, n_own, shared_columns, grad_shared, scales, gain, grad_scales,
                     entry_weights, factor_l1, rounded, data_loss, h, h_grad, h_avg, h_avg_sq, r, r_grad, r_avg,
                     r_avg_sq, pull)
    if n_shared > 0 and shared_group < 0:
        shared_group_step(n_own, columns, grad_packed, shared_columns, grad_shared, scales, gain, grad_scales,
                          entry_weights, factor_l1, rounded, data_loss, h, h_grad, h_avg, h_avg_sq, r, r_grad, r_avg,
                          r_avg_sq, scalars, pull)
    return data_loss, penalty + pull[0]


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def grouped_forward(groups, columns, bin_columns, prefix, mu_start, mu_increments, mu, ks, solver, range_kernel, rows,
                    weights, group_values, group_vectors):
    for g in numba.prange(groups.shape[0] - 1):
        group_forward(groups[g], groups[g + 1], columns, bin_columns, prefix, mu_start, mu_increments, mu, ks, solver,
                      range_kernel, rows, weights, group_values, group_vectors)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def grouped_backward(groups, columns, grad_columns, grad_prefix, grad_mu, bin_columns, other, grad_packed, half,
                     mu_increments, grad_start, grad_increments, grad_kernel, rows, weights, frobenius_factor,
                     group_grad_values, group_vectors, w, w_grad, w_avg, w_avg_sq, w_models, s, s_grad, s_avg,
                     s_avg_sq, s_models, i, i_grad, i_avg, i_avg_sq, i_models, scalars, shared_group, n_own,
                     shared_columns, grad_shared, scales, gain, grad_scales, entry_weights, factor_l1, rounded,
                     data_loss, h, h_grad, h_avg, h_avg_sq, r, r_grad, r_avg, r_avg_sq, pull):
    for g in numba.prange(groups.shape[0] - 1):
        first, last = groups[g], groups[g + 1]
        group_backward(first, last, columns, grad_columns, grad_prefix, grad_mu, bin_columns, other, grad_packed,
                       half, mu_increments, grad_start, grad_increments, grad_kernel, rows, weights, frobenius_factor,
                       group_grad_values, group_vectors)
        group_adam(first, last, w, w_grad, w_avg, w_avg_sq, w_models, scalars)
        group_adam(first, last, s, s_grad, s_avg, s_avg_sq, s_models, scalars)
        group_adam(first, last, i, i_grad, i_avg, i_avg_sq, i_models, scalars)
        if g == shared_group:
            shared_group_step(n_own, columns, grad_packed, shared_columns, grad_shared, scales, gain, grad_scales,
                              entry_weights, factor_l1, rounded, data_loss, h, h_grad, h_avg, h_avg_sq, r, r_grad,
                              r_avg, r_avg_sq, scalars, pull)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def group_adam(first, last, param, grad, exp_avg, exp_avg_sq, models, scalars):
    """adam_update of models [first, last)'s entries of a parameter whose ``models`` lead it."""
    per = param.shape[0] // models
    lo, hi = min(first, models) * per, min(last, models) * per
    if hi > lo:
        adam_update(param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi], scalars[0], scalars[1], scalars[2],
                    scalars[3], scalars[4], scalars[5], scalars[6])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def shared_group_step(n_own, columns, grad_packed, shared_columns, grad_shared, scales, gain, grad_scales,
                      entry_weights, factor_l1, rounded, data_loss, h, h_grad, h_avg, h_avg_sq, r, r_grad, r_avg,
                      r_avg_sq, scalars, pull):
    """training_steps' steps of the shared set after the pass (the sharing members' gradients written): its
    chain rule and the factors' pull (its value into pull[0]), the Adam update of the shared set (h: its
    packed values, gradient and moments) and of the stored factors (r), and the sharing members' columns
    composed again."""
    shared_grads(grad_packed, shared_columns, scales, gain, entry_weights, n_own, grad_shared, grad_scales)
    if factor_l1 != 0.0:
        pull[0] = add_factor_pull(scales, grad_scales, rounded, factor_l1, data_loss)
    adam_update(h, h_grad, h_avg, h_avg_sq, scalars[0], scalars[1], scalars[2], scalars[3], scalars[4], scalars[5],
                scalars[6])
    adam_update(r, r_grad, r_avg, r_avg_sq, scalars[0], scalars[1], scalars[2], scalars[3], scalars[4], scalars[5],
                scalars[6])
    compose_shared(columns, shared_columns, scales, gain, n_own)
