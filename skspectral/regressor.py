"""SpectralRegressor: parameters, the target's scaling or link, and the losses by name."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import column_or_1d

from ._docs import ATTRIBUTES_DOC, PARAMETERS_DOC
from ._estimator import SpectralEstimatorBase
from ._losses import REGRESSION_LOSSES, get_metric, regression_loss, weighted_quantiles
from ._target import TargetSummary
from ._training import predict_in_chunks
from .model import diagonal_through

# early_stopping="auto" holds out rows from this many fit rows (a classifier from 1,000): the 140 epochs overfit
# a small table's noisy target. With its held-out rows (under 100 of them the fit keeps the schedule's best
# epoch) diabetes' RMSE fell 9 %, concrete's 2-4 %, nmes1988's 4-5 % on 300- and 900-row draws, California's and
# cps1988's ~1 %; diamonds' draws (a clean target that wants every row) rose 5-10 %. Small classification tables
# lost with it (breast_cancer's log-loss +14 %, iris' +8 %). benchmarks/RESULTS.md, section 12.
_EARLY_STOPPING_ROWS = 300
# calibrate_quantiles="auto" shifts the levels from this many early-stopping rows (5 % of them: 50 rows
# past a 0.05 or 0.95 level)
_CALIBRATION_ROWS = 1000


def level_offsets(residuals: np.ndarray, weight: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each level's shift c_j: the weighted levels[j]-quantile of residuals[:, j] (y minus level j's
    prediction), the shift the pinball loss of that level likes best on those rows."""
    return np.array([weighted_quantiles(residuals[:, j], weight, [level])[0] for j, level in enumerate(levels)])


def shifted_levels(predicted: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Levels (columns) shifted by their offsets, then a running maximum along them: where shifts that
    narrow an interval would take a level past the next, the two meet (a rearrangement of the quantile
    curves, as for non-crossing quantile regression). A maximum of functions that each move by at
    most a bound moves by at most that bound: the levels share one certified bound, and keep it."""
    shifted = predicted + offsets
    return np.maximum.accumulate(shifted, axis=1) if shifted.ndim == 2 else shifted


def spaced_indices(centre: int, count: int, step: int, dim: int) -> tuple:
    """``count`` eigenvalue indices ``step`` apart centred on ``centre``, shifted inside [0, dim)."""
    span = step * (count - 1)
    first = min(max(centre - step * ((count - 1) // 2), 0), dim - 1 - span)
    return tuple(range(first, first + span + 1, step))


def quantile_indices(centre: int, count: int, dim: int) -> tuple:
    """The indices of ``count`` quantile levels' eigenvalues: every other one around ``centre``,
    consecutive where dim has too few (count <= dim)."""
    return spaced_indices(centre, count, 2 if 2 * (count - 1) < dim else 1, dim)


class SpectralRegressor(RegressorMixin, SpectralEstimatorBase):
    _parameter_constraints = {
        **SpectralEstimatorBase._parameter_constraints,
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
        "quantile": [Interval(numbers.Real, 0, 1, closed="neither"), "array-like", None],
        "huber_delta": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "calibrate_quantiles": [StrOptions({"auto"}), "boolean"],
    }
    _y_numeric = True
    _model_shape = SpectralEstimatorBase._model_shape + ("loss", "quantile")

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
        alpha=0.0,
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
        loss="squared_error",
        quantile=None,
        huber_delta=None,
        calibrate_quantiles="auto",
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
        self.loss = loss
        self.quantile = quantile
        self.huber_delta = huber_delta
        self.calibrate_quantiles = calibrate_quantiles

    # ---- the loss ---------------------------------------------------------------------------
    def _quantiles(self) -> np.ndarray | None:
        """The quantile levels, sorted (loss="quantile"), else None; checked at fit."""
        if self.loss != "quantile":
            return None
        if self.quantile is None:
            raise ValueError('loss="quantile" needs quantile: a level in (0, 1), or a list of them (one output each).')
        levels = np.atleast_1d(np.asarray(self.quantile, dtype=np.float64))
        if levels.ndim != 1 or not len(levels) or not ((levels > 0) & (levels < 1)).all():
            raise ValueError(f"quantile must be a level in (0, 1) or a list of them, got {self.quantile!r}.")
        if len(np.unique(levels)) != len(levels):
            raise ValueError(f"quantile holds a level twice: {self.quantile!r}.")
        return np.sort(levels)

    def _several_quantiles(self) -> bool:
        return self.loss == "quantile" and np.ndim(self.quantile) > 0

    def _loss(self):
        scaler = self.target_scaler_
        delta = 1.0 if self.huber_delta is None else self.huber_delta / scaler.scale  # standardised units
        return regression_loss(self.loss, quantiles=self._quantiles(), delta=delta, target_mean=scaler.scale)

    def _eval_metrics(self):
        if self.loss == "squared_error":
            return {name: get_metric(name) for name in ("rmse", "r2")}  # RMSE in y's units
        loss = self._loss()
        metrics = {loss.metric: loss.as_metric(self._output_scale())}
        if loss.link == "identity" and not self._several_quantiles():
            metrics["r2"] = get_metric("r2")
        return metrics

    def _validation_score(self):
        if self.loss == "squared_error":
            return get_metric("r2")
        return self._loss().score(self._output_scale())  # the loss itself, on the held-out rows, in y's units

    def _validation_score_scale(self) -> float:
        if self.loss == "squared_error":
            return 1.0  # R^2: the standardised squared error's units
        return float(self._loss().to_metric(1.0, self._output_scale()))  # y's units per unit of the loss

    def _score_steadies_with_rows(self) -> bool:
        # Several levels' mean pinball loss does not, however many rows: its tail levels jump from
        # epoch to epoch, and after five epochs' wait flights' three-level fits stopped anywhere
        # from 16 to 95 epochs by the seed (6-8 % above the full schedule's best pinball on average);
        # after ten, 87-114 (benchmarks/RESULTS.md, section 10).
        return not self._several_quantiles()

    def _auto_early_stopping_rows(self) -> int:
        return _EARLY_STOPPING_ROWS

    def _reads_held_out_rows(self, n_held_out: int) -> bool:
        # calibrate_quantiles: True always, "auto" from _CALIBRATION_ROWS held-out rows (a rank's, as it calibrates)
        if self.loss != "quantile" or self.calibrate_quantiles is False:
            return False
        return self.calibrate_quantiles is True or n_held_out >= _CALIBRATION_ROWS

    def _fewer_members_when_tall(self) -> bool:
        # Two members on a GPU from 100,000 rows: flights' fit 1.5-1.8 s against 2.4-2.7 s with four, RMSE +0.5 to
        # +0.9 %. A classifier keeps four: a tall classifier's log-loss rose 0.8-2.2 % with two (flights' target
        # split at its median; benchmarks/RESULTS.md, section 9).
        return True

    def _one_member_sooner(self) -> bool:
        # Several levels take one member on the CPU where the squared error takes two: their fits run
        # about twice the squared error's epochs, a CPU step's cost follows the members, and the members'
        # average only narrows the levels' spread, which the calibration sets anyway: one member scored as
        # three on the selection fold in 0.4-0.5x the time (benchmarks/RESULTS.md, section 10).
        return self._several_quantiles()

    def _eigen_indices(self):
        """One eigenvalue per quantile, ascending with the levels (lambda_k1 <= lambda_k2 <= ...
        for every matrix: the quantiles cannot cross): every other index around eigval_idx_
        (consecutive where dim has too few), shifted inside [0, dim). Every other index was
        chosen over consecutive ones and wider steps on the selection fold of the regression
        tables (benchmarks/RESULTS.md, section 10): the same pinball loss, coverage nearer the
        levels on small tables."""
        levels = self._quantiles()
        if levels is None or not self._several_quantiles():
            return self.eigval_idx_
        if len(levels) > self.dim_:
            raise ValueError(f"{len(levels)} quantiles need dim >= {len(levels)} (one eigenvalue each); dim is "
                             f"{self.dim_}.")
        return quantile_indices(self.eigval_idx_, len(levels), self.dim_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = self.loss in ("poisson", "gamma")
        # score is R^2 of the level predicted: one level away from the median, started at that level's
        # quantile of y, is not meant to score R^2 well (scikit-learn's checks ask R^2 > 0.5 of a regressor)
        tags.regressor_tags.poor_score = (self.loss == "quantile" and self.quantile is not None
                                          and np.ndim(self.quantile) == 0 and self.quantile != 0.5)
        return tags

    # ---- the base's hooks -----------------------------------------------------------------
    def _n_outputs(self):
        return None

    def _output_scale(self):
        # a log link's output is log(prediction): its bounds are relative changes, unscaled (but for a
        # constant y's tiny factor)
        scaler = self.target_scaler_
        return scaler.output_factor if scaler.link == "log" else scaler.scale

    def _check_target(self, y):
        return column_or_1d(y, warn=True).astype(np.float64)

    def _summarise_target(self, y, weight):
        return TargetSummary.of_block(y, weight)

    def _fit_target(self, summary, classes=None):
        self._quantiles()  # a quantile loss without levels fails here, at fit
        if self.loss == "quantile" and self.calibrate_quantiles is True and self.refit is True:
            raise ValueError("calibrate_quantiles=True shifts the levels on the early-stopping rows, which refit=True "
                             "then trains the model on: the shifts would not be held out. Set one of them to False "
                             '(calibrate_quantiles="auto" calibrates only without refit).')
        self.target_scaler_ = summary.finalize(link="log" if self.loss in ("poisson", "gamma") else "identity",
                                               loss=self.loss)

    def _encode_target(self, y):
        return y

    def _gate_target(self, y_rows):
        return np.asarray(y_rows, dtype=np.float64).reshape(len(y_rows), -1)

    def _training_target(self, y_rows, weight):
        return self.target_scaler_.transform(y_rows), weight

    def _start_diagonal(self, model, target, weight, context) -> None:
        # loss="quantile": each level's eigenvalue starts at that level's weighted quantile of the training
        # targets (the feature matrices start small, so lambda_k(M(x)) is about mu_k): the fit starts
        # from the best constant quantiles, as gradient boosting's do, not from levels 2 / (dim - 1) apart
        levels = self._quantiles()
        if levels is None:
            return
        quantiles = weighted_quantiles(np.asarray(target, dtype=np.float64), np.asarray(weight, dtype=np.float64),
                                       levels)
        agreed = self._agree(context, {f"level {j}": (float(q), "first") for j, q in enumerate(quantiles)})  # rank 0's
        quantiles = [float(agreed[f"level {j}"]) for j in range(len(levels))]
        model.start_diagonal(diagonal_through(self.dim_, np.atleast_1d(self._eigen_indices()), quantiles))

    def _held_out_attributes(self, module, validation) -> dict:
        """quantile_offsets_ (loss="quantile"): each level's shift, in y's units, that puts its share of
        the early-stopping rows below it (see calibrate_quantiles); zeros where the fit calibrates none."""
        levels = self._quantiles()
        if levels is None:
            return {}
        # (calibrate_quantiles=True with refit_ was an error at fit)
        if validation is None or self.refit_ or not self._reads_held_out_rows(len(validation)):
            return {"quantile_offsets_": np.zeros(len(levels))}
        module.eval()
        output = predict_in_chunks(module, validation.X, self._chunk_rows(validation.y.dtype))
        predicted = self._combined_members(output).reshape(len(validation), -1).cpu().numpy().astype(np.float64)
        residuals = validation.y.cpu().numpy().astype(np.float64)[:, None] - predicted  # standardised units
        offsets = level_offsets(residuals, validation.weight.cpu().numpy().astype(np.float64), levels)
        return {"quantile_offsets_": offsets * self.target_scaler_.scale}

    @property
    def feature_sensitivities_(self) -> np.ndarray:
        """Certified bounds (see the mixin): one row per quantile with several quantiles (every
        eigenvalue of M(x), so every level, has the same Weyl bound); with a log link, bounds on
        log(prediction) -- a relative change -- per unit of each feature."""
        bounds = super().feature_sensitivities_
        return np.tile(bounds, (len(self._quantiles()), 1)) if self._several_quantiles() else bounds

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
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_quantiles)
            Predictions in y's units; with several quantiles one column per
            level, ascending, never crossing.
        """
        output = self._raw_output(X)  # checks fitted first
        predicted = self.target_scaler_.inverse_transform(output)
        offsets = getattr(self, "quantile_offsets_", None) if self.loss == "quantile" else None
        return predicted if offsets is None else shifted_levels(predicted, offsets)

    def score(self, X, y, sample_weight=None):
        """R^2 of the prediction; with several quantiles, of the one nearest the median (the median
        where it is one of them): scikit-learn's searches and cross-validation read this. For pinball losses
        use e.g. ``sklearn.metrics.d2_pinball_score`` on a column of ``predict``."""
        predicted = self.predict(X)
        if predicted.ndim == 2:
            predicted = predicted[:, int(np.argmin(np.abs(self._quantiles() - 0.5)))]
        return r2_score(y, predicted, sample_weight=sample_weight)


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
    loss : {"squared_error", "absolute_error", "huber", "quantile", "poisson", "gamma"}, default="squared_error"
        HistGradientBoosting's names. "huber" is squared below ``huber_delta``
        and absolute above; "quantile" the pinball loss of ``quantile``;
        "poisson" (counts: y >= 0 with a positive mean) and "gamma" (y > 0)
        use a log link, prediction = exp(lambda_k(M(x)) + log(mean y)), and
        their mean deviance. Early stopping scores the held-out rows with the
        same loss (R^2 for "squared_error").
    quantile : float or list of float in (0, 1), default=None
        The level(s) of loss="quantile". A list gives one output per level
        (``predict`` returns (n_samples, n_levels), levels ascending): the
        eigenvalues lambda_k1 <= lambda_k2 <= ... of the same matrix M(x), k
        every other index around eigval_idx (consecutive where dim is too
        small), so the predicted quantiles never cross,
        for any x, by construction (and exactly: a running maximum along the
        levels corrects the solvers' rounding; it moves no value more than that
        and keeps every certified bound). One fit for every level. A fit
        starts from each level's weighted quantile of the training targets
        (the diagonal puts its eigenvalue there), as gradient boosting starts
        from a constant; a level other than 0.5 is tagged ``poor_score``
        (``score`` is R^2 of that level).
    huber_delta : float or None, default=None
        Where "huber" turns from squared to absolute, in y's units; None: one
        standard deviation of y.
    calibrate_quantiles : "auto" or bool, default="auto"
        With loss="quantile" and early stopping, shift each level's prediction
        by a constant read off the held-out early-stopping rows once training
        ends: the weighted quantile, at that level, of the rows' residuals
        (the shift the level's pinball loss likes best there);
        ``quantile_offsets_`` holds them. Then a running maximum along the
        levels keeps them ordered exactly where shifts that narrow an interval
        would take a level past the next (the two meet there). The fit itself
        is unchanged, and neither a constant nor the maximum of levels that
        share one certified bound moves the bound.
        Averaging matrices over epochs (early stopping's average) narrows the
        spread between their eigenvalues, so intervals come out narrow;
        this restores the levels' coverage on held-out rows. "auto": from
        1,000 early-stopping rows (50 past a 0.05 level; ``refit="auto"`` then
        does not refit), and not where the fit refits (``refit=True``: it
        trains on those rows); True: from any (then ``refit="auto"`` does not
        refit; ``refit=True`` is an error); False: never. In a data-parallel
        fit each rank reads its own rows and the fitted estimator takes the
        first rank's shifts.

    Attributes
    ----------
    target_scaler_ : skspectral._target.TargetScaler
        The internal standardisation of the target (``y_mean_``, ``y_scale_``),
        or for a log link y over its weighted mean (``y_scale_``) and the
        output's offset log(mean y) (``y_mean_``).
    quantile_offsets_ : ndarray of shape (n_quantiles,)
        With loss="quantile": each level's shift in y's units (see
        ``calibrate_quantiles``); zeros where none was read.
    {ATTRIBUTES_DOC}

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from skspectral import SpectralRegressor
    >>> X, y = make_regression(n_samples=200, n_features=4, random_state=0)
    >>> SpectralRegressor(dim=6, max_iter=20, random_state=0, device="cpu").fit(X, y).predict(X[:2]).shape
    (2,)
    """
