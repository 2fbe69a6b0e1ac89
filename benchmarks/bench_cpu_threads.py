"""CPU fits against the number of threads: does a many-core host's default (every core) pay?

    python benchmarks/bench_cpu_threads.py [--threads 1 2 4 ...] [--epochs 4] [--json out.json]

California Housing, ``device="cpu"``: for each thread count (``torch.set_num_threads``; the
Numba kernels follow torch's count), the estimator's defaults and the series' model (dim 15,
linear features, one member), no early stopping. Seconds per epoch: the median of the fit's
epochs after the first (``history_``); ``vs_1`` is the one-thread epoch over this one's.
Default thread counts: 1, 2, 4, ... up to the host's cores, and the cores themselves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import torch
from _common import california, markdown_table, versions, write_json
from sklearn.exceptions import ConvergenceWarning

from skspectral import SpectralRegressor

CONFIGS = {
    "defaults": {},
    "series dim 15": dict(dim=15, feature_encoding="linear", n_estimators=1),
}


def epoch_seconds(params: dict, epochs: int, X, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SpectralRegressor(device="cpu", max_iter=epochs, early_stopping=False, random_state=0,
                                  **params).fit(X, y)
    elapsed = [h["elapsed_s"] for h in model.history_]
    return statistics.median(b - a for a, b in zip(elapsed, elapsed[1:]))


def main():
    cores = os.cpu_count() or 1
    default = sorted({*(2**i for i in range(cores.bit_length()) if 2**i <= cores), cores})
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=default)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--json")
    a = p.parse_args()
    X, _, y, _ = california()
    out = {"versions": versions("cpu"), "cores": cores, "rows": []}
    for name, params in CONFIGS.items():
        epoch_seconds(params, 2, X[:2000], y[:2000])  # compile and import once
        for threads in a.threads:
            torch.set_num_threads(threads)
            out["rows"].append({"config": name, "threads": threads, "epoch_s": epoch_seconds(params, a.epochs, X, y)})
            print(out["rows"][-1], flush=True)
            write_json(a.json, out)
    for row in out["rows"]:
        one = next(r for r in out["rows"] if r["config"] == row["config"] and r["threads"] == a.threads[0])
        row["vs_1"] = one["epoch_s"] / row["epoch_s"]
    print(markdown_table(out["rows"], ["config", "threads", "epoch_s", "vs_1"]))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
