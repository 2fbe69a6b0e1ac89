"""Every training loss's value and gradient on CUDA in one kernel launch.

Autograd's way through a loss -- the members' targets repeated, the residual, its square, the
weighted sums, a division, and the backward of each -- ran ~20 small kernels a training step
(benchmarks/bench_step_parts.py --profile), about as long as the eigen kernel on a large batch.
Here one block takes the batch: the weights' float64 sum first (it alone scales the gradient), then
each thread a stride of its (row, member) groups, their losses and their gradients with respect to
the output in one pass (each group's inputs read once); sums over the block by warp shuffles, in a
fixed order (the same every run). The formulas are the CPU's compiled kernels'
(skspectral._step_kernels: a row's target and weight count for every member; the pinball loss
orders a member's values as the model does); equal to autograd's to rounding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ._loss_codes import TRAINING_LOSSES
from .eig._cupy_support import RawKernels, is_available

_SOURCE = r"""
#define THREADS 1024
#define TINY 1.1754943508222875e-38  // weighted_mean's floor of a weight sum (float32's tiny)

// (the losses' codes are defined above this source, from skspectral._loss_codes: SQUARED_ERROR, ...)

// one group's loss (a row's member: k values, its classes or quantile levels, or one), unweighted
template <typename T>
__device__ double group_loss(int loss, const T* o, double y, int k, const double* parameters) {
    if (loss == MULTICLASS_LOG_LOSS) {
        double top = (double)o[0], sum = 0.0;
        for (int c = 1; c < k; ++c) top = fmax(top, (double)o[c]);
        for (int c = 0; c < k; ++c) sum += exp((double)o[c] - top);
        return top + log(sum) - (double)o[(int)y];
    }
    if (loss == PINBALL) {  // a running maximum orders the values first (a NaN carried on)
        double best = __longlong_as_double(0xfff0000000000000LL), total = 0.0;
        for (int q = 0; q < k; ++q) {
            double value = (double)o[q];
            if (value >= best || value != value) best = value;
            double r = y - best, level = parameters[q];
            total += fmax(level * r, (level - 1.0) * r);
        }
        return total;
    }
    double z = (double)o[0], d = z - y;
    switch (loss) {
        case SQUARED_ERROR: return d * d;
        case BINARY_LOG_LOSS: return fmax(z, 0.0) - z * y + log1p(exp(-fabs(z)));
        case ABSOLUTE_ERROR: return fabs(d);
        case HUBER: {
            double r = fabs(d), delta = parameters[0];
            return r <= delta ? 0.5 * r * r : delta * (r - 0.5 * delta);
        }
        case POISSON: return 2.0 * ((y > 0.0 ? y * log(y) : 0.0) - y * z - y + exp(z));
        default: return 2.0 * (z - log(y) + y * exp(-z) - 1.0);  // GAMMA
    }
}

// its gradient with respect to the group's values, times the row's share ws of the weights
template <typename T>
__device__ void group_gradient(int loss, const T* o, double y, int k, const double* parameters, double ws, T* g) {
    if (loss == MULTICLASS_LOG_LOSS) {
        double top = (double)o[0], sum = 0.0;
        for (int c = 1; c < k; ++c) top = fmax(top, (double)o[c]);
        for (int c = 0; c < k; ++c) sum += exp((double)o[c] - top);
        double log_total = top + log(sum);
        for (int c = 0; c < k; ++c) g[c] = (T)((exp((double)o[c] - log_total) - (c == (int)y ? 1.0 : 0.0)) * ws);
        return;
    }
    if (loss == PINBALL) {  // level q's slope goes to the value its running maximum took (the last of equals)
        double best = __longlong_as_double(0xfff0000000000000LL);
        int source = 0;
        for (int q = 0; q < k; ++q) {
            double value = (double)o[q];
            if (value >= best || value != value) { best = value; source = q; }
            g[q] = (T)0;  // (source <= q: every entry is zeroed before it is added to)
            double r = y - best, level = parameters[q], above = level * r, below = (level - 1.0) * r;
            double slope = above > below ? -level : (above < below ? 1.0 - level : 0.5 - level);
            g[source] += (T)(slope * ws);
        }
        return;
    }
    double z = (double)o[0], d = z - y, slope;
    switch (loss) {
        case SQUARED_ERROR: slope = 2.0 * d; break;
        case BINARY_LOG_LOSS: {
            double e = exp(-fabs(z));
            slope = (z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e)) - y;
            break;
        }
        case ABSOLUTE_ERROR: slope = d > 0.0 ? 1.0 : (d < 0.0 ? -1.0 : 0.0); break;
        case HUBER: {
            double delta = parameters[0];
            slope = fabs(d) <= delta ? d : (d > 0.0 ? delta : -delta);
            break;
        }
        case POISSON: slope = 2.0 * (exp(z) - y); break;
        default: slope = 2.0 * (1.0 - y * exp(-z));  // GAMMA
    }
    g[0] = (T)(slope * ws);
}

// the block's sum of x (every thread's), the same every run: a butterfly of shuffles in each warp, then warp 0's
// over the warps' sums (lane 0's order fixed by the pattern); every thread gets it. ``warp_sums``: THREADS / 32
__device__ double block_sum(double x, double* warp_sums) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
    if ((threadIdx.x & 31u) == 0) warp_sums[threadIdx.x >> 5] = x;
    __syncthreads();
    if (threadIdx.x < 32) {
        double y = threadIdx.x < THREADS / 32 ? warp_sums[threadIdx.x] : 0.0;
        for (int offset = 16; offset > 0; offset >>= 1) y += __shfl_xor_sync(0xffffffffu, y, offset);
        if (threadIdx.x == 0) warp_sums[0] = y;
    }
    __syncthreads();
    double total = warp_sums[0];
    __syncthreads();  // (warp_sums is written again by the next sum)
    return total;
}

// output (rows, members, k) -> value[0] the weighted mean loss over rows and members (a pinball
// loss: and levels), gradient (rows, members, k); one block. The weights' sum first (it alone scales the
// gradient), then one pass over the groups for their losses and gradients: each group's inputs read once
template <typename T>
__device__ void loss_and_gradient(int loss, const T* output, const T* target, const T* weight,
                                  const double* parameters, long long rows, long long members, int k,
                                  T* value, T* gradient) {
    __shared__ double warp_sums[THREADS / 32];
    long long groups = rows * members;
    double counted = loss == PINBALL ? (double)k : 1.0;  // a pinball loss averages over its levels too
    double weight_sum = 0.0;
    for (long long b = threadIdx.x; b < rows; b += THREADS) weight_sum += (double)weight[b];
    weight_sum = block_sum(weight_sum, warp_sums) * (double)members * counted;  // every group's row weight
    double scale = 1.0 / fmax(weight_sum, TINY);
    double total = 0.0;
    for (long long p = threadIdx.x; p < groups; p += THREADS) {
        long long b = p / members;
        double w = (double)weight[b], y = (double)target[b];
        total += group_loss<T>(loss, output + p * k, y, k, parameters) * w;
        group_gradient<T>(loss, output + p * k, y, k, parameters, w * scale, gradient + p * k);
    }
    total = block_sum(total, warp_sums);
    if (threadIdx.x == 0) value[0] = (T)(total * scale);
}

// the shared factors' pull after a step's backward (one block): grad[i] += pull sign(r_i), with pull =
// factor_l1 * data_loss rounded to T as autograd's product is (so the gradient's bits are autograd's), and
// value[0] = pull * sum_i |r_i| (block_sum in float64)
template <typename T>
__device__ void factor_pull(const T* scales, T* grad, const T* data_loss, double factor_l1, long long count,
                            T* value) {
    __shared__ double warp_sums[THREADS / 32];
    T pull = (T)factor_l1 * data_loss[0];
    double total = 0.0;
    for (long long i = threadIdx.x; i < count; i += THREADS) {
        T r = scales[i];
        total += fabs((double)r);
        if (r != (T)0) grad[i] += r > (T)0 ? pull : -pull;
    }
    total = block_sum(total, warp_sums);
    if (threadIdx.x == 0) value[0] = (T)((double)pull * total);
}

extern "C" __global__ void factor_pull_float(const float* scales, float* grad, const float* data_loss,
                                             double factor_l1, long long count, float* value) {
    factor_pull<float>(scales, grad, data_loss, factor_l1, count, value);
}
extern "C" __global__ void factor_pull_double(const double* scales, double* grad, const double* data_loss,
                                              double factor_l1, long long count, double* value) {
    factor_pull<double>(scales, grad, data_loss, factor_l1, count, value);
}

#define LOSS(NAME, T) extern "C" __global__ void NAME( \
    int loss, const T* output, const T* target, const T* weight, const double* parameters, long long rows, \
    long long members, int k, T* value, T* gradient) { \
    loss_and_gradient<T>(loss, output, target, weight, parameters, rows, members, k, value, gradient); }
LOSS(loss_float, float)
LOSS(loss_double, double)
"""

# the kernel's loss codes, by the name of the CPU kernel of the same loss: its index in TRAINING_LOSSES, defined
# for the source as the name less "_and_gradient" (SQUARED_ERROR 0, BINARY_LOG_LOSS 1, ...)
CODES = {name: code for code, name in enumerate(TRAINING_LOSSES)}
_CODE_DEFINES = "".join(f"#define {name.removesuffix('_and_gradient').upper()} {code}\n"
                        for name, code in CODES.items())
_THREADS = 1024  # THREADS in the source
_KERNELS = RawKernels(_CODE_DEFINES + _SOURCE, "skspectral's CUDA losses")


def applies(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`loss_and_gradient` runs here: CUDA float32/float64 tensors of one dtype,
    with CuPy."""
    return (output.is_cuda and output.dtype in (torch.float32, torch.float64)
            and target.dtype == output.dtype and weight.dtype == output.dtype and is_available())


@functools.lru_cache(maxsize=64)
def _parameters_on(parameters: tuple, device: torch.device) -> torch.Tensor:
    """A loss's constants on the device, made once (a copy to the GPU inside a captured CUDA graph
    would be a host transfer); one zero where a loss has none."""
    return torch.tensor(parameters or (0.0,), dtype=torch.float64, device=device)


def loss_and_gradient(name: str, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                      parameters: tuple = (), last_axis: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(The weighted mean loss ``name`` -- a name in skspectral._loss_codes.TRAINING_LOSSES -- over
    rows and members, its gradient with respect to ``output``): output (rows[, members]), with a
    last axis of classes or quantile levels where ``last_axis``; target and weight (rows,); the
    loss's constants ``parameters`` (huber's threshold, the levels). The value is a device scalar
    (no synchronisation). CUDA only (:func:`applies`)."""
    rows = output.shape[0]
    k = output.shape[-1] if last_axis else 1
    members = output.numel() // max(1, rows * k)
    output = output.detach().contiguous()
    gradient = torch.empty_like(output)
    value = output.new_empty(())
    _KERNELS.launch("loss", output.dtype, output.device.index, 1, _THREADS, (
        np.int32(CODES[name]), output, target.contiguous(), weight.contiguous(),
        _parameters_on(tuple(parameters), output.device), np.int64(rows), np.int64(members), np.int32(k), value,
        gradient))
    return value, gradient


def add_factor_pull(scales: torch.nn.Parameter, data_loss: torch.Tensor, factor_l1: float) -> torch.Tensor:
    """The shared factors' pull (skspectral._losses.Penalty) after a step's backward, in one launch:
    ``factor_l1 * data_loss * sign(r)`` added to ``scales.grad`` (the bits autograd's term adds;
    a missing ``.grad`` starts at zeros) and its value ``factor_l1 * data_loss * sum |r|`` returned
    as a device scalar. Autograd's way (the product, the absolute values, their sum and each one's
    backward, then the gradients' sum) ran ~8 small kernels a step. CUDA only (:func:`applies`)."""
    if scales.grad is None:
        scales.grad = torch.zeros_like(scales)
    value = scales.new_empty(())
    _KERNELS.launch("factor_pull", scales.dtype, scales.device.index, 1, _THREADS, (
        scales.detach(), scales.grad, data_loss.detach().to(scales.dtype).contiguous(), np.float64(factor_l1),
        np.int64(scales.numel()), value))
    return value
