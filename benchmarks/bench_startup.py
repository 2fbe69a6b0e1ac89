"""What a new CPU process pays before and around its first fit: a fresh Python each time.

    python benchmarks/bench_startup.py [--code PATH ...] [--repeats 3] [--cold] [--json out.json]

For each checkout in ``--code`` (default: this one; e.g. a ``git worktree`` of an older commit
to compare in the same run), alternating between them, ``--repeats`` fresh processes each
measure (wall seconds, time.perf_counter):

- ``import``: ``import skspectral`` (torch, scikit-learn and numba with it);
- ``first fit``: a 2,000-row California fit of one epoch (defaults, no early stopping) -- loading
  the compiled kernels from Numba's disk cache (warm: a run before this one compiled them) and
  building the optimizer, which a later fit does not pay again;
- ``second fit``: the same fit again in that process;
- ``search n_jobs=1`` / ``n_jobs=2``: ``GridSearchCV(SpectralRegressor(max_iter=8), 4 candidates,
  cv=2)`` on 8,000 rows, each in a fresh process (n_jobs=2 starts two worker processes, each of
  which pays the start-up).

With ``--cold``, only the first fit after an install: a default fit (early stopping on) of two epochs
on the 2,000 rows and its predictions, in a fresh process on an empty ``NUMBA_CACHE_DIR`` of its own
(Numba compiles every kernel the fit runs), then in a second process on that cache (loading the
kernels), ``--repeats`` times alternating between the checkouts.

The medians are printed as a markdown table. The CPU's load changes these numbers: run on an
idle machine and read the spread (``--repeats``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _common import markdown_table, revision, run_in_checkout, versions, write_json

_FIT = """
import json, sys, time
t0 = time.perf_counter()
import skspectral
from skspectral import SpectralRegressor
t1 = time.perf_counter()
from sklearn.datasets import fetch_california_housing
X, y = fetch_california_housing(return_X_y=True)
X, y = X[:2000], y[:2000]
default = sys.argv[1:] == ["default"]  # two epochs with early stopping, and predictions (--cold)
params = dict(max_iter=2) if default else dict(max_iter=1, early_stopping=False)
t2 = time.perf_counter()
model = SpectralRegressor(random_state=0, **params).fit(X, y)
if default:
    model.predict(X)
t3 = time.perf_counter()
SpectralRegressor(random_state=0, **params).fit(X, y)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first fit": t3 - t2, "second fit": t4 - t3}))
"""

_SEARCH = """
import json, sys, time
t0 = time.perf_counter()
from sklearn.datasets import fetch_california_housing
from sklearn.model_selection import GridSearchCV
from skspectral import SpectralRegressor
X, y = fetch_california_housing(return_X_y=True)
search = GridSearchCV(SpectralRegressor(max_iter=8, random_state=0),
                      {"dim": [8, 15], "learning_rate_init": [1e-3, 2e-3]}, cv=2, n_jobs=int(sys.argv[1]))
search.fit(X[:8000], y[:8000])
print(json.dumps({f"search n_jobs={sys.argv[1]}": time.perf_counter() - t0}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", nargs="+", default=[str(Path(__file__).resolve().parents[1])])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="the first fit on an empty Numba cache only")
    parser.add_argument("--json")
    args = parser.parse_args()
    samples = {path: {} for path in args.code}
    if args.cold:
        cold(args, samples)
        return
    for path in args.code:  # once each, not counted: Numba's cache for this checkout
        run_in_checkout(_FIT, path, timeout=1200)
    for _ in range(args.repeats):
        for path in args.code:
            runs = [run_in_checkout(_FIT, path, timeout=1200), run_in_checkout(_SEARCH, path, "1", timeout=1200),
                    run_in_checkout(_SEARCH, path, "2", timeout=1200)]
            for run in runs:
                for name, seconds in run.items():
                    samples[path].setdefault(name, []).append(seconds)
    report(args, samples)


def cold(args, samples: dict) -> None:
    import tempfile

    for _ in range(args.repeats):
        for path in args.code:
            with tempfile.TemporaryDirectory() as cache:
                env = {"NUMBA_CACHE_DIR": cache}
                first = run_in_checkout(_FIT, path, "default", timeout=1800, env=env)
                loaded = run_in_checkout(_FIT, path, "default", timeout=1800, env=env)
            for name, seconds in (("first fit, empty cache", first["first fit"]),
                                  ("import", first["import"]),
                                  ("first fit of the next process", loaded["first fit"])):
                samples[path].setdefault(name, []).append(seconds)
    report(args, samples)


def report(args, samples: dict) -> None:
    rows = []
    for path in args.code:
        row = {"code": f"{revision(path)} ({path})"}
        for name, values in samples[path].items():
            row[name] = f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
        rows.append(row)
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        write_json(args.json, {"versions": versions(), "samples": samples, "rows": rows})


if __name__ == "__main__":
    main()
