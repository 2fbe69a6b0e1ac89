"""The model variants as estimator options: monotonic_cst, structure="tridiagonal",
smoothing -- their guarantees (monotone predictions, certified bounds), fitted state,
pickling, and clear errors."""

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor

from .conftest import DEVICES, make_data

VARIANTS = {
    "dense": {},
    "dense-linear": dict(feature_encoding="linear", n_estimators=1),
    "tridiagonal": dict(structure="tridiagonal", dim=24),
    "smoothed": dict(smoothing=0.05),
    "tridiagonal-smoothed": dict(structure="tridiagonal", dim=12, smoothing=0.05),
    "dense-shared": dict(shared_members=0.5),
    "tridiagonal-shared": dict(structure="tridiagonal", dim=24, shared_members=1.0, n_estimators=2),
}


def grid_along(X, feature, points=60):
    """Each row of X repeated with ``feature`` swept over (and past) its range."""
    low, high = X[:, feature].min(), X[:, feature].max()
    sweep = np.linspace(low - 0.5 * (high - low), high + 0.5 * (high - low), points)
    rows = np.repeat(X[:, None, :], points, axis=1)
    rows[:, :, feature] = sweep
    return rows.reshape(-1, X.shape[1]), points


@settings(max_examples=8, deadline=None)
@example(variant="dense-shared", seed=11, clip=False)
@example(variant="tridiagonal-shared", seed=12, clip=True)
@given(variant=st.sampled_from(sorted(VARIANTS)), seed=st.integers(0, 2**16), clip=st.booleans())
def test_predictions_never_move_against_a_constraint(variant, seed, clip):
    """Over random models (seeds, variants, short fits far from converged) and points: never
    down along a +1 feature, never up along a -1 feature, to rounding."""
    X, y = make_data(seed=seed % 7, n=150)
    est = SpectralRegressor(monotonic_cst=[1, 0, -1], max_iter=4, learning_rate_init=0.05, random_state=seed,
                            clip_features=clip, device="cpu", **VARIANTS[variant]).fit(X, y)
    for feature, sign in ((0, 1), (2, -1)):
        rows, points = grid_along(X[:20], feature)
        steps = np.diff(est.predict(rows).reshape(20, points), axis=1)
        assert (sign * steps >= -1e-9 * max(1.0, np.abs(y).max())).all()


def test_binary_classifier_probability_is_monotone_and_the_constraint_is_not_free():
    X, y = make_data(n=300)
    labels = (y > np.median(y)).astype(int)  # rises with feature 0 and falls with feature 2
    est = SpectralClassifier(monotonic_cst=[1, 0, -1], max_iter=10, random_state=0, device="cpu").fit(X, labels)
    rows, points = grid_along(X[:20], 0)
    assert (np.diff(est.predict_proba(rows)[:, 1].reshape(20, points), axis=1) >= -1e-12).all()
    # a constraint against the data costs accuracy: it is enforced, not ignored
    against = SpectralClassifier(monotonic_cst=[-1, 0, 1], max_iter=10, random_state=0, device="cpu").fit(X, labels)
    assert against.score(X, labels) < est.score(X, labels)


def test_monotonic_cst_by_name_and_clear_errors():
    X, y = make_data()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    est = SpectralRegressor(monotonic_cst={"a": 1}, max_iter=2, device="cpu").fit(frame, y)
    monotone = est.column_mapper_.monotone  # per encoded column: a's bins +1, the others 0
    feature, _, _ = est.encoding_.columns()
    assert monotone is not None and set(monotone[feature == 0]) == {1} and set(monotone[feature != 0]) == {0}
    with pytest.raises(ValueError, match="does not have: \\['z'\\]"):
        SpectralRegressor(monotonic_cst={"z": 1}, max_iter=1).fit(frame, y)
    with pytest.raises(ValueError, match="needs X with feature names"):
        SpectralRegressor(monotonic_cst={"a": 1}, max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="one entry per feature \\(3\\)"):
        SpectralRegressor(monotonic_cst=[1, 0], max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        SpectralRegressor(monotonic_cst=[2, 0, 0], max_iter=1).fit(X, y)
    frame["level"] = pd.Categorical(np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="categorical feature\\(s\\) \\['level'\\]"):
        SpectralRegressor(monotonic_cst={"level": 1}, max_iter=1).fit(frame, y)
    with pytest.raises(ValueError, match="not supported for multiclass"):
        SpectralClassifier(monotonic_cst=[1, 0, 0], max_iter=1).fit(X, np.arange(len(y)) % 3)


@pytest.mark.parametrize("variant", ["tridiagonal", "smoothed", "tridiagonal-smoothed", "dense-shared",
                                     "tridiagonal-shared"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 3.0))
def test_no_change_exceeds_the_certified_bound(variant, seed, scale):
    X, y = make_data(n=150)
    est = SpectralRegressor(max_iter=3, random_state=1, device="cpu", categorical_features=None,
                            **VARIANTS[variant]).fit(X, y)
    rng = np.random.RandomState(seed)
    rows = X[rng.choice(len(X), 30)]
    delta = rng.normal(size=rows.shape) * scale * X.std(axis=0)
    moved = np.clip(rows + delta, est.x_min_, est.x_max_)  # moves inside the training range: no clipping effect
    change = np.abs(est.predict(moved) - est.predict(rows))
    assert (change <= est.sensitivity_bound(moved - rows) * (1 + 1e-9) + 1e-9).all()


def test_tridiagonal_fitted_state_is_band_storage_and_pickles():
    X, y = make_data()
    est = SpectralRegressor(structure="tridiagonal", dim=64, n_estimators=2, max_iter=3, random_state=0,
                            device="cpu").fit(X, y)
    n_columns = est.encoding_.n_columns
    assert est.feature_matrices_.shape == (2, n_columns, 2, 64)
    assert (est.feature_matrices_[..., 1, -1] == 0).all()
    assert est.feature_sensitivities_.shape == (3,) and np.isfinite(est.feature_sensitivities_).all()
    blob = pickle.dumps(est)
    np.testing.assert_allclose(pickle.loads(blob).predict(X), est.predict(X), rtol=1e-12)


def test_tridiagonal_dim_in_the_hundreds_fits_and_learns():
    X, y = make_data(n=400)
    est = SpectralRegressor(structure="tridiagonal", dim=200, max_iter=15, learning_rate_init=0.01,
                            random_state=0, device="cpu").fit(X, y)
    assert est.dim_ == 200 and est.score(X, y) > 0.8


def test_smoothing_tends_to_the_exact_model():
    """The same fitted parameters with a tiny alpha predict what the exact model predicts."""
    X, y = make_data()
    est = SpectralRegressor(smoothing=1e-7, max_iter=3, random_state=0, device="cpu").fit(X, y)
    exact = pickle.loads(pickle.dumps(est))
    exact.smoothing = None  # same parameters, the exact eigenvalue
    exact._module = None
    np.testing.assert_allclose(est.predict(X), exact.predict(X), atol=1e-6 * np.abs(y).max())


@pytest.mark.parametrize("device", DEVICES)
def test_variants_fit_on_every_device(device):
    """Each variant learns on each device (far better than a constant) and keeps its guarantee
    there: the constrained features move the prediction only the way they are told."""
    X, y = make_data()
    for options in (dict(monotonic_cst=[1, 0, -1], structure="tridiagonal", dim=40), dict(smoothing=0.1),
                    dict(monotonic_cst=[1, 0, -1], shared_members=0.5)):
        est = SpectralRegressor(max_iter=20, learning_rate_init=0.02, random_state=0, device=device,
                                **options).fit(X, y)
        assert est.score(X, y) > 0.8, (options, est.score(X, y))
        if "monotonic_cst" in options:
            sweep = np.repeat(X[:20], 30, axis=0)
            for j, sign in ((0, 1), (2, -1)):
                moved = sweep.copy()
                moved[:, j] = np.tile(np.linspace(X[:, j].min(), X[:, j].max(), 30), 20)
                steps = np.diff(est.predict(moved).reshape(20, 30), axis=1)
                assert (sign * steps >= -1e-6 * np.abs(y).max()).all()
