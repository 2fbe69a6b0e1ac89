"""The CPU Adam's compiled update (Numba; imported on first use by .adam where Numba imports).

torch.optim.Adam's arithmetic, operation for operation (no weight decay, no amsgrad):

    m = lerp(m, g, 1 - beta1)              (torch's lerp: m + w (g - m) for w < 0.5, else g - (g - m)(1 - w))
    v = beta2 v + (1 - beta2) g^2
    p = p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

over flat contiguous arrays, in one pass on the calling thread.
"""

import math

import numba
import numpy as np

from .._kernel_cache import keep_kernel_cache_fresh

keep_kernel_cache_fresh()  # before the first cached kernel (see _kernel_cache)


# error_model="numpy": a division is IEEE's, with no zero check to keep the loops from vectorising
@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_update(param, grad, exp_avg, exp_avg_sq, weight, one_minus_weight, beta2, one_minus_beta2, step_size,
                bias_correction2_sqrt, eps):
    """One step over flat arrays. The scalars come in the arrays' dtype (see ``step_scalars``): torch
    computes a float32 parameter's step in float32 with its Python scalars rounded to float32, and
    so does this loop (8 float32 lanes a vector where float64 scalars made it convert every element)."""
    if weight < 0.5:  # torch's lerp's two forms, one loop each: a branch inside kept the loop scalar
        for i in range(param.shape[0]):
            g = grad[i]
            m = exp_avg[i] + weight * (g - exp_avg[i])
            v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = param[i] - step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))
    else:
        for i in range(param.shape[0]):
            g = grad[i]
            m = g - (g - exp_avg[i]) * one_minus_weight
            v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = param[i] - step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))


def step_scalars(dtype, lr: float, beta1: float, beta2: float, eps: float, step: float) -> tuple:
    """adam_update's scalars after ``step`` steps: computed in Python floats as torch does, then
    given the parameters' dtype (a numpy scalar: Numba then keeps float32 arithmetic float32)."""
    weight = dtype(1.0 - beta1)
    one_minus_weight = dtype(1.0) - weight  # torch's lerp takes 1 - weight in the opmath type
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    return (weight, one_minus_weight, dtype(beta2), dtype(1.0 - beta2), dtype(lr / bias_correction1),
            dtype(bias_correction2_sqrt), dtype(eps))
