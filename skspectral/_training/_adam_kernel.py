"""The CPU Adam's compiled update (Numba; imported on first use by .adam where Numba imports).

torch.optim.Adam's arithmetic, operation for operation (no weight decay, no amsgrad):

    m = lerp(m, g, 1 - beta1)              (torch's lerp: m + w (g - m) for w < 0.5)
    v = beta2 v + (1 - beta2) g^2
    p = p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

over flat contiguous arrays, in one pass on the calling thread.
"""

import math

import numba


# error_model="numpy": a division is IEEE's, with no zero check to keep the loops from vectorising
@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, step):
    weight = 1.0 - beta1
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    step_size = lr / bias_correction1
    one_minus_beta2 = 1.0 - beta2
    if weight < 0.5:  # torch's lerp's two forms, one loop each: a branch inside kept the loop scalar
        for i in range(param.shape[0]):
            g = grad[i]
            m = exp_avg[i] + weight * (g - exp_avg[i])
            v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = param[i] - step_size * (m / (math.sqrt(v) / bias_correction2_sqrt + eps))
    else:
        for i in range(param.shape[0]):
            g = grad[i]
            m = g - (g - exp_avg[i]) * (1.0 - weight)
            v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
            exp_avg[i] = m
            exp_avg_sq[i] = v
            param[i] = param[i] - step_size * (m / (math.sqrt(v) / bias_correction2_sqrt + eps))
