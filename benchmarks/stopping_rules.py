"""Early-stopping rules replayed on whole validation curves: where each rule stops, how steadily,
and what it gives up against the best epoch of the full schedule.

    python benchmarks/stopping_rules.py --device cuda --data .data/tabular --json curves.json \
        [--datasets flights california ...] [--folds 0 1 2] [--seeds 0 1 2 3] [--models q sq]
    python benchmarks/stopping_rules.py --replay curves.json [more.json ...]

Recording fits every model with its defaults but ``n_iter_no_change`` large, so each runs the
whole cosine schedule (``max_iter`` epochs) and its ``validation_scores_`` are the score of every
epoch (the running average of the parameters, as early stopping reads it). A stop changes nothing
before it (the schedule is over ``max_iter`` whatever the stop), so a rule applied to the whole
curve stops where that fit would have, keeping the best epoch up to there. Models: ``q`` three
quantile levels (0.05, 0.5, 0.95) with the several-index eigen kernel one matrix a block, ``q_paired``
two matrices a warp (``PAIRED_SEVERAL``: the same values to the last bits, so a second
perturbation of the same fit), ``sq`` the squared error, ``mae`` the absolute error, ``q95`` the one
level 0.95. Seeds other than 0 take
``random_state = fold + 100 * seed``.

Replay prints per table and model: the mean stop epoch, the mean spread (standard deviation) of
the stop over the seeds and kernels of one fold, the range, and the regret: how much worse the
kept epoch's validation score is than the whole curve's best (pinball loss: relative; R^2: relative
to 1 - R^2, i.e. to the squared error).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
from _common import ROOT, versions, write_json
from quality import folds, load, warm_up

from skspectral._estimator import auto_patience as estimator_patience

LEVELS = [0.05, 0.5, 0.95]
MODELS = {"q": (dict(loss="quantile", quantile=LEVELS), False),
          "q_paired": (dict(loss="quantile", quantile=LEVELS), True),
          "sq": ({}, False),
          "mae": (dict(loss="absolute_error"), False),
          "q95": (dict(loss="quantile", quantile=0.95), False)}
TABLES = ("flights", "california", "diamonds", "cps1988", "nmes1988")  # those with early stopping


def record(a) -> dict:
    from skspectral import SpectralRegressor
    from skspectral.eig import _kernel_backend

    warm_up(a.device)
    out = {"versions": versions(a.device), "rows": []}
    for name in a.datasets:
        X, y, task = load(name, Path(a.data))
        for fold, train, _ in folds(X, y, task, set(a.folds)):
            for seed in a.seeds:
                for label in a.models:
                    params, paired = MODELS[label]
                    model = SpectralRegressor(device=a.device, random_state=fold + 100 * seed,
                                              n_iter_no_change=100_000, **params)
                    start = time.perf_counter()
                    with warnings.catch_warnings(), mock.patch.object(_kernel_backend, "PAIRED_SEVERAL", paired):
                        warnings.simplefilter("ignore")
                        model.fit(X.iloc[train], y[train])
                    # step: the score's smallest improvement that counts, tol in the score's units
                    row = dict(dataset=name, fold=fold, seed=seed, model=label, fit_s=time.perf_counter() - start,
                               y_scale=float(model.target_scaler_.scale),
                               step=model.tol * model._validation_score_scale(),
                               n_validation=int(model.validation_fraction * len(train)),
                               validation=[round(float(v), 7) for v in model.validation_scores_])
                    out["rows"].append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "validation"}), flush=True)
    return out


# ---- rules: (scores, the smallest improvement that counts, patience) -> the epoch it stops after ----
def no_improvement(scores, step, patience):
    """The estimator's rule (MLPRegressor's): stop after ``patience`` + 1 epochs in a row without an
    improvement of ``step`` on the best score so far."""
    best, count = -np.inf, 0
    for epoch, score in enumerate(scores, 1):
        count = 0 if score >= best + step else count + 1
        best = max(best, score)
        if count > patience:
            return epoch
    return len(scores)


def trend(scores, step, window):
    """Stop once the least-squares slope of the last ``window`` scores is under ``step`` an epoch."""
    t = np.arange(window) - (window - 1) / 2
    for epoch in range(window, len(scores) + 1):
        if (t * scores[epoch - window:epoch]).sum() / (t * t).sum() < step:
            return epoch
    return len(scores)


def auto_patience(row) -> int:
    """The estimator's "auto" wait before several levels waited 10 epochs."""
    return estimator_patience(row["n_validation"], len(row["validation"]))


RULES = {
    "wait 5 (10 under 1,000 validation rows)": lambda v, step, row: no_improvement(v, step, auto_patience(row)),
    "wait 8": lambda v, step, row: no_improvement(v, step, 8),
    "wait 10": lambda v, step, row: no_improvement(v, step, 10),
    "slope of 20 epochs < tol": lambda v, step, row: trend(v, step, 20),
    "slope of 20 epochs < tol / 2": lambda v, step, row: trend(v, step / 2, 20),
}


def replay(rows: list) -> str:
    lines = []
    tables = [t for t in TABLES if any(r["dataset"] == t for r in rows)]
    models = [m for m in MODELS if any(r["model"] == m for r in rows)]
    for rule, stop_of in RULES.items():
        lines += [f"\n{rule}\n", "| dataset | " + " | ".join(f"{m}: stop (spread) [range], regret" for m in models) + " |",
                  "|---|" + "---|" * len(models)]
        for name in tables:
            cells = []
            for model in models:
                stops, regrets, spreads = [], [], []
                for fold in sorted({r["fold"] for r in rows if r["dataset"] == name}):
                    # the two kernels of a quantile model are perturbations of one fit: one spread
                    group = [r for r in rows if r["dataset"] == name and r["fold"] == fold
                             and (r["model"] == model or {r["model"], model} <= {"q", "q_paired"})]
                    fold_stops = []
                    for r in group:
                        v = np.asarray(r["validation"])
                        epoch = stop_of(v, r["step"], r)
                        fold_stops.append(epoch)
                        if r["model"] == model:
                            stops.append(epoch)
                            lost = v.max() - v[:epoch].max()
                            regrets.append(lost / (1.0 - v.max() if model == "sq" else abs(v.max())))
                    spreads.append(np.std(fold_stops))
                cells.append(f"{np.mean(stops):.0f} ({np.mean(spreads):.1f}) [{min(stops)}-{max(stops)}], "
                             f"{100 * np.mean(regrets):.2f} %")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--datasets", nargs="+", default=list(TABLES))
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--models", nargs="+", default=["q", "q_paired", "sq"], choices=list(MODELS))
    p.add_argument("--json")
    p.add_argument("--replay", nargs="+", metavar="JSON", help="replay the rules on recorded curves (rows merged)")
    a = p.parse_args()
    if a.replay:
        print(replay([r for path in a.replay for r in json.loads(Path(path).read_text())["rows"]]))
        return
    out = record(a)
    if a.json:
        write_json(a.json, out)
    print(replay(out["rows"]))


if __name__ == "__main__":
    main()
