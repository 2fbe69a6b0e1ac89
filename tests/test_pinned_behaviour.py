"""Behaviour pinned across refactors: seeded CPU float64 fits of both estimators
must predict what the code predicted when the values were saved.

The saved values (tests/data/pinned_predictions.npz) were written by this file's
``__main__`` block from the code of 2026-11-27 (commit 57f621b), before the estimator
core was restructured. Each case names its parameters explicitly, so later changes
of defaults do not move them. Regenerate only for an intended change of behaviour:
``python -m tests.test_pinned_behaviour``.
"""

from pathlib import Path

import numpy as np
import pytest

from skspectral import SpectralClassifier, SpectralRegressor

PINNED = Path(__file__).with_name("data") / "pinned_predictions.npz"

# The series' model, spelled out: everything a later default could change.
BASE = dict(dim=5, device="cpu", dtype="float64", backend="torch", learning_rate_init=0.01,
            learning_rate_schedule="cosine", batch_size=64, max_iter=12, random_state=0)


def _data(seed, n=240, n_features=4):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features)) * [1.0, 30.0, 0.2, 4.0] + [0.0, 500.0, 1.0, -2.0]
    z = (X - X.mean(0)) / X.std(0)
    signal = np.abs(z[:, 0]) + np.sin(z[:, 1]) - z[:, 2] * z[:, 3]
    return X, signal + 0.1 * rng.normal(size=n), rng


def _cases():
    """name -> (predictions, training losses) of one seeded fit."""
    out = {}
    X, y, rng = _data(0)
    weights = rng.randint(0, 3, size=len(y)).astype(float)
    regressors = {
        "regressor_plain": (dict(), {}),
        "regressor_penalties": (dict(alpha=0.3, spectral_penalty=1e-2, eigval_idx=-2), {}),
        "regressor_weighted": (dict(), {"sample_weight": weights}),
        "regressor_early_stopping": (dict(early_stopping=True, n_iter_no_change=3, max_iter=30), {}),
        "regressor_constant_lr_unclipped": (dict(learning_rate_schedule="constant", clip_features=False), {}),
    }
    for name, (params, fit_kwargs) in regressors.items():
        est = SpectralRegressor(**{**BASE, **params}).fit(X, y * 1e3 + 7.0, **fit_kwargs)
        out[name] = (est.predict(X * 1.1), np.asarray(est.loss_curve_))
    labels_binary = np.where(y > np.median(y), "yes", "no")
    labels_multi = np.digitize(y, np.quantile(y, [0.3, 0.7]))
    classifiers = {
        "classifier_binary": (labels_binary, dict(alpha=1e-3), {}),
        "classifier_multiclass": (labels_multi, dict(alpha=1e-3, class_weight="balanced"), {}),
        "classifier_multiclass_weighted": (labels_multi, dict(alpha=1e-3), {"sample_weight": weights}),
    }
    for name, (labels, params, fit_kwargs) in classifiers.items():
        est = SpectralClassifier(**{**BASE, **params}).fit(X, labels, **fit_kwargs)
        out[name] = (est.predict_proba(X * 1.1), np.asarray(est.loss_curve_))
    return out


@pytest.fixture(scope="module")
def saved():
    with np.load(PINNED) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", sorted(
    ["regressor_plain", "regressor_penalties", "regressor_weighted", "regressor_early_stopping",
     "regressor_constant_lr_unclipped", "classifier_binary", "classifier_multiclass", "classifier_multiclass_weighted"]))
def test_predictions_and_losses_are_unchanged(saved, name):
    predictions, losses = _cases_cached()[name]
    np.testing.assert_allclose(predictions, saved[f"{name}__predictions"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(losses, saved[f"{name}__losses"], rtol=1e-9, atol=1e-12)


_CACHE = {}


def _cases_cached():
    if not _CACHE:
        _CACHE.update(_cases())
    return _CACHE


if __name__ == "__main__":
    arrays = {}
    for case, (predictions, losses) in _cases().items():
        arrays[f"{case}__predictions"] = predictions
        arrays[f"{case}__losses"] = losses
    PINNED.parent.mkdir(exist_ok=True)
    np.savez(PINNED, **arrays)
    print(f"wrote {len(arrays)} arrays to {PINNED}")
