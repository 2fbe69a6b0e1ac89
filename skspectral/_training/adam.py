"""Adam for the trainer: on CUDA one thread per element (CuPy kernel), on the CPU one compiled
pass (Numba), else torch's fused Adam.

torch's fused Adam gives a block 65,536 elements of a tensor (multi_tensor_apply's chunk), so
a model whose matrices are one parameter of ~100k elements gets two blocks, and its update took
20-30 us of a 150-290 us graph-replayed training step on an H200 (benchmarks/bench_step_parts.py).
:class:`ElementwiseAdam` launches one thread per element, the model's parameters (up to eight) in one launch
that also moves the step count on (a few us; a launch for the count and one more for a shared model's
fourth and fifth parameters took 3-4 us of a 70-95 us step), with torch.optim.Adam's
update (no weight decay, no amsgrad) and capturable: the learning rate and the step count
are device tensors, so a CUDA graph replays the update.

On the CPU, :class:`CompiledAdam` takes torch.optim.Adam's steps in one compiled pass (tested
against it): torch's optimizer step cost ~0.5 ms of a ~6 ms California step in Python and
dispatch. Neither is a torch.optim.Optimizer: building the first one in a process imports
torch._dynamo (1.4-2.2 s on a 2-core machine, more than a small fit).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..eig._cupy_support import RawKernels, is_available
from ..eig._numba_support import numba_module

_SOURCE = r"""
template <typename T>
__device__ void adam(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, long long i, T lr, T t, double beta1,
                     double beta2, double eps) {
    // torch.optim.Adam: m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g^2;
    // p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    const T correction1 = (T)1 - pow((T)beta1, t);
    const T correction2 = (T)1 - pow((T)beta2, t);
    const T g = grad[i];
    T m = exp_avg[i];
    m += ((T)1 - (T)beta1) * (g - m);
    const T v = (T)beta2 * exp_avg_sq[i] + ((T)1 - (T)beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    const T denominator = sqrt(v) / sqrt(correction2) + (T)eps;
    param[i] -= (lr / correction1) * m / denominator;
}

#define SLOTS 8
// up to SLOTS parameters in one launch (a model's weight, mu_start and mu_increments, its shared set and
// factors): thread i updates element i of the parameters laid end to end, at step *step + 1. Where
// ``advance`` is set, the grid's last block to finish then moves *step on by one (every block has read it
// by then), so a step's count needs no kernel of its own; ``finished`` counts the blocks (0 between launches).
template <typename T>
__device__ void adam_slots(T* const* p, const T* const* g, T* const* m, T* const* v, const long long* n,
                           const float* lr, float* step, double b1, double b2, double eps, int advance,
                           unsigned int* finished) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const T t = (T)(*step + 1.0f);
    for (int s = 0; s < SLOTS; ++s) {
        if (i < n[s]) {
            adam<T>(p[s], g[s], m[s], v[s], i, (T)(*lr), t, b1, b2, eps);
            break;
        }
        i -= n[s];
    }
    if (!advance) return;
    __syncthreads();  // this block's threads have read *step
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(finished, 1u) == gridDim.x - 1) {  // the last block: every other one is done
            *step += 1.0f;
            *finished = 0u;
        }
    }
}

#define PARAMS(T, j) T* p##j, const T* g##j, T* m##j, T* v##j, long long n##j
#define ADAM(NAME, T) extern "C" __global__ void NAME( \
    PARAMS(T, 0), PARAMS(T, 1), PARAMS(T, 2), PARAMS(T, 3), PARAMS(T, 4), PARAMS(T, 5), PARAMS(T, 6), \
    PARAMS(T, 7), const float* lr, float* step, double b1, double b2, double eps, int advance, \
    unsigned int* finished) { \
    T* const p[SLOTS] = {p0, p1, p2, p3, p4, p5, p6, p7}; \
    const T* const g[SLOTS] = {g0, g1, g2, g3, g4, g5, g6, g7}; \
    T* const m[SLOTS] = {m0, m1, m2, m3, m4, m5, m6, m7}; \
    T* const v[SLOTS] = {v0, v1, v2, v3, v4, v5, v6, v7}; \
    const long long n[SLOTS] = {n0, n1, n2, n3, n4, n5, n6, n7}; \
    adam_slots<T>(p, g, m, v, n, lr, step, b1, b2, eps, advance, finished); }
ADAM(adam_float, float)
ADAM(adam_double, double)
"""
# parameters per launch of the kernels above (SLOTS)
_PER_LAUNCH = 8

_THREADS = 256
_KERNELS = RawKernels(_SOURCE, "skspectral's CUDA Adam")


class _Adam:
    """The part of torch.optim.Optimizer's interface the trainer uses: ``param_groups`` (one,
    with ``lr``, ``betas``, ``eps``), ``state``, ``zero_grad`` and ``step``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list.")
        self.param_groups = [dict(params=params, lr=lr, betas=betas, eps=eps)]
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    def _moments(self, p: torch.Tensor) -> dict:
        """The parameter's first and second moment estimates (zeros at its first step)."""
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = dict(exp_avg=torch.zeros_like(p, memory_format=torch.contiguous_format),
                                         exp_avg_sq=torch.zeros_like(p, memory_format=torch.contiguous_format))
        return state


class ElementwiseAdam(_Adam):
    """torch.optim.Adam's update for CUDA float32/float64 parameters, one thread per element.

    ``lr`` a float, or a float32 device tensor that a schedule fills in place (capturable). One
    step count for all parameters (they all step together in the trainer)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, betas, eps)
        device = self.param_groups[0]["params"][0].device
        self._step_count = torch.zeros((), dtype=torch.float32, device=device)
        self._lr = torch.zeros((), dtype=torch.float32, device=device)
        # the kernel's count of finished blocks (back to 0 by the launch's last block)
        self._finished_blocks = torch.zeros((), dtype=torch.int32, device=device)

    @torch.no_grad()
    def step(self, closure=None):
        launches = []  # (parameters, lr, betas, eps): up to _PER_LAUNCH parameters of one dtype each
        for group in self.param_groups:
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor):
                self._lr.fill_(lr)
                lr = self._lr
            stepping = [p for p in group["params"] if p.grad is not None and p.numel() > 0]
            for dtype in dict.fromkeys(p.dtype for p in stepping):  # one dtype a launch
                of_dtype = [p for p in stepping if p.dtype == dtype]
                launches += [(of_dtype[start:start + _PER_LAUNCH], lr, group["betas"], group["eps"])
                             for start in range(0, len(of_dtype), _PER_LAUNCH)]
        if not launches:
            self._step_count.add_(1.0)
            return
        for number, (params, lr, (beta1, beta2), eps) in enumerate(launches):
            # each launch steps at the count + 1; the last one moves the count on (stream order: after the others)
            self._launch(params, lr, beta1, beta2, eps, advance=number == len(launches) - 1)

    def _launch(self, params: list, lr: torch.Tensor, beta1: float, beta2: float, eps: float, advance: bool) -> None:
        """One launch for up to _PER_LAUNCH non-empty parameters of one dtype and device (the rest of the
        kernel's slots empty); ``advance``: the launch moves the step count on."""
        args, total = [], 0
        for p in params:
            state = self._moments(p)
            grad = p.grad if p.grad.is_contiguous() else p.grad.contiguous()  # the kernel reads it flat
            args += [np.uint64(t.data_ptr()) for t in (p, grad, state["exp_avg"], state["exp_avg_sq"])]
            args.append(np.int64(p.numel()))
            total += p.numel()
        for _ in range(_PER_LAUNCH - len(params)):
            args += [np.uint64(0)] * 4 + [np.int64(0)]
        args += [np.uint64(lr.data_ptr()), np.uint64(self._step_count.data_ptr()), np.float64(beta1),
                 np.float64(beta2), np.float64(eps), np.int32(advance), np.uint64(self._finished_blocks.data_ptr())]
        # on torch's current stream: a CUDA graph captures the launch
        _KERNELS.launch("adam", params[0].dtype, params[0].device.index, (total + _THREADS - 1) // _THREADS,
                        _THREADS, tuple(args))


@functools.cache
def _adam_kernel():
    """The compiled CPU update (:mod:`._adam_kernel`), or None without Numba."""
    if numba_module() is None:
        return None
    from . import _adam_kernel

    return _adam_kernel


class CompiledAdam(_Adam):
    """torch.optim.Adam's update for contiguous CPU parameters of one dtype (float32 or float64), one compiled
    pass per parameter (Numba). One step count for all parameters (they all step together in
    the trainer)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, betas, eps)
        self._step_count = 0
        # per parameter: its flat arrays and the storage they were found for (a trainer's gradients
        # are buffers kept from step to step, so a step usually converts nothing)
        self._arrays: dict = {}
        # parameter -> (holder, write_back): moments a caller holds in storage of its own (compiled
        # steps' packed triangles), written back here only when something reads them here
        self._held_elsewhere: dict = {}

    def hold_moments(self, p: torch.Tensor, holder, write_back) -> None:
        """``holder`` keeps p's current moments in storage of its own from here on: this optimizer's
        tensors of them are stale until ``write_back()`` fills them, which the next read of them here
        calls (:meth:`_moments`), or until ``holder`` takes them back (:meth:`release_held_moments`)."""
        self._held_elsewhere[p] = (holder, write_back)

    def release_held_moments(self, p: torch.Tensor, holder) -> bool:
        """Whether ``holder``'s own copy of p's moments is still the current one (held by it since its
        :meth:`hold_moments` and not read here since): then nothing is written back. Moments another
        holder kept are written back first (False)."""
        held = self._held_elsewhere.pop(p, None)
        if held is None:
            return False
        if held[0] is holder:
            return True
        held[1]()
        return False

    def _moments(self, p: torch.Tensor) -> dict:
        held = self._held_elsewhere.pop(p, None)
        if held is not None:
            held[1]()  # (its write-back reads the tensors through here: nothing is held by then)
        return super()._moments(p)

    def _flat_arrays(self, p: torch.Tensor, grad: torch.Tensor) -> tuple:
        state = self._moments(p)
        key = (p.data_ptr(), grad.data_ptr(), state["exp_avg"].data_ptr(), state["exp_avg_sq"].data_ptr())
        found = self._arrays.get(p)
        if found is None or found[0] != key:
            found = self._arrays[p] = (key, (p.detach().view(-1).numpy(), grad.view(-1).numpy(),
                                             state["exp_avg"].view(-1).numpy(), state["exp_avg_sq"].view(-1).numpy()))
        return found[1]

    @torch.no_grad()
    def step(self, closure=None) -> None:
        self._step_count += 1
        kernel = _adam_kernel()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            scalars = None  # the group's step scalars, in its parameters' one dtype
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if p.grad.is_contiguous() else p.grad.contiguous()
                arrays = self._flat_arrays(p, grad)
                if scalars is None:
                    scalars = kernel.step_scalars(arrays[0].dtype.type, float(group["lr"]), float(beta1),
                                                  float(beta2), float(group["eps"]), float(self._step_count))
                kernel.adam_update(*arrays, *scalars)

    def compiled_steps(self, n_steps: int, substitutes: dict | None = None) -> tuple:
        """(every parameter's flat (param, grad, exp_avg, exp_avg_sq) arrays, the step scalars of the
        next ``n_steps`` steps (n_steps, 7)) for those steps taken in compiled code with
        ``adam_update``, as :meth:`step` takes them (one group; every parameter's ``.grad`` set, the
        buffer the steps rewrite); the step count moves past them. ``substitutes``: id(parameter) ->
        the arrays the steps update in its stead (packed storage the caller keeps)."""
        kernel = _adam_kernel()
        (group,) = self.param_groups
        beta1, beta2 = group["betas"]
        if not all(p.grad is not None and p.grad.is_contiguous() for p in group["params"]):
            # compiled steps rewrite the gradients in place: a copy made here would go stale
            raise RuntimeError("Compiled steps need every parameter's .grad set and contiguous.")
        substitutes = substitutes or {}
        arrays = tuple(substitutes.get(id(p)) or self._flat_arrays(p, p.grad) for p in group["params"])
        dtype = arrays[0][0].dtype.type
        lr, eps = float(group["lr"]), float(group["eps"])
        scalars = np.array([kernel.step_scalars(dtype, lr, float(beta1), float(beta2), eps, float(self._step_count + s))
                            for s in range(1, n_steps + 1)], dtype=dtype)
        self._step_count += n_steps
        return arrays, scalars


def _compiled_applies(parameters: list) -> bool:
    return (bool(parameters) and _adam_kernel() is not None
            and all(p.device.type == "cpu" and p.is_contiguous() and p.dtype in (torch.float32, torch.float64)
                    and p.dtype == parameters[0].dtype for p in parameters))


def _elementwise_applies(parameters: list) -> bool:
    return (bool(parameters) and is_available()
            and all(p.is_cuda and p.is_contiguous() and p.dtype in (torch.float32, torch.float64)
                    and p.device == parameters[0].device for p in parameters))


def adam(parameters, lr, capturable: bool):
    """The trainer's Adam: :class:`ElementwiseAdam` for CUDA parameters where CuPy is installed,
    :class:`CompiledAdam` for CPU parameters where Numba is, else torch's fused Adam (one kernel
    for all parameters; torch's default Adam for CPU parameters before torch 2.4, which has none)."""
    parameters = list(parameters)
    if _elementwise_applies(parameters):
        return ElementwiseAdam(parameters, lr=lr)
    if not capturable and not isinstance(lr, torch.Tensor) and _compiled_applies(parameters):
        return CompiledAdam(parameters, lr=lr)
    try:
        return torch.optim.Adam(parameters, lr=lr, capturable=capturable, fused=True)
    except RuntimeError:  # no fused Adam for CPU parameters before torch 2.4: torch's default one there
        return torch.optim.Adam(parameters, lr=lr, capturable=capturable)
