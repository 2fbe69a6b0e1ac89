"""SpectralClassifier: labels, class weights and the log-loss (binary or softmax); a fit starts from the
weighted class priors (the best constant), as gradient boosting does."""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ._docs import ATTRIBUTES_DOC, PARAMETERS_DOC
from ._estimator import SpectralEstimatorBase
from ._losses import get_loss, get_metric
from ._target import LabelSummary
from .model import diagonal_through

# a class's log-prior a fit starts from is at least this (a class of 1e-8 of the weight: its logit is not -18)
_LOG_PRIOR_FLOOR = math.log(1e-4)


class SpectralClassifier(ClassifierMixin, SpectralEstimatorBase):
    _parameter_constraints = {
        **SpectralEstimatorBase._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }
    _target_summarised_as_given = True  # labels are coded before the rows merge

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
        max_iter="auto",
        shuffle=True,
        random_state=None,
        tol=1e-4,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change="auto",
        refit="auto",
        alpha=1e-3,
        spectral_penalty=0.0,
        verbose=False,
        warm_start=False,
        clip_features=True,
        categorical_features="from_dtype",
        min_level_count="auto",
        gated_columns="auto",
        feature_encoding="piecewise_linear",
        n_bins="auto",
        n_estimators="auto",
        shared_members=0.5,
        shared_factor_l1=2e-3,
        monotonic_cst=None,
        structure="dense",
        smoothing=None,
        class_weight=None,
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
        self.refit = refit
        self.alpha = alpha
        self.spectral_penalty = spectral_penalty
        self.verbose = verbose
        self.warm_start = warm_start
        self.clip_features = clip_features
        self.categorical_features = categorical_features
        self.min_level_count = min_level_count
        self.gated_columns = gated_columns
        self.feature_encoding = feature_encoding
        self.n_bins = n_bins
        self.n_estimators = n_estimators
        self.shared_members = shared_members
        self.shared_factor_l1 = shared_factor_l1
        self.monotonic_cst = monotonic_cst
        self.structure = structure
        self.smoothing = smoothing
        self.class_weight = class_weight

    # ---- the base's hooks -----------------------------------------------------------------
    def _loss(self):
        return get_loss("binary_log_loss" if len(self.classes_) <= 2 else "log_loss")

    def _eval_metrics(self):
        return {name: get_metric(name) for name in ("log_loss", "accuracy")}

    def _validation_score(self):
        return get_metric("neg_log_loss")  # early stopping watches what is optimised: the log-loss

    def _start_diagonal(self, model, target, weight, context) -> None:
        # the best constant: the training rows' weighted log-odds (binary) or log-priors less their mean
        # (multiclass; softmax ignores a common shift), where gradient boosting starts, not at 0 (p = 1/2)
        n_classes = len(self.classes_)
        totals = np.bincount(np.asarray(target, dtype=np.intp), weights=weight, minlength=n_classes)
        agreed = self._agree(context, {f"class {c}": (float(t), "sum") for c, t in enumerate(totals)})
        log_priors = np.log(np.maximum([agreed[f"class {c}"] for c in range(n_classes)], 1e-12)
                            / max(sum(agreed.values()), 1e-12)).clip(_LOG_PRIOR_FLOOR, 0.0)
        values = [log_priors[1] - log_priors[0]] if n_classes <= 2 else log_priors - log_priors.mean()
        diagonals = np.stack([diagonal_through(self.dim_, [self.eigval_idx_], [v]) for v in values])
        model.start_diagonal(np.tile(diagonals, (self.n_estimators_, 1)))  # (members * outputs, dim)

    def _n_outputs(self):
        return None if len(self.classes_) <= 2 else len(self.classes_)

    def _stratify_labels(self, target):
        return target.astype(np.min_scalar_type(len(self.classes_)))  # class indices, 1 byte a row for < 256

    def _check_target(self, y):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        return y

    def _summarise_target(self, y, weight):
        return LabelSummary.of_block(y)

    def _fit_target(self, summary, classes=None):
        coder = summary.finalize(classes)
        if len(coder.classes) < 2:
            label = np.asarray(coder.classes)[:1].tolist()[0]  # as the user wrote it: 'yes', not np.str_('yes')
            raise ValueError(f"SpectralClassifier needs samples of at least 2 classes; got 1 class: {label!r}.")
        self.label_coder_ = coder

    def _encode_target(self, y):
        return self.label_coder_.transform(y)

    def _gate_target(self, y_rows):
        indicators = y_rows.astype(np.intp)[:, None] == np.arange(len(self.classes_))
        return indicators[:, 1:] if indicators.shape[1] == 2 else indicators  # (a binary target: one column)

    def _training_target(self, y_rows, weight):
        class_weights = self.label_coder_.class_weights(self.class_weight)
        if class_weights is not None:
            weight = weight * class_weights[y_rows.astype(np.intp)]
        return y_rows, weight

    @property
    def classes_(self) -> np.ndarray:
        return self.label_coder_.classes

    # ---- public API ---------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, eval_set=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features; raw, unscaled values are fine (standardised inside).
        y : array-like of shape (n_samples,)
            Class labels (at least two classes).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights, multiplied by class_weight.
        eval_set : list of (X, y) pairs, default=None
            Log-loss and accuracy of each are recorded every epoch in
            ``history_``; they never affect training.

        Returns
        -------
        self : SpectralClassifier
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False, eval_set=eval_set)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            Every label; required on the first call.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : SpectralClassifier
        """
        if not hasattr(self, "_module_state_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def decision_function(self, X):
        """Logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        logits : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Binary: one logit, positive for ``classes_[1]``; multiclass: one per class.
        """
        return self._raw_output(X)

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        logits = self.decision_function(X)
        if logits.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-logits))
            return np.column_stack([1.0 - positive, positive])
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """Log of predict_proba, computed stably.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        logits = self.decision_function(X)
        if logits.ndim == 1:
            return np.column_stack([-np.logaddexp(0, logits), -np.logaddexp(0, -logits)])
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        logits = self.decision_function(X)
        index = (logits > 0).astype(int) if logits.ndim == 1 else logits.argmax(axis=1)
        return self.classes_[index]


SpectralClassifier.__doc__ = f"""Classification with eigenvalue models.

    Binary: the logit is f(x) = lambda_k(diag(mu) + sum_i x_i A_i), trained
    with log-loss (an affine scale of the logit is absorbed by mu and A_i:
    lambda_k(cM + bI) = c lambda_k(M) + b for c > 0). Multiclass: one matrix
    per class, all evaluated in one batched eigen call of shape
    (batch, n_classes, dim, dim); their k-th eigenvalues are the logits of a
    softmax cross-entropy (the eigenvalues of one matrix are ordered, so they
    could not serve as free logits). With early_stopping the held-out score
    is the negative log-loss, on a split stratified by class.

    Parameters
    ----------
    {PARAMETERS_DOC}
    alpha : float, default=1e-3
        L2 penalty: ``alpha / 2 * sum_i ||A_i||_F^2 / n_samples`` is added to
        the loss. On separable data log-loss drives the logits to infinity; a
        little L2 keeps them finite, the probabilities calibrated and the fits
        reproducible (weighting and repeating rows agree).
    class_weight : dict, "balanced" or None, default=None
        Weights per class (label -> weight), multiplying sample_weight;
        "balanced" weights classes inversely to their frequencies in the rows
        of the fit that learned the classes (every row of a data-parallel fit;
        partial_fit's first call).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    label_coder_ : skspectral._target.LabelCoder
        The classes and each one's row count in fit.
    {ATTRIBUTES_DOC}
        For multiclass, one row of sensitivities per class's logit. For an ensemble, bounds on
        the logits decision_function returns (its members' mean probability's): the largest
        member's, for multiclass a class's plus the largest other class's.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skspectral import SpectralClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> SpectralClassifier(dim=5, max_iter=30, random_state=0, device="cpu").fit(X, y).predict_proba(X[:2]).shape
    (2, 3)
    """
