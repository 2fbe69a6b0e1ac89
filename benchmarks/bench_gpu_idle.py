"""Where a default GPU fit leaves the GPU idle: the kernels' busy time against the fit's wall, and the idle
gaps -- before the first kernel (the set-up on the host) and between the epochs (the host's work around each
epoch's one synchronisation: queuing the record, reading it, the consumer's turn, starting the next epoch).

    python benchmarks/bench_gpu_idle.py --data .data/tabular --datasets california diamonds flights

Each table's fold 0 (quality.py's folds), a default fit after a warm-up fit of the same shapes: one plain
(timed), then one under torch.profiler (CPU and CUDA activity, Python stacks). Busy: the union of the kernels'
intervals. A gap is a stretch of at least ``--min-gap-us`` between kernels; it is named by the first
profiled CPU op that starts in it (host Python between ops is not an op: a gap over the set-up's numpy work is
named by the op that ends it, e.g. the synchronisation the benchmark makes before the fit). "per epoch" counts
the refit's epochs too. The profiler's own cost lengthens the profiled fit (its wall against the plain one).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import time
import warnings
from pathlib import Path

from _common import ROOT, versions, write_json
from quality import folds, load

import torch
from torch.profiler import ProfilerActivity, profile

from skspectral import SpectralClassifier, SpectralRegressor


def busy_and_gaps(events, min_gap_us: float):
    """(busy µs, [(start, end) of each idle gap], first CPU op's start, last's end) from profiler events."""
    kernels = sorted((e.time_range.start, e.time_range.end) for e in events
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    cpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    first, last = min(e.time_range.start for e in cpu), max(e.time_range.end for e in cpu)
    busy, gaps, covered = 0.0, [], first
    run_start = run_end = None
    for start, end in kernels:
        if run_end is None or start > run_end:
            if run_end is not None:
                busy += run_end - run_start
            if start - covered >= min_gap_us:
                gaps.append((covered, start))
            run_start, run_end = start, end
        else:
            run_end = max(run_end, end)
        covered = run_end
    busy += run_end - run_start
    if last - covered >= min_gap_us:
        gaps.append((covered, last))
    return busy, gaps, first, last


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--datasets", nargs="+", default=["california", "diamonds", "flights"])
    p.add_argument("--min-gap-us", type=float, default=20.0)
    p.add_argument("--sites", type=int, default=12, help="the gaps' names to print, by their idle time")
    p.add_argument("--json")
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for name in a.datasets:
        X, y, task = load(name, Path(a.data))
        for _, train, _ in folds(X, y, task, [0]):
            estimator = SpectralRegressor if task == "regression" else SpectralClassifier
            Xt, yt = X.iloc[train], y[train]
            estimator(random_state=0, device="cuda").fit(Xt, yt)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            estimator(random_state=0, device="cuda").fit(Xt, yt)
            torch.cuda.synchronize()
            plain = time.perf_counter() - start
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
                torch.cuda.synchronize()
                model = estimator(random_state=0, device="cuda").fit(Xt, yt)
                torch.cuda.synchronize()
            events = prof.events()
            busy, gaps, first, last = busy_and_gaps(events, a.min_gap_us)
            cpu = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CPU),
                         key=lambda e: e.time_range.start)
            starts = [e.time_range.start for e in cpu]
            sites, counts = collections.defaultdict(float), collections.Counter()
            for gap_start, gap_end in gaps:
                index = bisect.bisect_left(starts, gap_start)
                site = "end" if index == len(cpu) else cpu[index].name
                sites[site] += gap_end - gap_start
                counts[site] += 1
            epochs = model.n_iter_ + (model.refit_epochs_ or 0)
            set_up = gaps[0][1] - gaps[0][0] if gaps and gaps[0][0] == first else 0.0
            idle = sum(end - start for start, end in gaps)
            row = {"dataset": name, "fit s": round(plain, 3), "profiled wall s": round((last - first) / 1e6, 3),
                   "GPU busy s": round(busy / 1e6, 3), "idle s": round(idle / 1e6, 3),
                   "idle before the first kernel s": round(set_up / 1e6, 3), "epochs": epochs,
                   "idle between kernels ms per epoch": round((idle - set_up) / 1e3 / epochs, 2),
                   "sites": {site: [round(us / 1e3, 1), counts[site]]
                             for site, us in sorted(sites.items(), key=lambda kv: -kv[1])[: a.sites]}}
            print({k: v for k, v in row.items() if k != "sites"}, flush=True)
            for site, (ms, count) in row["sites"].items():
                print(f"    {ms:8.1f} ms {count:5d}x  before {site}")
            rows.append(row)
    write_json(a.json, {"versions": versions("cuda"), "args": vars(a), "rows": rows})


if __name__ == "__main__":
    main()
