"""Host (and GPU) peak memory of one fit on tall data, against the size of the input.

    python benchmarks/bench_memory.py [--rows 1000000] [--device cpu|cuda]

A synthetic rows x 28 float32 binary problem, SpectralClassifier(dim=11, batch_size=4096,
max_iter=1, n_estimators=1, feature_encoding="linear", early_stopping=False): the process's
peak resident set above what it held before the fit (ru_maxrss), as a multiple of the input's
bytes; on CUDA also torch's peak allocated GPU memory. The issue's goal is 2x.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from skspectral import SpectralClassifier


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(a.rows, 28)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(np.int64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    start = time.perf_counter()
    SpectralClassifier(dim=11, batch_size=4096, max_iter=1, n_estimators=1, feature_encoding="linear",
                       early_stopping=False, device=a.device).fit(X, y)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    line = (f"rows {a.rows:,} x 28 float32 ({X.nbytes / 1e9:.2f} GB): fit {seconds:.1f} s, host peak "
            f"{(peak - before) / 1e9:.2f} GB above the start = {(peak - before) / X.nbytes:.1f}x the input")
    if a.device.startswith("cuda"):
        line += f", GPU peak {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
    print(line)


if __name__ == "__main__":
    main()
