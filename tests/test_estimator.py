"""What both estimators share (skspectral/_estimator.py): history, fit_iter,
scikit-learn callbacks, convergence warnings, errors at fit, pickling."""

import pickle
import os
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import GridSearchCV

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral import _estimator

from .conftest import SERIES, allow_look_ahead, make_data

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
    params = dict(dim=4, batch_size=120, shuffle=False, learning_rate_schedule="constant", tol=0, early_stopping=False,
                  **SERIES, **CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        two = SpectralRegressor(max_iter=2, **params).fit(X, y)
        one = SpectralRegressor(max_iter=1, **params).fit(X, y)
    # one full-batch step per epoch: epoch 2's running mean is the loss of the model after epoch 1
    rmse_after_one = np.sqrt(np.mean((one.predict(X) - y) ** 2))
    # (to float32 rounding: the epoch's loss is summed in the training dtype)
    np.testing.assert_allclose(two.history_[1]["train_rmse"], rmse_after_one, rtol=1e-5)
    np.testing.assert_allclose(two.history_[1]["train_loss"], (rmse_after_one / two.y_scale_) ** 2, rtol=1e-5)
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


def test_inside_fit_iter_the_estimator_predicts_as_of_the_epoch_yielded():
    """A loop's body can predict and score (it raised NotFittedError): the epoch's own model, so without
    early stopping the last epoch's predictions are the fitted estimator's; a loop left with ``break`` over
    a generator still held leaves it fitted as of that epoch until the generator is closed."""
    X, y = make_data(1)
    est = SpectralRegressor(dim=4, max_iter=6, early_stopping=False, **CPU)
    predictions = []
    for record in est.fit_iter(X, y):
        assert est.n_iter_ == record["epoch"] and len(est.history_) == record["epoch"]
        predictions.append(est.predict(X))
        assert np.isfinite(est.score(X, y)) and est.feature_sensitivities_.shape == (X.shape[1],)
    assert all(not np.array_equal(a, b) for a, b in zip(predictions, predictions[1:]))  # each epoch's model
    np.testing.assert_array_equal(predictions[-1], est.predict(X))
    np.testing.assert_array_equal(est.predict(X), SpectralRegressor(dim=4, max_iter=6, early_stopping=False,
                                                                     **CPU).fit(X, y).predict(X))

    held = SpectralRegressor(dim=4, max_iter=30, early_stopping=True, **CPU)
    records = held.fit_iter(X, y)
    for record in records:
        if record["epoch"] == 3:
            break
    at_three = held.predict(X)  # fitted as of epoch 3: its last parameters (the generator is still open)
    assert held.n_iter_ == 3
    records.close()  # the fit ends, keeping early stopping's model: the best epoch's averaged parameters
    assert held.n_iter_ == 3 and held.best_validation_score_ == max(held.validation_scores_)
    assert not np.array_equal(at_three, held.predict(X))

    levels = SpectralRegressor(dim=4, max_iter=3, loss="quantile", quantile=[0.1, 0.9], **CPU)
    for _ in levels.fit_iter(X, y):
        assert levels.predict(X).shape == (len(y), 2)
    classifier = SpectralClassifier(dim=3, max_iter=3, **CPU)
    for _ in classifier.fit_iter(X, y > np.median(y)):
        np.testing.assert_allclose(classifier.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)


def test_a_fit_iter_loops_body_runs_on_the_callers_threads_and_loops_interleaved_leave_them(monkeypatch):
    """A CPU fit's code runs on one thread (its steps set their own count, and its kernels Numba's to follow
    torch's) only while the fit runs, entered around each resumption of its generator: a ``with`` held over
    the yields ran a loop's body -- the caller's own work, predict there included -- on one thread, and two
    loops stepped in turn, the first closed first, left the caller's thread on one thread for good, the
    second fit's steps tuned from it; and every fit left Numba's count at its last kernel's (one thread), not
    following torch's two: the caller's own Numba code after it ran on one thread."""
    numba = pytest.importorskip("numba")
    X, y = make_data(1)
    params = dict(dim=4, max_iter=4, early_stopping=False, **CPU)
    tuned_from = []
    step_threads = _estimator.step_threads
    monkeypatch.setattr(_estimator, "step_threads",
                        lambda on_cpu: (lambda threads: (tuned_from.append(threads.count), threads)[1])(
                            step_threads(on_cpu)))
    found, found_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(2)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    callers = (2, numba.get_num_threads())
    try:
        alone = SpectralRegressor(**dict(params, random_state=1)).fit(X, y).predict(X)
        assert (torch.get_num_threads(), numba.get_num_threads()) == callers
        first, second = SpectralRegressor(**params), SpectralRegressor(**dict(params, random_state=1))
        loops = [first.fit_iter(X, y), second.fit_iter(X, y)]
        bodies = []
        for _ in range(2):
            for loop in loops:
                next(loop)
                bodies.append((torch.get_num_threads(), numba.get_num_threads()))
                first.predict(X)  # the caller's work in a loop's body
        loops[0].close()
        bodies.append((torch.get_num_threads(), numba.get_num_threads()))
        for _ in loops[1]:
            bodies.append((torch.get_num_threads(), numba.get_num_threads()))
        assert bodies == [callers] * 7 and (torch.get_num_threads(), numba.get_num_threads()) == callers
    finally:
        torch.set_num_threads(found)
        numba.set_num_threads(found_numba)
    assert tuned_from == [2, 2, 2]
    assert first.n_iter_ == 2 and second.n_iter_ == 4
    np.testing.assert_array_equal(second.predict(X), alone)  # interleaved, the fit one alone makes


def test_sample_weights_of_any_float64_scale_fit_as_weights_near_one():
    """Weights reach the steps as float32: 1e-300 underflowed to 0 and 1e300 overflowed to inf ("the
    training loss is nan at epoch 1"). A power of two now brings their mean near 1 first: a power-of-two
    multiple of the weights fits the same to the bit (every use of them is a weighted mean; alpha's penalty
    keeps the user's total weight), any other multiple to float32's rounding."""
    X, y = make_data(3, n=300)
    weight = np.random.default_rng(3).random(300) + 0.5
    fit = lambda est, w: est.fit(X, y, sample_weight=w).predict(X)  # noqa: E731
    reference = fit(SpectralRegressor(dim=4, max_iter=6, **CPU), weight)
    for factor in (2.0 ** -70, 2.0 ** 90):
        np.testing.assert_array_equal(fit(SpectralRegressor(dim=4, max_iter=6, **CPU), weight * factor), reference)
    for factor in (1e-300, 1e-40, 1e300):
        np.testing.assert_allclose(fit(SpectralRegressor(dim=4, max_iter=6, **CPU), weight * factor), reference,
                                   rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    labels = y > np.median(y)
    classifier = SpectralClassifier(dim=4, max_iter=6, alpha=0.0, **CPU)
    np.testing.assert_array_equal(clone(classifier).fit(X, labels, sample_weight=weight * 2.0 ** 100).predict_proba(X),
                                  clone(classifier).fit(X, labels, sample_weight=weight).predict_proba(X))


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



def test_fit_iter_with_a_callbacks_fitted_copy_builds_an_epochs_fitted_attributes_once(monkeypatch):
    """An epoch's fitted attributes (the matrices copied to numpy, the state's lists) serve both the callback's
    fitted copy and fit_iter's consumer: built once an epoch (twice before), and both read the same epoch."""
    X, y = make_data(4)
    recorder = Recorder()
    est = SpectralRegressor(dim=4, max_iter=3, **CPU).set_callbacks(recorder)
    built = []
    original = SpectralRegressor._fitted_attributes

    def counting(self, *args, **kwargs):
        built.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SpectralRegressor, "_fitted_attributes", counting)
    for epoch, _ in enumerate(est.fit_iter(X, y), start=1):
        assert len(built) == epoch and est.n_iter_ == epoch
        np.testing.assert_array_equal(recorder.predictions[-1], est.predict(X[:5]))
    assert len(built) == 4  # three epochs, and the fitted state when the loop ends

class EpochCounter:
    """Counts the epochs' ends, reading nothing of the model (as a progress bar); asks to stop after
    ``stop_after`` epochs."""

    def __init__(self, stop_after=None):
        self.stop_after, self.ended = stop_after, 0

    def setup(self, estimator, context):
        pass

    def teardown(self, estimator, context):
        pass

    def on_fit_task_begin(self, estimator, context):
        pass

    def on_fit_task_end(self, estimator, context):
        if context.task_name != "epoch":
            return False
        self.ended += 1
        return self.stop_after is not None and self.ended >= self.stop_after


class PropagatedRecorder(Recorder):
    """A Recorder a meta-estimator passes on to its fits (scikit-learn's auto-propagated callbacks)."""

    max_propagation_depth = None


def test_a_fit_queues_its_next_epoch_ahead_only_where_nothing_reads_the_model_between_epochs(monkeypatch):
    """The trainer may queue each next epoch before it reads this one's record (on CUDA: the host's turn
    overlaps the GPU's work) only where no callback (one asking for the fitted copy) and no fit_iter consumer
    reads the model in between; a callback that only counts epochs (a progress bar) lets it, and its stop
    still ends the fit at its epoch."""
    asked = []
    allow_look_ahead(monkeypatch, True, asked)  # (records what each fit asks for, and lets it)
    X, y = make_data(6)
    params = dict(dim=3, max_iter=3, **CPU)
    SpectralRegressor(**params).fit(X, y)
    assert asked and all(asked)  # the fit's epochs, and its refit's where it refits
    asked.clear()
    SpectralRegressor(**params).set_callbacks(Recorder()).fit(X, y)  # it reads each epoch's fitted copy
    assert asked[0] is False
    asked.clear()
    counter = EpochCounter(stop_after=2)  # a progress bar's kind: it counts epochs, reads no model
    est = SpectralRegressor(**{**params, "max_iter": 5}).set_callbacks(counter).fit(X, y)
    assert asked[0] is True and counter.ended == 2 and est.n_iter_ == 2
    asked.clear()
    # callbacks a search propagates to its fits: one that reads each epoch's fitted copy turns it off there
    search = GridSearchCV(SpectralRegressor(**params), {"dim": [3]}, cv=2)
    search.set_callbacks(PropagatedRecorder()).fit(X, y)
    assert asked == [False, False, False]
    asked.clear()
    for _ in SpectralRegressor(**params).fit_iter(X, y):
        pass
    assert asked[0] is False


def test_scoring_monitor_scores_every_epoch():
    X, y = make_data(5)
    monitor = callback.ScoringMonitor(scoring="neg_mean_squared_error")
    est = SpectralRegressor(dim=4, max_iter=4, **CPU).set_callbacks(monitor).fit(X, y)
    rows = [row for row in monitor.get_logs().data if row["task_name"] == "epoch"]
    assert len(rows) == 4
    np.testing.assert_allclose(rows[-1]["neg_mean_squared_error"], -np.mean((est.predict(X) - y) ** 2), rtol=1e-10)


def test_callbacks_score_fitted_copies_on_the_callers_dataframe():
    X, y = mixed_frame(4, n=200)
    monitor = callback.ScoringMonitor(scoring="r2")
    est = SpectralRegressor(dim=4, max_iter=3, early_stopping=False, **CPU).set_callbacks(monitor).fit(X, y)
    rows = [row for row in monitor.get_logs().data if row["task_name"] == "epoch"]
    assert len(rows) == 3
    np.testing.assert_allclose(rows[-1]["r2"], est.score(X, y), rtol=1e-10)


def test_progress_bar_in_a_fit_and_inside_grid_search(monkeypatch):
    """The bar hears of every epoch of a fit, and of the fits inside a search: one begin and one
    end per epoch task, under the fit's task."""
    pytest.importorskip("rich")
    from sklearn.callback import _progressbar

    messages = []
    send = _progressbar.send
    monkeypatch.setattr(_progressbar, "send", lambda handle, message: (messages.append(dict(message)), send(handle, message)))
    X, y = make_data(6, n=120)
    SpectralRegressor(dim=3, max_iter=3, **CPU).set_callbacks(callback.ProgressBar()).fit(X, y)
    begun = [m for m in messages if m.get("event") == "begin"]
    assert [m["task_name"] for m in begun] == ["fit"] and begun[0]["max_subtasks"] == 3
    assert sum(m.get("event") == "end" for m in messages) == 4  # three epochs and the fit
    messages.clear()
    grid = GridSearchCV(SpectralRegressor(dim=3, max_iter=2, **CPU), {"dim": [2, 3]}, cv=2)
    grid.set_callbacks(callback.ProgressBar(max_propagation_depth=None)).fit(X, y)
    spectral_fits = [m for m in messages if m.get("event") == "begin" and m["estimator_name"] == "SpectralRegressor"]
    assert len(spectral_fits) == 5 and all(m["max_subtasks"] == 2 for m in spectral_fits)  # 2 x 2 fits, the refit
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
    SpectralRegressor(dim=3, max_iter=2, early_stopping=True, validation_fraction=0.2, refit=False, **CPU).fit(X, y)
    assert seen == [152]  # "auto" = min(200, rows left for training)


def test_auto_batches_grow_on_tall_data_with_the_step_size(monkeypatch):
    """At most _AUTO_STEPS steps an epoch: the batch grows with the rows, Adam's step size with
    the square root of the batch; an explicit batch_size keeps learning_rate_init as it is."""
    seen = []
    original = _estimator.Trainer

    def spy(model, loss, options, *args, **kwargs):
        seen.append((options.batch_size, options.learning_rate_init))
        return original(model, loss, options, *args, **kwargs)

    monkeypatch.setattr(_estimator, "Trainer", spy)
    monkeypatch.setattr(_estimator, "_AUTO_STEPS", 4)  # 3200 training rows: 800 a step
    X, y = make_data(9, n=3200)
    SpectralRegressor(dim=3, max_iter=1, early_stopping=False, learning_rate_init=0.01, **CPU).fit(X, y)
    SpectralRegressor(dim=3, max_iter=1, early_stopping=False, learning_rate_init=0.01, batch_size=800,
                      **CPU).fit(X, y)
    assert seen[0][0] == 800 and np.isclose(seen[0][1], 0.01 * 2.0)  # sqrt(800 / 200)
    assert seen[1] == (800, 0.01)
    est = SpectralRegressor(batch_size="auto")
    assert est._batch_size(150) == 150 and est._batch_size(3200) == 800 and est._step_size(150) == 0.002


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


@pytest.mark.parametrize("Estimator", [SpectralRegressor, SpectralClassifier])
def test_predicting_with_an_unpickled_model_takes_no_random_numbers(Estimator):
    """Rebuilding the torch module of a loaded model (its fitted state goes in next) draws nothing: torch's global
    generator is where it was, and the predictions are the fitted model's."""
    X, y = make_data(12, n=300)
    target = y if Estimator is SpectralRegressor else (y > np.median(y)).astype(int)
    est = Estimator(dim=4, max_iter=2, n_estimators=3, shared_members=0.5, **CPU).fit(X, target)
    output = "predict" if Estimator is SpectralRegressor else "predict_proba"
    expected = getattr(est, output)(X)
    loaded = pickle.loads(pickle.dumps(est))
    torch.manual_seed(7)
    state = torch.get_rng_state()
    np.testing.assert_array_equal(getattr(loaded, output)(X), expected)
    assert torch.equal(torch.get_rng_state(), state)


def test_refits_and_continued_fits_draw_no_model_they_replace(monkeypatch):
    """A refit and a continued fit (partial_fit, warm_start) load a fitted state into the model they build: built
    without drawing it, they fit the same models to the bit as when the overwritten draw was made."""
    X, y = make_data(25, n=600)
    params = dict(dim=4, max_iter=5, early_stopping=True, refit=True, n_estimators=2, shared_members=0.5, **CPU)

    def fits():
        refitted = SpectralRegressor(**params).fit(X, y)
        continued = SpectralRegressor(**{**params, "early_stopping": False}).partial_fit(X, y).partial_fit(X, y)
        return refitted.predict(X), refitted.refit_epochs_, continued.predict(X)

    built = []
    original = SpectralRegressor._initialize_model

    def recorded(self, *args, draw=True, **kwargs):
        built.append(draw)
        return original(self, *args, draw=draw, **kwargs)

    monkeypatch.setattr(SpectralRegressor, "_initialize_model", recorded)
    without_draws = fits()
    assert built == [True, False, True, False]  # the fit, its refit, partial_fit's first call, its second
    monkeypatch.setattr(SpectralRegressor, "_initialize_model",
                        lambda self, *args, draw=True, **kwargs: original(self, *args, draw=True, **kwargs))
    with_draws = fits()
    assert without_draws[1] == with_draws[1] > 0
    for got, expected in zip(without_draws[::2], with_draws[::2]):
        np.testing.assert_array_equal(got, expected)


def test_a_model_fitted_with_a_backend_missing_here_predicts_with_another(monkeypatch):
    import dataclasses

    from skspectral.eig import REGISTRY, _api

    X, y = make_data(11)
    est = SpectralRegressor(dim=4, max_iter=2, backend="numba" if REGISTRY["numba"].is_available() else "torch", **CPU)
    expected = est.fit(X, y).predict(X)
    loaded = pickle.loads(pickle.dumps(est))
    missing = dataclasses.replace(REGISTRY[est.backend_], is_available=lambda: False)
    monkeypatch.setitem(_api.REGISTRY, est.backend_, missing)
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())  # float32


# ---- mixed-type input: categorical levels, missing values, encodings, ensembles -------------------
def mixed_frame(seed=0, n=400):
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(seed)
    size = rng.normal(size=n) * 5 + 20
    size[rng.rand(n) < 0.1] = np.nan
    colour = rng.choice(["red", "green", "blue", "violet"], size=n, p=[0.46, 0.3, 0.235, 0.005])
    city = pd.Categorical(rng.choice(["paris", "rome", None], size=n, p=[0.5, 0.4, 0.1]))
    X = pd.DataFrame({"size": size, "colour": colour, "city": city, "empty": np.full(n, np.nan),
                      "age": rng.uniform(0, 80, size=n)})
    effect = {"red": 1.0, "green": -1.0, "blue": 0.5, "violet": 3.0}
    y = (np.nan_to_num(size - 20, nan=4.0) / 5 + np.array([effect[c] for c in colour])
         + np.where(X["city"] == "paris", 1.0, 0.0) + np.sin(X["age"] / 10) + 0.1 * rng.normal(size=n))
    return X, y


@pytest.mark.parametrize("Estimator", [SpectralRegressor, SpectralClassifier])
def test_dataframes_with_levels_and_missing_values(Estimator):
    X, y = mixed_frame()
    target = y if Estimator is SpectralRegressor else np.where(y > np.median(y), "high", "low")
    est = Estimator(dim=5, max_iter=30, learning_rate_init=0.02, feature_encoding="piecewise_linear", n_bins=8, **CPU)
    with pytest.warns(UserWarning, match=r"column\(s\) \['empty'\] hold a single value \(or none\)"):
        est.fit(X, target)
    np.testing.assert_array_equal(est.feature_names_in_, X.columns)
    np.testing.assert_array_equal(est.is_categorical_, [False, True, True, False, False])
    spec = est.encoding_
    # the all-missing column carries nothing: no bins, no missing-value column
    assert spec.categorical == [1, 2] and spec.missing == [0] and spec.numeric == [0, 4]
    assert est.ignored_features_.tolist() == [3] and est.feature_importances_[3] == 0
    # colour: red, green, blue + "other" (violet is rare); city: paris, rome, "other", "missing"
    assert spec.n_levels == [4, 4] and spec.has_missing_level == [False, True]
    assert all(edges is not None for edges in spec.edges)
    assert est.score(X, target) > (0.8 if Estimator is SpectralRegressor else 0.75)
    new = X.iloc[:6].copy()
    new["colour"] = ["never seen", None, "red", "violet", "blue", "green"]
    new["city"] = pd_categorical(["rome", None, "london", "paris", "rome", None])
    new.loc[new.index[2], "size"] = np.nan
    expected = est.predict(new)
    assert len(expected) == 6
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(new), expected)
    # an unseen level and a rare one share the "other" matrix
    first, rare = new.iloc[[0]].copy(), new.iloc[[0]].copy()
    rare["colour"] = "violet"
    np.testing.assert_array_equal(loaded.predict(first) if Estimator is SpectralRegressor
                                  else loaded.predict_proba(first),
                                  loaded.predict(rare) if Estimator is SpectralRegressor else loaded.predict_proba(rare))


@pytest.mark.parametrize("Estimator", [SpectralRegressor, SpectralClassifier])
def test_min_level_count_pools_rarer_levels_into_other(Estimator):
    """A min_level_count just above a level's row count sends that level to the "other" matrix
    it shares with rare (violet: 2 rows, under the default 10) and unseen levels."""
    X, y = mixed_frame()
    target = y if Estimator is SpectralRegressor else np.where(y > np.median(y), "high", "low")
    counts = X["colour"].value_counts()
    frequent = counts[counts >= 10]
    threshold = int(frequent.min()) + 1  # the least frequent of the frequent levels falls under it
    assert (frequent >= threshold).sum() == len(frequent) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        default = Estimator(dim=4, max_iter=2, **CPU).fit(X, target)
        pooled = Estimator(dim=4, max_iter=2, min_level_count=threshold, **CPU).fit(X, target)
    colour = list(X.columns).index("colour")
    n_levels = dict(zip(default.encoding_.categorical, default.encoding_.n_levels))[colour]
    assert dict(zip(pooled.encoding_.categorical, pooled.encoding_.n_levels))[colour] == n_levels - 1
    rarest, unseen = X.iloc[[0]].copy(), X.iloc[[0]].copy()
    rarest["colour"], unseen["colour"] = frequent.idxmin(), "never seen"
    output = pooled.predict if Estimator is SpectralRegressor else pooled.predict_proba
    np.testing.assert_array_equal(output(rarest), output(unseen))
    with pytest.raises(ValueError, match="min_level_count"):
        Estimator(min_level_count=0).fit(X, target)


def test_auto_bins_on_the_cpu_follow_the_rows():
    """n_bins="auto" takes the mapper's row rule: 32 bins from 10,000 rows, on the CPU as on CUDA."""
    from skspectral._columns.mapper import bins_for

    X = np.random.RandomState(0).normal(size=(10_000, 2))
    assert bins_for("auto", 9_999) == 16 and bins_for(24, 10_000) == 24
    assert bins_for("auto", 10_000) == 32 and bins_for("auto", 100_000) == 32
    fitted = SpectralRegressor(dim=3, max_iter=1, n_estimators=1, early_stopping=False, **CPU).fit(X, X[:, 0])
    assert [len(edges) - 1 for edges in fitted.encoding_.edges] == [32, 32]
    fewer = SpectralRegressor(dim=3, max_iter=1, n_estimators=1, early_stopping=False, **CPU)
    fewer.fit(X[:9_999], X[:9_999, 0])
    assert [len(edges) - 1 for edges in fewer.encoding_.edges] == [16, 16]


@pytest.mark.cuda
@pytest.mark.parametrize("n_rows, bins", [(9_000, 16), (10_000, 32)])
def test_auto_bins_on_cuda_follow_the_rows(n_rows, bins):
    X = np.random.RandomState(0).normal(size=(n_rows, 2))
    fitted = SpectralRegressor(dim=3, max_iter=1, n_estimators=1, device="cuda", random_state=0).fit(X, X[:, 0])
    assert [len(edges) - 1 for edges in fitted.encoding_.edges] == [bins, bins]


def pd_categorical(values):
    import pandas as pd

    return pd.Categorical(values)


def test_categorical_columns_by_index_on_arrays():
    rng = np.random.RandomState(1)
    X = np.column_stack([rng.randint(0, 3, size=300), rng.normal(size=300)])
    y = np.array([2.0, -1.0, 0.5])[X[:, 0].astype(int)] + X[:, 1]
    est = SpectralRegressor(dim=4, max_iter=30, learning_rate_init=0.02, categorical_features=[0], **CPU).fit(X, y)
    assert est.encoding_.n_levels == [4] and est.score(X, y) > 0.9
    with pytest.raises(ValueError, match="indices must lie"):
        SpectralRegressor(categorical_features=[5], max_iter=1).fit(X, y)


def test_an_ensemble_predicts_its_members_mean():
    import torch

    X, y = make_data(12)
    est = SpectralRegressor(dim=4, max_iter=5, n_estimators=3, feature_encoding="linear", **CPU).fit(X, y)
    assert est.feature_matrices_.shape == (3, 3, 4, 4) and est.mu_.shape == (3, 4)
    members = est._module(torch.as_tensor(est._model_input(X))).detach().numpy()
    assert members.shape == (len(X), 3) and not np.allclose(members[:, 0], members[:, 1])
    np.testing.assert_allclose(est.predict(X), est.y_mean_ + est.y_scale_ * members.mean(axis=1), rtol=1e-6)  # float32
    labels = np.digitize(y, np.quantile(y, [0.3, 0.6]))
    clf = SpectralClassifier(dim=4, max_iter=5, n_estimators=3, **CPU).fit(X, labels)
    logits = clf._module(torch.as_tensor(clf._model_input(X))).detach()  # (rows, members, classes)
    np.testing.assert_allclose(clf.predict_proba(X), logits.softmax(-1).mean(1).numpy(), rtol=1e-6)
    binary = SpectralClassifier(dim=4, max_iter=5, n_estimators=3, **CPU).fit(X, labels > 0)
    logits = binary._module(torch.as_tensor(binary._model_input(X))).detach()
    np.testing.assert_allclose(binary.predict_proba(X)[:, 1], logits.sigmoid().mean(1).numpy(), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-2, 1.0, 30.0]))
def test_no_change_exceeds_the_certified_bound_with_encodings_levels_and_members(fitted_mixed, seed, scale):
    est, X = fitted_mixed
    rng = np.random.RandomState(seed % (2**32 - 1))
    rows = X.sample(15, random_state=rng.randint(1 << 30), replace=True).reset_index(drop=True)
    moved = rows.copy()
    delta = np.zeros((15, X.shape[1]))
    for name in ("size", "age"):
        j = list(X.columns).index(name)
        step = rng.standard_cauchy(15) * scale
        observed = rows[name].notna().to_numpy()
        step[~observed] = 0.0  # moves between observed values
        moved[name] = rows[name] + step
        delta[:, j] = step
    for name in ("colour", "city"):
        j = list(X.columns).index(name)
        change = rng.rand(15) < 0.5
        levels = np.array(["red", "green", "blue", "violet", "never seen"]) if name == "colour" else \
            np.array(["paris", "rome", "london"], dtype=object)
        new = rng.choice(levels, 15)
        values = np.array(rows[name].astype(object), dtype=object)
        values[change] = new[change]
        moved[name] = values if name == "colour" else pd_categorical(values)
        delta[:, j] = change
    change = np.abs(est.predict(moved) - est.predict(rows))
    bound = est.sensitivity_bound(delta)
    assert np.all(change <= bound * (1 + 1e-9) + 1e-9 * np.abs(est.predict(rows)).max())


@pytest.fixture(scope="module")
def fitted_mixed():
    X, y = mixed_frame(3)
    est = SpectralRegressor(dim=5, max_iter=20, learning_rate_init=0.02, feature_encoding="piecewise_linear",
                            n_bins=6, n_estimators=2, **CPU).fit(X, y)
    return est, X


# ---- what the column mapper decides, seen from the estimators ---------------------------------------
def test_columns_that_carry_nothing_contribute_nothing_and_the_fit_says_which():
    """An all-missing and a constant column get no matrix: zero sensitivity and importance, and
    whatever values they hold at predict change nothing (a random, untrained matrix had given
    them 12-25 % importance and moved predictions by ~0.4 standard deviations)."""
    pd = pytest.importorskip("pandas")
    X, y = make_data(13, n=300)
    frame = pd.DataFrame({"a": X[:, 0], "never": np.nan, "b": X[:, 1], "same": 4.0, "c": X[:, 2]})
    for Estimator, target in ((SpectralRegressor, y), (SpectralClassifier, y > np.median(y))):
        with pytest.warns(UserWarning, match=r"column\(s\) \['never', 'same'\] hold a single value"):
            est = Estimator(dim=4, max_iter=5, **CPU).fit(frame, target)
        assert est.ignored_features_.tolist() == [1, 3]
        assert est.feature_importances_[[1, 3]].tolist() == [0.0, 0.0] and est.feature_importances_.sum() > 0.99
        assert (np.atleast_2d(est.feature_sensitivities_)[:, [1, 3]] == 0).all()
        output = est.predict if Estimator is SpectralRegressor else est.predict_proba
        moved = frame.assign(never=np.linspace(-1e3, 1e3, len(frame)), same=-7.0)
        np.testing.assert_array_equal(output(moved), output(frame))
        assert est.sensitivity_bound(np.eye(5)[[1, 3]]).ravel().tolist() == [0.0, 0.0]


def test_every_column_constant_fits_a_constant():
    X, y = np.ones((50, 2)), np.arange(50.0)
    with pytest.warns(UserWarning, match=r"column\(s\) \[0, 1\]"):
        est = SpectralRegressor(dim=3, max_iter=3, **CPU).fit(X, y)
    prediction = est.predict(np.random.default_rng(0).normal(size=(4, 2)))
    assert np.ptp(prediction) == 0 and est.encoding_.n_columns == 0


def test_a_fits_warnings_point_at_the_callers_line():
    """A fit's warnings name the line that called it -- fit, a fit_iter loop, a search's fit (its fits on
    joblib's threads or in sequence) -- not this package's: a fixed stacklevel had named an internal line,
    under which Python's default filter showed one warning a process for every fit that raised it."""
    X, y = np.ones((50, 2)), np.arange(50.0)
    X[:, 1] = np.linspace(0, 1, 50)
    lines = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines.append(_line() + 1)
        SpectralRegressor(dim=3, max_iter=2, **CPU).fit(X, y)
        lines.append(_line() + 1)
        for _ in SpectralRegressor(dim=3, max_iter=2, **CPU).fit_iter(X, y):
            pass
        lines.append(_line() + 1)
        GridSearchCV(SpectralRegressor(dim=3, max_iter=2, **CPU), {"dim": [3]}, cv=2).fit(X, y)
        lines.append(_line() + 1)
        SpectralRegressor(dim=3, max_iter=3, learning_rate_init=50.0, early_stopping=False, **CPU).fit(X, y)
    ignored = [w for w in caught if "hold a single value" in str(w.message)]
    diverged = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(ignored) == 1 + 1 + 3 + 1 and diverged  # the search: two folds' fits and its refit
    assert {w.filename for w in ignored + diverged} == {__file__}
    assert sorted({w.lineno for w in ignored}) == lines and {w.lineno for w in diverged} == {lines[-1]}


def test_a_warning_raised_while_the_package_imports_points_at_the_import_line(tmp_path, monkeypatch):
    """The environment's warnings (Numba's cache internals, CuPy without NVRTC, a failed kernel build) fire
    where the package imports or first computes: at the user's ``import`` or call, past the frames of
    CPython's import machinery (which ``warnings.warn`` does not count in a stacklevel)."""
    from skspectral import _warn

    (tmp_path / "warns_on_import.py").write_text("from skspectral._warn import warn\n"
                                                  "warn('from inside the package', RuntimeWarning)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_warn, "_SKIPPED", _warn._SKIPPED + (str(tmp_path) + os.sep,))  # as if it were ours
    monkeypatch.delitem(sys.modules, "warns_on_import", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _line() + 1
        __import__("warns_on_import")
    (warned,) = [w for w in caught if "from inside the package" in str(w.message)]
    assert (warned.filename, warned.lineno) == (__file__, line)


def _line() -> int:
    """The caller's line number."""
    return sys._getframe(1).f_lineno


def test_a_missing_value_where_fit_saw_none_predicts_as_the_training_median():
    """HistGradientBoosting sends such a row to the child that held most training rows; ours
    takes the column's training median (it had been taken as the column's minimum)."""
    X, y = make_data(14, n=301)
    for encoding in ("piecewise_linear", "linear"):
        est = SpectralRegressor(dim=4, max_iter=5, feature_encoding=encoding, **CPU).fit(X, y)
        rows = X[:6].copy()
        rows[:, 1] = np.nan
        at_median = X[:6].copy()
        at_median[:, 1] = np.median(X[:, 1])
        np.testing.assert_allclose(est.predict(rows), est.predict(at_median), rtol=1e-12)
        assert not np.allclose(est.predict(rows), est.predict(np.where(np.isnan(rows), X[:, 1].min(), rows)))
    # a column with missing values in fit keeps its own matrix for them
    X_missing = X.copy()
    X_missing[::5, 1] = np.nan
    est = SpectralRegressor(dim=4, max_iter=5, **CPU).fit(X_missing, y)
    assert est.encoding_.missing == [1]
    assert not np.allclose(est.predict(rows), est.predict(at_median))


def test_a_categorical_column_arriving_as_another_dtype_is_an_error():
    pd = pytest.importorskip("pandas")
    X, y = mixed_frame(4)
    est = SpectralRegressor(dim=4, max_iter=3, **CPU).fit(X.drop(columns="empty"), y)
    codes = X.drop(columns="empty").copy()
    codes["city"] = codes["city"].cat.codes  # ints instead of the category's levels
    with pytest.raises(ValueError, match="Categorical column 'city' held strings levels in fit .*holds numbers"):
        est.predict(codes)
    numeric_as_text = X.drop(columns="empty").copy()
    numeric_as_text["age"] = np.where(numeric_as_text["age"] > 40, "old", "young").astype(object)
    with pytest.raises(ValueError, match="Column 'age' was numeric in fit but holds values that are not numbers"):
        est.predict(numeric_as_text)
    del pd


def test_a_frame_with_its_columns_in_another_order_gets_scikit_learns_names_error():
    """A frame whose columns come in another order than in fit is reported by its names (scikit-learn's
    message), not as a numeric column holding a categorical column's strings; eval_set's frames too."""
    pytest.importorskip("pandas")
    X, y = mixed_frame(4)
    X = X.drop(columns="empty")
    est = SpectralRegressor(dim=4, max_iter=3, **CPU).fit(X, y)
    reordered = X[["colour", "size", "city", "age"]]  # strings where numbers were
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        est.predict(reordered)
    with pytest.raises(ValueError, match="Feature names must be in the same order"):
        SpectralRegressor(dim=4, max_iter=3, **CPU).fit(X, y, eval_set=[(reordered, y)])


def test_predicts_on_several_threads_leave_the_processs_warning_filters_alone():
    """A frame's names were checked with their warnings silenced by ``warnings.catch_warnings``, which swaps the
    process's filters and is not thread-safe: predicts on eight threads (a server's) left an "ignore every
    warning" filter in force after every burst. Its names are compared first now; a frame with the same
    columns as fit (a categorical one included) meets no second check, and one without names still warns
    once."""
    pd = pytest.importorskip("pandas")
    from concurrent.futures import ThreadPoolExecutor

    X, y = mixed_frame(5)
    X = X.drop(columns="empty")
    est = SpectralRegressor(dim=4, max_iter=2, **CPU).fit(X, y)
    expected = est.predict(X.iloc[:40])
    filters = list(warnings.filters)
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            predictions = list(pool.map(lambda _: est.predict(X.iloc[:40]), range(64)))
        assert list(warnings.filters) == filters
    assert all(np.array_equal(p, expected) for p in predictions)
    numeric = SpectralRegressor(dim=4, max_iter=2, **CPU).fit(X[["age", "size"]], y)
    with pytest.warns(UserWarning, match="does not have valid feature names") as caught:
        numeric.predict(X[["age", "size"]].to_numpy())
    assert len([w for w in caught if "feature names" in str(w.message)]) == 1
    del pd


def test_unreadable_input_is_a_clear_error_at_fit():
    pd = pytest.importorskip("pandas")
    X, y = make_data(15, n=60)
    dated = pd.DataFrame({"a": X[:, 0], "when": pd.date_range("2020-01-01", periods=60)})
    with pytest.raises(ValueError, match="Column 'when' has dtype datetime64.*Turn it into numbers"):
        SpectralRegressor(max_iter=1, **CPU).fit(dated, y)
    strings = np.column_stack([X[:, 0], np.where(X[:, 1] > 100, "high", "low")]).astype(object)
    with pytest.raises(ValueError, match=r"Column 1 of X holds values that are not numbers.*categorical_features=\[1\]"):
        SpectralRegressor(max_iter=1, **CPU).fit(strings, y)
    assert SpectralRegressor(max_iter=1, categorical_features=[1], **CPU).fit(strings, y).is_categorical_[1]


@pytest.mark.parametrize("estimator", [SpectralRegressor, SpectralClassifier])
def test_auto_members_are_fewer_from_the_row_threshold(monkeypatch, estimator):
    monkeypatch.setattr(_estimator, "_AUTO_MEMBERS_ROWS", 100)
    X, y = make_data(17, n=140)
    target = y if estimator is SpectralRegressor else y > np.median(y)
    small = estimator(dim=4, max_iter=1, **CPU).fit(X[:99], target[:99])
    tall = estimator(dim=4, max_iter=1, **CPU).fit(X, target)
    assert (small.n_estimators_, tall.n_estimators_) == _estimator._AUTO_MEMBERS == (4, 2)
    assert small.mu_.shape[0] == 4 and tall.mu_.shape[0] == 2 and tall.feature_matrices_.shape[0] == 2
    assert estimator(dim=4, max_iter=1, n_estimators=5, **CPU).fit(X, target).n_estimators_ == 5
    # on a GPU a step costs about the same with either count: "auto" keeps 4 there under 100 held-out rows
    assert estimator()._members(100, torch.device("cuda")) == 4 and estimator()._members(100, torch.device("cpu")) == 2
    # on the CPU one member from the tall threshold (100,000 rows)
    rows = _estimator._AUTO_MEMBERS_TALL_ROWS
    assert estimator()._members(rows, torch.device("cpu")) == _estimator._AUTO_MEMBERS_TALL == 1
    assert estimator()._members(rows - 1, torch.device("cpu")) == 2
    tall_gpu = _estimator._AUTO_MEMBERS_GPU_TALL if estimator is SpectralRegressor else 4
    assert estimator()._members(rows, torch.device("cuda")) == tall_gpu
    # the fitted model predicts and bounds with its own members, also after a pickle round trip
    loaded = pickle.loads(pickle.dumps(tall))
    np.testing.assert_array_equal(loaded.predict(X), tall.predict(X))
    np.testing.assert_array_equal(loaded.feature_sensitivities_, tall.feature_sensitivities_)


@pytest.mark.parametrize("estimator", [SpectralRegressor, SpectralClassifier])
def test_auto_members_on_a_gpu_follow_early_stoppings_rows(estimator):
    """On a GPU eight members where early stopping scores the fit on at least _FEW_VALIDATION_ROWS rows
    and the fit has fewer than _AUTO_MEMBERS_GPU_ROWS rows, from there two for a regressor (four for a
    classifier), else four. The CPU's rule ignores the held-out rows."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    few, tall = _estimator._FEW_VALIDATION_ROWS, _estimator._AUTO_MEMBERS_GPU_ROWS
    assert (_estimator._AUTO_MEMBERS_GPU, _estimator._AUTO_MEMBERS_GPU_TALL, few, tall) == (8, 2, 100, 100_000)
    assert estimator()._members(5_000, cuda, n_validation=few) == 8
    assert estimator()._members(5_000, cuda, n_validation=few - 1) == 4  # the whole schedule runs, its best epoch kept
    assert estimator()._members(824, cuda, n_validation=82) == 4  # concrete's fit rows and held-out rows
    assert estimator()._members(tall - 1, cuda, n_validation=10_000) == 8
    tall_members = 2 if estimator is SpectralRegressor else 4
    assert estimator()._members(tall, cuda, n_validation=10_000) == tall_members
    assert estimator()._members(tall, cuda, n_validation=0) == tall_members
    levels = SpectralRegressor(loss="quantile", quantile=[0.1, 0.9])
    assert levels._members(tall, cuda, n_validation=10_000) == 2 and levels._members(5_000, cuda, 500) == 8
    assert estimator()._members(5_000, cpu, n_validation=500) == 4 and estimator()._members(20_000, cpu, 2_000) == 2
    assert estimator(n_estimators=3)._members(5_000, cuda, n_validation=500) == 3


@pytest.mark.parametrize("early_stopping", [True, False])
def test_a_fit_chooses_its_members_from_its_held_out_rows(monkeypatch, early_stopping):
    """The fit core passes _members every rank's early-stopping rows (0 without early stopping)."""
    seen = []
    members = SpectralRegressor._members

    def record(self, n_rows, device, n_validation=0):
        seen.append((n_rows, n_validation))
        return members(self, n_rows, device, n_validation)

    monkeypatch.setattr(SpectralRegressor, "_members", record)
    X, y = make_data(23, n=400)
    est = SpectralRegressor(dim=4, max_iter=1, early_stopping=early_stopping, validation_fraction=0.25, **CPU)
    est.fit(X, y)
    assert seen == [(400, 100 if early_stopping else 0)] and est.n_estimators_ == 4


@pytest.mark.cuda
def test_a_gpu_fit_takes_eight_members_where_early_stopping_holds_out_100_rows():
    X, y = make_data(29, n=1_200)
    held_out = SpectralRegressor(dim=4, max_iter=2, device="cuda", random_state=0).fit(X, y)  # 120 held out
    small = SpectralRegressor(dim=4, max_iter=2, device="cuda", random_state=0).fit(X[:800], y[:800])  # 80
    assert held_out.n_estimators_ == 8 and small.n_estimators_ == 4
    assert held_out.mu_.shape[0] == 8 and np.isfinite(held_out.predict(X)).all()
    loaded = pickle.loads(pickle.dumps(held_out))
    np.testing.assert_array_equal(loaded.predict(X), held_out.predict(X))


def test_several_quantile_levels_take_one_member_from_the_row_threshold_on_the_cpu(monkeypatch):
    """A regressor's fit of several quantile levels takes one member on the CPU from _AUTO_MEMBERS_ROWS
    (where the squared error and a single level take two), four on a GPU; an explicit count stays."""
    monkeypatch.setattr(_estimator, "_AUTO_MEMBERS_ROWS", 100)
    X, y = make_data(19, n=140)
    levels = SpectralRegressor(dim=6, max_iter=1, loss="quantile", quantile=[0.1, 0.5, 0.9], **CPU)
    assert levels.fit(X[:99], y[:99]).n_estimators_ == 4
    fitted = levels.fit(X, y)
    assert fitted.n_estimators_ == 1 and fitted.predict(X).shape == (140, 3)
    assert np.all(np.diff(fitted.predict(X), axis=1) >= 0)
    assert levels._members(100, torch.device("cuda")) == 4
    for other in (SpectralRegressor(), SpectralRegressor(loss="quantile", quantile=0.9),
                  SpectralRegressor(loss="absolute_error"), SpectralClassifier()):
        assert other._members(100, torch.device("cpu")) == 2
    assert levels.set_params(n_estimators=3)._members(100, torch.device("cpu")) == 3


def test_a_continued_fit_keeps_its_auto_members(monkeypatch):
    monkeypatch.setattr(_estimator, "_AUTO_MEMBERS_ROWS", 100)
    X, y = make_data(18, n=140)
    est = SpectralRegressor(dim=4, max_iter=1, warm_start=True, **CPU).fit(X, y)
    assert est.fit(X[:50], y[:50]).n_estimators_ == 2  # fewer rows now, the same model
    assert est.set_params(n_estimators=2).fit(X[:50], y[:50]).n_iter_ == 3  # the count it has
    est.set_params(n_estimators=4)
    with pytest.raises(ValueError, match=r"n_estimators=4 \(was 2\)"):
        est.fit(X, y)
    partial = SpectralRegressor(dim=4, **CPU).partial_fit(X[:50], y[:50])
    assert partial.partial_fit(X, y).n_estimators_ == 4


def test_a_pickle_from_before_auto_members_loads():
    X, y = make_data(19, n=60)
    est = SpectralRegressor(dim=4, max_iter=1, n_estimators=2, **CPU).fit(X, y)
    state = est.__getstate__()
    del state["n_estimators_"]  # as a fit with an int n_estimators left it before "auto"
    old = SpectralRegressor.__new__(SpectralRegressor)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.predict(X), est.predict(X))


def test_warm_start_and_partial_fit_need_the_same_model_shape():
    X, y = make_data(16, n=80)
    est = SpectralRegressor(dim=4, max_iter=2, warm_start=True, **CPU).fit(X, y)
    est.set_params(dim=6)
    with pytest.raises(ValueError, match=r"continues its fitted model .* dim=6 \(was 4\).*warm_start=False"):
        est.fit(X, y)
    est.set_params(dim=4, n_estimators=2)
    with pytest.raises(ValueError, match=r"n_estimators=2 \(was 4\)"):
        est.partial_fit(X, y)
    est.set_params(n_estimators=4, max_iter=3)  # what does not shape the model may change
    assert est.fit(X, y).n_iter_ == 5
    assert SpectralRegressor(dim=6, max_iter=1, **CPU).fit(X, y).dim_ == 6  # a fresh fit of another shape


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("Estimator", [SpectralRegressor, SpectralClassifier])
def test_continuing_an_early_stopped_fit_keeps_what_it_trains(Estimator, device):
    """partial_fit and a warm start without early stopping after an early-stopped fit: the earlier
    fit's best epoch had been restored at the end of each call, so the epochs they ran were lost
    (n_iter_ counted them, the model stayed the same)."""
    X, y = make_data(23, n=400)
    if Estimator is SpectralClassifier:
        y = (y > np.median(y)).astype(int)
    est = Estimator(dim=4, max_iter=6, early_stopping=True, device=device, random_state=0).fit(X, y)
    assert est.best_validation_score_ is not None
    before = est.predict(X) if Estimator is SpectralRegressor else est.predict_proba(X)
    est.partial_fit(X, y)
    after = est.predict(X) if Estimator is SpectralRegressor else est.predict_proba(X)
    assert est.n_iter_ == 7 and not np.allclose(before, after)
    est.set_params(warm_start=True, early_stopping=False, max_iter=2).fit(X, y)
    again = est.predict(X) if Estimator is SpectralRegressor else est.predict_proba(X)
    assert est.n_iter_ == 9 and not np.allclose(after, again)


def test_partial_fit_after_a_refit_continues_the_refit_model():
    """The refit's model, not the selecting fit's best epoch (which the resumed state still held)."""
    X, y = make_data(24, n=400)
    est = SpectralRegressor(dim=4, max_iter=6, early_stopping=True, refit=True, **CPU).fit(X, y)
    selecting = SpectralRegressor(dim=4, max_iter=6, early_stopping=True, refit=False, **CPU).fit(X, y)
    refit = est.predict(X)
    assert np.abs(refit - selecting.predict(X)).max() > 1e-2
    est.set_params(learning_rate_init=1e-9).partial_fit(X, y)  # a step too small to move it
    np.testing.assert_allclose(est.predict(X), refit, atol=1e-5 * np.abs(refit).max())
    # a warm start with early stopping whose epochs all score worse keeps the best of them, not the
    # selecting fit's best epoch (a model the refit's no longer is)
    est = SpectralRegressor(dim=4, max_iter=6, early_stopping=True, refit=True, **CPU).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the step is too large: they diverge
        est.set_params(learning_rate_init=0.5, warm_start=True, max_iter=2).fit(X, y)
    assert est.n_iter_ == 8 and np.abs(est.predict(X) - selecting.predict(X)).max() > 1e-2


def test_a_model_too_large_for_the_device_is_a_clear_error_before_allocating():
    X, y = make_data(17, n=40)
    with pytest.raises(ValueError, match=r"A model of dim=1000000 .* needs at least .* GiB on cpu .* Lower dim"):
        SpectralRegressor(dim=10**6, max_iter=1, **CPU).fit(X, y)


def test_a_cpu_only_backend_runs_on_the_cpu_when_the_device_is_auto(monkeypatch):
    """On a GPU host, device="auto" with backend="numba" (a CPU kernel) had raised: auto picked CUDA."""
    import torch

    from skspectral import _estimator

    monkeypatch.setattr(_estimator, "resolve_device", lambda device: torch.device("cuda", 0))
    est = SpectralRegressor(backend="numba", device="auto")
    est._resolve_settings()
    assert est.device_ == "cpu" and est.backend_ == "numba"
