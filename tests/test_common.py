"""scikit-learn's estimator checks for every estimator, from one place.

One expected failure (below), on CPU (CI) or CUDA: merging duplicate rows makes
integer sample weights train bit for bit as repeated rows on either device.
Each estimator is checked with its defaults and with the options that change
its inputs and model: the piecewise-linear encoding, an ensemble of members
and (for the regressor) a categorical column. The checks' data are continuous:
a column declared categorical has only rare levels, which share one matrix by
design, so the classifier could not reach check_classifiers_train's training
accuracy with its first column discarded; tests/test_estimator.py covers
categorical columns in both estimators. The variants are checked too: a
tridiagonal classifier and a smoothed tridiagonal regressor (monotonic_cst
needs one constraint per feature, which the checks' changing data cannot
give; tests/test_variants.py covers it). So are the regression losses: absolute
error, Huber (in an ensemble), one quantile level, three quantile levels (all
checks but the one that wants a 1-d prediction), Poisson and gamma (whose
positive-only tag gives them positive targets)."""

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from skspectral import SpectralClassifier, SpectralRegressor

# Short fits, as scikit-learn checks its own iterative estimators: every check still runs, in
# seconds. A higher rate makes up for the fewer epochs where a check wants a fit that learned.
SHORT = dict(max_iter=25, learning_rate_init=0.02)
OPTIONS = dict(feature_encoding="piecewise_linear", n_bins=4, n_estimators=3)
ESTIMATORS = [
    SpectralRegressor(**SHORT),
    SpectralClassifier(**SHORT),
    SpectralRegressor(categorical_features=[0], **OPTIONS, **SHORT),
    SpectralClassifier(**OPTIONS, **SHORT),
    SpectralRegressor(structure="tridiagonal", dim=8, smoothing=0.1, n_estimators=1, **SHORT),
    SpectralClassifier(structure="tridiagonal", dim=30, n_estimators=1, **SHORT),
    # The losses other than squared error, each passing every check.
    SpectralRegressor(loss="absolute_error", **SHORT),
    SpectralRegressor(loss="huber", n_estimators=3, **SHORT),
    SpectralRegressor(loss="quantile", quantile=0.8, **SHORT),
    # a log link's exp() overshoots at SHORT's rate in 25 epochs; the default rate learns in them
    SpectralRegressor(loss="poisson", max_iter=25),
    SpectralRegressor(loss="gamma", max_iter=25),
    SpectralRegressor(loss="quantile", quantile=[0.1, 0.5, 0.9], **SHORT),
    # members that share their matrices (the defaults: half of them, their factors pulled), and none
    SpectralRegressor(shared_members=0.0, **OPTIONS, **SHORT),
    SpectralClassifier(shared_members=1.0, n_estimators=2, **SHORT),
    SpectralRegressor(shared_members=0.5, shared_factor_l1=1e-2, **SHORT),
]




def expected_failed_checks(estimator):
    # Several quantile levels predict (n_samples, n_levels) for a 1-d y, by design; the one check
    # that wants predict's shape to be y's. Their order and coverage: tests/test_regressor.py.
    if getattr(estimator, "loss", None) == "quantile" and np.ndim(estimator.quantile) > 0:
        return {"check_regressors_train": "several quantile levels predict one column per level"}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
