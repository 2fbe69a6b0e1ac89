"""SpectralRegressor in scikit-learn workflows, its errors and its fitted state;
on CUDA (tests marked ``cuda``): fits close to the CPU's, pickles that predict on a CPU."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skspectral import SpectralRegressor, resolve_backend
from skspectral import _estimator

from .conftest import SERIES


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4)) * [1.0, 50.0, 0.01, 3.0] + [0.0, 1000.0, 0.0, -5.0]
    z = (X - X.mean(0)) / X.std(0)
    y = 1e4 * (np.abs(z[:, 0]) + np.sin(z[:, 1]) - z[:, 2] * z[:, 3]) + 5e4 + 100 * rng.normal(size=300)
    return X, y


# These tests pin the CPU: they check exact float64 behaviour (the tests marked cuda cover CUDA).
# the series' model, short: these tests check its exact structure and workflows
FAST = dict(dim=6, max_iter=40, learning_rate_init=0.02, random_state=0, device="cpu", early_stopping=False, **SERIES)


def test_fits_raw_unscaled_data(data):
    X, y = data
    est = SpectralRegressor(**FAST).fit(X, y)
    assert est.score(X, y) > 0.8
    assert est.predict(X).dtype == np.float64
    assert est.mu_.shape == (6,) and np.all(np.diff(est.mu_) > 0)
    assert est.feature_matrices_.shape == (4, 6, 6)
    np.testing.assert_allclose(est.feature_matrices_, est.feature_matrices_.transpose(0, 2, 1))
    assert est.device_ == "cpu" and est.backend_ == resolve_backend("cpu", 6) and est.dtype_ == "float64"
    assert est.n_iter_ == len(est.loss_curve_) >= 1


def test_predictions_are_the_kth_eigenvalue(data):
    X, y = data
    est = SpectralRegressor(dim=5, eigval_idx=-2, max_iter=3, random_state=0, device="cpu", **SERIES).fit(X, y)
    Xs = (np.clip(X, est.x_min_, est.x_max_) - est.x_mean_) / est.x_scale_
    M = np.diag(est.mu_) + np.einsum("bf,fij->bij", Xs, est.feature_matrices_)
    expected = est.y_mean_ + est.y_scale_ * np.linalg.eigvalsh(M)[:, 3]
    np.testing.assert_allclose(est.predict(X), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def test_seeded_fit_is_deterministic(data):
    X, y = data
    a = SpectralRegressor(**FAST).fit(X, y).predict(X)
    b = SpectralRegressor(**FAST).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)


def test_pipeline_gridsearch_cross_val(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), SpectralRegressor(**FAST))
    assert pipe.fit(X, y).score(X, y) > 0.8
    grid = GridSearchCV(
        SpectralRegressor(max_iter=15, random_state=0, device="cpu"),
        {"dim": [3, 5], "eigval_idx": [None, 0]},
        cv=2,
    ).fit(X, y)
    assert set(grid.best_params_) == {"dim", "eigval_idx"}
    scores = cross_val_score(SpectralRegressor(**FAST), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.5)


def test_pandas_feature_names(data):
    pd = pytest.importorskip("pandas")
    X, y = data
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = SpectralRegressor(dim=4, max_iter=3, random_state=0).fit(df, y)
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c", "d"])
    with pytest.warns(UserWarning, match="feature names"):
        est.predict(X)


def test_sample_weight_zero_equals_dropping_rows(data):
    X, y = data
    w = np.ones(len(y))
    w[::3] = 0
    a = SpectralRegressor(**FAST, batch_size=1000).fit(X, y, sample_weight=w)
    b = SpectralRegressor(**FAST, batch_size=1000).fit(X[w > 0], y[w > 0])
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-7)


def test_early_stopping_records_validation_and_keeps_best(data):
    """The fitted model is the best epoch's: its R^2 on the held-out rows is the best score,
    which a later epoch did not reach (the fit went on past it and restored it)."""
    from sklearn.metrics import r2_score

    from skspectral._preprocessing import validation_split

    X, y = data
    est = SpectralRegressor(dim=5, max_iter=200, early_stopping=True, n_iter_no_change=3, random_state=0,
                            learning_rate_schedule="constant", device="cpu").fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_ < 200
    assert est.validation_scores_[-1] < est.best_validation_score_  # the last epoch was not the best
    _, held_out = validation_split(len(X), est.validation_fraction, np.random.RandomState(est._seed()))
    np.testing.assert_allclose(r2_score(y[held_out], est.predict(X[held_out])), est.best_validation_score_,
                               rtol=1e-10)


def test_convergence_warning_when_max_iter_reached(data):
    X, y = data
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        SpectralRegressor(dim=4, max_iter=2, tol=0, learning_rate_schedule="constant", random_state=0).fit(X, y)
    with warnings.catch_warnings():  # the cosine schedule ends at max_iter by design
        warnings.simplefilter("error", ConvergenceWarning)
        SpectralRegressor(dim=4, max_iter=2, tol=0, random_state=0).fit(X, y)


def test_warm_start_and_partial_fit_continue(data):
    X, y = data
    est = SpectralRegressor(dim=4, max_iter=3, tol=0, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        first = est.feature_matrices_.copy()
        est.fit(X, y)
    assert est.n_iter_ == 6 and not np.allclose(first, est.feature_matrices_)
    p = SpectralRegressor(dim=4, random_state=0)
    for _ in range(3):
        p.partial_fit(X, y)
    assert p.n_iter_ == 3 and len(p.loss_curve_) == 3
    assert p.loss_curve_[-1] < p.loss_curve_[0]


def test_predict_in_bounded_chunks(data, monkeypatch):
    X, y = data
    est = SpectralRegressor(**FAST).fit(X, y)
    full = est.predict(X)
    monkeypatch.setattr(_estimator, "_PREDICT_CHUNK_BYTES", 7 * 6 * 6 * 8)  # 7 rows a chunk
    np.testing.assert_allclose(est.predict(X), full, rtol=1e-12)


def test_clip_features_bounds_extrapolation(data):
    X, y = data
    est = SpectralRegressor(**FAST).fit(X, y)
    far = X[:5].copy()
    far[:, 1] = 1e9
    at_edge = X[:5].copy()
    at_edge[:, 1] = X[:, 1].max()
    np.testing.assert_allclose(est.predict(far), est.predict(at_edge))
    assert not np.allclose(est.set_params(clip_features=False).predict(far), est.predict(at_edge))


def test_divergence_is_an_error_or_a_warning_never_silent(data):
    X, y = data
    # float32 overflows: the loss is inf, an error
    with pytest.raises(FloatingPointError, match="learning_rate_init"):
        SpectralRegressor(dim=4, learning_rate_init=1e30, max_iter=5, random_state=0, dtype="float32").fit(X, y)
    # float64 stays finite, but the fit is garbage: a warning says so
    with pytest.warns(ConvergenceWarning, match="diverged.*Lower learning_rate_init"):
        SpectralRegressor(dim=4, learning_rate_init=1e30, max_iter=5, random_state=0, dtype="float64").fit(X, y)


@pytest.mark.parametrize(
    "params,error,match",
    [
        ({"dim": 4, "eigval_idx": 4}, ValueError, r"eigval_idx=4 is out of range .*\[-4, 3\]"),
        ({"dim": 4, "eigval_idx": -5}, ValueError, "out of range"),
        ({"dim": 0}, ValueError, "dim"),
        ({"backend": "cupy", "device": "cpu"}, ValueError, "CUDA tensors"),
        ({"backend": "lapack"}, ValueError, "backend"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"learning_rate_init": 0}, ValueError, "learning_rate_init"),
    ],
)
def test_bad_parameters_fail_at_fit(data, params, error, match):
    X, y = data
    est = SpectralRegressor(max_iter=1, **params)  # __init__ never validates
    with pytest.raises(error, match=match):
        est.fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_requested_without_cuda(data):
    X, y = data
    with pytest.raises(ValueError, match="CUDA is not available"):
        SpectralRegressor(device="cuda", max_iter=1).fit(X, y)


def test_missing_values_are_learned_and_infinities_rejected(data):
    X, y = data
    X = X.copy()
    X[::7, 1] = np.nan
    est = SpectralRegressor(**FAST).fit(X, y)
    assert est.encoding_.missing == [1] and est.score(X, y) > 0.5
    assert np.all(np.isfinite(est.predict(X)))
    X[3, 2] = np.inf
    with pytest.raises(ValueError, match="[Ii]nfinity"):
        SpectralRegressor(max_iter=1).fit(X, y)


def test_integer_weights_train_exactly_as_repeated_rows(data):
    X, y = data
    w = np.random.RandomState(1).randint(0, 4, size=len(y))
    params = dict(FAST, batch_size=32)  # mini-batches, shuffled: still the same rows and weights
    weighted = SpectralRegressor(**params).fit(X, y, sample_weight=w)
    repeated = SpectralRegressor(**params).fit(X.repeat(w, axis=0), y.repeat(w))
    np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))
    # an epoch visits each distinct (x, y) once: with batches of one row, steps count rows
    Xd, params = np.vstack([X[:5], X[:5]]), dict(dim=3, max_iter=2, batch_size=1, random_state=0, device="cpu")
    merged = SpectralRegressor(**params).fit(Xd, np.r_[y[:5], y[:5]])
    assert merged.t_ == 2 * 5
    # rows that differ only in y are not merged
    apart = SpectralRegressor(**params).fit(Xd, np.r_[y[:5], y[:5] + 1.0])
    assert apart.t_ == 2 * 10


# ---- CUDA --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(600, 6)) * [1, 10, 100, 0.1, 1, 5]
    y = np.sin(X[:, 0]) + 0.01 * X[:, 1] ** 2 + X[:, 3] * 3 + 0.1 * rng.normal(size=600)
    return X, y


@pytest.mark.cuda
def test_fit_predict_on_cuda_close_to_cpu(gpu_data):
    X, y = gpu_data
    # float64 on both; training amplifies rounding differences, so few epochs
    params = dict(dim=8, max_iter=5, random_state=0, dtype="float64", shuffle=False)
    gpu = SpectralRegressor(device="cuda", **params).fit(X, y)
    cpu = SpectralRegressor(device="cpu", **params).fit(X, y)
    assert gpu.device_.startswith("cuda") and cpu.device_ == "cpu"
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-5, atol=1e-5 * np.std(y))
    long_fit = SpectralRegressor(device="cuda", dim=8, max_iter=40, learning_rate_init=0.02, random_state=0).fit(X, y)
    assert long_fit.score(X, y) > 0.8


@pytest.mark.cuda
def test_cuda_fitted_pickle_predicts_on_cpu(gpu_data, monkeypatch):
    X, y = gpu_data
    est = SpectralRegressor(dim=8, max_iter=5, random_state=0, device="cuda").fit(X, y)
    expected = est.predict(X)
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(blob)
    assert loaded._predict_device()[0].type == "cpu"
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=1e-4, atol=1e-5)
