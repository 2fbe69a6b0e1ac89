// A CPU stand-in for the CUDA features of a block (up to 1,024 threads), so that a kernel's source compiles with
// g++ and runs in CI, which has no GPU (tests/test_kernel_emulated.py runs the eigen kernel so).
// The block's threads are fibers (ucontext) on one OS thread that take turns: each
// runs until a collective (a warp's shuffle, ballot, vote or __syncwarp; the block's __syncthreads),
// then hands over; the last of its group to arrive goes on, so a lane leaves a meeting only after its
// whole group has arrived. Every meeting also checks that its lanes came from the same place in the code (the return address, compiled with -O0 so that no two
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
inline dim3_t blockDim, gridDim;

struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline float __fdividef(float a, float b) { return a / b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
// blocks run one after the other on one OS thread: a fence orders nothing more, an atomic is a plain update
inline void __threadfence() {}
inline unsigned atomicAdd(unsigned* address, unsigned value) { const unsigned old = *address; *address = old + value; return old; }

namespace emu {
constexpr int MAX_THREADS = 1024;  // CUDA's largest block (the loss kernel's)
inline int threads = 32;         // the launch's block size
inline ucontext_t lanes[MAX_THREADS], caller;
inline int finished = 0;
inline double slot[MAX_THREADS];
inline int divergent = 0;

// The lanes that must meet: a warp's 32 (shuffles, ballots, votes, __syncwarp) or the block's
// (__syncthreads). Each arrival notes where it came from; the last one releases the others.
struct Group {
    int arrived = 0;
    long generation = 0;
    const void* site = nullptr;
    bool apart = false;
};
inline Group warps[MAX_THREADS / 32], block;

inline void yield() {
    const int me = (int)threadIdx.x;
    const int next = (me + 1) % threads;
    threadIdx.x = (unsigned)next;
    swapcontext(&lanes[me], &lanes[next]);
    threadIdx.x = (unsigned)me;
}
inline void arrive(Group& group, int expected, const void* where) {
    if (group.arrived == 0) { group.site = where; group.apart = false; }
    else if (group.site != where) group.apart = true;
    const long generation = group.generation;
    if (++group.arrived == expected) {
        group.arrived = 0;
        ++group.generation;
    } else {
        while (group.generation == generation) yield();  // the others run on to this meeting
    }
    if (group.apart) { divergent = 1; setcontext(&caller); }  // the launch ends: lanes out of step
}
inline Group& my_warp() { return warps[threadIdx.x / 32]; }
inline unsigned warp_base() { return threadIdx.x & ~31u; }

template <typename T> __attribute__((noinline)) T exchange(T x, unsigned src_lane, const void* where) {
    arrive(my_warp(), 32, where);
    slot[threadIdx.x] = (double)x;  // float <-> double is exact
    arrive(my_warp(), 32, where);
    const T y = (T)slot[warp_base() + src_lane];
    arrive(my_warp(), 32, where);
    return y;
}
__attribute__((noinline)) inline unsigned ballot(bool p, const void* where) {
    arrive(my_warp(), 32, where);
    slot[threadIdx.x] = p ? 1.0 : 0.0;
    arrive(my_warp(), 32, where);
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l) if (slot[warp_base() + l] != 0) bits |= 1u << l;
    arrive(my_warp(), 32, where);
    return bits;
}
__attribute__((noinline)) inline bool block_or(bool p, const void* where) {
    arrive(block, threads, where);
    slot[threadIdx.x] = p ? 1.0 : 0.0;
    arrive(block, threads, where);
    bool any = false;
    for (int t = 0; t < threads; ++t) any |= slot[t] != 0;
    arrive(block, threads, where);
    return any;
}

// A launch: `body` runs the kernel for blockIdx.x (its arguments are the caller's globals) on every
// thread of each block of the grid, block after block; 1 where the lanes fell out of step, else 0.
inline void (*block_body)() = nullptr;
inline long long grid_blocks = 0;
inline void lane_main() {
    for (long long g = 0; g < grid_blocks; ++g) {
        blockIdx.x = (unsigned)g;
        block_body();
        arrive(block, threads, nullptr);  // the block's end: every thread, none still inside the kernel
    }
    if (++finished == threads) setcontext(&caller);
    while (true) yield();  // the others finish
}
inline int run_grid(int block_threads, long long grid, void (*body)()) {
    constexpr size_t STACK = 1 << 16;
    static std::vector<char> stacks;
    if (block_threads < 32 || block_threads > MAX_THREADS || block_threads % 32) return -1;
    if (stacks.size() < block_threads * STACK) stacks.resize(block_threads * STACK);
    threads = block_threads;
    grid_blocks = grid;
    block_body = body;
    divergent = 0;
    finished = 0;
    block = {};
    for (auto& warp : warps) warp = {};
    blockDim.x = (unsigned)threads;
    gridDim.x = (unsigned)grid;
    for (int t = 0; t < threads; ++t) {
        getcontext(&lanes[t]);
        lanes[t].uc_stack.ss_sp = stacks.data() + (size_t)t * STACK;
        lanes[t].uc_stack.ss_size = STACK;
        lanes[t].uc_link = nullptr;
        makecontext(&lanes[t], lane_main, 0);
    }
    threadIdx.x = 0;
    swapcontext(&caller, &lanes[0]);
    return divergent;
}
}  // namespace emu

#define EMU_SITE __builtin_return_address(0)
template <typename T> __attribute__((noinline)) T __shfl_xor_sync(unsigned, T x, int o, int = 32) {
    return emu::exchange(x, (threadIdx.x & 31u) ^ (unsigned)o, EMU_SITE);
}
template <typename T> __attribute__((noinline)) T __shfl_sync(unsigned, T x, int src, int width = 32) {
    const unsigned base = (threadIdx.x & 31u) & ~(unsigned)(width - 1);
    return emu::exchange(x, base + (unsigned)(src % width), EMU_SITE);
}
__attribute__((noinline)) inline unsigned __ballot_sync(unsigned, bool p) { return emu::ballot(p, EMU_SITE); }
__attribute__((noinline)) inline bool __any_sync(unsigned, bool p) { return emu::ballot(p, EMU_SITE) != 0; }
__attribute__((noinline)) inline bool __all_sync(unsigned, bool p) { return emu::ballot(p, EMU_SITE) == 0xffffffffu; }
__attribute__((noinline)) inline int __syncthreads_or(int p) { return emu::block_or(p != 0, EMU_SITE); }
__attribute__((noinline)) inline void __syncthreads() { emu::arrive(emu::block, emu::threads, EMU_SITE); }
__attribute__((noinline)) inline void __syncwarp() { emu::arrive(emu::my_warp(), 32, EMU_SITE); }
