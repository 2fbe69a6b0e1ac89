"""The fused kernel backend: one thread block per matrix, cyclic Jacobi in
shared memory, k-th eigenpair only (CUDA, through CuPy's NVRTC RawKernel).

Each block loads its matrix from the triangle that is read (flagging NaN/inf),
runs parallel cyclic Jacobi sweeps (round-robin pairs, so the n/2 rotations
of a round are disjoint and applied at once as A <- J^T A J), accumulates
V <- V J only when the eigenvector is wanted, stops when the off-diagonal mass
is at rounding level, then selects the k-th smallest diagonal entry and
writes it (and that column of V). One launch replaces cuSOLVER's calls, the
column copies and the NaN pass. Sizes: n <= MAX_N (shared memory holds A and
V twice).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ._cupy_backend import _on_torch_stream, import_cupy

MAX_N = 64

_SOURCE = r"""
extern "C" __global__ void kth_jacobi(
    const SCALAR* __restrict__ input, SCALAR* __restrict__ value, SCALAR* __restrict__ vector,
    const int n, const int k, const int lower, const int want_vector, const int max_sweeps, const SCALAR tol2)
{
    extern __shared__ unsigned char smem_raw[];
    SCALAR* A = reinterpret_cast<SCALAR*>(smem_raw);
    SCALAR* A2 = A + n * n;
    SCALAR* V = A2 + n * n;
    SCALAR* V2 = V + (want_vector ? n * n : 0);
    SCALAR* cc = V2 + (want_vector ? n * n : 0);
    SCALAR* oo = cc + n;
    int* part = reinterpret_cast<int*>(oo + n);
    __shared__ int bad, selected, converged;
    __shared__ SCALAR off_sum, total_sum;

    const long long b = blockIdx.x;
    const SCALAR* a = input + b * (long long)n * n;
    const int tid = threadIdx.x, T = blockDim.x, nn = n * n;
    if (tid == 0) { bad = 0; }
    __syncthreads();
    int local_bad = 0;
    for (int idx = tid; idx < nn; idx += T) {
        const int i = idx / n, j = idx - (idx / n) * n;
        const bool direct = lower ? (i >= j) : (i <= j);
        const SCALAR x = direct ? a[idx] : a[j * n + i];
        if (!isfinite(x)) local_bad = 1;
        A[idx] = x;
        if (want_vector) V[idx] = (i == j) ? (SCALAR)1 : (SCALAR)0;
    }
    if (local_bad) bad = 1;
    __syncthreads();
    const SCALAR nan_value = (SCALAR)nan("");
    if (bad) {
        if (tid == 0) value[b] = nan_value;
        if (want_vector) for (int i = tid; i < n; i += T) vector[b * n + i] = nan_value;
        return;
    }

    const int m = (n % 2 == 0) ? n : n + 1;   // odd n: one player sits out each round
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
        for (int round = 0; round < m - 1; ++round) {
            for (int t = tid; t < m / 2; t += T) {
                // circle method: position 0 fixed, the others rotate by `round`
                const int pa = t, pb = m - 1 - t;
                int p = (pa == 0) ? 0 : ((pa - 1 + round) % (m - 1)) + 1;
                int q = ((pb - 1 + round) % (m - 1)) + 1;
                if (p > q) { const int tmp = p; p = q; q = tmp; }
                if (q >= n) {            // the bye
                    if (p < n) { part[p] = p; cc[p] = 1; oo[p] = 0; }
                } else {
                    const SCALAR apq = A[p * n + q];
                    SCALAR c = 1, s = 0;
                    if (apq != (SCALAR)0) {
                        const SCALAR tau = (A[q * n + q] - A[p * n + p]) / (2 * apq);
                        const SCALAR at = fabs(tau);
                        const SCALAR root = at > 1 ? at * sqrt(1 + (1 / at) * (1 / at)) : sqrt(1 + at * at);
                        const SCALAR tt = (tau >= 0 ? (SCALAR)1 : (SCALAR)-1) / (at + root);
                        c = 1 / sqrt(1 + tt * tt);
                        s = tt * c;
                    }
                    part[p] = q; part[q] = p;
                    cc[p] = c; cc[q] = c;
                    oo[p] = -s;  // J[q][p]
                    oo[q] = s;   // J[p][q]
                }
            }
            __syncthreads();
            for (int idx = tid; idx < nn; idx += T) {
                const int i = idx / n, j = idx - (idx / n) * n;
                const int pi = part[i], pj = part[j];
                const SCALAR ci = cc[i], oi = oo[i], cj = cc[j], oj = oo[j];
                SCALAR x = ci * cj * A[i * n + j] + ci * oj * A[i * n + pj]
                         + oi * cj * A[pi * n + j] + oi * oj * A[pi * n + pj];
                if (pi == j && i != j) x = 0;   // the pair's own off-diagonal is annihilated
                A2[idx] = x;
                if (want_vector) V2[idx] = V[i * n + j] * cj + V[i * n + pj] * oj;
            }
            __syncthreads();
            { SCALAR* t2 = A; A = A2; A2 = t2; }
            if (want_vector) { SCALAR* t3 = V; V = V2; V2 = t3; }
        }
        if (tid == 0) { off_sum = 0; total_sum = 0; }
        __syncthreads();
        SCALAR off = 0, total = 0;
        for (int idx = tid; idx < nn; idx += T) {
            const int i = idx / n, j = idx - (idx / n) * n;
            const SCALAR x2 = A[idx] * A[idx];
            total += x2;
            if (i != j) off += x2;
        }
        atomicAdd(&off_sum, off);
        atomicAdd(&total_sum, total);
        __syncthreads();
        if (tid == 0) converged = (off_sum <= tol2 * total_sum) ? 1 : 0;
        __syncthreads();
        if (converged) break;
    }

    for (int i = tid; i < n; i += T) {
        const SCALAR d = A[i * n + i];
        int rank = 0;
        for (int j = 0; j < n; ++j) {
            const SCALAR e = A[j * n + j];
            rank += (e < d) || (e == d && j < i);
        }
        if (rank == k) selected = i;
    }
    __syncthreads();
    const int sel = selected;
    if (tid == 0) value[b] = A[sel * n + sel];
    if (want_vector) for (int i = tid; i < n; i += T) vector[b * n + i] = V[i * n + sel];
}
"""

_SETTINGS = {  # (scalar type, max sweeps, squared relative off-diagonal tolerance)
    torch.float32: ("float", 12, (4 * np.finfo(np.float32).eps) ** 2),
    torch.float64: ("double", 16, (4 * np.finfo(np.float64).eps) ** 2),
}


@functools.lru_cache(maxsize=4)
def _kernel(scalar: str):
    cupy = import_cupy()
    return cupy.RawKernel(_SOURCE.replace("SCALAR", scalar), "kth_jacobi")


def _launch(A: torch.Tensor, k: int, lower: bool, want_vector: bool):
    B, n = A.shape[0], A.shape[-1]
    if n > MAX_N:
        raise ValueError(f"backend='kernel' handles n <= {MAX_N}, got n={n}; use 'cupy' or 'auto'.")
    scalar, max_sweeps, tol2 = _SETTINGS[A.dtype]
    item = A.element_size()
    shared = ((4 if want_vector else 2) * n * n + 2 * n) * item + n * 4
    threads = min(256, max(32, ((n * n + 31) // 32) * 32))
    value = torch.empty(B, dtype=A.dtype, device=A.device)
    vector = torch.empty(B, n, dtype=A.dtype, device=A.device) if want_vector else None
    with _on_torch_stream(A.device):
        kernel = _kernel(scalar)
        if shared > 48 * 1024:
            kernel.max_dynamic_shared_size_bytes = shared
        scalar_type = np.float32 if A.dtype == torch.float32 else np.float64
        kernel(
            (B,),
            (threads,),
            (
                np.uint64(A.data_ptr()),
                np.uint64(value.data_ptr()),
                np.uint64(vector.data_ptr() if want_vector else 0),
                np.int32(n),
                np.int32(k),
                np.int32(lower),
                np.int32(want_vector),
                np.int32(max_sweeps),
                scalar_type(tol2),
            ),
            shared_mem=shared,
        )
    return value, vector


def eigvalsh_k(A: torch.Tensor, k: int, lower: bool) -> torch.Tensor:
    """k-th eigenvalue of each matrix of a contiguous CUDA (B, n, n) batch; NaN where A is not finite."""
    return _launch(A, k, lower, want_vector=False)[0]


def eigh_k(A: torch.Tensor, k: int, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous CUDA batch."""
    return _launch(A, k, lower, want_vector=True)
