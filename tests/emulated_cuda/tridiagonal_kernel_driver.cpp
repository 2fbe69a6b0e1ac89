// Appended after the tridiagonal kernel's source (skspectral/eig/_tridiagonal_source.cu: a warp a
// matrix): `emulate` runs a launch of one-warp blocks on fibers (warp_emulator.h); 1 where the lanes
// fell out of step.
namespace {
struct Launch { const real* diag; const real* off; real* value; real* vector; real* work; int B, n, k, want_vector; };
Launch launch;
void body() {
    kth_tridiagonal(launch.diag, launch.off, launch.value, launch.vector, launch.work, launch.B, launch.n, launch.k,
                    launch.want_vector);
}
}  // namespace
extern "C" int emulate(const real* diag, const real* off, real* value, real* vector, real* work, int B, int n, int k,
                       int want_vector) {
    launch = {diag, off, value, vector, work, B, n, k, want_vector};
    return emu::run_grid(32, B, body);  // (the GPU runs four warps a block; the warps never meet)
}
