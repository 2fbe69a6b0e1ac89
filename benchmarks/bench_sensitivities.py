"""What a categorical feature's certified bound costs: the largest norm of its level pairs' differences,
found from every pair's norm (the baseline) or from the few pairs whose Frobenius norm could reach it
(PRUNED_PAIRS and above on the CPU), in the same run.

    python benchmarks/bench_sensitivities.py                      # CPU: a fit's record each epoch, feature_sensitivities_
    python benchmarks/bench_sensitivities.py --levels 255 --members 8 --categoricals 3

Synthetic rows: two numeric columns and ``--categoricals`` categorical ones of each of ``--levels`` levels (150
rows a level), a target that reads every level; a default SpectralRegressor fitted for 3 epochs without early
stopping (so its matrices are a trained model's, whose extreme level differences are nearly of rank one).
Per case: the epoch record's milliseconds (the recorder a fit calls after each epoch, timed alone: median of
``--repeats``), one epoch's steps for scale, and ``feature_sensitivities_``'s seconds (median of 3), pruned and
every pair; and the largest relative difference of the bounds between the two. With ``--device cuda`` the
record's "pruned" is the CPU's rule tried on the GPU (a fit there takes every pair: the pruning reads how many
pairs survive, a synchronisation); ``feature_sensitivities_`` is computed on the CPU either way.
"""

import argparse
import functools
import statistics
import time

from _common import sync, versions, write_json

import numpy as np
import pandas as pd

from skspectral import SpectralRegressor, _estimator, _sensitivity
from skspectral._training import trainer

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--device", default="cpu")
p.add_argument("--levels", type=int, nargs="+", default=[30, 100, 255])
p.add_argument("--categoricals", type=int, nargs="+", default=[3])
p.add_argument("--members", type=int, nargs="+", default=[2, 8])
p.add_argument("--repeats", type=int, default=11)
p.add_argument("--json")
a = p.parse_args()

RECORDERS: list = []
EPOCH_SECONDS: list = []
_recorder = _estimator.SpectralEstimatorBase._epoch_recorder
_epoch = trainer.Trainer._epoch


def kept_recorder(self, model, evaluations):
    record = _recorder(self, model, evaluations)
    RECORDERS.append(record)
    return record


def timed_epoch(self, *args, **kwargs):
    sync(a.device)
    start = time.perf_counter()
    out = _epoch(self, *args, **kwargs)
    sync(a.device)
    EPOCH_SECONDS.append(time.perf_counter() - start)
    return out


kept_plan_on = _estimator.bounds_plan_on
pruning_plan_on = functools.partial(kept_plan_on, prune=True)  # the CPU's rule, for a GPU's record too


_estimator.SpectralEstimatorBase._epoch_recorder = kept_recorder
trainer.Trainer._epoch = timed_epoch


def table(levels: int, categoricals: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 150 * levels
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = X["a"].to_numpy() + 0.1 * rng.normal(size=n)
    for c in range(categoricals):
        codes = rng.integers(0, levels, n)
        X[f"level{c}"] = pd.Categorical(codes.astype(str))
        y = y + rng.normal(size=levels)[codes]
    return X, y


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync(a.device)
        start = time.perf_counter()
        fn()
        sync(a.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


rows = []
for levels in a.levels:
    for categoricals in a.categoricals:
        X, y = table(levels, categoricals)
        for members in a.members:
            row = {"levels": levels, "categoricals": categoricals, "members": members, "rows": len(X)}
            bounds = {}
            for way, limit in (("pruned", _sensitivity.PRUNED_PAIRS), ("every pair", 10**12)):
                _sensitivity.PRUNED_PAIRS, kept = limit, _sensitivity.PRUNED_PAIRS
                # a GPU fit's record prunes no pairs (it would read how many survive: a synchronisation);
                # measured here as the CPU's does
                _estimator.bounds_plan_on = pruning_plan_on if a.device != "cpu" else kept_plan_on
                try:
                    RECORDERS.clear()
                    EPOCH_SECONDS.clear()
                    est = SpectralRegressor(n_estimators=members, max_iter=3, early_stopping=False, random_state=0,
                                            device=a.device).fit(X, y)
                    record = RECORDERS[-1]
                    row[f"record ms, {way}"] = round(1e3 * timed(record, a.repeats), 2)
                    row[f"sensitivities_ s, {way}"] = round(timed(lambda fitted=est: fitted.feature_sensitivities_, 3), 4)
                    bounds[way] = est.feature_sensitivities_
                finally:
                    _sensitivity.PRUNED_PAIRS = kept
                    _estimator.bounds_plan_on = kept_plan_on
            row["epoch steps ms"] = round(1e3 * statistics.median(EPOCH_SECONDS), 1)
            row["bounds' largest relative difference"] = float(
                np.max(np.abs(bounds["pruned"] - bounds["every pair"]) / bounds["every pair"]))
            print(row, flush=True)
            rows.append(row)

keys = list(rows[0])
print("| " + " | ".join(keys) + " |")
print("|" + "---|" * len(keys))
for row in rows:
    print("| " + " | ".join(str(row[k]) for k in keys) + " |")
if a.json:
    write_json(a.json, {"versions": versions(), "args": vars(a), "rows": rows})
