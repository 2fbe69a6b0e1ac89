"""Host (and GPU) peak memory and time of a fit and a predict on tall data.

    python benchmarks/bench_memory.py [--rows 1000000] [--device cpu|cuda] [--configs series issue] [--json out.json]

A synthetic rows x 28 float32 binary problem. Configurations:
- ``issue``: the scale-out issue's ``SpectralClassifier(dim=11, batch_size=4096, max_iter=1)``
  with every other parameter at its default (piecewise-linear bins, 4 members, early stopping);
- ``series``: the same with ``n_estimators=1, feature_encoding="linear", early_stopping=False``;
- ``streamed``: ``series`` with the training rows kept in host memory and streamed to the
  device every epoch, as for rows larger than the GPU's memory (forced here).
Each configuration runs in a fresh process: a warm-up fit and predict on 2,000 rows (imports,
kernel compilation, the CUDA context), then the measured fit and predict. Host memory is the
process's peak resident set (ru_maxrss) above what it held after the warm-up, with X already
allocated, as a multiple of X's bytes (the issue's goal: 2x); on CUDA also torch's peak
allocated GPU memory. The epoch time is the fit's first history record (training steps, the
validation score and the epoch's one sync).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

CONFIGS = {
    "issue": {},
    "series": {"n_estimators": 1, "feature_encoding": "linear", "early_stopping": False},
    "streamed": {"n_estimators": 1, "feature_encoding": "linear", "early_stopping": False},
}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def measure(rows: int, device: str, config: str) -> dict:
    import torch

    from skspectral import SpectralClassifier, _estimator

    if config == "streamed":  # the rows stay on the host whatever their size
        _estimator._stream_rows = lambda n_bytes, device: True

    def make(n, seed):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal(size=(n, 28), dtype=np.float32)
        return X, (X[:, 0] + X[:, 1] ** 2 > 1).astype(np.int64)

    params = dict(dim=11, batch_size=4096, max_iter=1, device=device, random_state=0, **CONFIGS[config])
    Xw, yw = make(2000, 1)
    SpectralClassifier(**params).fit(Xw, yw).predict(Xw)  # warm-up
    X, y = make(rows, 0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = peak_rss()
    start = time.perf_counter()
    model = SpectralClassifier(**params).fit(X, y)
    fit_s = time.perf_counter() - start
    fit_peak = peak_rss()
    start = time.perf_counter()
    accuracy = float((model.predict(X) == y).mean())
    predict_s = time.perf_counter() - start
    after = peak_rss()
    row = {"config": config, "rows": rows, "input_gb": X.nbytes / 1e9, "fit_s": fit_s,
           "epoch_s": model.history_[0]["elapsed_s"], "predict_s": predict_s, "train_accuracy": accuracy,
           "fit_host_peak_gb": (fit_peak - before) / 1e9, "fit_x_input": (fit_peak - before) / X.nbytes,
           "predict_host_peak_gb": (after - before) / 1e9, "predict_x_input": (after - before) / X.nbytes}
    if device.startswith("cuda"):
        row["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--json")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one configuration in this process
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(a.rows, a.device, a.one)))
        return
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _common import markdown_table, versions, write_json

    rows = []
    for config in a.configs:
        done = subprocess.run([sys.executable, __file__, "--rows", str(a.rows), "--device", a.device, "--one", config],
                              capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    columns = ["config", "rows", "input_gb", "fit_s", "epoch_s", "predict_s", "fit_host_peak_gb", "fit_x_input",
               "predict_host_peak_gb", "predict_x_input"] + (["gpu_peak_gb"] if a.device.startswith("cuda") else [])
    print(markdown_table(rows, columns))
    write_json(a.json, {"versions": versions(a.device), "rows": rows})


if __name__ == "__main__":
    main()
