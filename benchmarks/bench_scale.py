"""Scale-out on Dask: search throughput and data-parallel epoch time over 1, 2, ... workers.

    python benchmarks/bench_scale.py [--workers 1 2] [--parts search data] [--fits 32]
                                     [--rows 1000000] [--scale-batch] [--gpu] [--json out.json]

- search: a GridSearchCV of ``--fits`` SpectralRegressor fits (California, 40 epochs
  each) under joblib's Dask backend on a local cluster of N single-threaded workers
  (``--gpu``: ``skspectral.dask.local_gpu_cluster``, one worker per GPU); fits per
  second, and the speed-up over N = 1 in the same run; ``busy_s`` sums the fits' and
  scorings' own seconds (cv_results_), ``utilisation`` is busy_s / (N x seconds): what
  is left went to dispatch, data transfer, the refit and idle workers. (N = 1 runs the
  fits one after another in this process: joblib does not dispatch to a single worker.)
- data: DaskSpectralRegressor on a synthetic rows x 28 float32 problem for each
  ``--rows``, 2 epochs (dim 11, one member, global batch 4096), partitions spread over the
  N workers: seconds per epoch (the second epoch of the fit's history) and the fit's
  seconds; first, the plain SpectralRegressor on the same rows on one device, in this
  process (the baseline: ``vs_plain`` is its epoch time over each row's). ``--scale-batch``
  makes the global batch 4096 x N (each worker keeps 4096 rows a step: fewer, larger steps
  an epoch), the plain baseline keeping 4096.
"""

from __future__ import annotations

import argparse
import time

import joblib
import numpy as np
from _common import california, markdown_table, versions, write_json
from sklearn.model_selection import GridSearchCV

from skspectral import SpectralRegressor


def cluster(n_workers: int, gpu: bool):
    if gpu:
        from skspectral.dask import local_gpu_cluster

        return local_gpu_cluster(n_workers)
    from distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=40)


def search_seconds(n_workers: int, gpu: bool, n_fits: int) -> dict:
    from distributed import Client

    X, _, y, _ = california()
    grid = {"learning_rate_init": list(np.geomspace(0.001, 0.01, max(1, n_fits // 4))), "dim": [8, 15]}
    search = GridSearchCV(SpectralRegressor(max_iter=40, random_state=0), grid, cv=2, n_jobs=-1)
    with cluster(n_workers, gpu) as c, Client(c):
        with joblib.parallel_config(backend="dask"):
            search.fit(X[:4000], y[:4000])  # warm-up: imports, kernel compilation on every worker
            start = time.perf_counter()
            search.fit(X, y)
            seconds = time.perf_counter() - start
    results = search.cv_results_
    fits = len(results["params"]) * search.n_splits_
    busy = float(np.sum(results["mean_fit_time"] + results["mean_score_time"]) * search.n_splits_)
    return {"workers": n_workers, "fits": fits, "seconds": seconds, "fits_per_s": fits / seconds, "busy_s": busy,
            "mean_fit_s": float(np.mean(results["mean_fit_time"])), "utilisation": busy / (n_workers * seconds)}


def synthetic(rows: int, n_parts: int):
    import dask.array as da

    X = da.random.RandomState(0).normal(size=(rows, 28), chunks=(rows // n_parts, 28)).astype("float32")
    return X, (X[:, 0] ** 2 - X[:, 1] + da.sin(X[:, 2])).astype("float64")


PROBLEM = dict(dim=11, n_estimators=1, batch_size=4096, max_iter=2, early_stopping=False, random_state=0)


def epoch_row(estimator: str, n_workers: int, rows: int, fit_s: float, history: list, batch_size: int) -> dict:
    return {"estimator": estimator, "workers": n_workers, "rows": rows, "batch_size": batch_size,
            "epoch_s": history[-1]["elapsed_s"] - history[-2]["elapsed_s"], "fit_s": fit_s,
            "train_rmse": history[-1].get("train_rmse")}


def data_parallel(n_workers: int, gpu: bool, rows: int, scale_batch: bool) -> dict:
    from distributed import Client

    from skspectral.dask import DaskSpectralRegressor

    with cluster(n_workers, gpu) as c, Client(c) as client:
        X, y = client.persist(list(synthetic(rows, 4 * n_workers)))
        params = {**PROBLEM, "batch_size": PROBLEM["batch_size"] * (n_workers if scale_batch else 1)}
        start = time.perf_counter()
        model = DaskSpectralRegressor(client=client, **params).fit(X, y)
        return epoch_row("DaskSpectralRegressor", n_workers, rows, time.perf_counter() - start, model.history_,
                         params["batch_size"])


def plain_baseline(gpu: bool, rows: int) -> dict:
    """The plain estimator on one device, on the 1-worker run's rows (the same chunks, so the
    same values), held in this process's memory."""
    import dask

    X, y = dask.compute(*synthetic(rows, 4), scheduler="threads")
    start = time.perf_counter()
    model = SpectralRegressor(device="cuda" if gpu else "cpu", **PROBLEM).fit(X, y)
    row = epoch_row("SpectralRegressor", 1, rows, time.perf_counter() - start, model.history_, PROBLEM["batch_size"])
    del model, X, y
    if gpu:
        import torch

        torch.cuda.empty_cache()
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--parts", nargs="+", default=["search", "data"], choices=["search", "data"])
    p.add_argument("--fits", type=int, default=32)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--scale-batch", action="store_true", help="global batch 4096 x workers")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    out = {"versions": versions("cuda" if a.gpu else "cpu"), "search": [], "data_parallel": []}
    if "search" in a.parts:
        for n in a.workers:
            out["search"].append(search_seconds(n, a.gpu, a.fits))
            print(out["search"][-1], flush=True)
            write_json(a.json, out)  # rows so far: a run cut at its time limit keeps them
        for row in out["search"]:
            row["speed_up"] = row["fits_per_s"] / out["search"][0]["fits_per_s"]
            row["efficiency"] = row["speed_up"] / row["workers"]
        print(markdown_table(out["search"], ["workers", "fits", "seconds", "fits_per_s", "speed_up", "efficiency",
                                              "mean_fit_s", "busy_s", "utilisation"]))
    if "data" in a.parts:
        for rows in a.rows:
            out["data_parallel"].append(plain_baseline(a.gpu, rows))
            print(out["data_parallel"][-1], flush=True)
            for n in a.workers:
                out["data_parallel"].append(data_parallel(n, a.gpu, rows, a.scale_batch))
                print(out["data_parallel"][-1], flush=True)
                write_json(a.json, out)
        for row in out["data_parallel"]:
            plain = next(r for r in out["data_parallel"] if r["rows"] == row["rows"])
            row["vs_plain"] = plain["epoch_s"] / row["epoch_s"]
        print(markdown_table(out["data_parallel"], ["estimator", "workers", "rows", "batch_size", "epoch_s", "fit_s",
                                                    "train_rmse", "vs_plain"]))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
