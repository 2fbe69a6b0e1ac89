// The k-th eigenpair of symmetric tridiagonal matrices (skspectral/eig/_kernel_backend.py
// compiles it with NVRTC; one module per dtype, n is a runtime argument).
//
// One warp per matrix (4 per block), O(n) memory per matrix, so n can be in the hundreds:
//   1. load: finiteness and the largest entry by the warp (NaN/inf -> NaN outputs); the
//      entries are scaled by a power of two (exact) so that the largest lies in [0.5, 1).
//   2. lambda_k by multisection: each lane runs the Sturm recurrence at one of 32 points of
//      the bracket (5 bits per round); the counts rise with x, so a ballot finds the new
//      bracket. Starts from Gershgorin bounds; ends when the bracket is at the rounding level.
//   3. (vector only) inverse iteration on T - lambda I by lane 0 (Gaussian elimination with
//      partial pivoting, tiny pivots replaced by eps*|T|, two solves), the warp normalises.
// Expects defines real (float/double), EPS, SAFE_MIN, INF.

#define FULL_MASK 0xffffffffu
#define DIVIDE(a, b) (sizeof(real) == 4 ? (real)__fdividef((float)(a), (float)(b)) : (a) / (b))
#define MAX_ROUNDS 64

__device__ __forceinline__ real tri_warp_max(real x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmax(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

__device__ __forceinline__ real tri_warp_min(real x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmin(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

__device__ __forceinline__ real tri_warp_sum(real x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}

// number of eigenvalues of the scaled T below x
__device__ __forceinline__ int sturm_count(const real* __restrict__ d, const real* __restrict__ e, int n,
                                           real scale, real x, real pivmin) {
    real q = d[0] * scale - x;
    if (fabs(q) < pivmin) q = -pivmin;
    int count = q < 0;
    for (int i = 1; i < n; ++i) {
        real b = e[i - 1] * scale;
        q = d[i] * scale - x - DIVIDE(b * b, q);
        if (fabs(q) < pivmin) q = -pivmin;
        count += q < 0;
    }
    return count;
}

extern "C" __global__ void kth_tridiagonal(const real* __restrict__ diag, const real* __restrict__ off,
                                           real* __restrict__ value, real* __restrict__ vector,
                                           real* __restrict__ work, int B, int n, int k, int want_vector) {
    const int matrix = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (matrix >= B) return;  // whole warps leave together
    const real* d = diag + (size_t)matrix * n;
    const real* e = off + (size_t)matrix * (n - 1);
    real* q = vector + (size_t)matrix * n;

    // 1. finiteness, largest entry, exact scaling
    bool bad = false;
    real largest = 0;
    for (int i = lane; i < n; i += 32) {
        real a = d[i];
        real b = i < n - 1 ? e[i] : (real)0;
        bad |= !(isfinite(a) && isfinite(b));
        largest = fmax(largest, fmax(fabs(a), fabs(b)));
    }
    bad = __any_sync(FULL_MASK, bad);
    largest = tri_warp_max(largest);
    if (bad || largest == 0) {
        const real nan = INF - INF;
        if (lane == 0) value[matrix] = bad ? nan : (real)0;
        if (want_vector)
            for (int i = lane; i < n; i += 32) q[i] = bad ? nan : (real)(i == k);
        return;
    }
    int exponent;
    frexp(largest, &exponent);
    const real scale = ldexp((real)1, -exponent);

    // Gershgorin bounds of the scaled matrix
    real lo = INF, hi = -INF, emax2 = 0;
    for (int i = lane; i < n; i += 32) {
        real left = i > 0 ? fabs(e[i - 1]) * scale : (real)0;
        real right = i < n - 1 ? fabs(e[i]) * scale : (real)0;
        lo = fmin(lo, d[i] * scale - left - right);
        hi = fmax(hi, d[i] * scale + left + right);
        emax2 = fmax(emax2, right * right);
    }
    lo = tri_warp_min(lo);
    hi = tri_warp_max(hi);
    emax2 = tri_warp_max(emax2);
    const real pivmin = SAFE_MIN * fmax((real)1, emax2);
    const real gnorm = fmax(fabs(lo), fabs(hi));
    const real margin = 2 * EPS * gnorm + 2 * pivmin;
    lo -= margin;
    hi += margin;

    // 2. multisection: 32 points per round, lo and hi are the same in every lane
    for (int round = 0; round < MAX_ROUNDS; ++round) {
        if (hi - lo <= fmax(fmax(2 * EPS * fmax(fabs(lo), fabs(hi)), EPS * gnorm), pivmin)) break;
        const real step = (hi - lo) / 33;
        const real x = lo + (lane + 1) * step;
        const int count = sturm_count(d, e, n, scale, x, pivmin);
        const int below = __popc(__ballot_sync(FULL_MASK, count <= k));  // lanes [0, below) are at or below k
        const real x_lo = __shfl_sync(FULL_MASK, x, below > 0 ? below - 1 : 0);
        const real x_hi = __shfl_sync(FULL_MASK, x, below < 32 ? below : 31);
        const real new_lo = below > 0 ? x_lo : lo;
        const real new_hi = below < 32 ? x_hi : hi;
        if (new_lo == lo && new_hi == hi) break;  // no representable point inside
        lo = new_lo;
        hi = new_hi;
    }
    const real lam = (real)0.5 * (lo + hi);
    if (lane == 0) value[matrix] = lam / scale;
    if (!want_vector) return;

    // 3. inverse iteration by lane 0: rows (L0 = pivot, U1, U2) after elimination, L1 = multiplier
    if (lane == 0) {
        real floor_ = EPS * gnorm;
        if (floor_ == 0) floor_ = SAFE_MIN;
        real* L0 = work + (size_t)matrix * 5 * n;
        real* L1 = L0 + n;
        real* U1 = L1 + n;
        real* U2 = U1 + n;
        real* P = U2 + n;
        real dd = d[0] * scale - lam;
        real ud = n > 1 ? e[0] * scale : (real)0;
        for (int i = 0; i < n - 1; ++i) {
            const real sub = e[i] * scale;
            const real next_d = d[i + 1] * scale - lam;
            const real next_u = i + 1 < n - 1 ? e[i + 1] * scale : (real)0;
            real factor;
            if (fabs(sub) > fabs(dd)) {  // swap rows i and i + 1
                P[i] = 1;
                factor = dd / sub;
                L0[i] = sub;
                U1[i] = next_d;
                U2[i] = next_u;
                dd = ud - factor * next_d;
                ud = -factor * next_u;
            } else {
                P[i] = 0;
                if (fabs(dd) < floor_) dd = floor_;
                factor = sub / dd;
                L0[i] = dd;
                U1[i] = ud;
                U2[i] = 0;
                dd = next_d - factor * ud;
                ud = next_u;
            }
            L1[i] = factor;
        }
        if (fabs(dd) < floor_) dd = floor_;
        L0[n - 1] = dd;
        for (int i = 0; i < n; ++i) q[i] = 1 + (real)0.1 * ((i * 7) % 11);  // no special direction
        for (int it = 0; it < 2; ++it) {
            for (int i = 0; i < n - 1; ++i) {
                if (P[i] != 0) {
                    real t = q[i];
                    q[i] = q[i + 1];
                    q[i + 1] = t;
                }
                q[i + 1] -= L1[i] * q[i];
            }
            q[n - 1] /= L0[n - 1];
            if (n > 1) q[n - 2] = (q[n - 2] - U1[n - 2] * q[n - 1]) / L0[n - 2];
            for (int i = n - 3; i >= 0; --i) q[i] = (q[i] - U1[i] * q[i + 1] - U2[i] * q[i + 2]) / L0[i];
            real norm = 0;
            for (int i = 0; i < n; ++i) norm = fmax(norm, fabs(q[i]));
            for (int i = 0; i < n; ++i) q[i] /= norm;
        }
    }
    __syncwarp();
    real squares = 0;
    for (int i = lane; i < n; i += 32) squares += q[i] * q[i];
    const real inv = 1 / sqrt(tri_warp_sum(squares));
    for (int i = lane; i < n; i += 32) q[i] *= inv;
}
