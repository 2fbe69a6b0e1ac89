"""scikit-learn's estimator checks for every estimator, from one place.

No expected failures, on CPU (CI) or CUDA: merging duplicate rows makes
integer sample weights train bit for bit as repeated rows on either device
(last run on a GPU: H100, 2026-11-27)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skspectral import SpectralClassifier, SpectralRegressor

ESTIMATORS = [SpectralRegressor(), SpectralClassifier()]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
