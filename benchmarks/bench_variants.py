"""The model variants against the default model, measured in one run.

    python benchmarks/bench_variants.py --device cuda [--parts step fit smoothing monotone] [--json out.json]

- eig: the k-th eigenvalue's forward + backward alone, dense (auto backend)
  against tridiagonal (auto), 800 and 16384 matrices of n = 15 ... 300.
- step: one training step (model forward, squared loss, backward; eager, CUDA
  events or the host clock, medians after a warm-up) of the default model on
  California's encoding (8 features x 16 bins, 4 members, batch 200 and 4096):
  dense at dim 15 and 45 against tridiagonal at dim 15 ... 300.
- fit: California (80/20 split, seed 0), the defaults with structure dense
  or tridiagonal at several dims: seconds, epochs, seconds per epoch, test RMSE.
- smoothing: California and cps1988 (one 60/20/20 split), 140 epochs without
  early stopping, validation set as eval_set: epochs and seconds until the
  validation RMSE first reaches 1.02x the exact model's best, with and
  without smoothing; best validation and test RMSE.
- monotone: California, the defaults with and without monotonic_cst (MedInc +1)
  over three splits: test RMSE, and the largest decrease of a prediction along
  a MedInc sweep of 200 test rows (0 by construction when constrained).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, california, markdown_table, sym_batch, sync, time_cpu, time_cuda, versions, write_json

from skspectral import SpectralRegressor
from skspectral.encoding import EncodingSpec, FeatureEncoder
from skspectral.model import model_class

STEP_CONFIGS = [("dense", 15), ("dense", 45), ("tridiagonal", 15), ("tridiagonal", 45), ("tridiagonal", 100),
                ("tridiagonal", 200), ("tridiagonal", 300)]
FIT_CONFIGS = [("dense", 15), ("dense", 45), ("tridiagonal", 45), ("tridiagonal", 100), ("tridiagonal", 200)]
SMOOTHING = [None, 0.01, 0.1]
BATCHES = (200, 4096)
EIG_BATCHES = (800, 16384)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def eig_times(device: str) -> list[dict]:
    """fwd+bwd milliseconds of the k-th eigenvalue (k = n // 2): dense (auto backend) against
    tridiagonal (auto), B matrices of each n."""
    from skspectral.eig import kth_eigvalsh, kth_eigvalsh_tridiagonal

    dtype = torch.float32 if device.startswith("cuda") else torch.float64
    timer = time_cuda if device.startswith("cuda") else time_cpu
    rows = []
    for B in EIG_BATCHES:
        for n in (15, 45, 100, 300):
            row = {"B": B, "n": n}
            d = torch.randn(B, n, dtype=dtype, device=device, requires_grad=True)
            e = torch.randn(B, n - 1, dtype=dtype, device=device, requires_grad=True)
            if n <= 100:  # 16384 dense 300 x 300 matrices: 12 GB in float64
                A = sym_batch(B, n, dtype, device).requires_grad_()
                row["dense_ms"] = timer(lambda: kth_eigvalsh(A, n // 2).sum().backward())
            row["tridiagonal_ms"] = timer(lambda: kth_eigvalsh_tridiagonal(d, e, n // 2).sum().backward())
            rows.append(row)
            print(row, flush=True)
    return rows


def step_times(device: str) -> list[dict]:
    """Milliseconds per training step of the model alone (no data pipeline, no optimizer)."""
    dtype = torch.float32 if device.startswith("cuda") else torch.float64
    n_features, n_bins, members = 8, 16, 4
    edges = [list(np.linspace(-2.0, 2.0, n_bins + 1)) for _ in range(n_features)]
    spec = EncodingSpec(n_features, numeric=list(range(n_features)), edges=edges)
    rows = []
    for structure, dim in STEP_CONFIGS:
        encoder = FeatureEncoder(spec, dtype=dtype, device=device)
        model = model_class(structure)(n_features, dim, n_members=members, encoder=encoder, dtype=dtype,
                                       device=device, generator=torch.Generator().manual_seed(0))
        row = {"structure": structure, "dim": dim, "backend": model.eigen_backend.name,
               "parameters": sum(p.numel() for p in model.parameters())}
        for batch in BATCHES:
            X = torch.randn(batch, n_features, dtype=dtype, device=device)
            y = torch.randn(batch, members, dtype=dtype, device=device)

            def step():
                model.zero_grad(set_to_none=True)
                ((model(X) - y) ** 2).mean().backward()

            row[f"step_ms_b{batch}"] = time_cuda(step) if device.startswith("cuda") else time_cpu(step)
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def fit_row(params: dict, X_train, y_train, X_test, y_test, device, eval_set=None) -> tuple[dict, object]:
    est = SpectralRegressor(random_state=0, device=device, **params)
    sync(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X_train, y_train, eval_set=eval_set)
    sync(device)
    seconds = time.perf_counter() - start
    row = {"fit_s": seconds, "epochs": est.n_iter_, "s_per_epoch": seconds / est.n_iter_,
           "test_rmse": rmse(est.predict(X_test), y_test), "backend": est.backend_}
    return row, est


def fits(device: str) -> list[dict]:
    X_train, X_test, y_train, y_test = california()  # early stopping holds out its own rows
    rows = []
    for structure, dim in FIT_CONFIGS:  # warm-up: kernel compilation, CUDA context, caches
        fit_row(dict(structure=structure, dim=dim, max_iter=2), X_train[:2000], y_train[:2000], X_test, y_test,
                device)
    for structure, dim in FIT_CONFIGS:
        row, _ = fit_row(dict(structure=structure, dim=dim), X_train, y_train, X_test, y_test, device)
        rows.append({"structure": structure, "dim": dim, **row})
        print(rows[-1], flush=True)
    return rows


def suite_split(name: str, data_dir: Path):
    from quality import load
    from sklearn.model_selection import train_test_split

    X, y, _ = load(name, data_dir)
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=0.25, random_state=0)
    return X_train, X_val, X_test, y_train, y_val, y_test


def smoothing_runs(device: str, data_dir: Path) -> list[dict]:
    rows = []
    for name in ("california", "cps1988"):
        X_train, X_val, X_test, y_train, y_val, y_test = suite_split(name, data_dir)
        curves = {}
        for alpha in SMOOTHING:
            row, est = fit_row(dict(smoothing=alpha, early_stopping=False), X_train, y_train, X_test, y_test,
                               device, eval_set=[(X_val, y_val)])
            curves[alpha] = [(r["elapsed_s"], r["eval_0_rmse"]) for r in est.history_]
            rows.append({"dataset": name, "smoothing": alpha, **row,
                         "best_val_rmse": min(v for _, v in curves[alpha])})
        target = 1.02 * min(v for _, v in curves[None])
        for row, alpha in zip(rows[-len(SMOOTHING):], SMOOTHING):
            reached = [(epoch + 1, seconds) for epoch, (seconds, value) in enumerate(curves[alpha]) if value <= target]
            row["target_val_rmse"] = target
            row["epochs_to_target"], row["s_to_target"] = reached[0] if reached else (None, None)
            print(row, flush=True)
    return rows


def monotone_runs(device: str) -> list[dict]:
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split

    X, y = fetch_california_housing(return_X_y=True)
    rows = []
    for seed in range(3):
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=seed)
        sweep = np.linspace(X[:, 0].min(), X[:, 0].max(), 50)
        grid = np.repeat(X_test[:200, None, :], len(sweep), axis=1)
        grid[:, :, 0] = sweep
        for constraint in (None, [1, 0, 0, 0, 0, 0, 0, 0]):
            row, est = fit_row(dict(monotonic_cst=constraint), X_train, y_train, X_test, y_test, device)
            along = np.diff(est.predict(grid.reshape(-1, 8)).reshape(200, len(sweep)), axis=1)
            rows.append({"split": seed, "monotonic_cst": "MedInc +1" if constraint else "none", **row,
                         "largest_decrease_along_MedInc": float(max(0.0, -along.min()))})
            print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--parts", nargs="+", default=["eig", "step", "fit", "smoothing", "monotone"],
                   choices=["eig", "step", "fit", "smoothing", "monotone"])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--json")
    a = p.parse_args()
    out = {"versions": versions(a.device)}
    print(out["versions"])
    if "eig" in a.parts:
        out["eig"] = eig_times(a.device)
        print(markdown_table(out["eig"], ["B", "n", "dense_ms", "tridiagonal_ms"]))
    if "step" in a.parts:
        out["step"] = step_times(a.device)
        print(markdown_table(out["step"], ["structure", "dim", "backend", "parameters"]
                             + [f"step_ms_b{b}" for b in BATCHES]))
    if "fit" in a.parts:
        out["fit"] = fits(a.device)
        print(markdown_table(out["fit"], ["structure", "dim", "backend", "fit_s", "epochs", "s_per_epoch",
                                          "test_rmse"]))
    if "smoothing" in a.parts:
        out["smoothing"] = smoothing_runs(a.device, Path(a.data))
        print(markdown_table(out["smoothing"], ["dataset", "smoothing", "backend", "epochs_to_target",
                                                "s_to_target", "fit_s", "best_val_rmse", "test_rmse"]))
    if "monotone" in a.parts:
        out["monotone"] = monotone_runs(a.device)
        print(markdown_table(out["monotone"], ["split", "monotonic_cst", "fit_s", "test_rmse",
                                               "largest_decrease_along_MedInc"]))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
