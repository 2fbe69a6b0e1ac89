// Appended after the eigen kernel's source (skspectral/eig/_kernel_source.cu, N <= 64: one or two warps
// a block): `emulate` runs a launch on fibers (warp_emulator.h); 1 where the lanes fell out of step.
namespace {
struct Launch { const real* input; real* value; real* vector; int k_first, count, stride, lower, want_vector;
                long long batch; };
Launch launch;
void body() {
    kth_eigenpair(launch.input, launch.value, launch.vector, launch.k_first, launch.count, launch.stride,
                  launch.lower, launch.want_vector, launch.batch);
}
}  // namespace
extern "C" int emulate(const real* input, real* value, real* vector, int k_first, int count, int stride, int lower,
                       int want_vector, long long batch, long long grid) {
    launch = {input, value, vector, k_first, count, stride, lower, want_vector, batch};
    return emu::run_grid(32 * NW, grid, body);
}
