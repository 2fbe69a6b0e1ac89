"""SpectralRegressor in scikit-learn workflows, its errors and its fitted state;
on CUDA (tests marked ``cuda``): fits close to the CPU's, pickles that predict on a CPU."""

import math
import pickle
import warnings

import joblib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skspectral import SpectralClassifier, SpectralRegressor, resolve_backend
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
    assert est.device_ == "cpu" and est.backend_ == resolve_backend("cpu", 6) and est.dtype_ == "float32"
    assert est.n_iter_ == len(est.loss_curve_) >= 1


def test_predictions_are_the_kth_eigenvalue(data):
    X, y = data
    est = SpectralRegressor(dim=5, eigval_idx=-2, max_iter=3, random_state=0, device="cpu", dtype="float64",
                            **SERIES).fit(X, y)
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


def test_a_search_on_joblibs_threads_fits_what_one_fit_at_a_time_fits():
    # The README's CPU search on threads (joblib's "threading" backend: no worker processes to start): the
    # fits run side by side in one process, their compiled steps outside the GIL on the thread counts of
    # their own threads (torch's and Numba's are per thread), so nothing they share may change a fit. dim 15
    # and 200-row batches: the steps' parallel kernels run, two Python threads launching them at once.
    rng = np.random.RandomState(1)
    X = rng.normal(size=(1200, 5))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=1200)
    grid = {"dim": [8, 15], "learning_rate_init": [2e-3, 4e-3]}
    estimator = SpectralRegressor(max_iter=3, random_state=0, device="cpu")
    threads = torch.get_num_threads()
    one_at_a_time = GridSearchCV(estimator, grid, cv=2).fit(X, y)
    with joblib.parallel_config(backend="threading"):
        side_by_side = GridSearchCV(estimator, grid, cv=2, n_jobs=4).fit(X, y)
    for split in ("split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(side_by_side.cv_results_[split], one_at_a_time.cv_results_[split])
    np.testing.assert_array_equal(side_by_side.predict(X), one_at_a_time.predict(X))
    assert torch.get_num_threads() == threads  # the caller's count, whatever the fits' threads did


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


@pytest.mark.parametrize("n_rows,expected", [(299, False), (300, True), (999, True)])
def test_auto_early_stopping_from_300_rows_for_a_regressor_from_1000_for_a_classifier(n_rows, expected):
    X = np.random.default_rng(0).normal(size=(n_rows, 2))
    regressor = SpectralRegressor(dim=3, max_iter=2, random_state=0, device="cpu").fit(X, X[:, 0])
    assert regressor.early_stopping_ is expected
    assert (regressor.validation_scores_ is not None) is expected
    classifier = SpectralClassifier(dim=3, max_iter=2, random_state=0, device="cpu").fit(X, X[:, 0] > 0)
    assert classifier.early_stopping_ is False


def test_early_stopping_records_validation_and_keeps_best(data):
    """The fitted model is the best epoch's: its R^2 on the held-out rows is the best score,
    which a later epoch did not reach (the fit went on past it and restored it)."""
    from sklearn.metrics import r2_score

    from skspectral._preprocessing import validation_split

    X, y = data
    est = SpectralRegressor(dim=5, max_iter=200, early_stopping=True, n_iter_no_change=3, random_state=0,
                            learning_rate_schedule="constant", shared_members=0.0, device="cpu", refit=False).fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_ < 200
    assert est.validation_scores_[-1] < est.best_validation_score_  # the last epoch was not the best
    _, held_out = validation_split(len(X), est.validation_fraction, np.random.RandomState(est._seed()))
    np.testing.assert_allclose(r2_score(y[held_out], est.predict(X[held_out])), est.best_validation_score_,
                               rtol=1e-5)  # the score is computed in float32, the training dtype


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_refit_continues_the_chosen_model_on_every_row(data, device):
    """refit=True: the selecting fit is unchanged (its record stays), and the model it kept goes on
    training on every row for half the chosen epochs (rounded up), from the step size the schedule gave
    as many epochs before the chosen one down to 0: exactly a warm start of the selecting fit on every
    row without early stopping, so long and from that step size."""
    X, y = data
    params = dict(dim=5, max_iter=40, early_stopping=True, n_iter_no_change=3, random_state=0, device=device,
                  learning_rate_schedule="cosine", learning_rate_init=0.01)
    selecting = SpectralRegressor(refit=False, **params).fit(X, y)
    refitted = SpectralRegressor(refit=True, **params).fit(X, y)
    assert selecting.refit_epochs_ is None
    best = 1 + int(np.argmax(selecting.validation_scores_))
    assert refitted.refit_epochs_ == math.ceil(best / 2) and best > 2
    assert device != "cpu" or best < refitted.n_iter_  # (the case chosen: the fit went on past its best epoch)
    assert refitted.validation_scores_ == selecting.validation_scores_ and refitted.n_iter_ == selecting.n_iter_
    assert len(refitted.history_) == refitted.n_iter_
    length = math.ceil(best / 2)
    step = 0.01 * 0.5 * (1 + math.cos(math.pi * (best - 1 - length) / 40))  # `length` epochs before the chosen one
    continued = pickle.loads(pickle.dumps(selecting)).set_params(
        warm_start=True, early_stopping=False, max_iter=length, learning_rate_init=step).fit(X, y)
    np.testing.assert_array_equal(refitted.predict(X), continued.predict(X))
    assert not np.array_equal(refitted.predict(X), selecting.predict(X))
    np.testing.assert_array_equal(refitted.mu_, continued.mu_)
    np.testing.assert_array_equal(refitted.feature_matrices_, continued.feature_matrices_)
    # seeded and deterministic; the refit model pickles
    again = pickle.loads(pickle.dumps(SpectralRegressor(refit=True, **params).fit(X, y)))
    np.testing.assert_array_equal(again.predict(X), refitted.predict(X))


def test_refit_without_early_stopping_changes_nothing(data):
    X, y = data
    params = dict(dim=4, max_iter=5, early_stopping=False, random_state=0, device="cpu")
    plain = SpectralRegressor(refit=False, **params).fit(X, y)
    refit = SpectralRegressor(refit=True, **params).fit(X, y)
    assert refit.refit_epochs_ is None and not refit.refit_
    np.testing.assert_array_equal(plain.predict(X), refit.predict(X))


def test_refit_does_not_calibrate_quantiles_on_rows_it_trains_on(data):
    X, y = data
    params = dict(dim=5, max_iter=4, early_stopping=True, random_state=0, device="cpu", loss="quantile",
                  quantile=[0.1, 0.9])
    with pytest.raises(ValueError, match="calibrate_quantiles=True.*refit=True"):
        SpectralRegressor(refit=True, calibrate_quantiles=True, **params).fit(X, y)
    assert SpectralRegressor(calibrate_quantiles=True, **params).fit(X, y).quantile_offsets_.any()
    refit = SpectralRegressor(refit=True, **params).fit(X, y)
    assert refit.refit_epochs_ is not None and not refit.quantile_offsets_.any()


@pytest.mark.parametrize("n_rows,n_held_out,params,expected", [
    (99_999, 10_000, {}, True),  # the second fit costs little but on tall tables
    (100_000, 10_000, {}, False),
    (500, 50, dict(loss="quantile", quantile=0.9, calibrate_quantiles=True), False),  # reads the held-out rows
    (9_990, 999, dict(loss="quantile", quantile=0.9), True),
    (9_995, 1_000, dict(loss="quantile", quantile=0.9), False),  # 1,000 held-out rows: "auto" calibrates
    (16_000, 800, dict(loss="quantile", quantile=0.9), True),  # two ranks' 800 each: none calibrates
    (10_000, 1_000, dict(loss="quantile", quantile=0.9, calibrate_quantiles=False), True),
    (50_000, 5_000, dict(loss="poisson"), True),
    (150_000, 5_000, dict(refit=True), True),
    (500, 50, dict(refit=False), False),
])
def test_refit_auto_follows_the_rows(n_rows, n_held_out, params, expected):
    assert SpectralRegressor(**params)._refits(n_rows, n_held_out) is expected


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_fit_of_tens_of_thousands_of_rows_refits_on_either_device(device):
    """The CPU refits as a GPU does from 20,000 rows (it did not before 2026-12-07): the fit records it."""
    X = np.random.RandomState(0).normal(size=(25_000, 3))
    est = SpectralRegressor(dim=4, max_iter=2, n_estimators=1, random_state=0, device=device).fit(X, X[:, 0])
    assert est.early_stopping_ and est.refit_ and est.refit_epochs_ >= 1


def test_a_quantile_fit_either_refits_or_calibrates_on_its_held_out_rows(monkeypatch):
    """"auto" on both: a fit that calibrates (1,000 held-out rows and more) does not refit, and one under
    them refits (under 100,000 rows)."""
    from skspectral import regressor

    X = np.random.RandomState(3).normal(size=(600, 2))
    params = dict(dim=4, max_iter=2, random_state=0, device="cpu", loss="quantile", quantile=[0.1, 0.9])
    small = SpectralRegressor(**params).fit(X, X[:, 0])  # 60 held-out rows
    assert small.refit_ and not small.quantile_offsets_.any()
    monkeypatch.setattr(regressor, "_CALIBRATION_ROWS", 60)  # as if they were 1,000
    calibrated = SpectralRegressor(**params).fit(X, X[:, 0])
    assert not calibrated.refit_ and calibrated.quantile_offsets_.any()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_a_default_fit_of_a_small_table_refits(data, device):
    X, y = data
    est = SpectralRegressor(dim=5, max_iter=6, random_state=0, device=device).fit(X, y)
    assert est.early_stopping_ and est.refit_ and est.refit_epochs_ == math.ceil((1 + np.argmax(est.validation_scores_)) / 2)
    plain = SpectralRegressor(dim=5, max_iter=6, random_state=0, device=device, refit=False).fit(X, y)
    assert not plain.refit_ and plain.refit_epochs_ is None


@pytest.mark.parametrize("n_rows,early_stopping,n_iter_no_change,loss,expected", [
    (11_200, True, "auto", {}, 5),   # 1,120 validation rows: a steady score, a plateau called sooner
    (2_000, True, "auto", {}, 10),   # 200 validation rows
    (800, True, "auto", {}, 1),      # 80 validation rows, a jumpy score: the whole schedule (max_iter=1)
    (800, True, "auto", dict(loss="quantile", quantile=[0.1, 0.9]), 1),
    (11_200, False, "auto", {}, 10),  # no validation rows
    (11_200, True, 7, {}, 7),
    (11_200, True, "auto", dict(loss="quantile", quantile=0.9), 5),
    # several levels' mean pinball loss is not steady, however many rows
    (11_200, True, "auto", dict(loss="quantile", quantile=[0.1, 0.9]), 10),
    (11_200, True, 7, dict(loss="quantile", quantile=[0.1, 0.9]), 7),
])
def test_n_iter_no_change_auto_waits_less_on_many_validation_rows(monkeypatch, n_rows, early_stopping,
                                                                   n_iter_no_change, loss, expected):
    from skspectral import _estimator

    seen = []

    class Recording(_estimator.Trainer):
        def __init__(self, model, loss_fn, options, *args, **kwargs):
            seen.append(options)
            super().__init__(model, loss_fn, options, *args, **kwargs)

    monkeypatch.setattr(_estimator, "Trainer", Recording)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_rows, 2))
    SpectralRegressor(dim=3, max_iter=1, early_stopping=early_stopping, n_iter_no_change=n_iter_no_change,
                      random_state=0, device="cpu", refit=False, **loss).fit(X, X[:, 0])
    assert [o.n_iter_no_change for o in seen] == [expected]
    assert seen[0].average_decay == _estimator._AVERAGE_DECAY > 0  # scored on the epochs' running average


@pytest.mark.parametrize("device,n_validation,expected", [
    ("cpu", 1_000, 5), ("cpu", 999, 10),
    # on a GPU an epoch is cheap: the shorter wait only where the validation rows are a tall fit's
    ("cuda", 1_000, 10), ("cuda", 9_999, 10), ("cuda", 10_000, 5), ("cuda", 99, 1),
])
def test_n_iter_no_change_auto_waits_less_on_a_gpu_only_for_tall_fits(device, n_validation, expected):
    for estimator in (SpectralRegressor(), SpectralClassifier()):  # (no CUDA needed: the rule)
        assert estimator._patience(n_validation, torch.device(device), 1) == expected
    several = SpectralRegressor(loss="quantile", quantile=[0.1, 0.9])
    assert several._patience(n_validation, torch.device(device), 1) == (1 if n_validation < 100 else 10)


@pytest.mark.parametrize("device, n_rows, expected", [
    ("cpu", 99_999, 140), ("cpu", 100_000, 60), ("cuda", 100_000, 140), ("cuda", 2_000_000, 140),
])
def test_max_iter_auto_anneals_a_tall_cpu_fit_sooner(device, n_rows, expected):
    """max_iter="auto": 140 epochs, on the CPU 60 from 100,000 fit rows (one member's shorter schedule; a GPU's
    two members keep the long one); an int is kept as given."""
    for make in (SpectralRegressor, SpectralClassifier, lambda **p: SpectralRegressor(loss="quantile",
                                                                                    quantile=[0.1, 0.9], **p)):
        assert make()._max_iter(n_rows, torch.device(device)) == expected  # (no CUDA needed: the rule)
        assert make(max_iter=140)._max_iter(n_rows, torch.device(device)) == 140
        assert make(max_iter=7)._max_iter(n_rows, torch.device(device)) == 7


def test_a_tall_cpu_fit_runs_the_shorter_schedule(monkeypatch):
    """The resolved length is the one the fit runs: as many epochs, and the same fit as asking for that
    max_iter (its cosine anneals to 0 there). (The row threshold lowered so that a small fit is "tall".)"""
    monkeypatch.setattr(_estimator, "_AUTO_MEMBERS_TALL_ROWS", 300)
    monkeypatch.setattr(_estimator, "_AUTO_MAX_ITER", (9, 4))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X[:, 0] - X[:, 1] ** 2
    est = SpectralRegressor(dim=4, random_state=0, device="cpu", early_stopping=False, tol=0).fit(X, y)
    assert est.max_iter_ == 4 and est.n_iter_ == 4
    short = SpectralRegressor(dim=4, random_state=0, device="cpu", early_stopping=False, tol=0, max_iter=4).fit(X, y)
    np.testing.assert_array_equal(est.predict(X), short.predict(X))  # the same fit as asking for 4
    monkeypatch.setattr(_estimator, "_AUTO_MEMBERS_TALL_ROWS", 100_000)
    assert SpectralRegressor(dim=4, random_state=0, device="cpu", early_stopping=False).fit(X, y).max_iter_ == 9


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
    diverged = SpectralRegressor(dim=4, learning_rate_init=1e30, max_iter=5, random_state=0, dtype="float32")
    with pytest.raises(FloatingPointError, match="learning_rate_init"):
        diverged.fit(X, y)
    # what it kept is not finite: predict says so (it returned NaN for every row), also once pickled
    for kept in (diverged, pickle.loads(pickle.dumps(diverged))):
        with pytest.raises(ValueError, match="fitted parameters are not finite: the fit that made them diverged"):
            kept.predict(X[:3])
        with pytest.raises(ValueError, match="matrices are not finite, so neither are its sensitivities"):
            kept.sensitivity_bound(np.ones(X.shape[1]))  # (torch's LinAlgError before)
        with pytest.raises(ValueError, match="matrices are not finite, so neither are its sensitivities"):
            kept.feature_importances_
    # float64 stays finite, but the fit is garbage: a warning says so (diverged from its first epoch, or
    # garbage from the first epoch on: worse than a constant)
    for shared_members in (0.0, 0.5):
        with pytest.warns(ConvergenceWarning, match="(diverged|worse than a constant).*[Ll]ower learning_rate_init"):
            SpectralRegressor(dim=4, learning_rate_init=1e30, max_iter=5, random_state=0, dtype="float64",
                              shared_members=shared_members).fit(X, y)


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
    # float64 on both; training amplifies rounding differences, so few epochs (refit on both: the GPU's
    # default for a small table, and its refit the CPU's)
    params = dict(dim=8, max_iter=5, random_state=0, dtype="float64", shuffle=False, refit=True)
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


# ---- losses beyond the squared error, quantiles that never cross (issue 23) ----------------------
def heteroscedastic(seed=0, n=1500):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3))
    y = X[:, 0] + (0.3 + np.abs(X[:, 1])) * rng.normal(size=n)
    return X, y


QUANTILE_VARIANTS = {
    "dense, members": dict(n_estimators=3),
    "dense, calibrated": dict(n_estimators=2, early_stopping=True, calibrate_quantiles=True),
    "tridiagonal": dict(structure="tridiagonal", dim=12, n_estimators=1),
    "monotone, members": dict(monotonic_cst=[1, 0, 0], n_estimators=2),
    "smoothed": dict(smoothing=0.1, n_estimators=1),
}


@pytest.fixture(scope="module")
def quantile_models():
    X, y = heteroscedastic(1, n=400)
    params = dict(dim=6, max_iter=4, learning_rate_init=0.02, random_state=0, device="cpu", loss="quantile",
                  quantile=[0.05, 0.5, 0.95])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return {name: SpectralRegressor(**{**params, **options}).fit(X, y) for name, options in QUANTILE_VARIANTS.items()}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 1e3, 1e8]))
def test_predicted_quantiles_never_cross_on_any_input(quantile_models, seed, scale):
    """Eigenvalues k1 < k2 < k3 of one matrix, made non-decreasing exactly: for every variant, on
    inputs far outside the training range too (clipping off), the columns are ordered to the bit."""
    rng = np.random.RandomState(seed % (2**32 - 1))
    X = rng.standard_cauchy(size=(50, 3)) * scale
    for name, est in quantile_models.items():
        for clip in (True, False):
            predicted = est.set_params(clip_features=clip).predict(X)
            assert predicted.shape == (50, 3)
            assert (np.diff(predicted, axis=1) >= 0).all(), name


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_no_quantile_moves_more_than_its_certified_bound(quantile_models, seed, scale):
    """Weyl per level: each column (an eigenvalue of M(x), made non-decreasing along the levels,
    members averaged) moves by at most its row of the bound, for every variant, clipped or not."""
    rng = np.random.RandomState(seed % (2**32 - 1))
    X = rng.normal(size=(20, 3))
    delta = rng.standard_cauchy(size=(20, 3)) * scale
    for name, est in quantile_models.items():
        bound = est.sensitivity_bound(delta)
        assert bound.shape == (20, 3), name
        for clip in (True, False):
            predicted = est.set_params(clip_features=clip).predict(X)
            change = np.abs(est.predict(X + delta) - predicted)
            assert (change <= bound * (1 + 1e-9) + 1e-9 * np.abs(predicted).max()).all(), name


def test_calibrated_quantiles_are_the_fit_shifted_by_ordered_offsets():
    """calibrate_quantiles shifts each level by its offset (the same model: training does not see it),
    then keeps the levels ordered by a running maximum; "auto" only from 1,000 early-stopping rows;
    without early stopping none; the bounds are the uncalibrated fit's."""
    from skspectral import regressor

    X, y = heteroscedastic(5, n=1200)
    params = dict(dim=6, max_iter=6, learning_rate_init=0.02, random_state=0, device="cpu", loss="quantile",
                  quantile=[0.05, 0.5, 0.95], early_stopping=True, refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = SpectralRegressor(calibrate_quantiles=False, **params).fit(X, y)
        shifted = SpectralRegressor(calibrate_quantiles=True, **params).fit(X, y)
        auto = SpectralRegressor(**params).fit(X, y)  # 120 early-stopping rows: under the threshold
        no_rows = SpectralRegressor(calibrate_quantiles=True, **{**params, "early_stopping": False}).fit(X, y)
    np.testing.assert_array_equal(plain.quantile_offsets_, np.zeros(3))
    np.testing.assert_array_equal(auto.quantile_offsets_, np.zeros(3))
    np.testing.assert_array_equal(no_rows.quantile_offsets_, np.zeros(3))
    offsets = shifted.quantile_offsets_
    assert offsets.shape == (3,) and np.abs(offsets).max() > 0
    np.testing.assert_array_equal(shifted.predict(X), np.maximum.accumulate(plain.predict(X) + offsets, axis=1))
    narrowing = regressor.shifted_levels(np.array([[0.0, 1.0, 2.0], [0.0, 0.1, 0.2]]), np.array([0.5, 0.0, -0.5]))
    np.testing.assert_array_equal(narrowing, [[0.5, 1.0, 1.5], [0.5, 0.5, 0.5]])  # the narrow row's levels meet
    np.testing.assert_array_equal(shifted.feature_sensitivities_, plain.feature_sensitivities_)
    assert regressor._CALIBRATION_ROWS == 1000


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 300), spread=st.floats(0.0, 3.0))
def test_level_offsets_are_weighted_quantiles(seed, n, spread):
    """Each level's offset is the smallest residual at or below which at least its level's share of
    the weight lies (the weighted quantile, the pinball loss's best constant), found here by brute
    force; ties and rows without weight included."""
    from skspectral.regressor import level_offsets

    rng = np.random.RandomState(seed % (2**32 - 1))
    levels = np.array([0.05, 0.5, 0.95])
    # three levels' residuals, pulled apart by spread
    residuals = rng.standard_t(3, size=(n, 1)) + spread * np.array([1.0, 0.0, -1.0]) * rng.uniform(size=(1, 3))
    residuals[rng.uniform(size=n) < 0.2] = 0.0  # ties
    weight = rng.uniform(0.0, 2.0, size=n)
    weight[rng.uniform(size=n) < 0.1] = 0.0  # rows without weight
    weight[0] += 0.1  # a positive total
    quantiles = [min(r for r in residuals[:, j] if weight[residuals[:, j] <= r].sum() >= level * weight.sum())
                 for j, level in enumerate(levels)]
    np.testing.assert_array_equal(level_offsets(residuals, weight, levels), quantiles)


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(2, 20), data=st.data())
def test_the_diagonal_through_the_levels_puts_each_at_its_index(dim, data):
    """diagonal_through: each value at its index, linear between, the default step (2 / (dim - 1)) outside,
    never decreasing; a model started from it holds it (steps below MIN_MU_STEP raised to it)."""
    from skspectral.model import MIN_MU_STEP, SpectralModel, diagonal_through

    count = data.draw(st.integers(1, min(dim, 4)))
    indices = sorted(data.draw(st.lists(st.integers(0, dim - 1), min_size=count, max_size=count, unique=True)))
    values = np.sort(data.draw(st.lists(st.floats(-5, 5), min_size=count, max_size=count)))
    mu = diagonal_through(dim, indices, values)
    np.testing.assert_allclose(mu[indices], values, atol=1e-12)
    assert (np.diff(mu) >= -1e-12).all()
    step = 2.0 / (dim - 1)
    np.testing.assert_allclose(np.diff(mu[: indices[0] + 1]), step)
    np.testing.assert_allclose(np.diff(mu[indices[-1]:]), step)
    model = SpectralModel(3, dim, indices, n_members=2, dtype=torch.float64)
    model.start_diagonal(torch.from_numpy(mu))
    expected = mu[0] + np.concatenate([[0.0], np.cumsum(np.maximum(np.diff(mu), MIN_MU_STEP))])
    np.testing.assert_allclose(model.mu().detach().numpy(), np.tile(expected, (2, 1)), atol=1e-9)
    with pytest.raises(ValueError, match=r"shape \(%d,\) or \(2, %d\).*got shape \(%d,\)" % (dim, dim, dim + 1)):
        model.start_diagonal(torch.zeros(dim + 1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.start_diagonal(torch.full((dim,), float("nan")))


@pytest.mark.parametrize("quantile", [0.9, [0.1, 0.5, 0.9]])
def test_a_quantile_fit_starts_from_the_targets_quantiles(quantile):
    """loss="quantile": each level's eigenvalue starts at that level's weighted quantile of the training
    targets (gradient boosting's start), so a fit that barely moves predicts about them -- sample weights
    counted -- where the evenly spaced diagonal would put the levels 2 / (dim - 1) standardised units apart
    around the mean; other losses start from the evenly spaced diagonal."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(2000, 3))
    y = np.exp(rng.normal(size=2000))  # skewed: the quantiles are far from mean +- a small step
    weight = rng.uniform(0.5, 2.0, size=2000)
    params = dict(dim=15, max_iter=1, learning_rate_init=1e-9, early_stopping=False, random_state=0, device="cpu",
                  dtype="float64")
    est = SpectralRegressor(loss="quantile", quantile=quantile, **params).fit(X, y, sample_weight=weight)
    levels = np.atleast_1d(quantile)
    predicted = est.predict(X).reshape(len(X), -1)
    for j, level in enumerate(levels):
        order = np.argsort(y)
        expected = y[order][np.searchsorted(np.cumsum(weight[order]), level * weight.sum())]
        np.testing.assert_allclose(np.median(predicted[:, j]), expected, atol=0.12 * y.std())  # (before: 0.23-0.89)
    plain = SpectralRegressor(**params).fit(X, y)
    np.testing.assert_allclose(plain._module_state_["mu_start"][0, 0], -1.0)


def test_quantiles_cover_their_levels_and_share_one_certified_bound():
    X, y = heteroscedastic(2, n=3000)
    X_test, y_test = heteroscedastic(3, n=2000)
    est = SpectralRegressor(dim=8, max_iter=40, learning_rate_init=0.01, random_state=0, device="cpu",
                            loss="quantile", quantile=[0.9, 0.1, 0.5]).fit(X, y)  # levels in any order
    predicted = est.predict(X_test)
    coverage = (y_test[:, None] <= predicted).mean(axis=0)
    np.testing.assert_allclose(coverage, [0.1, 0.5, 0.9], atol=0.05)
    interval = predicted[:, 2] - predicted[:, 0]
    assert np.corrcoef(interval, np.abs(X_test[:, 1]))[0, 1] > 0.5  # wider where the noise is
    sensitivities = est.feature_sensitivities_
    assert sensitivities.shape == (3, 3) and (sensitivities == sensitivities[0]).all()
    assert est.sensitivity_bound(np.ones(3)).shape == (3,)
    assert est.score(X_test, y_test) > 0.2  # R^2 of the median's column


@pytest.mark.parametrize("loss", ["absolute_error", "huber", "quantile", "poisson", "gamma"])
def test_each_loss_early_stops_on_itself_and_takes_sample_weights(loss):
    """The held-out score is the loss itself (negated) of the restored best model; integer
    weights train as repeated rows."""
    from sklearn.metrics import mean_absolute_error, mean_gamma_deviance, mean_pinball_loss, mean_poisson_deviance

    from skspectral._preprocessing import validation_split

    X, y = heteroscedastic(4, n=1600)
    if loss in ("poisson", "gamma"):
        y = np.random.RandomState(4).poisson(np.exp(0.5 * X[:, 0])).astype(float) + (loss == "gamma") * 0.5
    params = dict(dim=6, max_iter=30, learning_rate_init=0.02, random_state=0, device="cpu", loss=loss,
                  quantile=0.8, early_stopping=True, n_iter_no_change=3, learning_rate_schedule="constant", refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = SpectralRegressor(**params).fit(X, y)
    _, held = validation_split(len(X), 0.1, np.random.RandomState(est._seed()))
    p = est.predict(X[held])
    score = {"absolute_error": lambda: -mean_absolute_error(y[held], p),
             "quantile": lambda: -mean_pinball_loss(y[held], p, alpha=0.8),
             "poisson": lambda: -mean_poisson_deviance(y[held], p),
             "gamma": lambda: -mean_gamma_deviance(y[held], p)}.get(loss)
    if score is not None:
        np.testing.assert_allclose(est.best_validation_score_, score(), rtol=1e-5)  # float32 training
    assert {f"train_{est._loss().metric}"} <= set(est.history_[-1])
    counts = np.random.RandomState(5).randint(0, 3, len(y))
    short = dict(params, max_iter=2, early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = SpectralRegressor(**short).fit(X, y, sample_weight=counts.astype(float))
        repeated = SpectralRegressor(**short).fit(X.repeat(counts, axis=0), y.repeat(counts))
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-2, 1.0, 10.0]))
def test_a_log_links_bound_is_on_the_log_of_the_prediction(seed, scale):
    """log(prediction) moves by at most the certified bound (members: their largest bound, as
    they are averaged in the target's space)."""
    est = _log_link_model()
    rng = np.random.RandomState(seed % (2**32 - 1))
    X = rng.normal(size=(20, 3))
    delta = rng.standard_cauchy(size=(20, 3)) * scale
    change = np.abs(np.log(est.predict(X + delta)) - np.log(est.predict(X)))
    assert (change <= est.sensitivity_bound(delta) * (1 + 1e-9) + 1e-12).all()


_LOG_LINK = {}


def _log_link_model():
    if not _LOG_LINK:
        X, _ = heteroscedastic(6, n=600)
        y = np.random.RandomState(6).poisson(np.exp(0.7 * X[:, 0] - 0.3 * X[:, 2])).astype(float)
        _LOG_LINK["model"] = SpectralRegressor(dim=6, max_iter=8, n_estimators=3, loss="poisson", random_state=0,
                                               device="cpu", clip_features=False).fit(X, y)
    return _LOG_LINK["model"]


@pytest.mark.parametrize("params,y_kind,match", [
    (dict(loss="poisson"), "negative", r'loss="poisson" needs targets y >= 0'),
    (dict(loss="poisson"), "zeros", "positive weighted mean"),
    (dict(loss="gamma"), "zeros", r'loss="gamma" needs every target y > 0'),
    (dict(loss="quantile"), "normal", 'loss="quantile" needs quantile'),
    (dict(loss="quantile", quantile=[0.2, 0.2]), "normal", "holds a level twice"),
    (dict(loss="quantile", quantile=[0.1, 0.3, 0.5, 0.7, 0.9], dim=4), "normal", "5 quantiles need dim >= 5"),
])
def test_losses_check_their_targets_and_levels_at_fit(params, y_kind, match):
    X, _ = heteroscedastic(7, n=50)
    y = {"negative": np.arange(50.0) - 3, "zeros": np.zeros(50), "normal": np.random.RandomState(0).normal(size=50)}[y_kind]
    with pytest.raises(ValueError, match=match):
        SpectralRegressor(max_iter=1, device="cpu", **params).fit(X, y)
    with pytest.raises(ValueError, match="quantile"):
        SpectralRegressor(loss="quantile", quantile=1.5, max_iter=1).fit(X, np.ones(50))


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "huber", "quantile", "poisson", "gamma"])
def test_every_loss_learns_the_same_model_in_any_units_of_y(loss):
    """y in cents instead of dollars: the same steps (the model learns y standardised, or over
    its mean for a log link), so the predictions are 100 times larger and the reported loss is
    in the new units (a Poisson deviance scales with y, a gamma deviance not at all)."""
    X, y = heteroscedastic(8, n=300)
    if loss in ("poisson", "gamma"):
        y = np.random.RandomState(8).poisson(np.exp(0.5 * X[:, 0])).astype(float) + 0.5
    params = dict(dim=5, max_iter=5, random_state=0, device="cpu", loss=loss, quantile=0.3, huber_delta=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dollars = SpectralRegressor(**params).fit(X, y)
        cents = SpectralRegressor(**params).fit(X, 100 * y)
    # to float32 rounding (the training dtype): a wrong unit would be off by 100 times
    np.testing.assert_allclose(cents.predict(X), 100 * dollars.predict(X), rtol=1e-5)
    np.testing.assert_allclose(cents.feature_sensitivities_,
                               dollars.feature_sensitivities_ * (1 if loss in ("poisson", "gamma") else 100), rtol=1e-5)
    metric = f"train_{dollars._loss().metric}"
    power = {"huber": 2, "gamma": 0}.get(loss, 1)
    np.testing.assert_allclose(cents.history_[-1][metric], 100**power * dollars.history_[-1][metric], rtol=1e-5)


@pytest.mark.parametrize("loss", ["absolute_error", "huber", "quantile", "poisson", "gamma"])
def test_early_stopping_stops_at_the_same_epoch_in_any_units_of_y(loss):
    """The held-out score is reported in y's units, but tol is read in the loss's own (y
    standardised, or over its mean): y in hundredths or in hundreds stops where y does."""
    X, y = heteroscedastic(9, n=3000)
    if loss in ("poisson", "gamma"):
        y = np.random.RandomState(9).poisson(np.exp(0.5 * X[:, 0])).astype(float) + 0.5
    params = dict(dim=6, n_estimators=1, max_iter=200, random_state=0, device="cpu", loss=loss,
                  quantile=[0.05, 0.5, 0.95], learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [SpectralRegressor(**params).fit(X, scale * y) for scale in (0.01, 1.0, 100.0)]
    assert fits[1].early_stopping_ and fits[1].n_iter_ < 200
    assert [fit.n_iter_ for fit in fits] == [fits[1].n_iter_] * 3
    np.testing.assert_allclose(fits[0].predict(X) * 100, fits[1].predict(X), rtol=1e-9)


@pytest.mark.cuda
@pytest.mark.parametrize("loss", ["absolute_error", "huber", "quantile", "poisson", "gamma"])
def test_each_loss_on_cuda_is_the_cpu_fit(gpu_data, loss):
    """float64, no shuffling: the CUDA fit (the fused kernel, steps replayed from a CUDA graph)
    predicts what the CPU fit does; several quantiles from one launch never cross."""
    X, y = gpu_data
    y = np.exp(y / np.std(y)) if loss in ("poisson", "gamma") else y
    params = dict(dim=8, max_iter=5, random_state=0, dtype="float64", shuffle=False, loss=loss,
                  quantile=[0.05, 0.5, 0.95] if loss == "quantile" else None, refit=True)
    gpu = SpectralRegressor(device="cuda", **params).fit(X, y)
    cpu = SpectralRegressor(device="cpu", **params).fit(X, y)
    assert gpu.refit_epochs_ == cpu.refit_epochs_ is not None
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-5, atol=1e-5 * np.std(y))
    if loss == "quantile":
        fast = SpectralRegressor(device="cuda", dim=16, max_iter=10, random_state=0, loss=loss,
                                 quantile=[0.05, 0.5, 0.95]).fit(X, y)  # float32, the defaults' path
        far = np.random.RandomState(1).standard_cauchy(size=(2000, X.shape[1])) * 1e4
        assert (np.diff(fast.set_params(clip_features=False).predict(far), axis=1) >= 0).all()


def test_split_conformal_wrapping_with_mapie():
    """MAPIE's split-conformal regressor takes the estimator as any scikit-learn regressor; its
    calibrated 90 % intervals cover about 90 % of fresh rows."""
    pytest.importorskip("mapie")
    from mapie.regression import SplitConformalRegressor

    X, y = heteroscedastic(5, n=4000)
    X_test, y_test = heteroscedastic(6, n=2000)
    wrapped = SplitConformalRegressor(SpectralRegressor(dim=6, max_iter=15, random_state=0, device="cpu"),
                                      confidence_level=0.9, prefit=False)
    wrapped.fit(X[:2500], y[:2500]).conformalize(X[2500:], y[2500:])
    points, intervals = wrapped.predict_interval(X_test)
    covered = np.mean((y_test >= intervals[:, 0, 0]) & (y_test <= intervals[:, 1, 0]))
    assert points.shape == (2000,) and abs(covered - 0.9) < 0.03, covered


@pytest.mark.parametrize("value", [1e-3, 5.0, -1e6])
@pytest.mark.parametrize("params", [{}, {"loss": "absolute_error"}, {"loss": "quantile", "quantile": [0.1, 0.5, 0.9]},
                                    {"structure": "tridiagonal", "monotonic_cst": [1, 0, 0]}])
def test_a_constant_target_is_predicted_as_that_constant(value, params):
    """A constant y leaves nothing to learn: the predictions are y (as gradient boosting's), to 1e-8 of
    max(1, |y|), also away from the training rows. (Learnt on a scale of 1 it was predicted to ~0.02 in y's
    units: y = 1e-3 as -0.02 to 0.02.)"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    est = SpectralRegressor(dim=5, max_iter=10, random_state=0, device="cpu", **params).fit(X, np.full(400, value))
    predictions = est.predict(rng.normal(size=(300, 3)) * 3)
    np.testing.assert_allclose(predictions, value, rtol=0, atol=1e-8 * max(1.0, abs(value)))


@pytest.mark.parametrize("offset", [3e12, -3e13])
def test_a_target_of_tiny_spread_beside_its_mean_is_learnt(offset):
    """y = offset + signal, the signal's spread within the columns' rule of "constant" beside |offset|
    (1e-12 of it): the model still learns the signal, as it does without the offset (the floor scale of a
    constant y, 1e-9 |offset|, made the fit's residual output +-20 in y's units: R^2 -240)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    signal = X[:, 0] - 0.5 * X[:, 1]
    params = dict(dim=5, max_iter=20, random_state=0, device="cpu")
    plain = SpectralRegressor(**params).fit(X, signal)
    shifted = SpectralRegressor(**params).fit(X, offset + signal)
    assert shifted.y_scale_ == pytest.approx(signal.std(), rel=1e-3)
    X_new = rng.normal(size=(300, 3))
    # (the same fit but for y's own rounding at that size: its float64 values lie 0.004 apart at 3e13)
    np.testing.assert_allclose(shifted.predict(X_new) - offset, plain.predict(X_new), atol=0.1)
    assert shifted.score(X, offset + signal) > 0.8


@pytest.mark.parametrize("value", [1e-3, 5.0, 1e6])
@pytest.mark.parametrize("loss", ["poisson", "gamma"])
def test_a_constant_target_under_a_log_link_is_predicted_as_that_constant(value, loss):
    """A constant count or amount: the predictions are y to 1e-8 of it, also away from the training rows, and
    the certified bounds on log(prediction) say it cannot move. (The fit leaves a few hundredths in the model's
    output, its log: the predictions were 2-5 % off.)"""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    est = SpectralRegressor(dim=5, max_iter=10, random_state=0, device="cpu", loss=loss).fit(X, np.full(400, value))
    predictions = est.predict(rng.normal(size=(300, 3)) * 3)
    np.testing.assert_allclose(predictions, value, rtol=1e-8)
    assert (est.feature_sensitivities_ < 1e-7).all()
    # a target that varies keeps the log link's plain output
    y = np.exp(0.3 * X[:, 0]) * value
    assert SpectralRegressor(dim=5, max_iter=2, random_state=0, device="cpu", loss=loss).fit(
        X, y).target_scaler_.output_factor == 1.0


def test_a_fit_of_one_row_does_not_warn_of_divergence():
    """One row (or a constant y) is fitted exactly by a constant: the training loss's rise from 1e-17 to 1e-13
    is rounding, not a diverged fit, and no ConvergenceWarning says otherwise."""
    X = np.random.default_rng(0).normal(size=(1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*hold a single value")  # (every column, with one row)
        est = SpectralRegressor(max_iter=3, random_state=0, device="cpu").fit(X, [2.5])
    np.testing.assert_allclose(est.predict(X), 2.5, rtol=1e-8)
