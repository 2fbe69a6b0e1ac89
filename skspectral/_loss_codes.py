"""The training losses' kernel codes, shared by the CPU's compiled kernels (skspectral._step_kernels,
which imports Numba) and the CUDA kernel (skspectral._cuda_losses): a loss's code is its index here."""

# The losses by code: each one's value-and-gradient kernel in skspectral._step_kernels. The multiclass
# one takes (B, members, classes), the pinball loss (B, members, quantiles), the others (B, members).
TRAINING_LOSSES = ("squared_error_and_gradient", "binary_log_loss_and_gradient", "multiclass_log_loss_and_gradient",
                   "absolute_error_and_gradient", "huber_and_gradient", "pinball_and_gradient",
                   "poisson_and_gradient", "gamma_and_gradient")
