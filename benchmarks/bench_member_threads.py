"""Whether a CPU fit's members could train a thread each: independent one-member fits side by side.

    python benchmarks/bench_member_threads.py [--epochs 20] [--repeats 3] [--json out.json]

A default CPU fit of a table under 100,000 rows trains two members (the series' models are independent:
each has its own matrices and its own loss on the same batches), and its steps split every batch's
rows over the threads: each parallel region reads the tables that the other thread's Adam and scatter
wrote a moment before. This times, on California's training rows (the example's split), for ``--epochs``
epochs without early stopping or refit, alternating, ``--repeats`` times:

- ``two one-member fits, one after another`` (torch on one thread each);
- ``two one-member fits side by side``: the same two fits at once on two Python threads (the compiled
  steps release the GIL), each fit's tables its own thread's -- what a member a thread would do;
- ``one two-member fit``: torch on one thread, and on two (the fit's thread tuner then chooses between one
  and two threads, as a default fit does; on two its steps run a member a thread,
  ``skspectral._training._steps_kernel.grouped_step``).

Seconds per fit (the side-by-side pair: the wall time of both). On a machine whose second vCPU shares a
busy core (this machine's slow state: benchmarks/RESULTS.md section 9) the rows' split over the threads
gained nothing; this bench measured what a member a thread could gain before the steps did it, and now
what of it they keep.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import warnings

import torch
from _common import california, markdown_table, versions, write_json

from skspectral import SpectralRegressor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    X, _, y, _ = california()  # the example's training rows
    params = dict(n_estimators=1, shared_members=0, max_iter=args.epochs, early_stopping=False, refit=False,
                  device="cpu")
    SpectralRegressor(random_state=0, **params).fit(X[:2000], y[:2000])  # the kernels loaded once
    start_threads = torch.get_num_threads()

    def one_member(seed: int) -> None:
        torch.set_num_threads(1)
        SpectralRegressor(random_state=seed, **params).fit(X, y)

    def one_after_another():
        one_member(0)
        one_member(1)

    def side_by_side():
        threads = [threading.Thread(target=one_member, args=(seed,)) for seed in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def two_members(threads: int):
        def fit():
            torch.set_num_threads(threads)
            SpectralRegressor(random_state=0, **{**params, "n_estimators": 2}).fit(X, y)
        return fit

    ways = {"two one-member fits, one after another": one_after_another,
            "two one-member fits side by side": side_by_side,
            "one two-member fit, one thread": two_members(1),
            "one two-member fit, two threads (the tuner's choice)": two_members(2)}
    seconds = {way: [] for way in ways}
    for _ in range(args.repeats):
        for way, fn in ways.items():
            started = time.perf_counter()
            fn()
            seconds[way].append(time.perf_counter() - started)
    torch.set_num_threads(start_threads)
    rows = [{"way": way, "s (median)": f"{statistics.median(s):.3f}", "s (min-max)": f"{min(s):.3f}-{max(s):.3f}"}
            for way, s in seconds.items()]
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        write_json(args.json, {"versions": versions(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
