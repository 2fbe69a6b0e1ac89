"""The displays: training curves like with like, sensitivities by feature name."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from skspectral import SpectralClassifier, SpectralRegressor  # noqa: E402
from skspectral.plotting import SensitivityDisplay, TrainingCurveDisplay  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3)) * [1.0, 20.0, 0.1]
    y = 3 * np.tanh(X[:, 0]) + 0.05 * X[:, 1] - 10 * X[:, 2] + rng.normal(scale=0.1, size=200)
    est = SpectralRegressor(dim=5, max_iter=15, learning_rate_init=0.02, random_state=0, device="cpu")
    est.fit(X[:150], y[:150], eval_set=[(X[150:], y[150:]), (X[:150], y[:150])])
    return est, X, y


def test_training_curve_display_draws_one_unit_per_panel(fitted):
    est, _, _ = fitted
    disp = TrainingCurveDisplay.from_estimator(est)
    assert len(disp.ax_) == 2
    # RMSE in y's units for training and both eval sets; never the standardised objective beside them
    assert set(disp.loss_lines_) == {"train_rmse", "eval_0_rmse", "eval_1_rmse"}
    np.testing.assert_allclose(disp.loss_lines_["train_rmse"].get_ydata(), [r["train_rmse"] for r in est.history_])
    assert "rmse" in disp.ax_[0].get_title()
    assert set(disp.sensitivity_lines_) == {"x0", "x1", "x2"}
    np.testing.assert_allclose(disp.sensitivity_lines_["x1"].get_ydata(), [r["sensitivities"][1] for r in est.history_])
    live = TrainingCurveDisplay([], ["a", "b", "c"])
    for record in est.history_[:3]:
        live.update(record)
    np.testing.assert_array_equal(live.loss_lines_["train_rmse"].get_xdata(), [1, 2, 3])


def test_classifier_curves_are_log_loss():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0).astype(int)
    est = SpectralClassifier(dim=3, max_iter=4, random_state=0, device="cpu").fit(X, y, eval_set=[(X, y)])
    disp = TrainingCurveDisplay.from_estimator(est)
    assert set(disp.loss_lines_) == {"train_log_loss", "eval_0_log_loss"}
    np.testing.assert_allclose(disp.loss_lines_["eval_0_log_loss"].get_ydata(),
                               [r["eval_0_log_loss"] for r in est.history_])
    assert "log_loss" in disp.ax_[0].get_title()


def test_sensitivity_bar_chart_uses_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(3)
    X = rng.normal(size=(100, 3))
    y = X @ [1.0, -2.0, 0.5]
    est = SpectralRegressor(dim=4, max_iter=5, random_state=0, device="cpu").fit(
        pd.DataFrame(X, columns=["age", "income", "rate"]), y)
    disp = SensitivityDisplay.from_estimator(est, kind="sensitivity")
    labels = [t.get_text() for t in disp.ax_.get_yticklabels()]
    assert sorted(labels) == ["age", "income", "rate"]
    widths = sorted(b.get_width() for b in disp.bars_)
    np.testing.assert_allclose(widths, np.sort(est.feature_sensitivities_))
    with pytest.raises(ValueError, match="kind"):
        SensitivityDisplay.from_estimator(est, kind="gain")
