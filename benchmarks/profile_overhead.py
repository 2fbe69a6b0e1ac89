"""Host-side cost per call of the pieces of a kth_eigvalsh call, on a small CUDA batch
(where overhead, not the GPU, sets the time).

    python benchmarks/profile_overhead.py

Prints microseconds per call (mean of 2000 calls, host clock; the GPU work of each
is a few microseconds, so the queue never fills).
"""
import time

import numpy as np
import torch

from skspectral import kth_eigvalsh
from skspectral.eig import _cupy_backend, _kernel_backend


def per_call_us(fn, reps=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t) / reps * 1e6
    torch.cuda.synchronize()
    return host


def main():
    import cupy

    A = torch.randn(64, 45, 45, device="cuda")
    A = (A + A.mT) / 2
    X = A.clone().requires_grad_(True)
    Y = torch.randn(64, 45, device="cuda", requires_grad=True)
    out = torch.empty(64, device="cuda")
    noop = cupy.RawKernel(r'extern "C" __global__ void noop(float* x, int n) { if (threadIdx.x == 0 && n < 0) x[0] = 0; }', "noop")
    dev = torch.device("cuda")
    stream = _cupy_backend._cupy_stream(torch.cuda.current_stream().cuda_stream, 0)
    args = (np.uint64(out.data_ptr()), np.int32(1))

    def ctx_only():
        with _cupy_backend._on_torch_stream(dev):
            pass

    def launch_in_ctx():
        with _cupy_backend._on_torch_stream(dev):
            noop((64,), (64,), args)

    def launch_function_stream():
        noop.kernel((64,), (64,), args, 0, stream)

    def backward_baseline():
        Y.grad = None
        (Y * 2).sum().backward()

    def fwd():
        with torch.no_grad():
            kth_eigvalsh(A, 3, backend="kernel")

    def fwd_launch_only():
        _kernel_backend.eigvalsh_k(A, 3, True)

    def fwdbwd():
        X.grad = None
        kth_eigvalsh(X, 3, backend="kernel").sum().backward()

    pieces = {
        "torch.empty(64)": lambda: torch.empty(64, device="cuda"),
        "torch.cuda.current_stream()": lambda: torch.cuda.current_stream(0),
        "_on_torch_stream enter/exit": ctx_only,
        "RawKernel call in _on_torch_stream": launch_in_ctx,
        "Function call with stream=": launch_function_stream,
        "(Y*2).sum().backward() [autograd floor]": backward_baseline,
        "_kernel_backend.eigvalsh_k": fwd_launch_only,
        "kth_eigvalsh fwd (no grad)": fwd,
        "kth_eigvalsh fwd+bwd": fwdbwd,
    }
    for name, fn in pieces.items():
        try:
            print(f"{per_call_us(fn):8.1f} us  {name}", flush=True)
        except Exception as exc:  # e.g. a CuPy without the stream argument
            print(f"   error    {name}: {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
