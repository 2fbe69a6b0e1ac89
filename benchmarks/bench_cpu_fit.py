"""A CPU fit's seconds and its step's, old code against new in the same minutes: a fresh Python each time.

    python benchmarks/bench_cpu_fit.py [--code PATH ...] [--datasets california churn ...] [--epochs 6]
                                       [--repeats 3] [--threads 2] [--busy] [--json out.json]

For each checkout in ``--code`` (default: this one; e.g. a ``git worktree`` of an older commit),
alternating between them ``--repeats`` times, a fresh process fits each dataset with the defaults
(``--epochs``: that many epochs, early stopping as the defaults do it; 0: the defaults' own length)
after a warm-up fit on 1,500 rows, and reports wall seconds (time.perf_counter): the fit, the median
training step (the trainer's ``_step``; none where whole batches run in compiled blocks), the fit's
seconds over its steps, the epochs and, for California,
the test RMSE of an 80/20 split (random_state=0). Other datasets come from ``--data``'s tables
(benchmarks/quality.py's loader), all rows. ``--threads`` sets torch's thread count before the fit;
``--busy`` runs ``python -c "while True: pass"`` beside every measurement (a shared machine).

This machine's speed drifts by 20-40 % over minutes: compare checkouts only within one run, and read
the spread (median, min-max) as well as the median.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _common import ROOT, markdown_table, revision, run_in_checkout, versions, write_json

_FIT = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import torch
import skspectral
from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._training import trainer
name, epochs, threads, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if name == "california":
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split
    X, y = fetch_california_housing(return_X_y=True)
    X, X_test, y, y_test = train_test_split(X, y, random_state=0, test_size=0.2)
    task = "regression"
else:
    sys.path.insert(0, sys.argv[5])
    from pathlib import Path
    from quality import load
    X, y, task = load(name, Path(data))[:3]
    X_test = None
estimator = SpectralClassifier if task in ("binary", "multiclass") else SpectralRegressor
torch.set_num_threads(threads)
estimator(random_state=0, max_iter=1).fit(X[:1500], y[:1500])
steps = []
step = trainer.Trainer._step
def timed(self, *args):
    start = time.perf_counter()
    out = step(self, *args)
    steps.append(time.perf_counter() - start)
    return out
trainer.Trainer._step = timed
model = estimator(random_state=0, **({"max_iter": epochs} if epochs else {}))
start = time.perf_counter()
model.fit(X, y)
seconds = time.perf_counter() - start
# (a checkout whose steps run in compiled blocks calls _step for none of them: the fit's time a step instead)
out = {"fit s": seconds, "step ms": 1e3 * float(np.median(steps)) if steps else None,
       "fit ms a step": 1e3 * seconds / model.t_, "epochs": model.n_iter_}
if X_test is not None:
    out["test RMSE"] = float(np.sqrt(np.mean((model.predict(X_test) - y_test) ** 2)))
print(json.dumps(out))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", nargs="+", default=[str(ROOT)])
    parser.add_argument("--datasets", nargs="+", default=["california"])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    try:
        samples = {(path, name): {} for path in args.code for name in args.datasets}
        for _ in range(args.repeats):
            for name in args.datasets:
                for path in args.code:
                    run = run_in_checkout(_FIT, path, name, str(args.epochs), str(args.threads), args.data, str(ROOT / "benchmarks"))
                    for key, value in run.items():
                        samples[(path, name)].setdefault(key, []).append(value)
    finally:
        if busy is not None:
            busy.kill()
    rows = []
    for (path, name), measured in samples.items():
        row = {"dataset": name, "code": f"{revision(path)} ({path})"}
        for key, values in measured.items():
            if key == "epochs":
                row[key] = ", ".join(str(v) for v in sorted(set(values)))
            elif None in values:
                row[key] = "—"
            else:
                digits = 5 if key == "test RMSE" else 2
                row[key] = f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"
        rows.append(row)
    print(markdown_table(rows, list(dict.fromkeys(key for row in rows for key in row))))  # every row's columns
    if args.json:
        write_json(args.json, {"versions": versions(), "args": vars(args),
                               "samples": [{"dataset": n, "code": p, **m} for (p, n), m in samples.items()],
                               "rows": rows})


if __name__ == "__main__":
    main()
