"""A CPU training step four ways, per table: whole batches in compiled blocks (what a fit runs), the same
with the rows over the threads, each step in one compiled call, and the step's kernels called one by one.

    python benchmarks/bench_cpu_step.py [--data ../shared/data/tabular] [--datasets california diamonds ...]
                                        [--repeats 100] [--block 20] [--threads 2 1] [--json out.json]

For each table a default estimator is fitted for one epoch on all its rows (the model, its compiled
pass and batch size as a fit has them), and its first batch is kept. Then ``--block`` steps on that
batch are taken ``--repeats`` times each way, the ways alternating block by block so that this
machine's drift hits them alike:

- ``blocks``: :class:`skspectral._training.compiled_steps.CompiledSteps` -- the block's steps in one
  compiled call (``_steps_kernel.training_steps``: the pass, then Adam, step by step), the weight kept
  as its lower triangles (packed and unpacked once a block, as a fit does once an epoch's block of rows);
  on several threads, where the models divide evenly among them, a group of models a thread
  (``_steps_kernel.grouped_training_steps``; on one thread several models as one group);
- ``blocks, rows``: the same with every kernel's rows split over the threads instead (the blocks before
  the groups; on one thread the pass's kernels one after another; the same numbers);
- ``one call``: the trainer's step through ``CompiledDensePass.step`` (the pass's one compiled call,
  ``skspectral._step_kernels.training_pass``), then Adam from Python: a step before whole batches ran
  in blocks;
- ``apart``: ``values``, the loss's compiled value and gradient, ``backward``, Adam: the path before
  the one call.

Wall time (time.perf_counter) per step, min and median over the repeats, for each thread count in
``--threads`` (the trainer's own thread choice is not used here). The steps keep training the model:
every way sees the same kind of parameters, and each step costs the same whatever they are.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from _common import ROOT, markdown_table, versions, write_json
from quality import load

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._training import trainer as trainer_module
from skspectral._training.compiled_steps import CompiledSteps


def first_batch(name: str, data: Path):
    """(trainer, batch rows, targets, weights) of a default one-epoch fit on the table."""
    X, y, task = load(name, data)[:3]
    kept = []
    step = trainer_module.Trainer._compiled_step

    def keeping(self, xb, yb, wb):
        if not kept:
            kept.append((self, xb.clone(), yb.clone(), wb.clone()))
        return step(self, xb, yb, wb)

    applies = CompiledSteps.applies
    trainer_module.Trainer._compiled_step = keeping
    CompiledSteps.applies = staticmethod(lambda *args: False)  # step by step: the first step is kept
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator = SpectralRegressor if task == "regression" else SpectralClassifier
            estimator(random_state=0, max_iter=1).fit(X, y)
    finally:
        trainer_module.Trainer._compiled_step = step
        CompiledSteps.applies = applies
    return kept[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    parser.add_argument("--datasets", nargs="+", default=["california", "diamonds", "churn", "hpc", "nmes1988"])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--json")
    args = parser.parse_args()
    start_threads = torch.get_num_threads()
    rows = []
    for name in args.datasets:
        trainer, xb, yb, wb = first_batch(name, Path(args.data))
        loss_code = trainer._pass_loss
        if loss_code is None:
            print(f"{name}: its loss has no compiled kernel; skipped")
            continue
        steps = CompiledSteps(trainer.compiled_pass, loss_code, trainer._pass_penalty, trainer.optimizer,
                              trainer._pass_loss_parameters)
        repeat = (args.block,) + (1,) * (xb.dim() - 1)
        block_X, block_y, block_w = xb.repeat(*repeat), yb.repeat(args.block, *([1] * (yb.dim() - 1))), wb.repeat(args.block)

        def blocks():
            steps.run(block_X, block_y, block_w, xb.shape[0], None, [])

        def blocks_rows():
            steps._groups = lambda size, n_terms: None  # (for this block only)
            try:
                blocks()
            finally:
                del steps._groups

        def one_call():
            trainer._pass_loss = loss_code
            for _ in range(args.block):
                trainer._compiled_step(xb, yb, wb)

        def apart():
            trainer._pass_loss = None
            for _ in range(args.block):
                trainer._compiled_step(xb, yb, wb)

        ways = (("blocks", blocks), ("blocks, rows", blocks_rows), ("one call", one_call), ("apart", apart))
        for threads in args.threads:
            torch.set_num_threads(threads)
            seconds = {way: [] for way, _ in ways}
            for _, fn in ways + ways:  # warm-up (each way's buffers)
                fn()
            for _ in range(args.repeats):
                for way, fn in ways:
                    started = time.perf_counter()
                    fn()
                    seconds[way].append((time.perf_counter() - started) / args.block)
            row = {"dataset": name, "batch": xb.shape[0], "models": trainer.compiled_pass.mu.shape[0],
                   "threads": threads}
            for way, values in seconds.items():
                row[f"{way} ms (min)"] = f"{1e3 * min(values):.3f}"
                row[f"{way} ms (median)"] = f"{1e3 * statistics.median(values):.3f}"
            median = {way: statistics.median(values) for way, values in seconds.items()}
            row["groups saved against rows (median)"] = f"{1 - median['blocks'] / median['blocks, rows']:.1%}"
            row["blocks saved against one call (median)"] = f"{1 - median['blocks'] / median['one call']:.1%}"
            row["one call saved against apart (median)"] = f"{1 - median['one call'] / median['apart']:.1%}"
            rows.append(row)
            print(row, flush=True)
    torch.set_num_threads(start_threads)
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        write_json(args.json, {"versions": versions(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
