"""A dense model's matrices on CUDA, diag(mu) + sum_j z_j A_j, in a few kernels each way.

torch's ops for the same product ran ~20 small kernels a training step: the symmetrised weight
(add, scale, a transposing copy), mu (softplus, cumsum, add, cat), diag(mu) broadcast over the
batch (an add over every entry of every row's matrices) and the backward of each, which
reduced the batch's diagonals apart (benchmarks/bench_step_parts.py --profile). Here:

- forward: one kernel writes the product's table -- row c the members' 0.5 (W_c + W_c^T),
  flattened -- and its bias, the members' diag(mu) flattened; then one GEMM with the bias in
  its epilogue (torch.addmm: M = bias + Z @ table);
- backward: one GEMM for the table's gradient (Z^T G), then one kernel: a block per diagonal entry sums
  G's diagonal over the batch (in a fixed order), the last of a member's to finish takes mu's chain rule
  (softplus, running sum) to mu_start and mu_increments; the other blocks symmetrise the table's
  gradient into W's layout (and with sharing members take their factors').

Members that share their matrices (``shared``: W = r S for a sharing member, r = gain times its stored
factor) are assembled from the shared set and the factors: the table kernel scales S as it reads it, and the
backward kernel takes the composition's chain rule (S's gradient summed over the sharing members, each
factor's an inner product with S), so a step composes no W (torch's multiply, concatenation and their
backward: a few small kernels each way).

The matrices can also be made as their lower triangles, packed (:func:`assembled_packed`), for an
eigensolver that reads them so (half the product's columns). The same values and gradients as
:meth:`skspectral.model.SpectralModel.matrices` (its torch ops are the reference they are tested
against; float32 sums may round in another order).
"""

from __future__ import annotations

import numpy as np
import torch

from .eig._cupy_support import RawKernels, is_available

_SOURCE = r"""
#define THREADS 256

template <typename T>
__device__ T softplus(T x) {  // torch's F.softplus (beta 1, threshold 20)
    return x > (T)20 ? x : log1p(exp(x));
}

// entry e of a stored matrix: (i, j) of n x n row-major entries, or with packed of the lower triangle's
// n (n + 1) / 2 entries row by row (j <= i)
__device__ void entry(long long e, int n, int packed, int* i, int* j) {
    if (packed) {
        int row = (int)((sqrtf(8.0f * (float)e + 1.0f) - 1.0f) * 0.5f);  // then made exact
        while ((long long)row * (row + 1) / 2 > e) --row;
        while ((long long)(row + 1) * (row + 2) / 2 <= e) ++row;
        *i = row;
        *j = (int)(e - (long long)row * (row + 1) / 2);
    } else {
        *i = (int)(e / n);
        *j = (int)(e - (long long)(*i) * n);
    }
}

__device__ long long stored(int n, int packed) { return packed ? (long long)n * (n + 1) / 2 : (long long)n * n; }

__device__ long long diagonal_entry(int i, int n, int packed) {
    return packed ? (long long)i * (i + 1) / 2 + i : (long long)i * (n + 1);
}

// the stored matrix of model m's column c: an own model's W (the first ``own``), or a sharing member's shared
// set S (outputs, columns, n, n) for its output, whose factor *r (gain times the stored scale) it returns;
// model own + s O + o is sharing member s's output o (SpectralModel._with_shared's order)
template <typename T>
__device__ const T* model_matrix(const T* W, const T* S, const T* scales, T gain, long long m, long long c,
                                 long long own, long long outputs, long long columns, int n, T* r) {
    if (m < own) {
        *r = (T)1;
        return W + (m * columns + c) * n * n;
    }
    long long s = (m - own) / outputs, o = (m - own) - s * outputs;
    *r = gain * scales[s * columns + c];
    return S + (o * columns + c) * n * n;
}

// table (columns, members E): 0.5 (W + W^T) of each column's member matrices (E entries stored each: n n,
// or packed), a sharing member's W being r S (the composed entries r s_ij, as SpectralModel.dense_weight
// makes them); bias (members E): diag(mu)
template <typename T>
__device__ void table(const T* W, const T* S, const T* scales, T gain, long long own, long long outputs,
                      const T* mu_start, const T* increments, T* out, T* bias, unsigned int* counters,
                      long long members, long long columns, int n, int packed) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < members) counters[idx] = 0u;  // the backward's count of each member's finished diagonal blocks
    long long E = stored(n, packed), per_row = members * E, in_table = columns * per_row;
    int i, j;
    if (idx < in_table) {
        long long c = idx / per_row, r = idx - c * per_row;
        long long m = r / E;
        entry(r - m * E, n, packed, &i, &j);
        T factor;
        const T* w = model_matrix(W, S, scales, gain, m, c, own, outputs, columns, n, &factor);
        out[idx] = m < own ? (T)0.5 * (w[i * n + j] + w[j * n + i])
                           : (T)0.5 * (factor * w[i * n + j] + factor * w[j * n + i]);
    } else if (idx < in_table + per_row) {
        long long r = idx - in_table, m = r / E;
        entry(r - m * E, n, packed, &i, &j);
        T value = (T)0;
        if (i == j) {
            T steps = (T)0;  // mu_i = mu_start + sum_{t < i} softplus(increment_t), summed in order
            for (int t = 0; t < i; ++t) steps += softplus(increments[m * (n - 1) + t]);
            value = i == 0 ? mu_start[m] : mu_start[m] + steps;
        }
        bias[r] = value;
    }
}

// the gradient of model m's composed W_c at (i, j) from the table's gradient (a packed entry stands for (i, j)
// and (j, i))
template <typename T>
__device__ T composed_grad(const T* grad_table, long long m, long long c, long long members, int i, int j, int n,
                           int packed) {
    long long E = stored(n, packed);
    const T* g = grad_table + c * members * E + m * E;
    if (!packed) return (T)0.5 * g[i * n + j] + (T)0.5 * g[j * n + i];
    if (i == j) return g[diagonal_entry(i, n, 1)];
    return (T)0.5 * g[i > j ? (long long)i * (i + 1) / 2 + j : (long long)j * (j + 1) / 2 + i];
}

// the sum of every thread's x over the block, a tree over the threads in a fixed order (the same sum every run);
// every thread returns it. Each call is the whole block's (its __syncthreads are met by every thread)
template <typename T>
__device__ T block_tree_sum(T x) {
    __shared__ T partial[THREADS];
    partial[threadIdx.x] = x;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    T total = partial[0];
    __syncthreads();  // (partial is written again by the block's next sum)
    return total;
}

// block (m, i): the sum over the batch's rows of member m's gradient entry (i, i) into diagonal (members, n), in a
// fixed order (a thread's rows in order, then a tree over the threads: the same sum every run); the member's last
// block to finish (counters[m]: zeroed by the forward's table kernel, and again by that block) then takes mu's
// chain rule from its n sums: grad_start[m] and grad_increments[m] (n - 1) (mu_i = mu_start + sum_{t < i}
// softplus(increment_t))
template <typename T>
__device__ void diagonal_block(const T* grad, const T* increments, T* diagonal, unsigned int* counters,
                               T* grad_start, T* grad_increments, long long rows, long long m, int i,
                               long long members, int n, int packed) {
    __shared__ int last;
    long long E = stored(n, packed), per_row = members * E, column = m * E + diagonal_entry(i, n, packed);
    T total = (T)0;
    for (long long b = threadIdx.x; b < rows; b += THREADS) total += grad[b * per_row + column];
    total = block_tree_sum(total);
    if (threadIdx.x == 0) {
        diagonal[m * n + i] = total;
        __threadfence();  // the sum seen device-wide before the count says so
        last = atomicAdd(counters + m, 1u) == (unsigned int)(n - 1);
    }
    __syncthreads();
    if (!last) return;
    if (threadIdx.x == 0) counters[m] = 0u;  // every other block is done with it: a backward run again counts anew
    __threadfence();
    const volatile T* d = diagonal + m * n;  // (the other blocks' sums: read from memory, not a cache)
    for (int t = threadIdx.x; t < n; t += THREADS) {
        if (t == n - 1) {  // mu_start moves every mu_i
            T sum = (T)0;
            for (int k = 0; k < n; ++k) sum += d[k];
            grad_start[m] = sum;
        } else {  // increment t moves mu_i for i > t, through softplus' slope sigmoid(x)
            T later = (T)0;
            for (int k = t + 1; k < n; ++k) later += d[k];
            T x = increments[m * (n - 1) + t];
            T slope = x > (T)20 ? (T)1 : (T)1 / ((T)1 + exp(-x));
            grad_increments[m * (n - 1) + t] = later * slope;
        }
    }
}

// sharing member s's factor for column c, one block: grad_scales[s, c] = gain sum_o <S_oc, dW_{s,o,c}>, the
// block's threads over the entries, then a tree over them in a fixed order (a thread's serial loop over the
// n n entries' dependent reads set a whole launch's length)
template <typename T>
__device__ void factor_grad(const T* grad_table, const T* S, T gain, long long own, long long outputs,
                            T* grad_scales, long long s, long long c, long long members, long long columns, int n,
                            int packed) {
    long long nn = (long long)n * n;
    T total = (T)0;
    for (long long k = threadIdx.x; k < outputs * nn; k += THREADS) {
        long long o = k / nn;
        int e = (int)(k - o * nn);
        total += S[(o * columns + c) * nn + e]
                 * composed_grad(grad_table, own + s * outputs + o, c, members, e / n, e % n, n, packed);
    }
    total = block_tree_sum(total);
    if (threadIdx.x == 0) grad_scales[s * columns + c] = gain * total;
}

// The assembly's backward after the table's GEMM, in one launch of THREADS-thread blocks: first a block per
// diagonal entry of each member (diagonal_block: from the batch's gradient ``grad`` (rows, members E)), then with
// sharing members (shared_members of them, each with ``outputs`` models) a block per factor (factor_grad), then a
// thread per entry of grad_W (own, columns, n, n), the own models' W, and of grad_S (outputs, columns, n, n) =
// sum_s r_sc dW_{s,o,c} (the composed W's chain rule) from the table's gradient. (Three launches before: the
// diagonals' sums, the entries and mu, the factors -- 10.6 us of a 95 us step on an H200.)
template <typename T>
__device__ void assembly_backward(const T* grad, const T* grad_table, const T* increments, const T* S,
                                  const T* scales, T gain, long long own, long long outputs, long long shared_members,
                                  T* diagonal, unsigned int* counters, T* grad_W, T* grad_S, T* grad_scales,
                                  T* grad_start, T* grad_increments, long long rows, long long members,
                                  long long columns, int n, int packed) {
    long long block = blockIdx.x;
    if (block < members * n) {  // (each branch is the whole block's: its __syncthreads are met by every thread)
        long long m = block / n;
        diagonal_block(grad, increments, diagonal, counters, grad_start, grad_increments, rows, m,
                       (int)(block - m * n), members, n, packed);
        return;
    }
    block -= members * n;
    if (block < shared_members * columns) {
        long long s = block / columns;
        factor_grad(grad_table, S, gain, own, outputs, grad_scales, s, block - s * columns, members, columns, n,
                    packed);
        return;
    }
    block -= shared_members * columns;
    long long idx = block * blockDim.x + threadIdx.x;
    long long nn = (long long)n * n, in_weight = own * columns * nn;
    long long in_shared = in_weight + (shared_members ? outputs * columns * nn : 0);
    if (idx < in_weight) {
        long long matrix = idx / nn, m = matrix / columns, c = matrix - m * columns;
        int e = (int)(idx - matrix * nn), i = e / n, j = e - i * n;
        grad_W[idx] = composed_grad(grad_table, m, c, members, i, j, n, packed);
    } else if (idx < in_shared) {
        long long r = idx - in_weight, matrix = r / nn, o = matrix / columns, c = matrix - o * columns;
        int e = (int)(r - matrix * nn), i = e / n, j = e - i * n;
        T total = (T)0;
        for (long long s = 0; s < shared_members; ++s)
            total += (gain * scales[s * columns + c]) * composed_grad(grad_table, own + s * outputs + o, c, members,
                                                                      i, j, n, packed);
        grad_S[r] = total;
    }
}

#define TABLE(NAME, T) extern "C" __global__ void NAME( \
    const T* W, const T* S, const T* scales, T gain, long long own, long long outputs, const T* s, const T* inc, \
    T* out, T* bias, unsigned int* counters, long long members, long long columns, int n, int packed) { \
    table<T>(W, S, scales, gain, own, outputs, s, inc, out, bias, counters, members, columns, n, packed); }
TABLE(table_float, float)
TABLE(table_double, double)
#define BACKWARD(NAME, T) extern "C" __global__ void NAME( \
    const T* g, const T* gt, const T* inc, const T* S, const T* scales, T gain, long long own, long long outputs, \
    long long shared_members, T* d, unsigned int* counters, T* gW, T* gS, T* gscales, T* gs, T* ginc, long long rows, \
    long long members, long long columns, int n, int packed) { \
    assembly_backward<T>(g, gt, inc, S, scales, gain, own, outputs, shared_members, d, counters, gW, gS, gscales, gs, \
                         ginc, rows, members, columns, n, packed); }
BACKWARD(assembly_backward_float, float)
BACKWARD(assembly_backward_double, double)
"""

_THREADS = 256  # THREADS in the source: the backward's blocks
_KERNELS = RawKernels(_SOURCE, "skspectral's CUDA matrix assembly")


def _launch(name: str, dtype: torch.dtype, index: int, n_threads: int, args: tuple) -> None:
    _KERNELS.launch(name, dtype, index, (n_threads + _THREADS - 1) // _THREADS, _THREADS, args)


def applies(Z: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`assembled_matrices` runs here: CUDA float32/float64 rows and weight of one
    dtype, with CuPy. (Not for torch.func's or forward-mode AD's tensors: the kernels are autograd's
    only; SpectralModel, which holds every tensor they read, leaves those to torch's ops.)"""
    return (Z.is_cuda and weight.is_cuda and Z.dtype == weight.dtype and Z.dim() == 2
            and Z.dtype in (torch.float32, torch.float64) and is_available())


def _stored(n: int, packed: bool) -> int:
    """Entries stored per matrix: n n, or packed n (n + 1) / 2."""
    return n * (n + 1) // 2 if packed else n * n


class _Assembled(torch.autograd.Function):
    """The assembly with its gradients; ``shared`` and ``scales``: the sharing members' set (outputs,
    columns, n, n) and stored factors (sharing members, columns), r = gain scales (empty: none), so
    that their W = r S is never composed (a training step's few small kernels each way fewer)."""

    @staticmethod
    def forward(ctx, Z, weight, mu_start, mu_increments, shared, scales, gain, packed):
        own, columns, n = weight.shape[0], weight.shape[1], weight.shape[-1]
        outputs, shared_members = shared.shape[0], scales.shape[0]
        members = own + shared_members * outputs
        per_row = members * _stored(n, packed)
        weight, mu_start, mu_increments, shared, scales = (t.contiguous() for t in
                                                           (weight, mu_start, mu_increments, shared, scales))
        scalar = np.float32 if weight.dtype == torch.float32 else np.float64
        table = weight.new_empty(columns, per_row)
        bias = weight.new_empty(per_row)
        counters = torch.empty(members, dtype=torch.int32, device=weight.device)  # zeroed by the kernel
        _launch("table", weight.dtype, weight.device.index, (columns + 1) * per_row,
                (weight, shared, scales, scalar(gain), np.int64(own), np.int64(max(outputs, 1)), mu_start,
                 mu_increments, table, bias, counters, np.int64(members), np.int64(columns), np.int32(n),
                 np.int32(packed)))
        ctx.save_for_backward(Z, table, mu_increments, shared, scales)
        ctx.counters = counters  # the backward's count of each member's finished diagonal blocks
        ctx.shape = (own, outputs, shared_members, members, columns, n, packed, gain)
        return torch.addmm(bias, Z.contiguous(), table)  # the bias in the GEMM's epilogue

    @staticmethod
    def backward(ctx, grad):
        Z, table, mu_increments, shared, scales = ctx.saved_tensors
        own, outputs, shared_members, members, columns, n, packed, gain = ctx.shape
        grad = grad.contiguous()
        grad_Z = grad @ table.t() if ctx.needs_input_grad[0] else None
        if not any(ctx.needs_input_grad[1:6]):
            return grad_Z, None, None, None, None, None, None, None
        grad_table = Z.t() @ grad  # (columns, members E)
        diagonal = grad.new_empty(members, n)  # the batch's sum of each member's diagonal
        grad_W = grad.new_empty(own, columns, n, n)
        grad_S = torch.empty_like(shared)
        grad_scales = torch.empty_like(scales)
        grad_start = grad.new_empty(members, 1)
        grad_increments = grad.new_empty(members, n - 1)
        entries = own * columns * n * n + (outputs * columns * n * n if shared_members else 0)
        blocks = members * n + shared_members * columns + (entries + _THREADS - 1) // _THREADS
        scalar = np.float32 if grad.dtype == torch.float32 else np.float64
        _KERNELS.launch("assembly_backward", grad.dtype, grad.device.index, blocks, _THREADS,
                        (grad, grad_table, mu_increments, shared, scales, scalar(gain), np.int64(own),
                         np.int64(max(outputs, 1)), np.int64(shared_members), diagonal, ctx.counters, grad_W, grad_S,
                         grad_scales, grad_start, grad_increments, np.int64(grad.shape[0]), np.int64(members),
                         np.int64(columns), np.int32(n), np.int32(packed)))
        shared_grads = (grad_S, grad_scales) if shared_members else (None, None)
        return grad_Z, grad_W, grad_start, grad_increments, *shared_grads, None, None


def _apply(Z, weight, mu_start, mu_increments, shared, packed: bool) -> torch.Tensor:
    """_Assembled with ``shared`` (shared set, stored factors, gain) or without (empty ones)."""
    if shared is None:
        empty = weight.new_empty(0, *weight.shape[1:])
        return _Assembled.apply(Z, weight, mu_start, mu_increments, empty, weight.new_empty(0, weight.shape[1]), 1.0,
                                packed)
    shared_weight, scales, gain = shared
    return _Assembled.apply(Z, weight, mu_start, mu_increments, shared_weight, scales, float(gain), packed)


def _models(weight: torch.Tensor, shared) -> int:
    return weight.shape[0] + (0 if shared is None else shared[1].shape[0] * shared[0].shape[0])


def assembled_matrices(Z: torch.Tensor, weight: torch.Tensor, mu_start: torch.Tensor,
                       mu_increments: torch.Tensor, shared=None) -> torch.Tensor:
    """diag(mu) + sum_j Z[:, j] 0.5 (W_j + W_j^T) for every member, shape (batch, members, n, n);
    ``weight`` (members, columns, n, n), mu = [mu_start, mu_start + cumsum(softplus(mu_increments))]
    (``mu_start`` (members, 1), ``mu_increments`` (members, n - 1)). ``shared``: (the shared set
    (outputs, columns, n, n), the stored factors (sharing members, columns), their gain) of members
    that share their matrices, whose W = gain factor S follow ``weight``'s as
    SpectralModel.dense_weight orders them (without composing them). CUDA only (:func:`applies`)."""
    n = weight.shape[-1]
    return _apply(Z, weight, mu_start, mu_increments, shared, False).view(Z.shape[0], _models(weight, shared), n, n)


def assembled_packed(Z: torch.Tensor, weight: torch.Tensor, mu_start: torch.Tensor,
                     mu_increments: torch.Tensor, shared=None) -> torch.Tensor:
    """:func:`assembled_matrices` as each matrix's lower triangle row by row, shape (batch, members,
    n (n + 1) / 2): the matrices are symmetric, so the product computes each entry once (47 % of the
    columns at n = 15) and its gradient counts an off-diagonal entry for (i, j) and (j, i)."""
    n = weight.shape[-1]
    return _apply(Z, weight, mu_start, mu_increments, shared, True).view(Z.shape[0], _models(weight, shared),
                                                                         n * (n + 1) // 2)
