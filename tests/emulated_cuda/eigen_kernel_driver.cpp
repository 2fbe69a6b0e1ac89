// Appended after the eigen kernel's source (skspectral/eig/_kernel_source.cu, N <= 32: one warp a block):
// `emulate` runs a launch's grid block after block on 32 fibers (warp_emulator.h); returns 1 where the
// lanes fell out of step (a divergent collective), else 0.
namespace emu {
struct Launch { const real* input; real* value; real* vector; int k_first, count, stride, lower, want_vector;
                long long batch, grid; };
inline Launch launch;
inline void lane_main() {
    const int me = (int)threadIdx.x;
    for (long long g = 0; g < launch.grid; ++g) {
        blockIdx.x = (unsigned)g;
        kth_eigenpair(launch.input, launch.value, launch.vector, launch.k_first, launch.count, launch.stride,
                      launch.lower, launch.want_vector, launch.batch);
        meet(nullptr);  // the block's end: every lane must be here, none still inside the kernel
    }
    if (++finished == 32) { setcontext(&caller); }
    const int next = (me + 1) & 31;
    threadIdx.x = (unsigned)next;
    setcontext(&lanes[next]);
}
}  // namespace emu
extern "C" int emulate(const real* input, real* value, real* vector, int k_first, int count, int stride, int lower,
                       int want_vector, long long batch, long long grid) {
    static std::vector<char> stacks(32 * (1 << 18));
    emu::launch = {input, value, vector, k_first, count, stride, lower, want_vector, batch, grid};
    emu::divergent = 0; emu::arrived = 0; emu::finished = 0;
    blockDim.x = 32;
    for (int t = 0; t < 32; ++t) {
        getcontext(&emu::lanes[t]);
        emu::lanes[t].uc_stack.ss_sp = stacks.data() + (size_t)t * (1 << 18);
        emu::lanes[t].uc_stack.ss_size = 1 << 18;
        emu::lanes[t].uc_link = nullptr;
        makecontext(&emu::lanes[t], emu::lane_main, 0);
    }
    threadIdx.x = 0;
    swapcontext(&emu::caller, &emu::lanes[0]);
    return emu::divergent;
}
