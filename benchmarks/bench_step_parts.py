"""Where a training step's time goes, per table, with the estimator's defaults.

    python benchmarks/bench_step_parts.py --device cuda --data .data/tabular [--datasets california diamonds]
        [--params '{"loss": "quantile", "quantile": [0.05, 0.5, 0.95]}']  # an estimator's other parameters

For each table a default estimator is fitted for one epoch on 80 % of the rows (the model, its
encoder and batch size), then the step is timed in parts over the same training rows, each
part an epoch of fixed-shape steps (on CUDA replayed from a CUDA graph, as a fit runs them;
CUDA events, a warm-up epoch, the median of the epochs after it), per step:

- ``step, before``: the trainer's step (forward, loss, backward, Adam) on raw rows, encoded at
  every step, with torch's fused Adam and autograd's loss: what a fit paid before the rows were
  encoded once;
- ``step, rows encoded once``: the same on rows encoded before the epoch (the encoder has no
  parameters, so its columns are the same every epoch), torch's fused Adam, autograd's loss;
- ``step, now``: rows encoded once, the trainer's Adam (on CUDA the elementwise kernel) and the
  loss's own gradient (on CUDA its kernel): what a fit pays now (on CUDA a dense model's matrices
  from skspectral._assembly's kernels, as packed lower triangles);
- ``step, torch's assembly``: the same with whole matrices from torch's ops (CUDA): the step before
  the assembly kernels;
- ``forward``: the forward pass alone (no gradient);
- ``encoder``: the feature encoder alone;
- ``eigen``: the k-th eigenvalue kernel alone on the step's matrices (forward only);
- ``fit epoch`` and ``fit set-up``: whole fits of 10 and 20 epochs (early stopping's split and
  scoring at every epoch, patience that never ends them; host clock, the median of three): the
  cost of one more epoch, all included, and what is left of a fit once its epochs are taken out.

With ``--profile`` the CUDA kernels of the step a fit runs now (``step, now``, with the batch's
gathers and the epoch's totals) are listed, run eagerly (torch.profiler, 10 steps): the kernels a
graph replays, with their device time per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import markdown_table, versions, write_json
from quality import load

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._training import Trainer, TrainingOptions
from skspectral._training.cuda_graph import StaticBatchSteps
from skspectral._transfer import standardised_rows
from skspectral.model import OnEncodedRows
from skspectral.eig import kth_eigvalsh


class _Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn, repeats: int = 5) -> float:
        """Median seconds of fn() after a warm-up call."""
        fn()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def fitted(name: str, data_dir: Path, device: str, max_rows: int | None, params: dict):
    X, y, task = load(name, data_dir)
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(X))[: int(0.8 * len(X))]
    if max_rows:
        rows = rows[:max_rows]
    X, y = X.iloc[rows], y[rows]
    cls = SpectralRegressor if task == "regression" else SpectralClassifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cls(device=device, max_iter=1, early_stopping=False, random_state=0, **params).fit(X, y)
    return est, X, y, task


def parts(est, X, y) -> dict:
    model = est._module
    device, dtype = model.device, model.dtype
    coded = est.column_mapper_.rows(X)
    Xs = standardised_rows(coded, est.column_mapper_.standardisation(clip=False, fill=False), device, dtype)
    target, weight = est._training_target(est._encode_target(y), np.ones(len(y)))
    target = torch.as_tensor(target, dtype=dtype, device=device)
    weight = torch.as_tensor(weight, dtype=dtype, device=device)
    n = Xs.shape[0]
    batch = est._batch_size(n)
    loss = est._loss().members_fn(est.n_estimators_)
    timer = _Timer(device)
    order = torch.randperm(n, device=device)

    def trainer(torch_adam: bool = False, encoded: bool | None = None):
        options = TrainingOptions(learning_rate_init=est._step_size(batch), batch_size=batch)
        trained = OnEncodedRows(model) if (encoded_rows if encoded is None else encoded) else model
        # now: the loss's own value and gradient, as a fit's trainer takes them (on CUDA its kernel);
        # the former steps (torch's Adam) took autograd's
        made = Trainer(trained, loss, options, torch.Generator(device=device).manual_seed(0),
                       loss_and_gradient=None if torch_adam else est._loss().fn_and_gradient)
        if torch_adam:  # the former optimizer: one fused kernel for every parameter
            lr = made.optimizer.param_groups[0]["lr"]
            made.optimizer = torch.optim.Adam(trained.parameters(), lr=lr, capturable=device.type == "cuda",
                                              fused=True)
        return made

    def epoch_of(step_fn, X_rows):
        steps = StaticBatchSteps(step_fn, X_rows, target, weight, batch, n_values=2)
        return lambda: steps.epoch(order)

    n_steps = -(-n // batch)
    out = {"rows": n, "batch": batch, "steps_per_epoch": n_steps, "columns": est.column_mapper_.spec.n_columns}
    encoded_rows = False
    out["step, before"] = timer(epoch_of(trainer(torch_adam=True)._step, Xs)) / n_steps
    encoder = model.encoder
    fit_rows = Xs  # the rows a fit steps on
    if encoder is not None and not model.gathers:
        with torch.no_grad():
            Z = model.encoded(Xs)
        encoded_rows = True
        out["step, rows encoded once"] = timer(epoch_of(trainer(torch_adam=True)._step, Z)) / n_steps
        out["step, now"] = timer(epoch_of(trainer()._step, Z)) / n_steps
        encoded_rows = False
        fit_rows = Z
    else:
        out["step, now"] = timer(epoch_of(trainer()._step, Xs)) / n_steps
    if model.assembles and device.type == "cuda":  # the same step with torch's ops for the matrices
        model.assemble = False
        out["step, torch's assembly"] = timer(epoch_of(trainer()._step, fit_rows)) / n_steps
        model.assemble = True

    def forward_only(xb, yb, wb):
        with torch.no_grad():
            value = model(xb).sum()
        return value, value

    out["forward"] = timer(epoch_of(forward_only, Xs)) / n_steps
    if encoder is not None:
        def encoder_only(xb, yb, wb):
            value = encoder(xb).sum()
            return value, value

        out["encoder"] = timer(epoch_of(encoder_only, Xs)) / n_steps
    with torch.no_grad():
        M = model.matrices(Xs[order[:batch]])
    k = model.eigval_indices if len(model.eigval_indices) > 1 else model.eigval_indices[0]
    out["eigen"] = timer(lambda: [kth_eigvalsh(M, k, backend=est.backend) for _ in range(n_steps)]) / n_steps
    out["epoch_s"] = out["step, now"] * n_steps
    now = lambda: trainer(encoded=fit_rows is not Xs)  # noqa: E731 -- the step a fit runs now
    return out, (now, fit_rows, target, weight, batch)


def fit_epochs(est, X, y) -> dict:
    """Seconds of one more epoch of a whole fit, and the fit's set-up (see the module's doc)."""
    def seconds(epochs: int) -> float:
        times = []
        for _ in range(3):
            model = est.__class__(**{**est.get_params(), "max_iter": epochs, "early_stopping": True,
                                     "n_iter_no_change": 1000})
            if model.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X, y)
            if model.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    short, long = seconds(10), seconds(20)
    return {"fit epoch": (long - short) / 10, "fit set-up": short - 10 * (long - short) / 10}


def profile_kernels(make_trainer, Xs, target, weight, batch, top: int = 40) -> list[dict]:
    """The CUDA kernels of the step a fit runs now, as its graph replays them (the batch's rows
    taken on the device, the trainer's step and Adam, the epoch's running totals), eagerly, 10
    steps: name, calls and device microseconds per step."""
    from torch.profiler import ProfilerActivity, profile

    steps = StaticBatchSteps(make_trainer()._step, Xs, target, weight, batch, n_values=2)
    steps.order[: Xs.shape[0]].copy_(torch.randperm(Xs.shape[0], device=Xs.device))
    for _ in range(3):
        steps._step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            steps._step()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0))
        if device_us > 0 and event.device_type == torch.autograd.DeviceType.CUDA:
            rows.append({"kernel": event.key[:90], "calls/step": event.count / 10, "us/step": device_us / 10})
    rows.sort(key=lambda r: -r["us/step"])
    total = sum(r["us/step"] for r in rows)
    calls = sum(r["calls/step"] for r in rows)
    return rows[:top] + [{"kernel": "(all kernels)", "calls/step": calls, "us/step": total}]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/tabular"))
    p.add_argument("--datasets", nargs="+", default=["california", "diamonds", "cps1988", "flights"])
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--params", default="{}", help="the estimator's other parameters, as JSON")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    params = json.loads(a.params)
    results = {"versions": versions(a.device), "params": params, "tables": {}}
    table = []
    for name in a.datasets:
        est, X, y, task = fitted(name, Path(a.data), a.device, a.max_rows, params)
        timings, profiling = parts(est, X, y)
        timings.update(fit_epochs(est, X, y))
        results["tables"][name] = timings
        row = {"dataset": name, **{key: (f"{1e3 * v:.3f} ms" if isinstance(v, float)
                                         and key not in ("epoch_s", "fit set-up") else v)
                                    for key, v in timings.items()}}
        table.append(row)
        print(row, flush=True)
        if a.profile and a.device == "cuda":
            kernels = profile_kernels(*profiling)
            results["tables"][name]["kernels"] = kernels
            print(markdown_table(kernels, ["kernel", "calls/step", "us/step"]), flush=True)
    print(markdown_table(table, list(table[0].keys())))
    if a.json:
        write_json(a.json, results)


if __name__ == "__main__":
    main()
