"""Per-epoch history, eval sets, fit_iter, certified sensitivities and the displays."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from skspectral import SpectralClassifier, SpectralRegressor  # noqa: E402
from skspectral.plotting import SensitivityDisplay, TrainingCurveDisplay  # noqa: E402


def make_data(seed=0, n=200):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 20.0, 0.1] + [0.0, 100.0, 5.0]
    y = 3 * np.tanh(X[:, 0]) + 0.05 * X[:, 1] - 10 * X[:, 2] + rng.normal(scale=0.1, size=n)
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = make_data()
    est = SpectralRegressor(dim=5, max_iter=15, learning_rate_init=0.02, random_state=0, device="cpu")
    est.fit(X[:150], y[:150], eval_set=[(X[150:], y[150:]), (X[:150], y[:150])])
    return est, X, y


def test_history_records_every_epoch(fitted):
    est, X, y = fitted
    assert len(est.history_) == est.n_iter_ == len(est.loss_curve_)
    last = est.history_[-1]
    assert set(last) >= {"epoch", "train_loss", "sensitivities", "elapsed_s", "eval_0_rmse", "eval_0_r2", "eval_1_rmse"}
    assert [r["epoch"] for r in est.history_] == list(range(1, est.n_iter_ + 1))
    rmse = np.sqrt(np.mean((est.predict(X[150:]) - y[150:]) ** 2))
    np.testing.assert_allclose(last["eval_0_rmse"], rmse, rtol=1e-6)
    np.testing.assert_allclose(last["sensitivities"], est.feature_sensitivities_, rtol=1e-6)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(est.history_)
    assert len(frame) == est.n_iter_ and "eval_0_rmse" in frame


def test_fit_iter_yields_and_leaves_fitted_even_when_stopped_early():
    X, y = make_data(1)
    est = SpectralRegressor(dim=4, max_iter=30, random_state=0, device="cpu")
    seen = []
    for record in est.fit_iter(X, y, eval_set=[(X, y)]):
        seen.append(record["epoch"])
        if record["epoch"] == 4:
            break
    assert seen == [1, 2, 3, 4] and est.n_iter_ == 4
    assert est.predict(X).shape == (len(y),)
    full = SpectralRegressor(dim=4, max_iter=5, random_state=0, device="cpu")
    records = list(full.fit_iter(X, y))
    assert len(records) == full.n_iter_ == 5


def test_spectral_penalty_shrinks_sensitivities():
    X, y = make_data(2)
    params = dict(dim=4, max_iter=20, learning_rate_init=0.02, random_state=0, device="cpu")
    plain = SpectralRegressor(**params).fit(X, y)
    shrunk = SpectralRegressor(**params, spectral_penalty=0.5).fit(X, y)
    assert shrunk.feature_sensitivities_.sum() < plain.feature_sensitivities_.sum()


def test_sensitivities_in_user_units(fitted):
    est, X, y = fitted
    s = est.feature_sensitivities_
    assert s.shape == (3,) and np.all(s >= 0)
    # feature 1 is in units 20x larger than feature 0: its per-unit bound carries 1/x_scale
    norms = np.abs(np.linalg.eigvalsh(est.feature_matrices_)).max(axis=-1)
    np.testing.assert_allclose(s, norms * est.y_scale_ / est.x_scale_)
    imp = est.feature_importances_
    np.testing.assert_allclose(imp.sum(), 1.0)
    np.testing.assert_allclose(imp, norms / norms.sum())
    with pytest.raises(ValueError, match="delta must have shape"):
        est.sensitivity_bound(np.ones(4))
    with pytest.raises(ValueError, match="delta must have shape"):
        est.sensitivity_bound(1.0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0, 1e3]))
def test_no_change_exceeds_the_certified_bound(fitted, seed, scale):
    est, X, _ = fitted
    rng = np.random.RandomState(seed % (2**32 - 1))
    rows = X[rng.randint(len(X), size=20)] + rng.normal(size=(20, 3)) * X.std(0)
    delta = rng.standard_cauchy(size=(20, 3)) * X.std(0) * scale  # heavy tails: large moves too
    change = np.abs(est.predict(rows + delta) - est.predict(rows))
    bound = est.sensitivity_bound(delta)
    assert np.all(change <= bound * (1 + 1e-9) + 1e-9 * np.abs(est.predict(rows)).max())
    est_unclipped = est.set_params(clip_features=False)
    change = np.abs(est_unclipped.predict(rows + delta) - est_unclipped.predict(rows))
    est.set_params(clip_features=True)
    assert np.all(change <= bound * (1 + 1e-9) + 1e-9 * np.abs(est.predict(rows)).max())


def test_classifier_sensitivities_bound_logits():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(150, 3)) * [1, 10, 100]
    y = np.digitize(X[:, 0] + X[:, 1] / 10, [-0.5, 0.5])
    est = SpectralClassifier(dim=4, max_iter=10, random_state=0, device="cpu").fit(X, y, eval_set=[(X, y)])
    assert est.feature_sensitivities_.shape == (3, 3)
    assert {"eval_0_log_loss", "eval_0_accuracy"} <= set(est.history_[-1])
    delta = rng.normal(size=(40, 3)) * [1, 10, 100]
    change = np.abs(est.decision_function(X[:40] + delta) - est.decision_function(X[:40]))
    assert np.all(change <= est.sensitivity_bound(delta) + 1e-9)


def test_training_curve_display(fitted):
    est, _, _ = fitted
    disp = TrainingCurveDisplay.from_estimator(est)
    assert len(disp.ax_) == 2
    assert set(disp.loss_lines_) == {"train_loss", "eval_0_rmse", "eval_1_rmse"}
    np.testing.assert_allclose(disp.loss_lines_["train_loss"].get_ydata(), est.loss_curve_)
    assert set(disp.sensitivity_lines_) == {"x0", "x1", "x2"}
    np.testing.assert_allclose(disp.sensitivity_lines_["x1"].get_ydata(), [r["sensitivities"][1] for r in est.history_])
    live = TrainingCurveDisplay([], ["a", "b", "c"])
    for record in est.history_[:3]:
        live.update(record)
    np.testing.assert_array_equal(live.loss_lines_["train_loss"].get_xdata(), [1, 2, 3])


def test_sensitivity_bar_chart_uses_feature_names(fitted):
    pd = pytest.importorskip("pandas")
    X, y = make_data(3)
    est = SpectralRegressor(dim=4, max_iter=5, random_state=0, device="cpu").fit(pd.DataFrame(X, columns=["age", "income", "rate"]), y)
    disp = SensitivityDisplay.from_estimator(est, kind="sensitivity")
    labels = [t.get_text() for t in disp.ax_.get_yticklabels()]
    assert sorted(labels) == ["age", "income", "rate"]
    widths = sorted(b.get_width() for b in disp.bars_)
    np.testing.assert_allclose(widths, np.sort(est.feature_sensitivities_))
    with pytest.raises(ValueError, match="kind"):
        SensitivityDisplay.from_estimator(est, kind="gain")
