"""Where the time of one backend='kernel' call goes: GPU time vs host time.

    python benchmarks/profile_kernel.py

For each size: the event-timed single call (as bench_eig.py times it), the GPU
time per call from 50 calls queued back to back (the host runs ahead, so this
is the kernel's own time), and the host's time per call; then a cProfile of
the host side of a small forward+backward call.
"""
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from skspectral import kth_eigvalsh  # noqa: E402


def single(fn, reps=30):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(reps):
        s.record(); fn(); e.record(); e.synchronize()
        out.append(s.elapsed_time(e))
    return statistics.median(out)


def queued(fn, reps=50):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    t = time.perf_counter()
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    host = (time.perf_counter() - t) / reps * 1e3
    e.synchronize()
    return s.elapsed_time(e) / reps, host


def main():
    print("dtype n B mode | single-call ms | queued GPU ms/call | host ms/call")
    for dtype in (torch.float32, torch.float64):
        for n, B in ((8, 4096), (16, 4096), (32, 4096), (45, 64), (45, 1024), (45, 4096), (45, 16384), (64, 4096)):
            G = torch.randn(B, n, n, device="cuda", dtype=dtype)
            A = (G + G.mT) / 2
            X = A.clone().requires_grad_(True)

            def fwd():
                with torch.no_grad():
                    kth_eigvalsh(A, n // 2, backend="kernel")

            def fwdbwd():
                X.grad = None
                kth_eigvalsh(X, n // 2, backend="kernel").sum().backward()

            for name, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                fn(); torch.cuda.synchronize()
                one = single(fn)
                gpu, host = queued(fn)
                print(f"{str(dtype)[6:]} {n} {B} {name} | {one:.4f} | {gpu:.4f} | {host:.4f}", flush=True)
    A = torch.randn(64, 45, 45, device="cuda")
    X = ((A + A.mT) / 2).requires_grad_(True)
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(300):
        X.grad = None
        kth_eigvalsh(X, 3, backend="kernel").sum().backward()
    pr.disable()
    torch.cuda.synchronize()
    pstats.Stats(pr).sort_stats("tottime").print_stats(16)


if __name__ == "__main__":
    main()
