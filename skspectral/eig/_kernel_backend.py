"""The fused kernel backend: the k-th eigenpair of each matrix in one launch
(CUDA, compiled at first use by CuPy's NVRTC RawKernel from _kernel_source.cu).

One block per matrix (two per one-warp block up to n = 16), one thread per row held in registers: Householder
tridiagonalisation, multisection on Sturm counts for lambda_k alone, inverse
iteration and the back-transform for q_k alone -- the syevx route, about
(4/3) n^3 flops per matrix instead of a full eigendecomposition. Matrices
with NaN/inf in the triangle that is read give NaN. Outputs are allocated by
torch and the launch goes on torch's current stream, so the op can be
captured in a CUDA graph. Sizes 2 <= n <= MAX_N (n = 1 is answered directly).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ._backend import EigenBackend
from ._cupy_support import RawKernels, current_cupy_stream, import_cupy, is_available, launch_device, require_cupy

MAX_N = 64
# Several indices of a launch run side by side (the kernel compiled with SEVERAL) up to this n: three
# indices of 15 x 15 float32 matrices took 0.74-0.90x the one-index kernel's loop over them, of
# 24 x 24 and larger 1.3-1.65x (its per-lane vectors' registers cost occupancy); above it the
# one-index kernel solves them one after the other (benchmarks/RESULTS.md, section 10).
SEVERAL_MAX_N = 16
# Up to this n a one-warp block holds two matrices, one per half-warp (the kernel compiled with
# PAIRED): a solve's chain of dependent steps takes as long on 16 lanes as on 32, so twice the
# matrices run at once (benchmarks/RESULTS.md, section 1).
PAIRED_MAX_N = 16
# The several-index kernel paired too: 0.55-0.68x the one-matrix kernel's time at 3 indices from 2,620
# matrices, the same values to the last bits (off: one matrix a block; RESULTS.md, section 10).
PAIRED_SEVERAL = True
# Blocks an SM must hold for the paired one-index float32 kernel (1: the compiler's choice, 113
# registers a thread, 18 blocks an SM; 32 holds it to 64 registers, spilling to L1: faster alone from
# 5,240 matrices, but flights' fits were 2-4 % slower with it; `bench_eig.py --paired` measures both).
PAIRED_MIN_BLOCKS = 1

_SOURCE_PATH = Path(__file__).with_name("_kernel_source.cu")

# scalar type, 16-byte vector type, unit roundoff, smallest normal, infinity,
# smallest scaling exponent, multisection rounds (33 points per round: 5 bits).
_DEFINES = {
    torch.float32: {
        "real": "float",
        "vec_t": "float4",
        "EPS": "5.9604645e-08f",
        "SAFE_MIN": "1.17549435e-38f",
        "INF": "__int_as_float(0x7f800000)",
        "MIN_EXP": "-125",
        "ITERS": "7",
    },
    torch.float64: {
        "real": "double",
        "vec_t": "double2",
        "EPS": "1.1102230246251565e-16",
        "SAFE_MIN": "2.2250738585072014e-308",
        "INF": "__longlong_as_double(0x7ff0000000000000LL)",
        "MIN_EXP": "-1020",
        "ITERS": "12",
    },
}


@functools.lru_cache(maxsize=None)
def _kernel(n: int, dtype: torch.dtype, several: bool = False, packed: bool = False, paired: bool = False,
            min_blocks: int = 1):
    """The kernel specialised for n x n matrices of ``dtype`` (the row lives in registers), for one
    index or several (their multisections and vectors side by side: a kernel of its own, whose
    vectors in registers would cost the one-index kernel's occupancy), stored whole or packed
    (lower triangles), one matrix a block or two (``paired``, n <= 16); ``min_blocks`` an SM must hold."""
    cupy = import_cupy()
    defines = {"N": str(n), **_DEFINES[dtype], "SEVERAL": str(int(several)), "PACKED": str(int(packed)),
               "PAIRED": str(int(paired)), "MIN_BLOCKS": str(min_blocks)}
    header = "".join(f"#define {name} {value}\n" for name, value in defines.items())
    return cupy.RawKernel(header + _SOURCE_PATH.read_text(), "kth_eigenpair")


_FUNCTIONS: dict = {}


def _function(n: int, dtype: torch.dtype, index: int, several: bool = False, packed: bool = False,
              paired: bool = False):
    """The compiled kernel loaded on device ``index`` (CuPy loads modules per device)."""
    # (not the several-index kernel: its per-lane vectors would spill)
    min_blocks = PAIRED_MIN_BLOCKS if paired and dtype == torch.float32 and not several else 1
    key = (n, dtype, index, several, packed, paired, min_blocks)
    function = _FUNCTIONS.get(key)
    if function is None:
        cupy = import_cupy()
        with cupy.cuda.Device(index):
            function = _FUNCTIONS[key] = _kernel(n, dtype, several, packed, paired, min_blocks).kernel
    return function


def _one_by_one(A: torch.Tensor, want_vector: bool):
    value = torch.where(torch.isfinite(A[:, 0, 0]), A[:, 0, 0], torch.nan)
    vector = torch.where(torch.isfinite(value), 1.0, torch.nan).to(A.dtype)[:, None] if want_vector else None
    return value, vector


def _stride(k: tuple) -> int | None:
    """The common step of evenly spaced ascending indices (1 for one index), else None."""
    step = k[1] - k[0] if len(k) > 1 else 1
    return step if step > 0 and list(k) == list(range(k[0], k[0] + step * len(k), step)) else None


def _launch(A: torch.Tensor, k, lower: bool, want_vector: bool, packed_n: int | None = None):
    """One launch for an index, or for a tuple of evenly spaced indices (values (B, K), vectors
    (B, K, n): one reduction per matrix); other tuples one launch per index. ``packed_n``: A holds
    (B, n (n + 1) / 2) lower triangles of n x n matrices."""
    B = A.shape[0]
    n = A.shape[-1] if packed_n is None else packed_n
    several = isinstance(k, tuple)
    stride = _stride(k) if several else 1
    if several and (n == 1 or stride is None):
        pairs = [_launch(A, kj, lower, want_vector, packed_n) for kj in k]
        return (torch.stack([p[0] for p in pairs], dim=1),
                torch.stack([p[1] for p in pairs], dim=1) if want_vector else None)
    if n == 1:
        return _one_by_one(A.view(B, 1, 1), want_vector)
    first, count = (k[0], len(k)) if several else (k, 1)
    lead = (B, count) if several else (B,)
    value = torch.empty(lead, dtype=A.dtype, device=A.device)
    vector = torch.empty(lead + (n,), dtype=A.dtype, device=A.device) if want_vector else value
    if B == 0:
        return value, (vector if want_vector else None)
    index = A.device.index
    args = (
        np.uint64(A.data_ptr()),
        np.uint64(value.data_ptr()),
        np.uint64(vector.data_ptr()),
        np.int32(first),
        np.int32(count),
        np.int32(stride),
        np.int32(lower or packed_n is not None),  # (a packed matrix is its lower triangle)
        np.int32(want_vector),
        np.int64(B),
    )
    several_kernel = 1 < count and n <= SEVERAL_MAX_N
    paired = n <= PAIRED_MAX_N and (PAIRED_SEVERAL or not several_kernel)
    function = _function(n, A.dtype, index, several_kernel, packed_n is not None, paired)
    # Launched straight on torch's current stream (a few microseconds less than
    # entering CuPy's stream and device contexts, which matters for small calls).
    stream = current_cupy_stream(index)
    with launch_device(index):
        function(((B + 1) // 2 if paired else B,), (32 * ((n + 31) // 32),), args, 0, stream)
    return value, (vector if want_vector else None)


_TRIDIAGONAL_SOURCE_PATH = Path(__file__).with_name("_tridiagonal_source.cu")
_TRIDIAGONAL_WARPS_PER_BLOCK = 4


@functools.lru_cache(maxsize=None)
def _tridiagonal_kernel(dtype: torch.dtype):
    cupy = import_cupy()
    defines = {key: _DEFINES[dtype][key] for key in ("real", "EPS", "SAFE_MIN", "INF")}
    header = "".join(f"#define {name} {value}\n" for name, value in defines.items())
    return cupy.RawKernel(header + _TRIDIAGONAL_SOURCE_PATH.read_text(), "kth_tridiagonal")


def tridiagonal_k(diagonal: torch.Tensor, off: torch.Tensor, k: int, want_vector: bool):
    """k-th eigenvalue (B,) and, with want_vector, unit eigenvector (B, n) of symmetric
    tridiagonal matrices: contiguous CUDA diagonals (B, n) and off-diagonals (B, n - 1).
    A warp per matrix; torch-allocated outputs on torch's current stream (capture-safe)."""
    B, n = diagonal.shape
    value = torch.empty(B, dtype=diagonal.dtype, device=diagonal.device)
    vector = torch.empty(B, n, dtype=diagonal.dtype, device=diagonal.device) if want_vector else value
    work = torch.empty(B * 5 * n if want_vector else 1, dtype=diagonal.dtype, device=diagonal.device)
    index = diagonal.device.index
    key = ("tridiagonal", diagonal.dtype, index)
    function = _FUNCTIONS.get(key)
    if function is None:
        with import_cupy().cuda.Device(index):
            function = _FUNCTIONS[key] = _tridiagonal_kernel(diagonal.dtype).kernel
    off_pointer = off.data_ptr() if off.numel() else diagonal.data_ptr()  # never read when n = 1
    args = (np.uint64(diagonal.data_ptr()), np.uint64(off_pointer), np.uint64(value.data_ptr()),
            np.uint64(vector.data_ptr()), np.uint64(work.data_ptr()), np.int32(B), np.int32(n), np.int32(k),
            np.int32(want_vector))
    stream = current_cupy_stream(index)
    blocks = (B + _TRIDIAGONAL_WARPS_PER_BLOCK - 1) // _TRIDIAGONAL_WARPS_PER_BLOCK
    with launch_device(index):
        function((blocks,), (32 * _TRIDIAGONAL_WARPS_PER_BLOCK,), args, 0, stream)
    return value, (vector if want_vector else None)


def eigvalsh_k(A: torch.Tensor, k, lower: bool) -> torch.Tensor:
    """k-th eigenvalue of each matrix of a contiguous CUDA (B, n, n) batch, (B, K) for a tuple of
    indices; NaN where A is not finite."""
    return _launch(A, k, lower, want_vector=False)[0]


def eigh_k(A: torch.Tensor, k, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous CUDA batch; (B, K) and
    (B, K, n) for a tuple of indices."""
    return _launch(A, k, lower, want_vector=True)


def packed_k(P: torch.Tensor, n: int, k, want_vector: bool):
    """k-th eigenvalue (B,) and, with want_vector, unit eigenvector (B, n) of symmetric n x n
    matrices given as their lower triangles row by row, a contiguous CUDA (B, n (n + 1) / 2)
    batch; (B, K) and (B, K, n) for a tuple of indices; NaN where P is not finite."""
    return _launch(P, k, True, want_vector, packed_n=n)


_PACKED_GRAD_SOURCE = r"""
// out (B, n (n + 1) / 2): the gradient of sum_j g_j lambda_j with respect to the packed entries,
// sum_j g_j q_ji q_jl for entry (i, l), twice where i != l (it stands for a_il and a_li); vectors
// (B, K, n), g (B, K)
template <typename T>
__device__ void packed_grad(const T* vectors, const T* g, T* out, long long B, int n, int K) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long P = (long long)n * (n + 1) / 2;
    if (idx >= B * P) return;
    long long b = idx / P;
    int p = (int)(idx - b * P);
    int i = (int)((sqrtf(8.0f * p + 1.0f) - 1.0f) * 0.5f);
    while (i * (i + 1) / 2 > p) --i;
    while ((i + 1) * (i + 2) / 2 <= p) ++i;
    int l = p - i * (i + 1) / 2;
    const T* q = vectors + b * K * n;
    T total = (T)0;
    for (int j = 0; j < K; ++j) total += g[b * K + j] * q[j * n + i] * q[j * n + l];
    out[idx] = i == l ? total : (T)2 * total;
}
extern "C" __global__ void packed_grad_float(const float* q, const float* g, float* out, long long B, int n, int K) {
    packed_grad<float>(q, g, out, B, n, K);
}
extern "C" __global__ void packed_grad_double(const double* q, const double* g, double* out, long long B, int n,
                                              int K) {
    packed_grad<double>(q, g, out, B, n, K);
}
"""
_PACKED_GRAD = RawKernels(_PACKED_GRAD_SOURCE, "backend='kernel'")


def packed_grad(vectors: torch.Tensor, grad_values: torch.Tensor) -> torch.Tensor:
    """The gradient of sum g lambda_k with respect to packed matrices (:func:`packed_k`) from the
    unit vectors (B, n) or (B, K, n) and g (B,) or (B, K): (B, n (n + 1) / 2)."""
    B, n = vectors.shape[0], vectors.shape[-1]
    K = vectors.shape[1] if vectors.dim() == 3 else 1
    out = vectors.new_empty(B, n * (n + 1) // 2)
    _PACKED_GRAD.launch("packed_grad", vectors.dtype, vectors.device.index, (out.numel() + 255) // 256, 256,
                        (vectors.contiguous(), grad_values.to(vectors.dtype).contiguous(), out, np.int64(B),
                         np.int32(n), np.int32(K)))
    return out


BACKEND = EigenBackend(
    name="kernel",
    eigvalsh_k=eigvalsh_k,
    eigh_k=eigh_k,
    device_types=frozenset({"cuda"}),
    max_n=MAX_N,
    capture_safe=True,  # torch-allocated outputs, launched on torch's current stream, no host sync
    is_available=is_available,
    require=lambda: require_cupy("backend='kernel'"),
    tridiagonal_k=tridiagonal_k,  # any n: a warp per matrix (_tridiagonal_source.cu)
    several_k=True,  # evenly spaced indices in one launch (the model's quantiles), others one by one
    packed_k=packed_k,  # lower triangles, packed: the model's matrices assembled on CUDA
    packed_grad=packed_grad,
)
