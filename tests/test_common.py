"""scikit-learn's estimator checks for every estimator, from one place.

No expected failures, on CPU (CI) or CUDA: merging duplicate rows makes
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
give; tests/test_variants.py covers it)."""

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
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
