"""Host-side cost of one kth_eigvalsh call on a small CUDA batch (where overhead dominates)."""
import cProfile
import pstats
import time

import torch

from skspectral import kth_eigvalsh

A = torch.randn(64, 8, 8, device="cuda")
A = (A + A.mT) / 2
X = A.clone().requires_grad_(True)


def fwd():
    with torch.no_grad():
        kth_eigvalsh(A, 3, backend="cupy")


def fwdbwd():
    X.grad = None
    kth_eigvalsh(X, 3, backend="cupy").sum().backward()


for fn in (fwd, fwdbwd):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    print(fn.__name__, "host+device us/call", (time.perf_counter() - t) / 200 * 1e6)
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(200):
        fn()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(14)
