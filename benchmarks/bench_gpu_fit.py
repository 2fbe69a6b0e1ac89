"""A GPU fit's seconds, old code against new on the same card in the same minutes: a fresh Python each time.

    python benchmarks/bench_gpu_fit.py --data .data/tabular [--code PATH ...] [--names NAME ...]
                                       [--datasets california diamonds flights] [--fits 5] [--repeats 2]
                                       [--json out.json]

For each checkout in ``--code`` (default: this one; e.g. a ``git worktree`` of an older commit, or a copy of
its ``skspectral/`` beside a ``benchmarks/`` folder), alternating between them ``--repeats`` times, a fresh
process fits each table's fold 0 (benchmarks/quality.py's folds and loader) with the defaults on CUDA:
a warm-up fit (kernels loaded, graphs' pools made), then ``--fits`` fits, each timed on the host clock with
the device synchronised before and after. It reports the median and spread of the fits' seconds, the epochs
(``n_iter_``) and a digest of the fitted model's predictions on the fold's test rows (SHA-1 of their bytes):
equal digests across checkouts say a change kept every fitted model to the bit. ``--names`` labels the
checkouts in the table (default: their git revision).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from _common import ROOT, markdown_table, revision, run_in_checkout, versions, write_json

_FIT = """
import hashlib, json, sys, time, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np
import torch
name, data, fits, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
sys.path.insert(0, sys.argv[4])
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
from quality import folds, load
from skspectral import SpectralClassifier, SpectralRegressor
X, y, task = load(name, Path(data))[:3]
_, train, test = next(folds(X, y, task, [0]))
X_train, y_train, X_test = X.iloc[train], y[train], X.iloc[test]
estimator = SpectralRegressor if task == "regression" else SpectralClassifier
estimator(random_state=0, device=device).fit(X_train, y_train)  # warm-up
seconds = []
for _ in range(fits):
    sync()
    start = time.perf_counter()
    model = estimator(random_state=0, device=device).fit(X_train, y_train)
    sync()
    seconds.append(time.perf_counter() - start)
output = model.predict(X_test) if task == "regression" else model.predict_proba(X_test)
digest = hashlib.sha1(np.ascontiguousarray(output).tobytes()).hexdigest()[:12]
print(json.dumps({"fit s": seconds, "epochs": int(model.n_iter_), "predictions": digest}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", nargs="+", default=[str(ROOT)])
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--datasets", nargs="+", default=["california", "diamonds", "flights"])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    parser.add_argument("--fits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="'cuda', or 'cpu' (a try of the script without a GPU)")
    parser.add_argument("--json")
    args = parser.parse_args()
    names = args.names or [f"{revision(path)} ({path})" for path in args.code]
    if len(names) != len(args.code):
        parser.error("--names takes one name per --code path")
    samples = {(path, name): {"fit s": [], "epochs": set(), "predictions": set()}
               for path in args.code for name in args.datasets}
    for _ in range(args.repeats):
        for name in args.datasets:
            for path in args.code:
                run = run_in_checkout(_FIT, path, name, str(Path(args.data).resolve()), str(args.fits),
                                      str(ROOT / "benchmarks"), args.device)
                sample = samples[(path, name)]
                sample["fit s"] += run["fit s"]
                sample["epochs"].add(run["epochs"])
                sample["predictions"].add(run["predictions"])
    rows = []
    for (path, name), sample in samples.items():
        seconds = sample["fit s"]
        rows.append({"dataset": name, "code": names[args.code.index(path)],
                     "fit s (median)": f"{statistics.median(seconds):.3f}",
                     "fit s (min-max)": f"{min(seconds):.3f}-{max(seconds):.3f}", "fits": len(seconds),
                     "epochs": ", ".join(str(e) for e in sorted(sample["epochs"])),
                     "predictions": ", ".join(sorted(sample["predictions"]))})
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        write_json(args.json, {"versions": versions(args.device), "args": vars(args), "rows": rows,
                               "samples": [{"dataset": n, "code": names[args.code.index(p)], "fit s": s["fit s"],
                                            "epochs": sorted(s["epochs"]), "predictions": sorted(s["predictions"])}
                                           for (p, n), s in samples.items()]})


if __name__ == "__main__":
    main()
