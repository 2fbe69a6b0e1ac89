"""Members that share their feature matrices (TabM-style), a prototype measured against the defaults
(issue 25; benchmarks/RESULTS.md, section 12).

    python benchmarks/shared_members.py --device cpu|cuda [--datasets churn concrete ...]
        [--folds 0] [--groups column feature levels half] [--members 4] [--params JSON] [--json out.json]

Before 2026-12-03 every member of an ensemble owned its matrices (the estimators now share half of them,
``shared_members=0.5``, the built form of ``--groups half``; "default" below is the estimators' defaults of the
day). Here member m's matrix for encoded column j is
r_{m,j} A_j: the A_j are one set (per output), and each member scales each column by its own learned
factor r_{m,j}, started at a random sign (TabM-mini's input adapter: Gorishniy et al. 2024; the signs
make the members different functions from the first step). ``--groups feature`` gives every column of
one input feature the same factor; ``--groups levels`` shares only the categorical levels' matrices (every
other column's matrices each member's own, drawn as the default draws them); ``--groups half``: the first
half of the members own their matrices as the default's do, the other half share theirs. Each member keeps its
own diagonal mu. Weyl's bound for member m is sum_j |z_j| |r_{m,j}| ||A_j||_2, which the estimators' certified
bounds read through ``feature_matrices`` as for any variant; a monotone column would need r_{m,j} >= 0 (not
done here: the prototype refuses monotone columns).

A prototype of the groupings: ``half`` is built as the estimators' ``shared_members=0.5`` (the fast paths;
benchmarks/RESULTS.md, section 12: measure it with quality.py's ``--extra``); the others are not. The model
plugs in through the estimators' one construction hook (``_initialize_model``) and runs the generic paths
(autograd, the dense product on CUDA), not the fused CPU steps or the CUDA assembly kernels, so its fit
seconds are not a built version's. Each table and fold: the default estimator, then each grouping with the
same seed; quality.py's folds, loaders and metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, markdown_table, versions, write_json
from quality import dataset_names, folds, load, ours, score, warm_up

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral.encoding import LEVEL, FeatureEncoder
from skspectral.model import SpectralModel


class SharedMembersModel(SpectralModel):
    """Members whose matrices are r_{m,j} A_j over one shared set A_j (per output)."""

    # "column": every member's matrices shared, a factor per column; "feature": one factor for every
    # column of an input feature; "levels": only the categorical levels' matrices shared, every other
    # column's each member's own (as the default); "half": the first half of the members own their
    # matrices (as the default), the other half share theirs
    groups = "column"

    @property
    def owns(self) -> bool:
        """Whether some matrices are each member's own."""
        return self.groups in ("levels", "half")

    def _init_feature_matrices(self, init_scale, generator, factory) -> None:
        if self.monotonic is not None:
            raise ValueError("the shared-members prototype has no monotone columns")
        if self.owns:  # drawn as the default draws them, before the shared ones
            super()._init_feature_matrices(init_scale, generator, factory)
        n_outputs = 1 if self.n_outputs is None else int(self.n_outputs)
        gaussian = torch.randn(n_outputs, self.n_matrices, self.dim, self.dim, generator=generator,
                               dtype=torch.float64)
        sym = (gaussian + gaussian.transpose(-1, -2)) / math.sqrt(2.0)
        scale = init_scale * self._column_init_factors()[:, None, None]
        self.shared_weight = torch.nn.Parameter((scale * sym).to(**factory))
        if not self.owns:
            self.weight = self.shared_weight
        if self.groups == "feature" and self.encoder is not None:
            group = torch.as_tensor(np.asarray(self.encoder.spec.columns()[0]), dtype=torch.long)
        else:
            group = torch.arange(self.n_matrices)
        self.register_buffer("column_group", group.to(factory["device"] or "cpu"))
        kind = np.zeros(self.n_matrices) if self.encoder is None else self.encoder.spec.columns()[1]
        self.register_buffer("level_column", torch.as_tensor(kind == LEVEL, device=factory["device"]))
        signs = torch.randint(0, 2, (self.n_members, int(group.max()) + 1), generator=generator) * 2 - 1
        self.adapter = torch.nn.Parameter(signs.to(**factory))

    def feature_matrices(self) -> torch.Tensor:
        shared = 0.5 * (self.shared_weight + self.shared_weight.transpose(-1, -2))  # (outputs, columns, ...)
        factors = self.adapter[:, self.column_group]  # (members, columns)
        members = (factors[:, None, :, None, None] * shared[None]).reshape(
            self.n_models, self.n_matrices, self.dim, self.dim)
        if not self.owns:
            return members
        own = super().feature_matrices()
        if self.groups == "levels":
            return torch.where(self.level_column[:, None, None], members, own)
        half = (self.n_members // 2) * (self.n_models // self.n_members)  # models of the first half
        return torch.cat([own[:half], members[half:]])


def shared_estimator(task: str, groups: str):
    base = SpectralRegressor if task == "regression" else SpectralClassifier
    model = type(f"SharedMembers{groups.title()}", (SharedMembersModel,), {"groups": groups})

    class Shared(base):
        def _initialize_model(self, *, device, dtype, backend, generator=None):
            mapper = self.column_mapper_
            encoder = None if mapper.spec.is_plain_linear else FeatureEncoder(mapper.spec, dtype=dtype, device=device)
            return model(self.n_features_in_, self.dim_, self._eigen_indices(), n_outputs=self._n_outputs(),
                         n_members=self.n_estimators_, encoder=encoder, backend=backend, generator=generator,
                         dtype=dtype, device=device, monotonic=mapper.monotone, smoothing=self.smoothing)

    return Shared


def run(a) -> dict:
    warm_up(a.device)
    out = {"versions": versions(a.device), "rows": []}
    print(json.dumps(out["versions"]), flush=True)
    for name in a.datasets:
        X, y, task = load(name, Path(a.data))
        for fold, train, test in folds(X, y, task, set(a.folds)):
            params = {"device": a.device, "random_state": fold, **json.loads(a.params)}
            if a.members:
                params["n_estimators"] = a.members
            models = {"default": ours(task, a.device, fold, {}, len(train))}
            models.update({f"shared:{g}": shared_estimator(task, g)(**params) for g in a.groups})
            for label, model in models.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(X.iloc[train], y[train])
                row = {"dataset": name, "fold": fold, "model": label, "fit_s": time.perf_counter() - start,
                       "metric": score(task, model, X.iloc[test], y[test]), "n_iter_": model.n_iter_,
                       "n_estimators_": model.n_estimators_}
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    return out


def summary(out: dict) -> str:
    """Per table: each model's metric (mean over the folds) and its ratio to the default's."""
    rows = out["rows"]
    labels = list(dict.fromkeys(r["model"] for r in rows))
    table, logs = [], {label: [] for label in labels}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mean = {label: np.mean([r["metric"] for r in rows if r["dataset"] == name and r["model"] == label])
                for label in labels}
        line = {"dataset": name}
        for label in labels:
            ratio = mean[label] / mean["default"]
            logs[label].append(math.log(ratio))
            line[label] = f"{mean[label]:.4g} ({ratio:.3f})"
        table.append(line)
    table.append({"dataset": "**geometric mean ÷ default**",
                  **{label: f"{math.exp(np.mean(logs[label])):.3f}" for label in labels}})
    return markdown_table(table, ["dataset"] + labels)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tabular"))
    p.add_argument("--datasets", nargs="+")
    p.add_argument("--folds", nargs="+", type=int, default=[0])
    p.add_argument("--groups", nargs="+", default=["column"], choices=["column", "feature", "levels", "half"])
    p.add_argument("--members", type=int, help="n_estimators of the shared models (default: the estimators')")
    p.add_argument("--params", default="{}", help="more parameters of the shared models, e.g. '{\"dim\": 20}'")
    p.add_argument("--json")
    a = p.parse_args()
    try:
        params = json.loads(a.params)
    except ValueError:
        params = None
    if not isinstance(params, dict):
        p.error(f"--params must be a JSON object of parameters, e.g. '{{\"dim\": 20}}', got {a.params!r}")
    if a.members is not None and a.members < 1:
        p.error(f"--members must be at least 1, got {a.members}")
    if a.datasets is None:
        a.datasets = [n for n in dataset_names(Path(a.data)) if n != "flights" or a.device != "cpu"]
    out = run(a)
    print("\n" + summary(out))
    if a.json:
        write_json(a.json, out)


if __name__ == "__main__":
    main()
