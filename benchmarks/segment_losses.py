"""Where a table's score is lost: held-out loss summed over rows that meet a condition, ours beside
HistGradientBoosting and LightGBM (quality.py's folds, every model with its defaults, the same run).

    python benchmarks/segment_losses.py --dataset churn --folds 0 1 2 \
        --segments "international_plan == 'yes'" "number_customer_service_calls >= 4"

A segment is a pandas ``DataFrame.query`` expression on the table's columns. Printed per fold: each
model's mean loss over all held-out rows, then for each segment its rows, their mean target, and
each model's loss summed over the segment's rows and over the rest (log-loss for classification,
squared error for regression): a model that loses a table's score on a few rows shows it there.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT
from quality import folds, load, ours, peers


def row_losses(task: str, model, X, y) -> np.ndarray:
    """Each held-out row's loss: its log-loss (classes as the model orders them), or squared error."""
    if task == "regression":
        return (np.asarray(y, dtype=np.float64) - model.predict(X)) ** 2
    proba = np.clip(model.predict_proba(X), 1e-15, 1.0)
    column = np.searchsorted(model.classes_, np.asarray(y))
    return -np.log(proba[np.arange(len(column)), column])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--dataset", required=True)
    p.add_argument("--folds", type=int, nargs="+", default=[0])
    p.add_argument("--segments", nargs="+", required=True, metavar="QUERY")
    a = p.parse_args()
    X, y, task = load(a.dataset, Path(a.data))
    for fold, train, test in folds(X, y, task, set(a.folds)):
        losses = {}
        models = {"ours": ours(task, "auto", fold, {}, len(train)), **peers(task, fold, names=("hgb", "lightgbm"))}
        for name, model in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X.iloc[train], y[train])
            losses[name] = row_losses(task, model, X.iloc[test], y[test])
        print(f"fold {fold}: mean loss " + ", ".join(f"{k} {v.mean():.4f}" for k, v in losses.items()))
        held_out = X.iloc[test].reset_index(drop=True)
        target = np.asarray(y[test])
        positive = (target == np.unique(target)[-1]) if task != "regression" else target.astype(np.float64)
        for query in a.segments:
            inside = held_out.eval(query).to_numpy(dtype=bool)  # the rows DataFrame.query(query) keeps
            print(f"  {query}: {inside.sum()} rows, mean target {positive[inside].mean():.3f}; summed loss "
                  + ", ".join(f"{k} {v[inside].sum():.1f} (rest {v[~inside].sum():.1f})" for k, v in losses.items()))


if __name__ == "__main__":
    main()
