"""What both estimators share (skspectral/_estimator.py): history, fit_iter,
scikit-learn callbacks, convergence warnings, errors at fit, pickling."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral import _estimator

from .conftest import make_data

CPU = dict(device="cpu", random_state=0)


@pytest.fixture(scope="module")
def fitted():
    X, y = make_data()
    est = SpectralRegressor(dim=5, max_iter=15, learning_rate_init=0.02, **CPU)
    est.fit(X[:150], y[:150], eval_set=[(X[150:], y[150:]), (X[:150], y[:150])])
    return est, X, y


# ---- history ------------------------------------------------------------------------------
def test_history_records_every_epoch(fitted):
    est, X, y = fitted
    assert len(est.history_) == est.n_iter_ == len(est.loss_curve_)
    last = est.history_[-1]
    assert set(last) == {"epoch", "train_loss", "train_rmse", "sensitivities", "elapsed_s",
                         "eval_0_rmse", "eval_0_r2", "eval_1_rmse", "eval_1_r2"}
    assert [r["epoch"] for r in est.history_] == list(range(1, est.n_iter_ + 1))
    assert [r["train_loss"] for r in est.history_] == est.loss_curve_
    rmse = np.sqrt(np.mean((est.predict(X[150:]) - y[150:]) ** 2))
    np.testing.assert_allclose(last["eval_0_rmse"], rmse, rtol=1e-6)
    np.testing.assert_allclose(last["sensitivities"], est.feature_sensitivities_, rtol=1e-6)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(est.history_)
    assert len(frame) == est.n_iter_ and "eval_0_rmse" in frame


def test_training_metric_is_in_the_eval_metrics_units():
    X, y = make_data(1, n=120)
    y = 1000.0 * y  # far from unit scale: the standardised loss and the RMSE differ a lot
    params = dict(dim=4, batch_size=120, shuffle=False, learning_rate_schedule="constant", tol=0, **CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        two = SpectralRegressor(max_iter=2, **params).fit(X, y)
        one = SpectralRegressor(max_iter=1, **params).fit(X, y)
    # one full-batch step per epoch: epoch 2's running mean is the loss of the model after epoch 1
    rmse_after_one = np.sqrt(np.mean((one.predict(X) - y) ** 2))
    np.testing.assert_allclose(two.history_[1]["train_rmse"], rmse_after_one, rtol=1e-10)
    np.testing.assert_allclose(two.history_[1]["train_loss"], (rmse_after_one / two.y_scale_) ** 2, rtol=1e-10)
    clf = SpectralClassifier(dim=3, max_iter=2, **CPU).fit(X, y > np.median(y))
    assert {"train_loss", "train_log_loss"} <= set(clf.history_[-1])


def test_fit_iter_yields_and_leaves_fitted_even_when_stopped_early():
    X, y = make_data(1)
    est = SpectralRegressor(dim=4, max_iter=30, **CPU)
    seen = []
    for record in est.fit_iter(X, y, eval_set=[(X, y)]):
        seen.append(record["epoch"])
        if record["epoch"] == 4:
            break
    assert seen == [1, 2, 3, 4] and est.n_iter_ == 4 and len(est.history_) == 4
    assert est.predict(X).shape == (len(y),)
    full = SpectralRegressor(dim=4, max_iter=5, **CPU)
    records = list(full.fit_iter(X, y))
    assert len(records) == full.n_iter_ == 5


# ---- scikit-learn callbacks (>= 1.9) -----------------------------------------------------------
callback = pytest.importorskip("sklearn.callback")


class Recorder:
    """Records each task's hooks; asks to stop after ``stop_after`` epochs."""

    def __init__(self, stop_after=None):
        self.stop_after = stop_after
        self.events = []
        self.predictions = []

    def setup(self, estimator, context):
        self.events.append("setup")

    def teardown(self, estimator, context):
        self.events.append("teardown")

    def on_fit_task_begin(self, estimator, context, *, X=None, y=None):
        self.events.append(("begin", context.task_name))

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, fitted_estimator=None):
        self.events.append(("end", context.task_name))
        if context.task_name == "epoch" and fitted_estimator is not None:
            self.predictions.append(fitted_estimator.predict(X[:5]))
            return self.stop_after is not None and fitted_estimator.n_iter_ >= self.stop_after
        return False


def test_one_fit_task_per_epoch_and_a_fitted_copy_at_each():
    X, y = make_data(2)
    recorder = Recorder()
    est = SpectralRegressor(dim=4, max_iter=3, **CPU).set_callbacks(recorder)
    est.fit(X, y)
    epochs = [("begin", "epoch"), ("end", "epoch")] * 3
    assert recorder.events == ["setup", ("begin", "fit"), *epochs, ("end", "fit"), "teardown"]
    assert len(recorder.predictions) == 3
    np.testing.assert_allclose(recorder.predictions[-1], est.predict(X[:5]), rtol=1e-12)
    assert not np.allclose(recorder.predictions[0], recorder.predictions[-1])


def test_a_callback_that_returns_true_stops_the_fit_fitted():
    X, y = make_data(3)
    recorder = Recorder(stop_after=2)
    est = SpectralRegressor(dim=4, max_iter=50, **CPU).set_callbacks(recorder).fit(X, y)
    assert est.n_iter_ == 2 and len(est.history_) == 2
    np.testing.assert_allclose(recorder.predictions[-1], est.predict(X[:5]), rtol=1e-12)
    assert recorder.events[-1] == "teardown"
    clf = SpectralClassifier(dim=3, max_iter=50, **CPU).set_callbacks(Recorder(stop_after=1))
    assert clf.fit(X, y > np.median(y)).n_iter_ == 1


def test_fit_iter_tears_callbacks_down_when_the_loop_ends():
    X, y = make_data(4)
    recorder = Recorder()
    est = SpectralRegressor(dim=4, max_iter=2, **CPU).set_callbacks(recorder)
    for _ in est.fit_iter(X, y):
        assert "teardown" not in recorder.events
    assert recorder.events[-1] == "teardown"


def test_scoring_monitor_scores_every_epoch():
    X, y = make_data(5)
    monitor = callback.ScoringMonitor(scoring="neg_mean_squared_error")
    est = SpectralRegressor(dim=4, max_iter=4, **CPU).set_callbacks(monitor).fit(X, y)
    rows = [row for row in monitor.get_logs().data if row["task_name"] == "epoch"]
    assert len(rows) == 4
    np.testing.assert_allclose(rows[-1]["neg_mean_squared_error"], -np.mean((est.predict(X) - y) ** 2), rtol=1e-10)


def test_progress_bar_in_a_fit_and_inside_grid_search():
    pytest.importorskip("rich")
    X, y = make_data(6, n=120)
    SpectralRegressor(dim=3, max_iter=3, **CPU).set_callbacks(callback.ProgressBar()).fit(X, y)
    grid = GridSearchCV(SpectralRegressor(dim=3, max_iter=2, **CPU), {"dim": [2, 3]}, cv=2)
    grid.set_callbacks(callback.ProgressBar(max_propagation_depth=None)).fit(X, y)
    assert grid.best_estimator_.n_iter_ == 2


# ---- nothing silently wrong -------------------------------------------------------------------
def test_a_diverged_fit_warns_and_a_good_fit_does_not():
    X, y = make_data(7)
    with pytest.warns(ConvergenceWarning, match="(diverged|did not converge).*[Ll]ower learning_rate_init"):
        SpectralRegressor(dim=6, learning_rate_init=1e3, max_iter=20, **CPU).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="diverged: the training log_loss rose"):
        SpectralClassifier(dim=6, learning_rate_init=1e3, max_iter=20, **CPU).fit(X, y > np.median(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        SpectralRegressor(dim=4, max_iter=20, learning_rate_init=0.02, **CPU).fit(X, y)


@pytest.mark.parametrize("where", ["X", "y"])
def test_values_too_large_to_standardise_fail_at_fit(where):
    X, y = make_data(8, n=50)
    if where == "X":
        X[:, 1] = X[:, 1] * 1e298
        match = "feature 1 has values too large"
    else:
        y = y * 1e299
        match = "target y has values too large"
    with pytest.raises(ValueError, match=match):
        SpectralRegressor(max_iter=1, **CPU).fit(X, y)


def test_batch_size_is_resolved_on_the_training_rows_after_the_split(monkeypatch):
    seen = []
    original = _estimator.Trainer

    def spy(model, loss, options, *args, **kwargs):
        seen.append(options.batch_size)
        return original(model, loss, options, *args, **kwargs)

    monkeypatch.setattr(_estimator, "Trainer", spy)
    X, y = make_data(9, n=190)
    SpectralRegressor(dim=3, max_iter=2, early_stopping=True, validation_fraction=0.2, **CPU).fit(X, y)
    assert seen == [152]  # "auto" = min(200, rows left for training)


# ---- pickling --------------------------------------------------------------------------------
class _NoTorchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "torch":
            raise AssertionError(f"the pickle refers to {module}.{name}")
        return super().find_class(module, name)


@pytest.mark.parametrize("Estimator,target", [(SpectralRegressor, "y"), (SpectralClassifier, "labels")])
def test_pickle_holds_numpy_state_only(Estimator, target):
    import io

    X, y = make_data(10)
    labels = np.digitize(y, np.quantile(y, [0.3, 0.6]))
    est = Estimator(dim=4, max_iter=3, **CPU).fit(X, y if target == "y" else labels, eval_set=[(X, y if target == "y" else labels)])
    est.predict(X)  # builds the cached torch module, which must not travel
    blob = pickle.dumps(est)
    loaded = _NoTorchUnpickler(io.BytesIO(blob)).load()
    assert "_module" not in loaded.__dict__ and "_training_state" not in loaded.__dict__
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    c = clone(est)
    assert not hasattr(c, "mu_") and c.get_params() == est.get_params()


def test_a_model_fitted_with_a_backend_missing_here_predicts_with_another(monkeypatch):
    import dataclasses

    from skspectral.eig import REGISTRY, _api

    X, y = make_data(11)
    est = SpectralRegressor(dim=4, max_iter=2, backend="numba" if REGISTRY["numba"].is_available() else "torch", **CPU)
    expected = est.fit(X, y).predict(X)
    loaded = pickle.loads(pickle.dumps(est))
    missing = dataclasses.replace(REGISTRY[est.backend_], is_available=lambda: False)
    monkeypatch.setitem(_api.REGISTRY, est.backend_, missing)
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=1e-10, atol=1e-10)
