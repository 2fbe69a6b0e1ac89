"""Where a default fit's wall time goes: its set-up, the epochs' steps, scoring the held-out rows, the
per-epoch record (the certified bounds), the refit on every row and the fitted attributes.

    python benchmarks/bench_fit_parts.py --device cuda --data .data/tabular --datasets california diamonds flights

Each table's fold 0 (quality.py's folds), fitted with the defaults after a warm-up fit of the same shapes,
``--repeats`` times. Each part is timed by wrapping the private method that runs it, with the device
synchronised before and after (so a part's seconds are its own; the synchronising costs the fit a little of
its overlap: the parts' sum runs slightly above an unwrapped fit). "epoch steps" counts the refit's epochs too
("refit" is the refit's whole call, its steps included); "set-up" is the time before the first epoch.
"""

from __future__ import annotations

import argparse
import collections
import time
import warnings
from pathlib import Path

from _common import ROOT, sync, versions, write_json
from quality import folds, load

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral import _estimator
from skspectral._training import trainer

PARTS = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()
FIRST_EPOCH: dict = {}


def _timed(name: str, fn, device: str):
    def wrapper(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sync(device)
            PARTS[name] += time.perf_counter() - start
            CALLS[name] += 1
    return wrapper


def instrument(device: str) -> None:
    """Wrap the methods that run a fit's parts (for this process: a benchmark's)."""
    trainer.Trainer._epoch = _timed("epoch steps", trainer.Trainer._epoch, device)
    trainer.Trainer._predict = _timed("held-out scoring", trainer.Trainer._predict, device)
    base = _estimator.SpectralEstimatorBase
    base._refit_on_every_row = _timed("refit", base._refit_on_every_row, device)
    base._fitted_attributes = _timed("fitted attributes", base._fitted_attributes, device)
    recorder = base._epoch_recorder
    base._epoch_recorder = lambda self, *a, **k: _timed("epoch record", recorder(self, *a, **k), device)
    epochs = trainer.Trainer.epochs

    def first_epoch_marked(self, *args, **kwargs):
        FIRST_EPOCH.setdefault("t", time.perf_counter())
        yield from epochs(self, *args, **kwargs)

    trainer.Trainer.epochs = first_epoch_marked


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--datasets", nargs="+", default=["california", "diamonds", "flights"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json")
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    instrument(a.device)
    rows = []
    for name in a.datasets:
        X, y, task = load(name, Path(a.data))
        for _, train, _ in folds(X, y, task, [0]):
            estimator = SpectralRegressor if task == "regression" else SpectralClassifier
            estimator(random_state=0, device=a.device).fit(X.iloc[train], y[train])  # warm-up
            for repeat in range(a.repeats):
                PARTS.clear(), CALLS.clear(), FIRST_EPOCH.clear()
                sync(a.device)
                start = time.perf_counter()
                model = estimator(random_state=0, device=a.device).fit(X.iloc[train], y[train])
                sync(a.device)
                row = {"dataset": name, "repeat": repeat, "fit s": round(time.perf_counter() - start, 3),
                       "epochs": model.n_iter_, "set-up": round(FIRST_EPOCH["t"] - start, 3),
                       **{part: round(seconds, 3) for part, seconds in PARTS.items()}, "calls": dict(CALLS)}
                print(row)
                rows.append(row)
    write_json(a.json, {"versions": versions(a.device), "rows": rows})


if __name__ == "__main__":
    main()
