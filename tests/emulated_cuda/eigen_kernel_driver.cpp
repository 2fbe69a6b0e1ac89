// Appended after the eigen kernel's source (skspectral/eig/_kernel_source.cu, N <= 64: one or two warps
// a block): `emulate` runs a launch's grid block after block on fibers (warp_emulator.h); returns 1
// where the lanes fell out of step (a divergent collective), else 0.
namespace emu {
struct Launch { const real* input; real* value; real* vector; int k_first, count, stride, lower, want_vector;
                long long batch, grid; };
inline Launch launch;
inline void lane_main() {
    for (long long g = 0; g < launch.grid; ++g) {
        blockIdx.x = (unsigned)g;
        kth_eigenpair(launch.input, launch.value, launch.vector, launch.k_first, launch.count, launch.stride,
                      launch.lower, launch.want_vector, launch.batch);
        arrive(block, threads, nullptr);  // the block's end: every thread, none still inside the kernel
    }
    if (++finished == threads) setcontext(&caller);
    while (true) yield();  // the others finish
}
}  // namespace emu
extern "C" int emulate(const real* input, real* value, real* vector, int k_first, int count, int stride, int lower,
                       int want_vector, long long batch, long long grid) {
    constexpr size_t STACK = 1 << 18;
    static std::vector<char> stacks(emu::MAX_THREADS * STACK);
    static_assert(32 * NW <= emu::MAX_THREADS, "the emulator runs blocks of one or two warps");
    emu::launch = {input, value, vector, k_first, count, stride, lower, want_vector, batch, grid};
    emu::threads = 32 * NW;
    emu::divergent = 0;
    emu::finished = 0;
    emu::block = {};
    for (auto& warp : emu::warps) warp = {};
    blockDim.x = (unsigned)emu::threads;
    for (int t = 0; t < emu::threads; ++t) {
        getcontext(&emu::lanes[t]);
        emu::lanes[t].uc_stack.ss_sp = stacks.data() + (size_t)t * STACK;
        emu::lanes[t].uc_stack.ss_size = STACK;
        emu::lanes[t].uc_link = nullptr;
        makecontext(&emu::lanes[t], emu::lane_main, 0);
    }
    threadIdx.x = 0;
    swapcontext(&emu::caller, &emu::lanes[0]);
    return emu::divergent;
}
