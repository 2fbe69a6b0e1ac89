"""A GPU fit with each next epoch queued before the host reads this one's record (the default where nothing
reads the model between epochs) against the same fit one epoch at a time, in the same run.

    python benchmarks/bench_look_ahead.py --data .data/tabular --datasets california diamonds flights

Each table's fold 0 (quality.py's folds), default fits after a warm-up fit of each kind: ``--repeats`` of each,
alternating, timed on the wall with the device synchronised around the fit (medians, min-max); then one of each
under torch.profiler: the kernels' busy time against the profiled wall and the idle time between kernels per
epoch (bench_gpu_idle.py's measure; the profiler lengthens the host's part). Checks that both kinds fit the
same model (predictions, epochs and steps equal, to the bit).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
from _common import ROOT, versions, write_json
from bench_gpu_idle import busy_and_gaps
from quality import folds, load

import torch
from torch.profiler import ProfilerActivity, profile

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._training import Trainer


@contextlib.contextmanager
def looking_ahead(allowed: bool):
    """Fits in the block queue their next epoch ahead where they would (allowed) or never."""
    original = Trainer.epochs

    def epochs(self, *args, look_ahead=False, **kwargs):
        return original(self, *args, look_ahead=look_ahead and allowed, **kwargs)

    Trainer.epochs = epochs
    try:
        yield
    finally:
        Trainer.epochs = original


def timed_fit(make, X, y):
    torch.cuda.synchronize()
    start = time.perf_counter()
    model = make().fit(X, y)
    torch.cuda.synchronize()
    return time.perf_counter() - start, model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--datasets", nargs="+", default=["california", "diamonds", "flights"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-gap-us", type=float, default=20.0)
    p.add_argument("--json")
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    kinds = {"one epoch at a time": False, "next epoch queued ahead": True}
    for name in a.datasets:
        X, y, task = load(name, Path(a.data))
        for _, train, _ in folds(X, y, task, [0]):
            estimator = SpectralRegressor if task == "regression" else SpectralClassifier
            Xt, yt = X.iloc[train], y[train]

            def make():
                return estimator(random_state=0, device="cuda")

            for allowed in kinds.values():  # warm-up
                with looking_ahead(allowed):
                    make().fit(Xt, yt)
            seconds = {kind: [] for kind in kinds}
            models = {}
            for _ in range(a.repeats):
                for kind, allowed in kinds.items():
                    with looking_ahead(allowed):
                        s, models[kind] = timed_fit(make, Xt, yt)
                    seconds[kind].append(s)
            one, ahead = (models[kind] for kind in kinds)
            out = "predict" if task == "regression" else "predict_proba"
            same = (one.n_iter_ == ahead.n_iter_ and one.t_ == ahead.t_
                    and np.array_equal(getattr(one, out)(Xt), getattr(ahead, out)(Xt)))
            row = {"dataset": name, "rows": len(train), "epochs": one.n_iter_ + (one.refit_epochs_ or 0),
                   "same model": bool(same)}
            for kind, allowed in kinds.items():
                with looking_ahead(allowed), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    torch.cuda.synchronize()
                    make().fit(Xt, yt)
                    torch.cuda.synchronize()
                busy, gaps, first, last = busy_and_gaps(prof.events(), a.min_gap_us)
                set_up = gaps[0][1] - gaps[0][0] if gaps and gaps[0][0] == first else 0.0
                idle = sum(end - start for start, end in gaps) - set_up
                row[kind] = {"fit s median": round(statistics.median(seconds[kind]), 3),
                             "fit s min-max": [round(min(seconds[kind]), 3), round(max(seconds[kind]), 3)],
                             "profiled: GPU busy s": round(busy / 1e6, 3),
                             "profiled: wall s": round((last - first) / 1e6, 3),
                             "profiled: idle between kernels ms per epoch": round(idle / 1e3 / row["epochs"], 2)}
            one_s, ahead_s = (row[kind]["fit s median"] for kind in kinds)
            row["saved"] = f"{100 * (1 - ahead_s / one_s):.1f} %"
            print(row, flush=True)
            rows.append(row)
    write_json(a.json, {"versions": versions("cuda"), "args": vars(a), "rows": rows})


if __name__ == "__main__":
    main()
