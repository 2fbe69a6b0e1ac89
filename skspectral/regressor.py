"""SpectralRegressor: parameters, target standardisation and the squared-error loss."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils.validation import column_or_1d

from ._docs import ATTRIBUTES_DOC, PARAMETERS_DOC
from ._estimator import SpectralEstimatorBase
from ._target import TargetSummary


class SpectralRegressor(RegressorMixin, SpectralEstimatorBase):
    _parameter_constraints = dict(SpectralEstimatorBase._parameter_constraints)
    _y_numeric = True
    _metrics = ("rmse", "r2")  # per eval set; RMSE in y's units
    _validation_metric = "r2"

    def __init__(
        self,
        dim=15,
        eigval_idx=None,
        *,
        device="auto",
        backend="auto",
        dtype="auto",
        learning_rate_init=0.002,
        learning_rate_schedule="cosine",
        batch_size="auto",
        max_iter=140,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        alpha=0.0,
        spectral_penalty=0.0,
        verbose=False,
        warm_start=False,
        clip_features=True,
        categorical_features="from_dtype",
        feature_encoding="piecewise_linear",
        n_bins=16,
        n_estimators=4,
        monotonic_cst=None,
        structure="dense",
        smoothing=None,
    ):
        self.dim = dim
        self.eigval_idx = eigval_idx
        self.device = device
        self.backend = backend
        self.dtype = dtype
        self.learning_rate_init = learning_rate_init
        self.learning_rate_schedule = learning_rate_schedule
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.alpha = alpha
        self.spectral_penalty = spectral_penalty
        self.verbose = verbose
        self.warm_start = warm_start
        self.clip_features = clip_features
        self.categorical_features = categorical_features
        self.feature_encoding = feature_encoding
        self.n_bins = n_bins
        self.n_estimators = n_estimators
        self.monotonic_cst = monotonic_cst
        self.structure = structure
        self.smoothing = smoothing

    # ---- the base's hooks -----------------------------------------------------------------
    def _loss_name(self):
        return "squared_error"

    def _n_outputs(self):
        return None

    def _output_scale(self):
        return self.target_scaler_.scale

    def _check_target(self, y):
        return column_or_1d(y, warn=True).astype(np.float64)

    def _summarise_target(self, y, weight):
        return TargetSummary.of_block(y, weight)

    def _fit_target(self, summary, classes=None):
        self.target_scaler_ = summary.finalize()

    def _encode_target(self, y):
        return y

    def _training_target(self, y_rows, weight):
        return self.target_scaler_.transform(y_rows), weight

    @property
    def y_mean_(self) -> float:
        return self.target_scaler_.mean

    @property
    def y_scale_(self) -> float:
        return self.target_scaler_.scale

    # ---- public API ---------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, eval_set=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features; raw, unscaled values are fine (standardised inside).
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; integer weights train exactly as repeated rows.
        eval_set : list of (X, y) pairs, default=None
            Scored every epoch (RMSE in y's units and R^2) into ``history_``;
            they never affect training.

        Returns
        -------
        self : SpectralRegressor
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False, eval_set=eval_set)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : SpectralRegressor
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predict targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predictions in y's units.
        """
        output = self._raw_output(X)  # checks fitted first
        return self.target_scaler_.inverse_transform(output)


SpectralRegressor.__doc__ = f"""Regression with f(x) = lambda_k(diag(mu) + sum_i x_i A_i).

    The k-th smallest eigenvalue of a ``dim x dim`` symmetric matrix that is
    affine in the features. X and y are standardised inside (with sample
    weights), so raw, unscaled data is fine; predictions are in y's units.
    Trained with Adam on mini-batches, with the data resident on ``device``;
    with early_stopping the held-out score is R^2.

    Parameters
    ----------
    {PARAMETERS_DOC}
    alpha : float, default=0.0
        L2 penalty: ``alpha / 2 * sum_i ||A_i||_F^2 / n_samples`` is added to
        the loss (MLPRegressor's convention, on the feature matrices).

    Attributes
    ----------
    target_scaler_ : skspectral._target.TargetScaler
        The internal standardisation of the target (``y_mean_``, ``y_scale_``).
    {ATTRIBUTES_DOC}

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from skspectral import SpectralRegressor
    >>> X, y = make_regression(n_samples=200, n_features=4, random_state=0)
    >>> SpectralRegressor(dim=6, max_iter=20, random_state=0, device="cpu").fit(X, y).predict(X[:2]).shape
    (2,)
    """
