"""Accuracy on real tables: our estimators against HistGradientBoosting, and LightGBM,
XGBoost and CatBoost where they install (``pip install '.[bench]'``), same folds, same run;
with ``--peers ... realmlp tabm`` also pytabkit's RealMLP-TD and TabM-D (in the bench extra too).

    python benchmarks/quality.py --device cpu|cuda [--datasets california churn ...]
        [--folds 0 1 2 3 4] [--configs default series ...] [--json out.json]
    python benchmarks/quality.py --fit-cost-runs run1.json run2.json ...   # repeated runs' fit cost

The suite is ``tasks.json`` in the tabular data folder (../shared/data/tabular, or
--data DIR) plus California Housing; scikit-learn's bundled small tables (diabetes,
breast_cancer, wine, iris), seeded wide synthetic tables (``friedman_wide_R_C``: Friedman #1's
five useful columns among C, R rows) and any of them widened by seeded noise columns (``california+noise192``:
192 uniform columns that carry nothing) run where named in --datasets, and ``--train-rows N`` fits on
N-row draws of each fold's training rows (small tables from large ones). 5-fold cross-validation (3 folds above 100k
rows), shuffled with seed 0 (stratified for classification); ``--folds`` picks which
folds run, so defaults can be chosen on some folds and reported on the others; ``--group-columns C ...`` keeps the
rows that share those columns' values in one fold instead (concrete's mixtures: RESULTS.md, section 11).
Metric: RMSE (regression) or log-loss (classification); ratio = ours / HGB's, and ours /
the best gradient-boosting peer's (the lowest of those run), per dataset, over the same folds; the
geometric mean of the ratios summarises a config.
Peers get the data as DataFrames with categorical columns as pandas categories (HGB:
categorical_features="from_dtype"; XGBoost: enable_categorical; CatBoost: cat_features, a
missing level as its own); ours gets the same frames. Every peer with its defaults.

Configs (``CONFIGS``): "default" is the estimators' defaults; the others change one
thing at a time for the ablation table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT, named_json, versions, write_json

def _tall_batch(n_train: int, steps: int = 100) -> int:
    """A candidate rule for batch_size="auto": at most ``steps`` steps an epoch, at least 200 rows."""
    return max(200, -(-n_train // steps))


def _budget_epochs(n_train: int, steps: int) -> int:
    """A candidate rule for max_iter: the epochs that make ``steps`` Adam steps (the default batch rule,
    a tenth held out from 1,000 rows), at most 140."""
    fitted = int(n_train * 0.9) if n_train >= 1000 else n_train
    per_epoch = -(-fitted // max(200, -(-fitted // 200)))
    return min(140, -(-steps // per_epoch))


CONFIGS = {
    "default": {},
    # candidate recipes for fit cost (functions of the rows a fit trains on: one rule for every table)
    "tall_batch": lambda n: {"batch_size": _tall_batch(n)},
    "tall_batch_lr": lambda n: {"batch_size": _tall_batch(n),
                                "learning_rate_init": 0.002 * math.sqrt(_tall_batch(n) / 200)},
    "tall200_lr": lambda n: {"batch_size": _tall_batch(n, 200),
                             "learning_rate_init": 0.002 * math.sqrt(_tall_batch(n, 200) / 200)},
    "tall200_linear": lambda n: {"batch_size": _tall_batch(n, 200),
                                 "learning_rate_init": 0.002 * _tall_batch(n, 200) / 200},
    "short": {"max_iter": 50},
    # candidates for max_iter="auto": the cosine schedule's horizon a budget of Adam steps (at most 140 epochs)
    "budget_2k": lambda n: {"max_iter": _budget_epochs(n, 2000)},
    "budget_3k": lambda n: {"max_iter": _budget_epochs(n, 3000)},
    "budget_5k": lambda n: {"max_iter": _budget_epochs(n, 5000)},
    # candidates for the CPU's members (a CPU step's eigenpairs are proportional to them)
    "m3": {"n_estimators": 3},
    "m2": {"n_estimators": 2},
    "m3_budget_3k": lambda n: {"n_estimators": 3, "max_iter": _budget_epochs(n, 3000)},
    "batch_200": {"batch_size": 200},
    # the series' model: linear features, one member, no early stopping, no weight penalty
    "series": dict(feature_encoding="linear", n_estimators=1, shared_members=0.0, early_stopping=False, alpha=0.0),
    "linear": dict(feature_encoding="linear"),
    "one_member": dict(n_estimators=1),
    # every member owns its matrices (the defaults before 2026-12-03: no sharing members, no factors' pull)
    "own_members": dict(shared_members=0.0),
    "no_early_stopping": dict(early_stopping=False),
    "no_alpha": dict(alpha=0.0),
    # candidates for min_level_count (rows a categorical level needs to own a matrix; 10 before)
    "levels_10": dict(min_level_count=10),
    "levels_30": dict(min_level_count=30),
    "levels_100": dict(min_level_count=100),
    # candidates for n_bins ("auto": 16, and 32 from 10,000 rows; 16 on every table before)
    "bins_16": dict(n_bins=16),
    "bins_32": dict(n_bins=32),
}


# scikit-learn's bundled small tables (no download), outside the suite: --datasets diabetes wine ...
BUNDLED = {"diabetes": ("load_diabetes", "regression"), "breast_cancer": ("load_breast_cancer", "classification"),
           "wine": ("load_wine", "classification"), "iris": ("load_iris", "classification")}


# Wide tables, outside the suite: --datasets friedman_wide_5000_200 ... (R rows, C columns, of which Friedman
# #1's five carry the target and the rest are uniform noise; noise 1.0, seed 0), and NAME+noiseK (any table
# with K seeded uniform columns added): a row's work grows with its columns, and the columns that carry little
# are where ours loses to trees (RESULTS.md, section 12, *Wide tables*).
WIDE = re.compile(r"friedman_wide_(\d+)_(\d+)")
NOISE = re.compile(r"(.+)\+noise(\d+)")


def load(name: str, data_dir: Path):
    """(X DataFrame, y array, task) of one dataset; categorical columns as pandas categories."""
    import pandas as pd
    import sklearn.datasets

    if noisy := NOISE.fullmatch(name):
        X, y, task = load(noisy.group(1), data_dir)
        noise = np.random.default_rng(0).uniform(size=(len(X), int(noisy.group(2))))
        columns = pd.DataFrame(noise, columns=[f"noise{i}" for i in range(noise.shape[1])], index=X.index)
        return pd.concat([X, columns], axis=1), y, task

    if name == "california":
        X, y = sklearn.datasets.fetch_california_housing(return_X_y=True, as_frame=True)
        return X, y.to_numpy(), "regression"
    if wide := WIDE.fullmatch(name):
        rows, columns = map(int, wide.groups())
        X, y = sklearn.datasets.make_friedman1(rows, columns, noise=1.0, random_state=0)
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(columns)]), y, "regression"
    if name in BUNDLED:
        loader, task = BUNDLED[name]
        X, y = getattr(sklearn.datasets, loader)(return_X_y=True, as_frame=True)
        return X, (y.to_numpy() if task == "regression" else y.astype(str).to_numpy()), task
    tasks = {t["name"]: t for t in json.loads((data_dir / "tasks.json").read_text())}
    task = tasks[name]
    frame = pd.read_csv(data_dir / task["file"])
    y = frame.pop(task["target"])
    for column in task["categorical"]:
        frame[column] = frame[column].astype("category")
    if task["task"] != "regression":
        y = y.astype(str)
    return frame, y.to_numpy(), task["task"]


def dataset_names(data_dir: Path) -> list[str]:
    return ["california"] + [t["name"] for t in json.loads((data_dir / "tasks.json").read_text())]


def folds(X, y, task: str, fold_ids, group_columns=None):
    """The folds ``fold_ids`` as (fold, train rows, test rows); ``group_columns``: rows that share the values of
    these columns fall in one fold (GroupKFold, shuffled with seed 0), e.g. concrete's mixtures measured at
    several ages."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    n_splits = 3 if len(X) > 100_000 else 5
    if group_columns:
        groups = X.groupby(list(group_columns), sort=False, dropna=False).ngroup()
        splits = GroupKFold(n_splits, shuffle=True, random_state=0).split(X, y, groups)
    else:
        splitter = (StratifiedKFold if task != "regression" else KFold)(n_splits, shuffle=True, random_state=0)
        splits = splitter.split(X, y)
    for i, (train, test) in enumerate(splits):
        if i in fold_ids:
            yield i, train, test


def score(task: str, model, X, y) -> float:
    from sklearn.metrics import log_loss

    if task == "regression":
        return float(np.sqrt(np.mean((model.predict(X) - y) ** 2)))
    return float(log_loss(y, model.predict_proba(X), labels=model.classes_))


# the gradient-boosting peers (run by default; "best peer" is the best of these that ran) and the
# strongest published MLP defaults, pytabkit's RealMLP-TD and TabM-D (opt-in: minutes per table)
GB_PEERS = ("hgb", "lightgbm", "xgboost", "catboost")
MLP_PEERS = ("realmlp", "tabm")
PEERS = GB_PEERS + MLP_PEERS


def peers(task: str, seed: int, names=GB_PEERS, device: str = "cpu") -> dict:
    """The peers that install here, with their defaults and native categoricals (pytabkit's MLPs
    read a frame's category columns as categorical, on ``device``)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    regression = task == "regression"
    out = {}
    if "hgb" in names:
        out["hgb"] = (HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier)(
            categorical_features="from_dtype", random_state=seed)
    if "lightgbm" in names:
        try:
            import lightgbm

            out["lightgbm"] = (lightgbm.LGBMRegressor if regression else lightgbm.LGBMClassifier)(
                random_state=seed, verbose=-1)
        except ImportError:
            pass
    if "xgboost" in names:
        try:
            import xgboost

            cls = xgboost.XGBRegressor if regression else xgboost.XGBClassifier
            model = cls(enable_categorical=True, tree_method="hist", random_state=seed)
            out["xgboost"] = model if regression else LabelsAsCodes(model)  # it wants labels 0..K-1
        except ImportError:
            pass
    if "catboost" in names:
        try:
            import catboost  # noqa: F401

            out["catboost"] = CatBoostOnFrames(regression, seed)
        except ImportError:
            pass
    if any(name in names for name in MLP_PEERS):
        try:
            import pytabkit
        except ImportError:
            pytabkit = None
        kinds = {"realmlp": ("RealMLP_TD_Regressor", "RealMLP_TD_Classifier"),
                 "tabm": ("TabM_D_Regressor", "TabM_D_Classifier")}
        for name in MLP_PEERS:
            if name in names and pytabkit is not None:
                cls = getattr(pytabkit, kinds[name][0 if regression else 1])
                out[name] = cls(device=device, random_state=seed, verbosity=0)
    return out


class LabelsAsCodes:
    """A classifier that wants labels 0..K-1, fitted on any labels (predict_proba, classes_)."""

    def __init__(self, model):
        self.model = model

    def fit(self, X, y):
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.model.fit(X, codes)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)


class CatBoostOnFrames:
    """CatBoost with the frame's categorical columns declared (missing levels as their own)."""

    def __init__(self, regression: bool, seed: int):
        import catboost

        cls = catboost.CatBoostRegressor if regression else catboost.CatBoostClassifier
        self.model = cls(random_seed=seed, verbose=0, allow_writing_files=False)

    @staticmethod
    def _frame(X):
        X = X.copy()
        for column in X.columns[X.dtypes == "category"]:
            values = X[column].astype(object)
            X[column] = values.where(values.notna(), "missing").map(str)  # a missing level of its own
        return X

    def fit(self, X, y):
        categorical = [c for c in X.columns if X[c].dtype == "category"]
        self.model.fit(self._frame(X), y, cat_features=categorical)
        self.classes_ = getattr(self.model, "classes_", None)
        self.n_iter_ = self.model.tree_count_
        return self

    def predict(self, X):
        return self.model.predict(self._frame(X))

    def predict_proba(self, X):
        return self.model.predict_proba(self._frame(X))


def ours(task: str, device: str, seed: int, params, n_rows: int):
    """Our estimator with a config's parameters (a rule config: a function of the rows it trains on,
    the fold's training rows less the early-stopping share)."""
    from skspectral import SpectralClassifier, SpectralRegressor

    cls = SpectralRegressor if task == "regression" else SpectralClassifier
    if callable(params):
        params = params(int(n_rows * 0.9) if n_rows >= 1000 else n_rows)
    return cls(**{"device": device, "random_state": seed, **params})  # (an --extra random_state: a seed of its own)


def warm_up(device: str) -> None:
    """A short fit of each estimator first: start-up (CUDA context, kernel compilation, Numba's
    cache) is not a fit's price."""
    from skspectral import SpectralClassifier, SpectralRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SpectralRegressor(device=device, max_iter=2).fit(X, X[:, 0])
        SpectralClassifier(device=device, max_iter=2).fit(X, X[:, 0] > 0)
        SpectralClassifier(device=device, max_iter=2).fit(X, np.digitize(X[:, 0], [-0.5, 0.5]))


def run(a) -> dict:
    data_dir = Path(a.data)
    warm_up(a.device)
    out = {"versions": versions(a.device), "rows": [],
           "configs": {c: CONFIGS[c] if not callable(CONFIGS[c]) else "rule" for c in a.configs}}
    print(json.dumps(out["versions"]), flush=True)
    for name in a.datasets:
        X, y, task = load(name, data_dir)
        for fold, train, test in folds(X, y, task, set(a.folds), a.group_columns):
            if a.train_rows:  # a small table drawn from a large one: the fold's first rows in a seeded order
                train = np.random.RandomState(fold).permutation(train)[:a.train_rows]
            Xtr, Xte, ytr, yte = X.iloc[train], X.iloc[test], y[train], y[test]
            models = {} if a.no_peers else peers(task, fold, a.peers, a.device)
            models.update({f"ours:{c}": ours(task, a.device, fold, CONFIGS[c], len(train)) for c in a.configs})
            for label, model in models.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(Xtr, ytr)
                seconds = time.perf_counter() - start
                row = {"dataset": name, "task": task, "fold": fold, "model": label, "rows": len(X),
                       "fit_rows": len(train),
                       "metric": score(task, model, Xte, yte), "fit_s": seconds}
                for attribute in ("n_iter_", "backend_", "dim_", "n_estimators_", "batch_size", "learning_rate_init"):
                    if hasattr(model, attribute):
                        row[attribute] = getattr(model, attribute)
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    return out


def summary(out: dict) -> str:
    """Per dataset: each model's mean metric and fit seconds over the folds run, ours / HGB and ours / the
    best gradient-boosting peer (the lowest metric among those run; the MLPs are reported beside)."""
    rows = out["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    ours_models = [m for m in models if m.startswith("ours:")]
    peer_models = [m for m in models if not m.startswith("ours:")]
    lines = ["| dataset | metric | " + " | ".join(models) + " | " + " | ".join(f"{m} ÷ hgb" for m in ours_models)
             + " | " + " | ".join(f"{m} ÷ best GB peer" for m in ours_models)
             + " | fit s (" + ", ".join(models) + ") |", "|" + "---|" * (2 + len(models) + 2 * len(ours_models) + 1)]
    ratios = {m: [] for m in ours_models}
    to_best = {m: [] for m in ours_models}
    for d in datasets:
        mean = {m: np.mean([r["metric"] for r in rows if r["dataset"] == d and r["model"] == m]) for m in models}
        fit = {m: np.mean([r["fit_s"] for r in rows if r["dataset"] == d and r["model"] == m]) for m in models}
        task = next(r["task"] for r in rows if r["dataset"] == d)
        cells = [f"{mean[m]:.4f}" for m in models]
        rs = []
        for m in ours_models:
            ratio = mean[m] / mean["hgb"] if "hgb" in mean else float("nan")
            ratios[m].append(ratio)
            rs.append(f"{ratio:.3f}")
        best = min((mean[p] for p in peer_models if p in GB_PEERS), default=float("nan"))  # the best GB peer
        for m in ours_models:
            to_best[m].append(mean[m] / best)
            rs.append(f"{mean[m] / best:.3f}")
        lines.append(f"| {d} | {'RMSE' if task == 'regression' else 'log-loss'} | " + " | ".join(cells) + " | "
                     + " | ".join(rs) + " | " + ", ".join(f"{fit[m]:.1f}" for m in models) + " |")
    geo = [f"{math.exp(np.mean(np.log(r[m]))):.3f}" if r[m] else "—" for r in (ratios, to_best) for m in ours_models]
    worst = [f"{max(r[m]):.3f}" if r[m] else "—" for r in (ratios, to_best) for m in ours_models]
    lines.append("| **geometric mean** | | " + " | ".join("" for _ in models) + " | " + " | ".join(geo) + " | |")
    lines.append("| worst | | " + " | ".join("" for _ in models) + " | " + " | ".join(worst) + " | |")
    return "\n".join(lines) + "\n\n" + fit_cost(out)


def fit_cost(out: dict) -> str:
    """Per dataset: each model's mean fit seconds, ours ÷ HGB's and ÷ LightGBM's, our epochs and
    seconds per epoch; the geometric mean of ours ÷ HGB's."""
    rows = out["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    ours_models = [m for m in models if m.startswith("ours:")]
    peers_ = [m for m in models if not m.startswith("ours:")]
    header = (["dataset"] + [f"{m} fit s" for m in models] + [f"{m} ÷ {p}" for m in ours_models for p in peers_]
              + [f"{m} epochs, s/epoch" for m in ours_models])  # (no peers: no ratio columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ratios = {m: [] for m in ours_models}
    for d in dict.fromkeys(r["dataset"] for r in rows):
        fit = {m: np.mean([r["fit_s"] for r in rows if r["dataset"] == d and r["model"] == m]) for m in models}
        epochs = {m: np.mean([r.get("n_iter_", np.nan) for r in rows if r["dataset"] == d and r["model"] == m])
                  for m in ours_models}
        cells = [f"{fit[m]:.2f}" for m in models]
        cells += [f"{fit[m] / fit[p]:.1f}" for m in ours_models for p in peers_]
        cells += [f"{epochs[m]:.0f}, {fit[m] / epochs[m]:.3f}" for m in ours_models]
        if "hgb" in fit:
            for m in ours_models:
                ratios[m].append(fit[m] / fit["hgb"])
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    geo = ", ".join(f"{m} {math.exp(np.mean(np.log(ratios[m]))):.2f}x" for m in ours_models if ratios[m])
    return "\n".join(lines) + f"\n\ngeometric mean of fit time ÷ HGB's: {geo}"


def fit_cost_runs(paths: list) -> str:
    """Repeated runs on a noisy machine, summarised: for each code (a run file's "code", else the
    file's name) and dataset, our fit ÷ HGB's over the runs, median (min-max) of the runs' means over
    their folds and median (max) over every fit (a fold's fit ÷ HGB's fit of that fold in that run: issue
    24's GPU goal is a bound on every fit); the geometric mean of the medians, each run's own, and the
    fits over 2x and over 10x (the issue's GPU and CPU bounds). A file is one run's --json, or
    {"runs": [{"code": ..., "rows": ...}, ...]} holding several (or {"runs": {name: run, ...}})."""
    runs: dict = {}
    for path in paths:
        loaded = json.loads(Path(path).read_text())
        held = loaded.get("runs", [loaded])
        for run_ in held.values() if isinstance(held, dict) else held:
            runs.setdefault(run_.get("code", Path(path).name), []).append(run_["rows"])
    lines = []
    for code, run_rows in runs.items():
        per_run = []  # {dataset: ratio} of each run (the mean over its folds)
        per_fit: dict = {}  # {dataset: [each fit's ratio, over the runs]}
        for rows in run_rows:
            ratio = {}
            for d in dict.fromkeys(r["dataset"] for r in rows):
                ours = [r for r in rows if r["dataset"] == d and r["model"] == "ours:default"]
                hgb = [r for r in rows if r["dataset"] == d and r["model"] == "hgb"]
                ratio[d] = np.mean([r["fit_s"] for r in ours]) / np.mean([r["fit_s"] for r in hgb])
                hgb_by_fold = {r["fold"]: r["fit_s"] for r in hgb}
                per_fit.setdefault(d, []).extend(r["fit_s"] / hgb_by_fold[r["fold"]] for r in ours)
            per_run.append(ratio)
        lines += [f"\n{code} ({len(per_run)} runs): ours ÷ HGB's fit time",
                  "| dataset | median | min-max | by fit: median | by fit: max |", "|---|---|---|---|---|"]
        medians = []
        for d in per_run[0]:
            values = [ratio[d] for ratio in per_run]
            medians.append(float(np.median(values)))
            lines.append(f"| {d} | {medians[-1]:.1f} | {min(values):.1f}-{max(values):.1f} | "
                         f"{np.median(per_fit[d]):.2f} | {max(per_fit[d]):.2f} |")
        each = ", ".join(f"{math.exp(np.mean(np.log(list(ratio.values())))):.2f}" for ratio in per_run)
        fits = [f for d in per_fit for f in per_fit[d]]
        lines.append(f"geometric mean of the medians {math.exp(np.mean(np.log(medians))):.2f}x (each run: {each}); "
                     f"of {len(fits)} fits {sum(f > 2 for f in fits)} over 2x (the GPU's goal), "
                     f"{sum(f > 10 for f in fits)} over 10x (the CPU's)")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--datasets", nargs="+")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    p.add_argument("--extra", nargs="+", default=[], metavar="NAME=JSON",
                   help='ad-hoc configs for exploring, e.g. big=\'{"dim": 30}\'')
    p.add_argument("--train-rows", type=int, metavar="N",
                   help="fit on N of each fold's training rows (a seeded draw), test on all its test rows")
    p.add_argument("--group-columns", nargs="+", metavar="COLUMN",
                   help="keep the rows that share these columns' values in one fold (each dataset named must have them)")
    p.add_argument("--no-peers", action="store_true", help="skip the peers (ratios need them)")
    p.add_argument("--peers", nargs="+", default=list(GB_PEERS), choices=PEERS,
                   help="peers to fit, each where it installs (default: the gradient-boosting ones; "
                        "realmlp and tabm need pytabkit)")
    p.add_argument("--json")
    p.add_argument("--fit-cost-runs", nargs="+", metavar="JSON",
                   help="summarise the fit cost of repeated runs (their --json files) instead of fitting")
    a = p.parse_args()
    if a.train_rows is not None and a.train_rows < 1:
        p.error(f"--train-rows must be at least 1 (the rows each fit draws), got {a.train_rows}")
    if a.fit_cost_runs:
        print(fit_cost_runs(a.fit_cost_runs))
        return
    a.datasets = a.datasets or dataset_names(Path(a.data))
    for name, params in named_json(a.extra).items():
        CONFIGS[name] = params
        a.configs.append(name)
    out = run(a)
    print("\n" + summary(out))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
