// The fused k-th eigenpair kernel (skspectral/eig/_kernel_backend.py compiles it with NVRTC).
//
// One block per matrix, one thread per row: thread r keeps row r of the symmetric matrix in
// registers (N is a compile-time constant, so the row is a register array).
//   1. load: a coalesced copy into shared memory, each thread then takes its row from the
//      triangle that is read; NaN/inf anywhere in that triangle -> NaN outputs; the matrix is
//      scaled by a power of two (exact) so that max |a_ij| lies in [0.5, 1).
//   2. Householder tridiagonalisation T = Q^T A Q (the syevx route, ~(4/3) N^3 flops):
//      step k reflects column k; p = tau A v is a register-times-broadcast product, the
//      rank-2 update A -= v w^T + w v^T touches only registers. The reflectors are kept in
//      shared memory for the back-transform.
//   3. lambda_k of T by multisection: the 32 lanes of warp 0 evaluate Sturm counts at 32
//      points of the bracket at once (5 bits per round; 16 points, 4 bits, when PAIRED),
//      starting from Gershgorin bounds.
//   4. (vector only) inverse iteration on T - lambda I (Gaussian elimination with partial
//      pivoting, tiny pivots replaced by eps*|T|), two solves, then q = H_0 ... H_{N-3} y.
// Compiled with SEVERAL 1 for several indices (a model's quantiles): their steps 3 and 4 run side
// by side instead of one after the other, up to 16 indices at a time: in step 3 each index has a
// group of 32 / count lanes (fewer points a round, the indices' rounds together), in step 4 a lane
// of its own (the vector in registers: more registers, hence a kernel of its own).
// Compiled with PACKED 1 the input holds each matrix's lower triangle row by row, N (N + 1) / 2
// entries (the model's symmetric matrices assembled on CUDA: half the product and the traffic).
// Compiled with PAIRED 1 (N <= 16) a block is one warp holding two matrices, one per half-warp:
// a matrix's solve is a chain of dependent steps whose length does not depend on how many of
// the warp's lanes take part, so a 16-row matrix alone leaves half the lanes idle and the SM
// holds half the matrices its registers allow. Warp collectives then span 16 lanes (shuffles
// within the half), multisection evaluates 16 points a round, and what differs between the two
// matrices (a zero reflector, a settled bracket, NaN input) never makes a half skip a collective.
// Expects defines N >= 2 (matrix size), real (float/double), vec_t (float4/double2), EPS,
// SAFE_MIN, INF, MIN_EXP, ITERS (multisection rounds at 33 points), SEVERAL, PACKED and PAIRED
// (0 or 1), MIN_BLOCKS (blocks an SM must hold: the compiler's register budget; 1 leaves it free).

#if N < 2
#error "N >= 2: the 1 x 1 case is answered without the kernel"
#endif
// fp32 Sturm counts use the fast 2-ulp division: a count near lambda_k is as good either way
#define DIVIDE(a, b) (sizeof(real) == 4 ? (real)__fdividef((float)(a), (float)(b)) : (a) / (b))
#if PAIRED && N > 16
#error "PAIRED: two matrices of at most 16 rows a warp"
#endif
#define NW ((N + 31) / 32)          // warps per block; the block has 32 * NW threads
#define MPB (PAIRED ? 2 : 1)        // matrices per block
#define LANES (PAIRED ? 16 : 32)    // lanes a matrix's warp collectives span
#define TPM (PAIRED ? 16 : 32 * NW) // threads per matrix
#define FULL 0xffffffffu
#define VW (sizeof(real) == 4 ? 4 : 2)  // elements per 16-byte shared load
#define LDV (((N + VW - 1) / VW) * VW)  // padded row length of the reflector store
#define LDS (N | 1)                 // odd row stride of the staging copy: no bank conflicts
#define NV (N > 2 ? N - 2 : 1)      // number of reflectors kept
// (a multiple of VW: the second matrix's store stays 16-byte aligned)
#define STORE_ELEMS ((((NV * LDV > N * LDS) ? NV * LDV : N * LDS) + VW - 1) / VW * VW)


__device__ __forceinline__ real warp_sum(real x) {
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) x += __shfl_xor_sync(FULL, x, o);
    return x;
}

__device__ __forceinline__ real warp_max(real x) {
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) x = fmax(x, __shfl_xor_sync(FULL, x, o));
    return x;
}

__device__ __forceinline__ real warp_min(real x) {
#pragma unroll
    for (int o = LANES / 2; o > 0; o >>= 1) x = fmin(x, __shfl_xor_sync(FULL, x, o));
    return x;
}

// Sum over the matrix's threads of one value per thread; every thread gets the total.
// One __syncthreads: the caller must not reuse `slot` before the next barrier.
__device__ __forceinline__ real block_sum(real x, real* slot) {
    x = warp_sum(x);
    if (NW == 1) return x;
    if ((threadIdx.x & 31) == 0) slot[threadIdx.x >> 5] = x;
    __syncthreads();
    real total = 0;
#pragma unroll
    for (int w = 0; w < NW; ++w) total += slot[w];
    return total;
}

// sum_c row[c] * s[c] for a 16-byte aligned shared vector s (broadcast reads) that is zero
// at c <= first_live - 1: chunks wholly before first_live are skipped (a uniform branch).
__device__ __forceinline__ real dot_row(const real (&row)[N], const real* s, int first_live) {
    real acc[VW] = {};  // VW independent chains instead of one long dependent one
#pragma unroll
    for (int c0 = 0; c0 < N; c0 += VW) {
        if (c0 + VW <= first_live) continue;
        const vec_t chunk = *reinterpret_cast<const vec_t*>(s + c0);
        const real* part = reinterpret_cast<const real*>(&chunk);
#pragma unroll
        for (int t = 0; t < VW; ++t)
            if (c0 + t < N) acc[t] += row[c0 + t] * part[t];
    }
    real total = 0;
#pragma unroll
    for (int t = 0; t < VW; ++t) total += acc[t];
    return total;
}

// Number of eigenvalues of T (diagonal d, squared off-diagonal e2) smaller than x.
__device__ __forceinline__ int sturm_count(const real* d, const real* e2, real x, real pivmin) {
    real q = d[0] - x;
    if (fabs(q) <= pivmin) q = -pivmin;
    int count = q < 0;
    for (int i = 1; i < N; ++i) {
        q = (d[i] - x) - DIVIDE(e2[i - 1], q);
        if (fabs(q) <= pivmin) q = -pivmin;
        count += q < 0;
    }
    return count;
}

extern "C" __global__ void __launch_bounds__(32 * NW, MIN_BLOCKS) kth_eigenpair(
    const real* __restrict__ input, real* __restrict__ value, real* __restrict__ vector,
    const int k_first, const int count, const int stride, const int lower, const int want_vector,
    const long long batch)
{
    // per matrix of the block: the staging copy, then the reflectors; w; the tridiagonal matrix
    __shared__ __align__(16) real store_all[MPB][STORE_ELEMS];
    __shared__ __align__(16) real w_all[MPB][LDV];
    __shared__ real d_all[MPB][N], e_all[MPB][N], e2_all[MPB][N], taus_all[MPB][NV], red_all[MPB][2][NW];
    __shared__ real x_next_all[MPB];
#if !SEVERAL
    __shared__ real u0_all[MPB][N], u1_all[MPB][N], u2_all[MPB][N], mult_all[MPB][N], y_all[MPB][N];
    __shared__ int swapped_all[MPB][N];
#endif

    const int half = PAIRED ? (int)(threadIdx.x >> 4) : 0;  // the block's matrix this thread works on
    const int r = PAIRED ? (int)(threadIdx.x & 15) : (int)threadIdx.x;  // its row
    const int lane = r & 31;  // its lane among the matrix's LANES
    const int lane_base = PAIRED ? 16 * half : 0;  // the matrix's first lane of the warp
    const unsigned half_mask = PAIRED ? (0xffffu << lane_base) : FULL;
    // a missing second matrix (odd batch) repeats the first's work and writes nothing
    const long long b = min((long long)blockIdx.x * MPB + half, batch - 1);
    const bool writes = (long long)blockIdx.x * MPB + half < batch;
    // this thread's matrix's shared arrays
    real *const store = store_all[half], *const w_shared = w_all[half], *const d = d_all[half],
         *const e = e_all[half], *const e2 = e2_all[half], *const taus = taus_all[half];
    real (*const red)[NW] = red_all[half];
#if !SEVERAL
    real *const u0 = u0_all[half], *const u1 = u1_all[half], *const u2 = u2_all[half],
         *const mult = mult_all[half], *const y = y_all[half];
    int* const swapped = swapped_all[half];
#endif
    const real nan_value = (real)nan("");

    // 1. load (coalesced), check, take row r, scale.
    bool bad = false;
    real amax = 0;
#if PACKED
    const real* src = input + b * (long long)(N * (N + 1) / 2);
    for (int idx = r; idx < N * (N + 1) / 2; idx += TPM) {
        int i = (int)((sqrtf(8.0f * idx + 1.0f) - 1.0f) * 0.5f);  // the row of entry idx (then exact)
        while (i * (i + 1) / 2 > idx) --i;
        while ((i + 1) * (i + 2) / 2 <= idx) ++i;
        const int j = idx - i * (i + 1) / 2;
        const real x = src[idx];
        store[i * LDS + j] = x;
        bad |= !isfinite(x);
        amax = fmax(amax, fabs(x));
    }
#else
    const real* src = input + b * (long long)(N * N);
    for (int idx = r; idx < N * N; idx += TPM) {
        const int i = idx / N, j = idx - (idx / N) * N;
        const real x = src[idx];
        store[i * LDS + j] = x;
        if (lower ? (j <= i) : (j >= i)) {
            bad |= !isfinite(x);
            amax = fmax(amax, fabs(x));
        }
    }
#endif
    amax = warp_max(amax);
    if (lane == 0) red[0][r >> 5] = amax;
#if PAIRED
    const bool any_bad = (__ballot_sync(FULL, bad) & half_mask) != 0;
    __syncwarp();
#else
    const bool any_bad = __syncthreads_or(bad);
#endif
    amax = red[0][0];
#pragma unroll
    for (int w = 1; w < NW; ++w) amax = fmax(amax, red[0][w]);
    // NaN/inf -> NaN outputs; the zero matrix: lambda_k = 0 exactly, q_k = e_k. Alone in its block
    // such a matrix returns here; paired, its half goes on with a zero matrix and writes nothing.
    const bool special = any_bad || amax == 0;
    if (special && writes) {
        for (int i = r; i < count; i += TPM) value[b * count + i] = any_bad ? nan_value : (real)0;
        if (want_vector)
            for (int i = r; i < N * count; i += TPM)
                vector[b * N * count + i] = any_bad ? nan_value : ((i % N == k_first + (i / N) * stride) ? 1 : 0);
    }
#if !PAIRED
    if (special) return;
#endif
    const bool writes_result = writes && !special;
    int exponent = 0;
    if (amax > 0 && !special) frexp(amax, &exponent);
    exponent = max(exponent, MIN_EXP);  // a tiny matrix is scaled up only as far as is finite
    const real scale = special ? (real)1 : ldexp((real)1, -exponent);  // power of two: exact
    real a[N];
#pragma unroll
    for (int c = 0; c < N; ++c) {
        real x = 0;
        if (r < N && !special) {
            const bool direct = lower ? (c <= r) : (c >= r);
            x = direct ? store[r * LDS + c] : store[c * LDS + r];
        }
        a[c] = x * scale;
    }
    __syncthreads();  // the staging copy is overwritten by reflectors below

    // 2. tridiagonalisation
    for (int kk = 0; kk < N - 2; ++kk) {
        real x = 0;  // A[r][kk], selected without dynamic register indexing
#pragma unroll
        for (int c0 = 0; c0 < N; c0 += VW) {
            if (kk < c0 || kk >= c0 + VW) continue;  // uniform: only kk's chunk
#pragma unroll
            for (int t = 0; t < VW; ++t) if (c0 + t < N && c0 + t == kk) x = a[c0 + t];
        }
        if (r == kk) d[kk] = x;
        if (r == kk + 1) x_next_all[half] = x;
        const real sigma = block_sum((r > kk + 1 && r < N) ? x * x : (real)0, red[0]);
        if (NW == 1) __syncthreads();  // x_next visible
        const real x0 = x_next_all[half];
        real tau = 0, beta = x0, v = 0;
        if (sigma > SAFE_MIN) {
            const real norm = sqrt(x0 * x0 + sigma);
            beta = x0 > 0 ? -norm : norm;
            const real v0 = x0 - beta;
            tau = 2 / (v0 * v0 + sigma);
            v = (r == kk + 1) ? v0 : ((r > kk + 1 && r < N) ? x : (real)0);
        }
        real* vk = store + kk * LDV;
        if (r < LDV) vk[r] = v;
        if (r == 0) { taus[kk] = tau; e[kk] = beta; }
        __syncthreads();
        // tau is the same in the matrix's threads; paired, a zero reflector's update (v = w = 0)
        // leaves a unchanged while the other half's runs: the collectives inside see both halves
        if (PAIRED ? __any_sync(FULL, tau != 0) : tau != 0) {
            const real p = tau * dot_row(a, vk, kk + 1);
            const real vp = block_sum(v * p, red[1]);
            const real w = p - (tau / 2) * vp * v;
            if (r < LDV) w_shared[r] = w;
            __syncthreads();
#pragma unroll
            for (int c0 = 0; c0 < N; c0 += VW) {
                if (c0 + VW <= kk + 1) continue;  // columns <= kk are finished: leave them
                const vec_t wc = *reinterpret_cast<const vec_t*>(w_shared + c0);
                const vec_t vc = *reinterpret_cast<const vec_t*>(vk + c0);
                const real* wp = reinterpret_cast<const real*>(&wc);
                const real* vp2 = reinterpret_cast<const real*>(&vc);
#pragma unroll
                for (int t = 0; t < VW; ++t)
                    if (c0 + t < N) a[c0 + t] -= v * wp[t] + w * vp2[t];
            }
        }
    }
    if (N >= 2) {
        if (r == N - 2) d[N - 2] = a[N - 2];
        if (r == N - 1) { d[N - 1] = a[N - 1]; e[N - 2] = a[N - 2]; }
    } else if (r == 0) {
        d[0] = a[0];
    }
    __syncthreads();
    if (r >= 32) return;  // warp 0 finishes alone: no block barriers below

    // 3. lambda_k by multisection on warp 0, for each k = k_first + j * stride, j < count (the
    //    reduction above is shared: each further index costs its multisection and vector only)
    real glo_all = 0, ghi_all = 0, emax2 = 0;
    {
        real glo = INF, ghi = -INF;
        for (int i = lane; i < N; i += LANES) {
            const real left = i > 0 ? fabs(e[i - 1]) : (real)0;
            const real right = i < N - 1 ? fabs(e[i]) : (real)0;
            glo = fmin(glo, d[i] - left - right);
            ghi = fmax(ghi, d[i] + left + right);
            if (i < N - 1) { e2[i] = e[i] * e[i]; emax2 = fmax(emax2, e2[i]); }
        }
        glo = warp_min(glo);
        ghi = warp_max(ghi);
        emax2 = warp_max(emax2);
        const real width = fmax(ghi - glo, (real)1) * (2 * EPS);
        glo_all = glo - width;
        ghi_all = ghi + width;
    }
    __syncwarp();
    const real tnorm = fmax(fabs(glo_all), fabs(ghi_all));
    const real pivmin = SAFE_MIN * fmax((real)1, emax2);
#if SEVERAL
    for (int c0 = 0; c0 < count; c0 += 16) {
        // indices c0 .. c0 + chunk - 1 at once: index c0 + g in lanes [g G, (g + 1) G)
        const int chunk = min(count - c0, 16);
        const int G = LANES / chunk;
        const int group = lane / G, pos = lane - group * G;
        const bool in_group = group < chunk;
        const int k = k_first + (c0 + min(group, chunk - 1)) * stride;
        const unsigned group_mask = (G == 32 ? FULL : ((1u << G) - 1u) << (group * G)) << lane_base;
        // as many rounds as ITERS gives bits, at log2(G + 1) bits a round
        const int rounds = G == 32 ? ITERS : (int)ceilf(ITERS * 5.04439412f / log2f((float)(G + 1)));
        real lo = glo_all, hi = ghi_all;
        bool settled = !in_group;
        for (int it = 0; it < rounds; ++it) {
            const real h = (hi - lo) / (G + 1);
            const real x = lo + (pos + 1) * h;
            const unsigned below = __ballot_sync(FULL, !settled && sturm_count(d, e2, x, pivmin) <= k);
            if (!settled) {
                const int j = __popc(below & group_mask);  // counts grow with x: the group's first j lie below
                const real new_lo = j > 0 ? lo + j * h : lo;
                const real new_hi = j < G ? lo + (j + 1) * h : hi;
                lo = new_lo;
                hi = fmax(new_hi, new_lo);
                settled = hi - lo <= 2 * EPS * fmax(fabs(lo), fabs(hi));
            }
            if (__all_sync(FULL, settled)) break;
        }
        const real lambda = lo + (hi - lo) / 2;
        if (writes_result && in_group && pos == 0) value[b * count + c0 + group] = lambda / scale;
        if (!want_vector) continue;

        // 4. eigenvectors: lane j < chunk takes index c0 + j (its lambda from its group's first lane)
        const real lam = __shfl_sync(FULL, lambda, min(lane, chunk - 1) * G, LANES);
        if (lane < chunk) {
            real mult[N], u0[N], u1[N], u2[N], y[N];
            bool swapped[N];
            const real small = tnorm > 0 ? EPS * tnorm : (real)1;
            real cd = d[0] - lam, cs = N > 1 ? e[0] : (real)0;
#pragma unroll
            for (int i = 0; i < N - 1; ++i) {
                const real bi = e[i], an = d[i + 1] - lam, cn = (i + 1 < N - 1) ? e[i + 1] : (real)0;
                if (fabs(cd) >= fabs(bi)) {
                    const real pivot = cd != 0 ? cd : small;
                    mult[i] = bi / pivot; u0[i] = pivot; u1[i] = cs; u2[i] = 0; swapped[i] = false;
                    cd = an - mult[i] * cs; cs = cn;
                } else {
                    const real l = cd / bi;
                    mult[i] = l; u0[i] = bi; u1[i] = an; u2[i] = cn; swapped[i] = true;
                    cd = cs - l * an; cs = -l * cn;
                }
            }
            u0[N - 1] = cd;
#pragma unroll
            for (int i = 0; i < N; ++i)  // reciprocal pivots, as in the one-index kernel
                u0[i] = 1 / (fabs(u0[i]) < small ? (u0[i] < 0 ? -small : small) : u0[i]);
#pragma unroll
            for (int i = 0; i < N; ++i) y[i] = 1 + (real)((i * 7) % 11) / 16;
            for (int solve = 0; solve < 2; ++solve) {
#pragma unroll
                for (int i = 0; i < N - 1; ++i) {
                    if (swapped[i]) { const real t = y[i]; y[i] = y[i + 1]; y[i + 1] = t - mult[i] * y[i]; }
                    else y[i + 1] -= mult[i] * y[i];
                }
                y[N - 1] *= u0[N - 1];
                y[N - 2] = (y[N - 2] - u1[N - 2] * y[N - 1]) * u0[N - 2];
#pragma unroll
                for (int i = N - 3; i >= 0; --i) y[i] = (y[i] - u1[i] * y[i + 1] - u2[i] * y[i + 2]) * u0[i];
                real ymax = 0;
#pragma unroll
                for (int i = 0; i < N; ++i) ymax = fmax(ymax, fabs(y[i]));
                const real inv = 1 / ymax;
#pragma unroll
                for (int i = 0; i < N; ++i) y[i] *= inv;
            }
            // q = H_0 ... H_{N-3} y, the last reflector first (a reflector's v is 0 up to its column)
            for (int kk = N - 3; kk >= 0; --kk) {
                const real tau = taus[kk];
                if (tau == 0) continue;
                const real* vk = store + kk * LDV;
                real s = 0;
#pragma unroll
                for (int i = 0; i < N; ++i) s += vk[i] * y[i];
                s *= tau;
#pragma unroll
                for (int i = 0; i < N; ++i) y[i] -= s * vk[i];
            }
            real sq = 0;
#pragma unroll
            for (int i = 0; i < N; ++i) sq += y[i] * y[i];
            const real inv_norm = 1 / sqrt(sq);
            real* out = vector + (b * count + c0 + lane) * (long long)N;
#pragma unroll
            for (int i = 0; i < N; ++i) if (writes_result) out[i] = y[i] * inv_norm;
        }
        __syncwarp();
    }
#else
    for (int jk = 0; jk < count; ++jk) {
        const int k = k_first + jk * stride;
        const long long out = b * count + jk;  // this index's value; its vector at out * N
        real lo = glo_all, hi = ghi_all;
        // LANES points a round: ITERS rounds of 33 points give the bits that ROUNDS of 17 do
        constexpr int ROUNDS = PAIRED ? (ITERS * 5044 + 4086) / 4087 : ITERS;
        bool settled = false;
        for (int it = 0; it < ROUNDS; ++it) {
            const real h = (hi - lo) / (LANES + 1);
            const real x = lo + (lane + 1) * h;
            const unsigned below = __ballot_sync(FULL, !settled && sturm_count(d, e2, x, pivmin) <= k);
            if (!settled) {
                const int j = __popc(below & half_mask);  // counts grow with x: the first j lanes lie below
                const real new_lo = j > 0 ? lo + j * h : lo;
                const real new_hi = j < LANES ? lo + (j + 1) * h : hi;
                lo = new_lo;
                hi = fmax(new_hi, new_lo);
                settled = hi - lo <= 2 * EPS * fmax(fabs(lo), fabs(hi));
            }
            if (__all_sync(FULL, settled)) break;  // (a warp-wide exit: the halves' ballots stay together)
        }
        const real lambda = lo + (hi - lo) / 2;
        if (writes_result && lane == 0) value[out] = lambda / scale;
        if (!want_vector) continue;

        // 4. eigenvector: inverse iteration on T (lane 0), then the back-transform (warp 0)
        if (lane == 0) {
            const real small = tnorm > 0 ? EPS * tnorm : (real)1;
            real cd = d[0] - lambda, cs = N > 1 ? e[0] : (real)0;
            for (int i = 0; i < N - 1; ++i) {
                const real bi = e[i], an = d[i + 1] - lambda, cn = (i + 1 < N - 1) ? e[i + 1] : (real)0;
                if (fabs(cd) >= fabs(bi)) {
                    const real pivot = cd != 0 ? cd : small;
                    mult[i] = bi / pivot; u0[i] = pivot; u1[i] = cs; u2[i] = 0; swapped[i] = 0;
                    cd = an - mult[i] * cs; cs = cn;
                } else {
                    const real l = cd / bi;
                    mult[i] = l; u0[i] = bi; u1[i] = an; u2[i] = cn; swapped[i] = 1;
                    cd = cs - l * an; cs = -l * cn;
                }
            }
            u0[N - 1] = cd;
            for (int i = 0; i < N; ++i)  // u0 now holds reciprocal pivots: the solves only multiply
                u0[i] = 1 / (fabs(u0[i]) < small ? (u0[i] < 0 ? -small : small) : u0[i]);
            for (int i = 0; i < N; ++i) y[i] = 1 + (real)((i * 7) % 11) / 16;  // no special structure
            // lambda is accurate to rounding, so the first solve already lands on q_k unless the
            // start vector is nearly orthogonal to it; the second makes sure.
            for (int solve = 0; solve < 2; ++solve) {
                for (int i = 0; i < N - 1; ++i) {
                    if (swapped[i]) { const real t = y[i]; y[i] = y[i + 1]; y[i + 1] = t - mult[i] * y[i]; }
                    else y[i + 1] -= mult[i] * y[i];
                }
                y[N - 1] *= u0[N - 1];
                y[N - 2] = (y[N - 2] - u1[N - 2] * y[N - 1]) * u0[N - 2];
                for (int i = N - 3; i >= 0; --i) y[i] = (y[i] - u1[i] * y[i + 1] - u2[i] * y[i + 2]) * u0[i];
                real ymax = 0;
                for (int i = 0; i < N; ++i) ymax = fmax(ymax, fabs(y[i]));
                const real inv = 1 / ymax;
                for (int i = 0; i < N; ++i) y[i] *= inv;
            }
        }
        __syncwarp();
        constexpr int PER_LANE = (N + LANES - 1) / LANES;
        real yl[PER_LANE];
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) yl[j] = (lane + LANES * j < N) ? y[lane + LANES * j] : (real)0;
        for (int kk = N - 3; kk >= 0; --kk) {
            const real tau = taus[kk];
            // (paired: skipped only when both halves' reflectors are zero -- warp_sum below is a
            // collective; a zero one's v = 0 changes nothing)
            if (PAIRED ? !__any_sync(FULL, tau != 0) : tau == 0) continue;
            const real* vk = store + kk * LDV;
            real s = 0;
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) if (lane + LANES * j < N) s += vk[lane + LANES * j] * yl[j];
            s = tau * warp_sum(s);
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) if (lane + LANES * j < N) yl[j] -= s * vk[lane + LANES * j];
        }
        real sq = 0;
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) sq += yl[j] * yl[j];
        const real inv_norm = 1 / sqrt(warp_sum(sq));
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j)
            if (writes_result && lane + LANES * j < N) vector[out * N + lane + LANES * j] = yl[j] * inv_norm;
        __syncwarp();  // every lane has read y before lane 0 writes the next index's
    }
#endif
}
