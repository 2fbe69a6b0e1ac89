"""SpectralRegressor: a thin scikit-learn wrapper over the model and training loop."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._base import SpectralEstimatorBase, weighted_standardisation
from ._training import weighted_mean


class SpectralRegressor(RegressorMixin, SpectralEstimatorBase):
    """Regression with f(x) = lambda_k(diag(mu) + sum_i x_i A_i).

    The k-th smallest eigenvalue of a ``dim x dim`` symmetric matrix that is
    affine in the features. X and y are standardised inside (with sample
    weights), so raw, unscaled data is fine; predictions are in y's units.
    Trained with Adam on mini-batches, with the data resident on ``device``.

    Parameters
    ----------
    dim : int, default=15
        Size of the matrices. Cost grows like dim**3 per sample. 15 fits
        California Housing in about a minute on two CPU cores; on a GPU
        larger (45) is affordable and better.
    eigval_idx : int or None, default=None
        Which eigenvalue (ascending; negative counts from the largest).
        None means ``dim // 2``. Must lie in [-dim, dim).
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        "auto" is CUDA when available, else CPU. Recorded as ``device_``.
    backend : {"auto", "torch", "cupy"}, default="auto"
        Eigen backend (see :func:`skspectral.kth_eigvalsh`). Recorded as ``backend_``.
    dtype : {"auto", "float32", "float64"}, default="auto"
        Training precision; "auto" is float64 on CPU and float32 on CUDA.
    learning_rate_init : float, default=0.005
        Adam's initial step size.
    learning_rate_schedule : {"cosine", "constant"}, default="cosine"
        "cosine" anneals the step size to 0 over max_iter epochs (each fit
        call), which averages out mini-batch noise at the end; "constant"
        keeps it fixed.
    batch_size : int or "auto", default="auto"
        Rows per step; "auto" is min(200, n_samples).
    max_iter : int, default=140
        Maximum number of epochs.
    shuffle : bool, default=True
        Shuffle the rows every epoch (on the device).
    random_state : int, RandomState or None, default=None
        Seeds the initial model, the shuffling and the validation split.
    tol : float, default=1e-4
        Improvement of the training loss (or validation score with
        early_stopping) below which an epoch counts as no improvement.
        With the cosine schedule the training loss never stops a fit early
        (the schedule sets its length); the validation score does.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their R^2
        stops improving and keep the best model.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping.
    alpha : float, default=0.0
        L2 penalty: ``alpha / 2 * sum_i ||A_i||_F^2 / n_samples`` is added to
        the loss (MLPRegressor's convention, on the feature matrices).
    spectral_penalty : float, default=0.0
        ``spectral_penalty * sum_i ||A_i||_2`` is added to the loss: shrinks the
        certified sensitivities directly.
    verbose : bool, default=False
        Print one line per epoch.
    warm_start : bool, default=False
        Continue from the previous fit instead of starting anew.
    clip_features : bool, default=True
        In predict, clip each feature to the range seen in fit, so that an
        extreme value (California's AveOccup reaches 1243) cannot push the
        prediction far beyond anything seen in training. Clipping is
        1-Lipschitz, so the certified sensitivity bound still holds.

    Attributes
    ----------
    device_, backend_, dtype_ : str
        What fit resolved "auto" to.
    mu_ : ndarray of shape (dim,)
        The learned non-decreasing diagonal (standardised units).
    feature_matrices_ : ndarray of shape (n_features_in_, dim, dim)
        The learned symmetric A_i (for standardised features and target).
    x_mean_, x_scale_, x_min_, x_max_ : ndarray of shape (n_features_in_,)
    y_mean_, y_scale_ : float
        The internal standardisation.
    n_iter_ : int
        Epochs run. ``loss_curve_``: the training loss per epoch.
    validation_scores_, best_validation_score_ :
        Validation R^2 per epoch and its best (with early_stopping), else None.
    """

    _parameter_constraints = dict(SpectralEstimatorBase._parameter_constraints)

    def __init__(
        self,
        dim=15,
        eigval_idx=None,
        *,
        device="auto",
        backend="auto",
        dtype="auto",
        learning_rate_init=0.005,
        learning_rate_schedule="cosine",
        batch_size="auto",
        max_iter=140,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        alpha=0.0,
        spectral_penalty=0.0,
        verbose=False,
        warm_start=False,
        clip_features=True,
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

    def _n_models(self):
        return None

    def _loss(self, output, target, weight):
        return weighted_mean((output - target).square(), weight)

    def _output_scale(self):
        return self.y_scale_

    def _eval_metrics(self, output, target, weight):
        return {"rmse": self.y_scale_ * weighted_mean((output - target).square(), weight).sqrt(),
                "r2": self._validation_score(output, target, weight)}

    def _validation_score(self, output, target, weight):
        mean = weighted_mean(target, weight)
        residual = weighted_mean((output - target).square(), weight)
        total = weighted_mean((target - mean).square(), weight)
        return 1.0 - residual / total.clamp_min(torch.finfo(total.dtype).tiny)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, eval_set=None):
        """Fit the model to X (n_samples, n_features) and y (n_samples,).

        eval_set : list of (X, y) pairs, optional. Scored every epoch (RMSE in
        y's units and R^2) into ``history_``; they never affect training.
        """
        return self._fit(X, y, sample_weight, first_call=not self._continues_previous_fit(), incremental=False,
                         eval_set=eval_set)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current state."""
        first_call = not hasattr(self, "_module_state_")
        return self._fit(X, y, sample_weight, first_call=first_call, incremental=True)

    _y_numeric = True

    def _encode_target(self, y, first_call, classes=None):
        return column_or_1d(y, warn=True).astype(np.float64)

    def _training_target(self, y, weight, first_call):
        if first_call:
            y_mean, y_scale = weighted_standardisation(y[:, None], weight)
            self.y_mean_, self.y_scale_ = float(y_mean[0]), float(y_scale[0])
        return (y - self.y_mean_) / self.y_scale_, weight

    def predict(self, X):
        """Predicted targets, shape (n_samples,), in y's units."""
        check_is_fitted(self, "_module_state_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32]).astype(np.float64, copy=False)
        return self.y_mean_ + self.y_scale_ * self._raw_output(X)
