// Appended after the losses' CUDA source (skspectral/_cuda_losses.py: one block of THREADS threads):
// `emulate_float` / `emulate_double` run a launch on fibers (warp_emulator.h); 1 where the threads fell
// out of step.
namespace {
template <typename T> struct Launch {
    int loss; const T* output; const T* target; const T* weight; const double* parameters; long long rows, members;
    int k; T* value; T* gradient;
};
template <typename T> Launch<T> launch;
template <typename T> void body() {
    const Launch<T>& a = launch<T>;
    loss_and_gradient<T>(a.loss, a.output, a.target, a.weight, a.parameters, a.rows, a.members, a.k, a.value,
                         a.gradient);
}
template <typename T> int emulate(int loss, const T* output, const T* target, const T* weight,
                                  const double* parameters, long long rows, long long members, int k, T* value,
                                  T* gradient) {
    launch<T> = {loss, output, target, weight, parameters, rows, members, k, value, gradient};
    return emu::run_grid(THREADS, 1, body<T>);
}
}  // namespace
extern "C" int emulate_float(int loss, const float* output, const float* target, const float* weight,
                             const double* parameters, long long rows, long long members, int k, float* value,
                             float* gradient) {
    return emulate<float>(loss, output, target, weight, parameters, rows, members, k, value, gradient);
}
extern "C" int emulate_double(int loss, const double* output, const double* target, const double* weight,
                              const double* parameters, long long rows, long long members, int k, double* value,
                              double* gradient) {
    return emulate<double>(loss, output, target, weight, parameters, rows, members, k, value, gradient);
}
