"""Consecutive CPU training steps in one compiled call (Numba; imported on first use by
.compiled_steps where Numba imports): each step the model's compiled pass
(``skspectral._step_kernels.training_pass``: forward, loss, backward) on its batch, then the
CPU Adam's update (``._adam_kernel.adam_update``) of every parameter. The same two kernels the
one-step path calls from Python, in the same order on the same arrays: the same numbers, without
~0.3 ms of Python, dispatch and torch's small ops around every step of ~1-2 ms. The rows' terms come
packed as the fit keeps them (floats) and each step unpacks its batch's: torch's conversions of a
block's (an integer copy of the table rows, a contiguous one of the weights) took 8-10 % of a fit.
"""

import numba
import numpy as np

from .._step_kernels import add_factor_pull, compose_shared, shared_grads, training_pass
from .._kernel_cache import keep_kernel_cache_fresh
from ._adam_kernel import adam_update

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def training_steps(n_steps, batch_size, loss, targets, sample_weights, terms, batch, frobenius_factor, state,
                   adam_arrays, adam_scalars, step_losses, shared):
    """``n_steps`` steps on consecutive batches of ``batch_size`` rows: step s takes rows
    [s batch_size, (s + 1) batch_size) of targets, sample_weights and terms (rows, 2, K: each row's table
    rows as floats, exact, then their weights; unpacked into ``batch``'s table rows and weights, batch_size
    rows each), runs training_pass (its ``loss``, ``frobenius_factor`` and ``state``), then
    adam_update on each parameter's (param, grad, exp_avg, exp_avg_sq) flat arrays of
    ``adam_arrays`` with the step's scalars ``adam_scalars[s]`` (``._adam_kernel.step_scalars``).
    step_losses[s] = (the data loss, the penalty) of step s. ``shared``: members that share their matrices
    (skspectral._compiled_pass.SharedMembersPass.shared_state; none where its count is 0): after the pass
    the packed gradient goes to the shared set and the factors (shared_grads), the factors' pull is added
    where its factor is not 0 (add_factor_pull: its value into the step's penalty), and after Adam the
    sharing members' packed columns are composed again (compose_shared)."""
    (n_shared, n_own, grad_packed, columns, shared_columns, grad_shared, scales, gain, grad_scales,
     entry_weights, factor_l1, rounded) = shared
    batch_rows, batch_term_weights = batch
    n_terms = terms.shape[2]
    for s in range(n_steps):
        first, last = s * batch_size, (s + 1) * batch_size
        for i in range(batch_size):
            packed = terms[first + i]
            for t in range(n_terms):
                batch_rows[i, t] = np.int64(packed[0, t])  # (torch's .long(): the floats are exact integers)
                batch_term_weights[i, t] = packed[1, t]
        data_loss, penalty = training_pass(loss, targets[first:last], sample_weights[first:last], batch_rows,
                                           batch_term_weights, frobenius_factor, state)
        step_losses[s, 0] = data_loss
        step_losses[s, 1] = penalty
        if n_shared > 0:
            shared_grads(grad_packed, shared_columns, scales, gain, entry_weights, n_own, grad_shared, grad_scales)
            if factor_l1 != 0.0:
                step_losses[s, 1] += add_factor_pull(scales, grad_scales, rounded, factor_l1, data_loss)
        scalars = adam_scalars[s]
        for p in range(len(adam_arrays)):
            param, grad, exp_avg, exp_avg_sq = adam_arrays[p]
            adam_update(param, grad, exp_avg, exp_avg_sq, scalars[0], scalars[1], scalars[2], scalars[3], scalars[4],
                        scalars[5], scalars[6])
        if n_shared > 0:
            compose_shared(columns, shared_columns, scales, gain, n_own)
