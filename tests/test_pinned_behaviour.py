"""Behaviour pinned across refactors: seeded CPU float64 fits of both estimators
must predict what the code predicted when the values were saved.

The saved values (tests/data/pinned_predictions.npz) were written by this file's
``__main__`` block from the code of 2026-11-27 (commit 57f621b), before the estimator
core was restructured; the early-stopping cases (``defaults_*`` and
``regressor_early_stopping``) were rewritten on 2026-12-01, when the model that early
stopping scores and keeps became the running average of the epochs' parameters (their
loss curves, the steps themselves, were unchanged); ``classifier_multiclass_weighted`` and
``defaults_classifier_binary`` were rewritten on 2026-12-03, when a classifier's fit began to start from
its weighted class priors (the other cases' classes are balanced). The ``defaults_shared_*`` cases (members
that share their matrices, their factors pulled: the defaults from 2026-12-03) were added that day; the
other cases name ``shared_members=0``, the model they pinned; the early-stopping cases name ``refit=False`` (a
CPU fit of fewer than 10,000 rows refits by default from 2026-12-04, 20,000 since 92c12bf). Each case names its parameters
explicitly, so later changes of defaults do not move them. Regenerate only for an intended change of behaviour:
``python -m tests.test_pinned_behaviour``.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from skspectral import SpectralClassifier, SpectralRegressor

PINNED = Path(__file__).with_name("data") / "pinned_predictions.npz"

# The series' model, spelled out: everything a later default could change.
BASE = dict(dim=5, device="cpu", dtype="float64", backend="torch", learning_rate_init=0.01,
            learning_rate_schedule="cosine", batch_size=64, max_iter=12, random_state=0,
            feature_encoding="linear", n_estimators=1, early_stopping=False, shared_members=0.0, shared_factor_l1=0.0)


# The defaults' model, spelled out (piecewise-linear bins, members, early stopping, the
# CPU's default Numba backend): the values these pins hold are today's defaults' behaviour.
DEFAULTS = dict(dim=6, device="cpu", dtype="float64", backend="numba", learning_rate_init=0.002,
                learning_rate_schedule="cosine", batch_size=200, max_iter=8, random_state=0,
                feature_encoding="piecewise_linear", n_bins=16, n_estimators=4, early_stopping=True,
                validation_fraction=0.1, n_iter_no_change=10, shared_members=0.0, shared_factor_l1=0.0,
                refit=False)
# the defaults from 2026-12-03: half the members share their matrices, their factors pulled
SHARED_DEFAULTS = dict(DEFAULTS, shared_members=0.5, shared_factor_l1=2e-3)


def _data(seed, n=240, n_features=4):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features)) * [1.0, 30.0, 0.2, 4.0] + [0.0, 500.0, 1.0, -2.0]
    z = (X - X.mean(0)) / X.std(0)
    signal = np.abs(z[:, 0]) + np.sin(z[:, 1]) - z[:, 2] * z[:, 3]
    return X, signal + 0.1 * rng.normal(size=n), rng


def _frame(seed, n=1200):
    """A DataFrame with a categorical column (a rare level, missing values), a pandas category
    column, and numeric columns with missing values; predicted on rows with unseen levels."""
    import pandas as pd

    X, y, rng = _data(seed, n=n)
    colour = rng.choice(["red", "green", "blue", "violet", None], size=n, p=[0.4, 0.3, 0.2, 0.005, 0.095])
    city = pd.Categorical(rng.choice(["paris", "rome", "oslo"], size=n, p=[0.5, 0.3, 0.2]))
    frame = pd.DataFrame({"a": X[:, 0], "colour": colour, "b": X[:, 1], "city": city, "c": X[:, 2]})
    frame.loc[rng.rand(n) < 0.1, "a"] = np.nan
    frame.loc[rng.rand(n) < 0.05, "c"] = np.nan
    effect = {"red": 1.0, "green": -1.0, "blue": 0.5, "violet": 3.0, None: 0.2}
    y = y + np.array([effect[c] for c in colour]) + np.where(city == "rome", 0.7, 0.0)
    return frame, y, rng


def _frame_to_predict(frame):
    new = frame.copy()
    new["a"] = new["a"] * 1.1
    new["b"] = new["b"] * 1.1
    colour = new["colour"].to_numpy(dtype=object).copy()
    colour[::7] = "never seen"
    new["colour"] = colour
    city = new["city"].astype(object).to_numpy().copy()
    city[::5] = "london"
    city[1::9] = None
    new["city"] = city
    new["city"] = new["city"].astype("category")
    return new


# name -> (estimator, parameters beyond BASE, target kind, fitted with sample weights)
CASES = {
    "regressor_plain": (SpectralRegressor, dict(), "y", False),
    "regressor_penalties": (SpectralRegressor, dict(alpha=0.3, spectral_penalty=1e-2, eigval_idx=-2), "y", False),
    "regressor_weighted": (SpectralRegressor, dict(), "y", True),
    "regressor_early_stopping": (SpectralRegressor, dict(early_stopping=True, n_iter_no_change=3, max_iter=30,
                                                         refit=False), "y", False),
    "regressor_constant_lr_unclipped": (SpectralRegressor, dict(learning_rate_schedule="constant", clip_features=False),
                                        "y", False),
    "classifier_binary": (SpectralClassifier, dict(alpha=1e-3), "binary", False),
    "classifier_multiclass": (SpectralClassifier, dict(alpha=1e-3, class_weight="balanced"), "multiclass", False),
    "classifier_multiclass_weighted": (SpectralClassifier, dict(alpha=1e-3), "multiclass", True),
    # the defaults' model (written 2026-11-30, before the column mapper of issue 22)
    "defaults_regressor": (SpectralRegressor, dict(DEFAULTS, alpha=0.0), "y", False),
    "defaults_regressor_weighted": (SpectralRegressor, dict(DEFAULTS, alpha=0.0), "y", True),
    "defaults_classifier_binary": (SpectralClassifier, dict(DEFAULTS, alpha=1e-3), "binary", False),
    "defaults_frame_regressor": (SpectralRegressor, dict(DEFAULTS, alpha=0.0), "frame_y", False),
    "defaults_frame_classifier_multiclass": (SpectralClassifier, dict(DEFAULTS, alpha=1e-3, class_weight="balanced"),
                                             "frame_multiclass", False),
    # the defaults' sharing members and their factors' pull (written 2026-12-03)
    "defaults_shared_regressor": (SpectralRegressor, dict(SHARED_DEFAULTS, alpha=0.0), "y", False),
    "defaults_shared_frame_classifier_multiclass": (SpectralClassifier, dict(SHARED_DEFAULTS, alpha=1e-3),
                                                    "frame_multiclass", False),
}


def _fit_case(name):
    """(predictions, training losses) of one seeded fit."""
    Estimator, params, target, weighted = CASES[name]
    defaults = params.get("feature_encoding") == "piecewise_linear"
    if target.startswith("frame"):
        X, y, rng = _frame(0)
        X_new = _frame_to_predict(X)
    else:
        X, y, rng = _data(0, n=1200 if defaults else 240)
        X_new = X * 1.1
    weights = rng.randint(0, 3, size=len(y)).astype(float)
    labels = {
        "y": y * 1e3 + 7.0,
        "binary": np.where(y > np.median(y), "yes", "no"),
        "multiclass": np.digitize(y, np.quantile(y, [0.3, 0.7])),
    }[target.removeprefix("frame_")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # short fits, on purpose
        est = Estimator(**{**BASE, **params}).fit(X, labels, sample_weight=weights if weighted else None)
    predictions = est.predict(X_new) if Estimator is SpectralRegressor else est.predict_proba(X_new)
    return predictions, np.asarray(est.loss_curve_)


@pytest.fixture(scope="module")
def saved():
    with np.load(PINNED) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", sorted(CASES))
def test_predictions_and_losses_are_unchanged(saved, name):
    predictions, losses = _fit_case(name)
    np.testing.assert_allclose(predictions, saved[f"{name}__predictions"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(losses, saved[f"{name}__losses"], rtol=1e-9, atol=1e-12)


if __name__ == "__main__":
    import sys

    arrays = {}
    if PINNED.exists() and "--all" not in sys.argv:  # keep what is saved; add the cases it lacks
        with np.load(PINNED) as data:
            arrays = {key: data[key] for key in data.files}
    for case in CASES:
        if f"{case}__predictions" in arrays:
            continue
        arrays[f"{case}__predictions"], arrays[f"{case}__losses"] = _fit_case(case)
    PINNED.parent.mkdir(exist_ok=True)
    np.savez(PINNED, **arrays)
    print(f"wrote {len(arrays)} arrays to {PINNED}")
