// A CPU stand-in for the CUDA features of a one-warp block, so that a kernel's source compiles with
// g++ and runs in CI, which has no GPU (tests/test_kernel_emulated.py runs the eigen kernel so).
// The block's 32 threads are fibers (ucontext) on one OS thread that take turns: each runs until a
// collective (a shuffle, ballot, vote or barrier), then hands over to the next lane; the 32nd to arrive
// goes on, so a lane resumes only after every lane has arrived. Every collective also checks that all
// lanes came from the same place in the code (the return address, compiled with -O0 so that no two
// source places share one): a collective that some lanes skip -- a half-warp branching around a
// shuffle the other half runs -- ends the launch with `emu::divergent` set instead of going unnoticed.
// Shared memory is a function's static arrays (blocks run one after the other).
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <vector>

using std::fabs; using std::fmax; using std::fmin; using std::frexp; using std::isfinite; using std::ldexp;
using std::nan; using std::sqrt;
template <typename A, typename B> inline auto min(A a, B b) { return a < b ? a : b; }
template <typename A, typename B> inline auto max(A a, B b) { return a > b ? a : b; }

#define __device__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3_t { unsigned x = 0, y = 0, z = 0; };
inline dim3_t threadIdx, blockIdx;
inline dim3_t blockDim;

struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline float __fdividef(float a, float b) { return a / b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }

namespace emu {
inline ucontext_t lanes[32], caller;
inline int arrived = 0, finished = 0;
inline double slot[32];
inline const void* site[32];
inline int divergent = 0;

inline void barrier() {
    const int me = (int)threadIdx.x;
    if (++arrived == 32) { arrived = 0; return; }
    const int next = (me + 1) & 31;
    threadIdx.x = (unsigned)next;
    swapcontext(&lanes[me], &lanes[next]);
    threadIdx.x = (unsigned)me;
}
// all 32 lanes meet; each must come from the same call site
__attribute__((noinline)) inline void meet(const void* where) {
    const unsigned lane = threadIdx.x;
    site[lane] = where;
    barrier();
    const bool apart = site[0] != where;
    barrier();
    if (apart) { divergent = 1; setcontext(&caller); }  // the launch ends here: its lanes are out of step
}
template <typename T> __attribute__((noinline)) T exchange(T x, unsigned src, const void* where) {
    meet(where);
    slot[threadIdx.x] = (double)x;  // float <-> double is exact
    barrier();
    const T y = (T)slot[src];
    barrier();
    return y;
}
__attribute__((noinline)) inline unsigned ballot(bool p, const void* where) {
    meet(where);
    slot[threadIdx.x] = p ? 1.0 : 0.0;
    barrier();
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l) if (slot[l] != 0) bits |= 1u << l;
    barrier();
    return bits;
}
}  // namespace emu

#define EMU_SITE __builtin_return_address(0)
template <typename T> __attribute__((noinline)) T __shfl_xor_sync(unsigned, T x, int o, int = 32) {
    return emu::exchange(x, threadIdx.x ^ (unsigned)o, EMU_SITE);
}
template <typename T> __attribute__((noinline)) T __shfl_sync(unsigned, T x, int src, int width = 32) {
    const unsigned base = threadIdx.x & ~(unsigned)(width - 1);
    return emu::exchange(x, base + (unsigned)(src % width), EMU_SITE);
}
__attribute__((noinline)) inline unsigned __ballot_sync(unsigned, bool p) { return emu::ballot(p, EMU_SITE); }
__attribute__((noinline)) inline bool __any_sync(unsigned, bool p) { return emu::ballot(p, EMU_SITE) != 0; }
__attribute__((noinline)) inline bool __all_sync(unsigned, bool p) { return emu::ballot(p, EMU_SITE) == 0xffffffffu; }
__attribute__((noinline)) inline int __syncthreads_or(int p) { return emu::ballot(p != 0, EMU_SITE) != 0; }
__attribute__((noinline)) inline void __syncthreads() { emu::meet(EMU_SITE); }
__attribute__((noinline)) inline void __syncwarp() { emu::meet(EMU_SITE); }
