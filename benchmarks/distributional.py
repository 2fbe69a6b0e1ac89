"""Beyond the mean, on real tables: quantiles, counts and robust losses against
HistGradientBoosting and LightGBM, same folds (quality.py's), same run.

    python benchmarks/distributional.py --device cpu|cuda [--parts quantiles counts robust]
        [--datasets california flights ...] [--folds 0 1 2 3 4] [--json out.json]
    python benchmarks/distributional.py --summarise run1.json run2.json   # one table of several runs

Parts:
- quantiles: levels 0.05 / 0.5 / 0.95 on every regression table plus California. Ours is one
  fit with ``quantile=[0.05, 0.5, 0.95]`` (three eigenvalues of one matrix); the peers fit one
  model per level (HGB ``loss="quantile"``, LightGBM ``objective="quantile"``). Reported: mean
  pinball loss per level, coverage of [q05, q95] on the held-out rows (goal 90 %), the held-out
  rows where some level's prediction lies above a higher level's (crossings), fit seconds
  (three fits for a peer), and our squared-error fit's seconds in the same run (the cost goal:
  one multi-quantile fit <= 1.5x a squared-error fit).
- counts: the tables whose ``target_kind`` is "count" (nmes1988): mean Poisson deviance of
  ours ``loss="poisson"`` against HGB ``loss="poisson"`` and LightGBM ``objective="poisson"``
  (and each one's squared-error fit, clipped at a small positive value where it is not positive).
- robust: ours with "squared_error", "absolute_error" and "huber" on the regression tables
  (flights' heavy tail): RMSE and MAE each, next to HGB's squared and absolute error.

Every model with its defaults; levels, tables and folds fixed in advance (no per-table choice).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT, named_json, versions, write_json
from quality import folds, load, warm_up

LEVELS = (0.05, 0.5, 0.95)
PARTS = ("quantiles", "counts", "robust")


def tasks(data_dir: Path) -> list[dict]:
    return json.loads((data_dir / "tasks.json").read_text())


def regression_tables(data_dir: Path) -> list[str]:
    return ["california"] + [t["name"] for t in tasks(data_dir) if t["task"] == "regression"]


def count_tables(data_dir: Path) -> list[str]:
    return [t["name"] for t in tasks(data_dir) if t.get("target_kind") == "count"]


# ---- the models of each part --------------------------------------------------------------------
def hgb(seed: int, **params):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=seed, **params)


def lightgbm_or_none(seed: int, **params):
    try:
        import lightgbm
    except ImportError:
        return None
    return lightgbm.LGBMRegressor(random_state=seed, verbose=-1, **params)


def ours(device: str, seed: int, **params):
    from skspectral import SpectralRegressor

    return SpectralRegressor(device=device, random_state=seed, **params)


class PerLevel:
    """One peer model per level, predicting (n_samples, n_levels): how peers give intervals."""

    def __init__(self, make):
        self.models = [make(q) for q in LEVELS]

    def fit(self, X, y):
        for model in self.models:
            model.fit(X, y)
        return self

    def predict(self, X):
        return np.column_stack([model.predict(X) for model in self.models])


def spaced(device: str, seed: int, spacing: int, **params):
    """Ours with the levels' eigenvalues ``spacing`` indices apart around eigval_idx (the default
    is 2, every other one, where dim has room): a selection experiment (``--spacings``, or
    "spacing" in an ``--extra`` model's JSON), not an option of the estimator."""
    from skspectral import SpectralRegressor
    from skspectral.regressor import spaced_indices

    class Spaced(SpectralRegressor):
        def _eigen_indices(self):
            return spaced_indices(self.eigval_idx_, len(LEVELS), spacing, self.dim_)

    return Spaced(device=device, random_state=seed, loss="quantile", quantile=list(LEVELS), **params)


SPACINGS: list = []  # --spacings: extra models "ours:spacing=S"
EXTRA: dict = {}  # --extra NAME=JSON: our quantile model with those parameters too, "ours:NAME"


def extra_model(device: str, seed: int, params: dict):
    """An --extra model: its parameters, and "spacing" (the levels' indices apart) if given."""
    params = dict(params)
    if "spacing" in params:
        return spaced(device, seed, params.pop("spacing"), **params)
    return ours(device, seed, loss="quantile", quantile=list(LEVELS), **params)


def quantile_models(device: str, seed: int) -> dict:
    models = {"ours": ours(device, seed, loss="quantile", quantile=list(LEVELS)),
              **{f"ours:spacing={s}": spaced(device, seed, s) for s in SPACINGS},
              **{f"ours:{name}": extra_model(device, seed, params) for name, params in EXTRA.items()},
              "ours:squared_error": ours(device, seed),
              "hgb": PerLevel(lambda q: hgb(seed, loss="quantile", quantile=q))}
    if lightgbm_or_none(seed) is not None:
        models["lightgbm"] = PerLevel(lambda q: lightgbm_or_none(seed, objective="quantile", alpha=q))
    return models


def count_models(device: str, seed: int) -> dict:
    models = {"ours": ours(device, seed, loss="poisson"), "ours:squared_error": ours(device, seed),
              "hgb": hgb(seed, loss="poisson"), "hgb:squared_error": hgb(seed)}
    if lightgbm_or_none(seed) is not None:
        models["lightgbm"] = lightgbm_or_none(seed, objective="poisson")
    return {name: model for name, model in models.items() if model is not None}


def robust_models(device: str, seed: int) -> dict:
    return {"ours": ours(device, seed), "ours:absolute_error": ours(device, seed, loss="absolute_error"),
            "ours:huber": ours(device, seed, loss="huber"), "hgb": hgb(seed),
            "hgb:absolute_error": hgb(seed, loss="absolute_error")}


# ---- scores -------------------------------------------------------------------------------------
def quantile_scores(predicted: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import mean_pinball_loss

    out = {f"pinball_{q}": float(mean_pinball_loss(y, predicted[:, j], alpha=q)) for j, q in enumerate(LEVELS)}
    out["coverage"] = float(np.mean((y >= predicted[:, 0]) & (y <= predicted[:, -1])))
    out["crossings"] = int(np.sum((np.diff(predicted, axis=1) < 0).any(axis=1)))
    return out


def count_scores(predicted: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import mean_poisson_deviance

    clipped = np.maximum(predicted, 1e-6)  # a squared-error model may predict <= 0
    return {"poisson_deviance": float(mean_poisson_deviance(y, clipped)), "rmse": _rmse(predicted, y),
            "non_positive": int(np.sum(predicted <= 0))}


def robust_scores(predicted: np.ndarray, y: np.ndarray) -> dict:
    return {"rmse": _rmse(predicted, y), "mae": float(np.mean(np.abs(predicted - y)))}


def _rmse(predicted, y) -> float:
    return float(np.sqrt(np.mean((predicted - y) ** 2)))


PART_MODELS = {"quantiles": (quantile_models, quantile_scores), "counts": (count_models, count_scores),
               "robust": (robust_models, robust_scores)}


def run(a) -> dict:
    data_dir = Path(a.data)
    warm_up(a.device)
    out = {"versions": versions(a.device), "levels": LEVELS, "rows": []}
    print(json.dumps(out["versions"]), flush=True)
    for part in a.parts:
        make_models, scores = PART_MODELS[part]
        names = {"quantiles": regression_tables, "counts": count_tables, "robust": regression_tables}[part](data_dir)
        for name in names:
            if a.datasets and name not in a.datasets:
                continue
            X, y, task = load(name, data_dir)
            for fold, train, test in folds(X, y, task, set(a.folds)):
                Xtr, Xte, ytr, yte = X.iloc[train], X.iloc[test], y[train], y[test]
                for label, model in make_models(a.device, fold).items():
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model.fit(Xtr, ytr)
                    seconds = time.perf_counter() - start
                    predicted = model.predict(Xte)
                    if part == "quantiles" and predicted.ndim == 1:  # a squared-error fit: its cost only
                        row_scores = robust_scores(predicted, yte)
                    else:
                        row_scores = scores(predicted, yte)
                    row = {"part": part, "dataset": name, "fold": fold, "model": label, "rows": len(X),
                           "fit_s": seconds, **row_scores}
                    for attribute in ("n_iter_", "backend_", "dim_"):
                        if hasattr(model, attribute):
                            row[attribute] = getattr(model, attribute)
                    out["rows"].append(row)
                    print(json.dumps(row), flush=True)
    return out


# ---- tables -------------------------------------------------------------------------------------
def _mean(rows, dataset, model, key):
    values = [r[key] for r in rows if r["dataset"] == dataset and r["model"] == model and key in r]
    return float(np.mean(values)) if values else float("nan")


def _geo(values) -> float:
    values = [v for v in values if np.isfinite(v) and v > 0]
    return math.exp(np.mean(np.log(values))) if values else float("nan")


def quantile_table(rows: list) -> str:
    peers = [m for m in ("hgb", "lightgbm") if any(r["model"] == m for r in rows)]
    models = ["ours"] + peers
    head = ["dataset"] + [f"pinball {q} ({m})" for q in LEVELS for m in models] + [
        f"coverage ({m})" for m in models] + [f"crossings ({m})" for m in models] + [
        f"fit s ({m})" for m in models] + ["ours fit ÷ squared-error fit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios = {(q, p): [] for q in LEVELS for p in peers}
    cost = []
    for d in dict.fromkeys(r["dataset"] for r in rows):
        cells = [d]
        for q in LEVELS:
            key = f"pinball_{q}"
            mean = {m: _mean(rows, d, m, key) for m in models}
            cells += [f"{mean[m]:.4g}" for m in models]
            for p in peers:
                ratios[(q, p)].append(mean["ours"] / mean[p])
        cells += [f"{100 * _mean(rows, d, m, 'coverage'):.1f} %" for m in models]
        cells += [f"{sum(r['crossings'] for r in rows if r['dataset'] == d and r['model'] == m)}" for m in models]
        cells += [f"{_mean(rows, d, m, 'fit_s'):.2f}" for m in models]
        ratio = _mean(rows, d, "ours", "fit_s") / _mean(rows, d, "ours:squared_error", "fit_s")
        cost.append(ratio)
        cells.append(f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for p in peers:
        lines.append(f"geometric mean of ours ÷ {p} pinball: "
                     + ", ".join(f"q={q}: {_geo(ratios[(q, p)]):.3f}" for q in LEVELS)
                     + f"; all levels {_geo([v for q in LEVELS for v in ratios[(q, p)]]):.3f}")
    lines.append(f"geometric mean of ours' fit ÷ our squared-error fit: {_geo(cost):.2f}")
    return "\n".join(lines)


def _variants(rows: list) -> list:
    """Our quantile models: the default and the selection experiments (--spacings, --extra)."""
    return [m for m in dict.fromkeys(r["model"] for r in rows)
            if m == "ours" or (m.startswith("ours:") and m != "ours:squared_error")]


def spacing_table(rows: list) -> str:
    """The selection experiments: each of our quantile models' pinball loss (mean over the levels),
    coverage, fit seconds and epochs; the geometric means of its pinball ÷ HGB's and of its fit
    seconds ÷ our squared-error fit's."""
    models = _variants(rows)
    keys = [f"pinball_{q}" for q in LEVELS]
    head = ["dataset"] + [f"{m}: pinball, coverage, fit s, epochs" for m in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios, costs = {m: [] for m in models}, {m: [] for m in models}
    for d in dict.fromkeys(r["dataset"] for r in rows):
        cells = [d]
        for m in models:
            pinball = np.mean([_mean(rows, d, m, k) for k in keys])
            ratios[m].append(pinball / np.mean([_mean(rows, d, "hgb", k) for k in keys]))
            costs[m].append(_mean(rows, d, m, "fit_s") / _mean(rows, d, "ours:squared_error", "fit_s"))
            cells.append(f"{pinball:.4g}, {100 * _mean(rows, d, m, 'coverage'):.1f} %, {_mean(rows, d, m, 'fit_s'):.2f}, "
                         f"{_mean(rows, d, m, 'n_iter_'):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\ngeometric mean of mean pinball ÷ HGB's: " + ", ".join(f"{m} {_geo(ratios[m]):.3f}" for m in models))
    lines.append("geometric mean of fit ÷ our squared-error fit: " + ", ".join(f"{m} {_geo(costs[m]):.2f}" for m in models))
    return "\n".join(lines)


def metric_table(rows: list, keys: tuple) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    head = ["dataset"] + [f"{k} ({m})" for k in keys for m in models] + [f"fit s ({m})" for m in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        cells = [d] + [f"{_mean(rows, d, m, k):.4g}" for k in keys for m in models]
        cells += [f"{_mean(rows, d, m, 'fit_s'):.2f}" for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(out: dict) -> str:
    parts = []
    for part, keys in (("quantiles", None), ("counts", ("poisson_deviance", "rmse")), ("robust", ("rmse", "mae"))):
        rows = [r for r in out["rows"] if r["part"] == part]
        if rows:
            parts.append(f"### {part}\n\n" + (quantile_table(rows) if keys is None else metric_table(rows, keys)))
            if part == "quantiles" and len(_variants(rows)) > 1:
                parts.append("### quantiles: selection experiments\n\n" + spacing_table(rows))
    return "\n\n".join(parts)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--datasets", nargs="+")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--spacings", type=int, nargs="+", default=[],
                   help="quantiles: also ours with the levels' eigenvalues S indices apart (selection)")
    p.add_argument("--extra", nargs="+", default=[], metavar="NAME=JSON",
                   help="quantiles: also ours with these parameters, e.g. lr='{\"learning_rate_init\": 0.004}' "
                        "(\"spacing\": the levels' eigenvalues that many indices apart)")
    p.add_argument("--json")
    p.add_argument("--summarise", nargs="+", metavar="JSON", help="print the tables of earlier runs' JSON (rows merged)")
    a = p.parse_args()
    if a.summarise:
        runs = [json.loads(Path(f).read_text()) for f in a.summarise]
        print(json.dumps(runs[0]["versions"]) + "\n\n" + summary({"rows": [r for run_ in runs for r in run_["rows"]]}))
        return
    SPACINGS.extend(a.spacings)
    EXTRA.update(named_json(a.extra))
    out = run(a)
    print("\n" + summary(out))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
