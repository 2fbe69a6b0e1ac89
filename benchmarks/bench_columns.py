"""The host side of a fit's columns: categorical levels counted and coded, rows made (no device).

    python benchmarks/bench_columns.py [--code PATH ...] [--datasets flights diamonds] [--repeats 5] [--objects]

For each table with categorical columns (pandas categories, as ``quality.py`` loads them; with
``--objects`` the same columns as strings, declared by position), the seconds
of what a fit does to X before training: ``split_columns``, ``level_counts``, ``CategoryCodes`` and
``coded_rows`` (a predict does the last once more). Each checkout of ``--code`` (default: this one;
e.g. a ``git worktree`` of an older commit) runs in fresh processes, the checkouts alternately, the
minimum and median of ``--repeats`` runs in each process; the codes' checksum shows they agree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import markdown_table, revision, run_in_checkout, versions, write_json

_PREPARE = r"""
import json, sys, time
import numpy as np
import skspectral
from skspectral._columns import CategoryCodes, coded_rows, column_kinds, level_counts, split_columns
sys.path.append(sys.argv[3])
from quality import load
X, y, task = load(sys.argv[1], __import__("pathlib").Path(sys.argv[2]))
kinds = column_kinds(X, "from_dtype")
if sys.argv[5] == "objects":  # the same columns as strings (object dtype), declared categorical
    X = X.astype({name: object for name in X.columns[kinds.categorical]})
    kinds = column_kinds(X, [int(j) for j in kinds.categorical.nonzero()[0]])
times = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    numeric, categorical = split_columns(X, kinds)
    codes = CategoryCodes(level_counts(categorical))
    rows = coded_rows(numeric, categorical, kinds, codes)
    times.append(time.perf_counter() - start)
print(json.dumps({"rows": len(X), "categorical": int(kinds.categorical.sum()), "min_s": min(times),
                  "median_s": float(np.median(times)), "checksum": float(np.nansum(rows)),
                  "package": skspectral.__file__}))
"""


def main():
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", nargs="+", default=[str(here.parent)])
    parser.add_argument("--data", default=str(here.parents[1] / "shared" / "data" / "tabular"))
    parser.add_argument("--datasets", nargs="+", default=["flights", "diamonds", "cps1988", "churn", "nmes1988"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="times each checkout runs, alternately")
    parser.add_argument("--objects", action="store_true", help="the categorical columns as strings, not categories")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        for _ in range(args.rounds):
            for path in args.code:
                result = run_in_checkout(_PREPARE, path, name, args.data, str(here), str(args.repeats),
                                         "objects" if args.objects else "categories")
                rows.append({"dataset": name, "columns": "objects" if args.objects else "categories",
                             "code": f"{revision(path)} ({path})", **result})
                print(rows[-1], flush=True)
    print(markdown_table(rows, ["dataset", "columns", "code", "rows", "categorical", "min_s", "median_s", "checksum"]))
    write_json(args.json, {"versions": versions("cpu"), "rows": rows})


if __name__ == "__main__":
    main()
