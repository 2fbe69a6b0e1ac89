"""Training speed on California Housing: SpectralRegressor vs a naive loop.

    python benchmarks/bench_fit.py [--device cpu|cuda] [--epochs 5] [--dims 15 45]

The naive loop is the seed's: data kept on the host and copied each step,
batch 10, eager torch with the eigen backend called per step and the loss
read back (.item()) every step. Both are timed in the same run on the same
split: seconds per epoch (median over epochs) and per step, for each batch
size (--batches; on CUDA the "auto" backend is the fused kernel and each step
is a CUDA-graph replay; the eager CuPy step is timed too), then two full fits
with their test RMSE: the series' model (dim 45 on CUDA, 15 on the CPU; linear,
one member, 140 epochs) and the estimator's defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from _common import california, sync, versions, write_json
from sklearn.exceptions import ConvergenceWarning

from skspectral import SpectralModel, SpectralRegressor, resolve_backend
from skspectral._losses import squared_error
from skspectral._training import Dataset, Trainer, TrainingOptions
from skspectral.eig import REGISTRY

# the series' model: linear features, one member, the whole schedule (timings compare like with like)
SERIES = dict(feature_encoding="linear", n_estimators=1, shared_members=0.0, early_stopping=False)


def naive_epochs(X, y, dim, device, batch=10):
    """The seed's training loop, one epoch per iteration: host data copied every step, batch 10,
    Adam lr 1e-3, the eigen call per step and .item() every step. Yields predict(X) -> y units."""
    mean, std, y_mean, y_std = X.mean(0), X.std(0), y.mean(), y.std()
    Xs, ys = (X - mean) / std, (y - y_mean) / y_std
    # the seed's loop called CuPy's eigh per step on CUDA
    backend = "cupy" if device.type == "cuda" and resolve_backend(device, 100, torch.float32) == "cupy" else "torch"
    model = SpectralModel(X.shape[1], dim, backend=backend, generator=torch.Generator().manual_seed(0), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    @torch.no_grad()
    def predict(X_new):
        Xt = torch.tensor((X_new - mean) / std, dtype=torch.float32, device=device)
        return model(Xt).double().cpu().numpy() * y_std + y_mean

    while True:
        order = rng.permutation(len(Xs))
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            xb = torch.tensor(Xs[rows], dtype=torch.float32, device=device)
            yb = torch.tensor(ys[rows], dtype=torch.float32, device=device)
            loss = ((model(xb) - yb) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # the seed logged every step
        yield predict


def naive_epoch_seconds(X, y, dim, device, epochs, batch=10):
    # warm-up outside the clock: CuPy module loads and solver handles of the first eigen call
    next(naive_epochs(X[: 3 * batch], y[: 3 * batch], dim, device, batch))  # one epoch of 3 steps
    loop = naive_epochs(X, y, dim, device, batch)
    times = []
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        next(loop)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def steady_epoch_seconds(X, y, dim, device, epochs, batch_size=200, backend="auto"):
    """Median epoch time inside one fit (history_'s clock; the first epoch, with warm-up
    and graph capture, is left out). Includes each epoch's one sync and its record."""
    est = SpectralRegressor(dim=dim, device=str(device), max_iter=epochs + 1, random_state=0, tol=0,
                            batch_size=batch_size, backend=backend, learning_rate_schedule="constant",
                            n_iter_no_change=epochs + 10, **SERIES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    elapsed = [r["elapsed_s"] for r in est.history_]
    return statistics.median(np.diff(elapsed)), est.backend_


def step_ms(X, y, dim, device, batch_size, backend, graph, epochs=5):
    """Milliseconds per training step (forward, backward, Adam) of the Trainer alone, timed with
    CUDA events over whole epochs after a warm-up epoch (which captures the graph)."""
    Xs = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32, device=device)
    ys = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32, device=device)
    model = SpectralModel(X.shape[1], dim, backend=backend, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float32, device=device)
    options = TrainingOptions(learning_rate_init=1e-3, batch_size=batch_size, cuda_graph=graph)
    trainer = Trainer(model, squared_error, options, torch.Generator(device=device).manual_seed(0))
    data = Dataset(Xs, ys, torch.ones_like(ys))
    trainer._epoch(data)  # warm-up (and capture)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(epochs):
        start.record()
        trainer._epoch(data)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / -(-len(Xs) // batch_size))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dims", type=int, nargs="+", default=[15, 45])
    p.add_argument("--naive-epochs", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[200, 1024])
    p.add_argument("--json")
    a = p.parse_args()
    device = torch.device(a.device)
    X_train, X_test, y_train, y_test = california()
    out = {"versions": versions(device), "rows": []}
    print(json.dumps(out["versions"]))
    n_train = len(X_train)
    for dim in a.dims:
        naive = naive_epoch_seconds(X_train, y_train, dim, device, a.naive_epochs)
        naive_steps = -(-n_train // 10)
        configs = [(b, "auto") for b in a.batches]
        if device.type == "cuda":
            configs.append((a.batches[0], "cupy"))  # the eager step of issue 3, for comparison
        for batch_size, backend in configs:
            ours, chosen = steady_epoch_seconds(X_train, y_train, dim, device, a.epochs, batch_size, backend)
            row = {"dim": dim, "batch_size": batch_size, "backend": chosen,
                   "graph": device.type == "cuda" and REGISTRY[chosen].capture_safe,
                   "naive_s_per_epoch": naive, "naive_ms_per_step": naive / naive_steps * 1e3,
                   "ours_s_per_epoch": ours, "speedup_per_epoch": naive / ours}
            if device.type == "cuda":
                row["ours_ms_per_step"] = step_ms(X_train, y_train, dim, device, batch_size, chosen, row["graph"])
                if row["graph"]:  # the same step without the graph, to show what capture buys
                    row["eager_kernel_ms_per_step"] = step_ms(X_train, y_train, dim, device, batch_size, chosen, False)
                row["speedup_per_step"] = row["naive_ms_per_step"] / row["ours_ms_per_step"]
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    # full fits: the series' model (dim 45 on CUDA, 15 on the CPU; linear, one member, 140 epochs,
    # batch 200) and the estimator's defaults, each with its test RMSE
    out["full_fits"] = []
    for label, params in (("series", dict(dim=45 if device.type == "cuda" else 15, learning_rate_init=0.005, **SERIES)),
                          ("default", {})):
        est = SpectralRegressor(random_state=0, device=str(device), **params)
        start = time.perf_counter()
        est.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        rmse = float(np.sqrt(np.mean((est.predict(X_test) - y_test) ** 2)))
        out["full_fits"].append({"model": label, "dim": est.dim_, "epochs": est.n_iter_, "seconds": seconds,
                                 "test_rmse_dollars": rmse * 1e5, "backend": est.backend_})
        print(json.dumps(out["full_fits"][-1]), flush=True)
    print("\n| dim | batch | backend | CUDA graph | naive s/epoch (batch 10) | naive ms/step | ours s/epoch "
          "| ours ms/step | same step eager, ms | speed-up per epoch | per step |\n|---|---|---|---|---|---|---|---|---|---|---|")

    def f(x, spec):
        return "—" if x is None else format(x, spec)

    for r in out["rows"]:
        print(f"| {r['dim']} | {r['batch_size']} | {r['backend']} | {'yes' if r['graph'] else 'no'} "
              f"| {r['naive_s_per_epoch']:.2f} | {r['naive_ms_per_step']:.3f} | {r['ours_s_per_epoch']:.3f} "
              f"| {f(r.get('ours_ms_per_step'), '.3f')} | {f(r.get('eager_kernel_ms_per_step'), '.3f')} "
              f"| {r['speedup_per_epoch']:.0f}× | {f(r.get('speedup_per_step'), '.1f')}× |")
    for f in out["full_fits"]:
        print(f"\nfull fit ({f['model']}): dim={f['dim']}, {f['epochs']} epochs, {f['seconds']:.1f} s, "
              f"test RMSE ${f['test_rmse_dollars']:,.0f}")
    write_json(a.json, out)


if __name__ == "__main__":
    main()
