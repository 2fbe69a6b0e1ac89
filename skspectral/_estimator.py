"""The base of SpectralRegressor and SpectralClassifier.

One path through every fit: validate the input, prepare the rows (sample
weights, duplicate merging, standardisation), run the fit core (split, build
the model, train) and store the fitted state; then prediction (on the fitted
device, or the CPU where that device is gone) and pickling as numpy state.
The hooks a subclass supplies are together at the top of the class.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from abc import ABCMeta, abstractmethod

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_y, check_array, check_consistent_length, check_is_fitted, validate_data

from ._device import DTYPES, resolve_device, resolve_dtype
from ._features import CategoryCodes, categorical_mask, coded_rows, encoding_spec, is_dataframe
from ._losses import get_loss, get_metric, make_penalty
from ._preprocessing import check_eval_set, check_rows, validation_split, weighted_standardisation
from ._sensitivity import CertifiedSensitivityMixin, feature_bounds, to_user_units
from ._transfer import CHUNK_BYTES, standardised_rows
from ._training import Dataset, HostRows, Trainer, TrainingOptions, TrainingState, history, predict_in_chunks
from .eig import BACKENDS, REGISTRY, check_eigval_index
from .encoding import LINEAR, PIECEWISE, FeatureEncoder
from .model import SpectralModel, model_class, select_model_backend

try:  # scikit-learn >= 1.9: callbacks (ProgressBar, ScoringMonitor, early stops)
    from sklearn.callback import CallbackSupportMixin
    from sklearn.callback._callback_support import callback_management_context
except ImportError:  # older scikit-learn: the estimators work as before, without callbacks

    class CallbackSupportMixin:  # type: ignore[no-redef]
        pass

    callback_management_context = None

# Rows of matrices evaluated at once in predict: bounds memory to ~64 MiB.
_PREDICT_CHUNK_BYTES = 64 * 2**20
# A fit whose final training metric is this much worse than its own first epoch's has
# diverged; one whose final loss exceeds a constant prediction's by more than
# max(relative * floor, absolute) (loss units: standardised squared error, nats) has
# not learned. The absolute part keeps a near-zero log-loss floor (one class holding
# almost all the weight) from flagging a regularised fit.
_DIVERGENCE_MARGIN = 1.1
# early_stopping="auto" holds out validation_fraction of the rows from this many rows up
_AUTO_EARLY_STOPPING_ROWS = 1000
_FLOOR_MARGIN = (0.1, 0.25)
# quantile bins come from at most this many rows (HistGradientBoosting's subsample)
_BIN_SUBSAMPLE = 200_000
# Training rows larger than this share of the GPU's free memory stay on the host, streamed each epoch.
_DEVICE_ROWS_SHARE = 0.5

# Shared by both estimators' docstrings (each class documents every parameter it takes).
PARAMETERS_DOC = """dim : int or "auto", default=15
        Size of the matrices. Cost grows like dim**3 per sample. "auto" is 45
        on CUDA and 15 on the CPU (recorded as ``dim_``); the defaults were
        measured with 15 on both.
    eigval_idx : int or None, default=None
        Which eigenvalue (ascending; negative counts from the largest).
        None means ``dim // 2``. Must lie in [-dim, dim).
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device, default="auto"
        "auto" is CUDA when available, else CPU. Recorded as ``device_``.
    backend : {"auto", "torch", "cupy", "kernel", "numba"}, default="auto"
        Eigen backend (see :func:`skspectral.kth_eigvalsh`): "torch"
        (torch.linalg, any device), "cupy" (CuPy's batched cuSOLVER solver,
        CUDA), "kernel" (our fused k-th eigenpair kernel, CUDA, dim <= 64;
        its training steps replay from a CUDA graph), "numba" (the same
        algorithm on the CPU, compiled with Numba). "auto" picks the fastest
        available; recorded as ``backend_``.
    dtype : {"auto", "float32", "float64"}, default="auto"
        Training precision; "auto" is float64 on CPU and float32 on CUDA.
        Recorded as ``dtype_``.
    learning_rate_init : float, default=0.002
        Adam's initial step size.
    learning_rate_schedule : {"cosine", "constant"}, default="cosine"
        "cosine" anneals the step size to 0 over max_iter epochs (each fit
        call), which averages out mini-batch noise at the end; "constant"
        keeps it fixed.
    batch_size : int or "auto", default="auto"
        Rows per step; "auto" is min(200, n_training_rows).
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
    early_stopping : bool or "auto", default="auto"
        Hold out ``validation_fraction`` of the rows, stop when their score
        stops improving and keep the best model. "auto": on from 1000
        training rows (recorded as ``early_stopping_``).
    validation_fraction : float, default=0.1
        Share of the rows held out with early_stopping.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping.
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
    categorical_features : "from_dtype", array-like of int, str or bool, or None, default="from_dtype"
        Categorical input columns, as HistGradientBoosting's: "from_dtype"
        takes the DataFrame columns of categorical, object, string or bool
        dtype; else indices, names or a boolean mask. Each level of a
        categorical feature owns a learned matrix; levels seen in fewer than
        10 training rows and unseen levels share an "other" matrix, and a
        missing value has its own where one was seen. No encoder needed.
    feature_encoding : {"linear", "piecewise_linear"}, default="piecewise_linear"
        Numeric features enter the matrix as x_i A_i ("linear", the series'
        model) or through a piecewise-linear encoding on quantile bins,
        sum_t e_t(x_i) A_{i,t} (a continuous piecewise-linear path of matrices
        per feature). A numeric feature with missing values in fit also gets a
        matrix for "missing"; missing values are allowed in any feature.
    n_bins : int, default=16
        Quantile bins per numeric feature with feature_encoding="piecewise_linear"
        (fewer where a feature has fewer distinct values).
    n_estimators : int, default=4
        Ensemble members, each with its own initialisation and its own loss,
        trained jointly as one batch of batch_size * n_estimators matrices per
        step; the prediction is their mean (regression) or mean probability
        (classification). The series' model is ``feature_encoding="linear",
        n_estimators=1``.
    monotonic_cst : array-like of int of shape (n_features,), dict or None, default=None
        HistGradientBoosting's convention: +1 makes the prediction
        non-decreasing in that feature, -1 non-increasing, 0 leaves it free;
        a dict maps feature names (DataFrame columns) to constraints. Each
        encoded matrix of a constrained feature is positive (negative)
        semidefinite, A = +-W W^T, and the encodings are non-decreasing in
        the feature, so the guarantee is exact (Loewner order), also after
        the internal standardisation and with clip_features. For a binary
        classifier it holds for the positive class's probability; not
        available for multiclass or on categorical features.
    structure : {"dense", "tridiagonal"}, default="dense"
        "tridiagonal": every A_i is symmetric tridiagonal (O(dim) parameters
        per matrix instead of O(dim**2)) and lambda_k comes from Sturm-count
        multisection without a Householder step, so ``dim`` can be in the
        hundreds at the cost of a dense dim-45 step. ``feature_matrices_`` is
        then in band storage (..., 2, dim): the diagonal, then the
        off-diagonal (last entry 0).
    smoothing : float or None, default=None
        None: the exact k-th eigenvalue. alpha > 0: its Moreau envelope,
        whose gradient is 1/alpha-Lipschitz (smoother training, a value
        within about alpha/2 of lambda_k); it is still 1-Lipschitz in the
        matrix, so the certified bounds hold unchanged. Needs every
        eigenpair (CuPy's batched solver on CUDA, LAPACK on the CPU), and
        its training steps are not captured in a CUDA graph."""

ATTRIBUTES_DOC = """device_, backend_, dtype_ : str
        What fit resolved "auto" to.
    is_categorical_ : ndarray of shape (n_features_in_,) of bool, or None
        The categorical input columns (None: none).
    encoding_ : skspectral.encoding.EncodingSpec
        How each input column is encoded (bins, levels, missing-value columns).
    dim_, eigval_idx_ : int
        The matrix size and the eigenvalue index in [0, dim_).
    early_stopping_ : bool
        Whether this fit held out rows and stopped early.
    x_mean_, x_scale_, x_min_, x_max_ : ndarray of shape (n_features_in_,)
        The internal standardisation of the features, and their range in fit.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when X has string column names.
    n_iter_ : int
        Epochs run, over warm starts and partial_fit calls.
    loss_curve_ : list of float
        The training loss (with penalties, standardised) per epoch.
    best_loss_ : float or None
        The lowest training loss, without early stopping.
    validation_scores_, best_validation_score_ : list of float, float or None
        The held-out score per epoch and its best, with early_stopping.
    history_ : list of dict
        One record per epoch: losses, the training metric in the eval
        metrics' units, eval-set metrics, certified sensitivities, elapsed
        seconds (see ``skspectral._training.history``).
    feature_sensitivities_, feature_importances_ : ndarray
        Certified bounds from Weyl's inequality (see ``sensitivity_bound``)."""


class SpectralEstimatorBase(CallbackSupportMixin, CertifiedSensitivityMixin, BaseEstimator, metaclass=ABCMeta):
    """Shared machinery; subclasses define the target handling and the loss."""

    _parameter_constraints: dict = {
        "dim": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "eigval_idx": [numbers.Integral, None],
        "device": [str, torch.device],
        "backend": [StrOptions(set(BACKENDS))],
        "dtype": [StrOptions({"auto", "float32", "float64"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "learning_rate_schedule": [StrOptions({"constant", "cosine"})],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "spectral_penalty": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "clip_features": ["boolean"],
        "categorical_features": ["array-like", StrOptions({"from_dtype"}), None],
        "feature_encoding": [StrOptions({"linear", "piecewise_linear"})],
        "n_bins": [Interval(numbers.Integral, 2, None, closed="left")],
        "n_estimators": [Interval(numbers.Integral, 1, None, closed="left")],
        "monotonic_cst": ["array-like", dict, None],
        "structure": [StrOptions({"dense", "tridiagonal"})],
        "smoothing": [Interval(numbers.Real, 0, None, closed="neither"), None],
    }

    # ---- the hooks a subclass supplies --------------------------------------------------
    _y_numeric: bool = False  # validate_data's y_numeric
    _metrics: tuple = ()  # metric names recorded for each eval set (see _losses.METRICS)
    _validation_metric: str = ""  # the early-stopping score (greater is better)

    @abstractmethod
    def _encode_target(self, y, first_call: bool, classes=None) -> np.ndarray:
        """Validated y as a float64 array for training (labels as class indices)."""

    @abstractmethod
    def _training_target(self, y: np.ndarray, weight: np.ndarray, first_call: bool) -> tuple:
        """(target, weight) as the loss sees them: e.g. standardised y, class-weighted rows."""

    @abstractmethod
    def _loss_name(self) -> str:
        """Name of the training loss in _losses.LOSSES."""

    @abstractmethod
    def _n_outputs(self) -> int | None:
        """None: one model with output shape (batch,); an int: that many outputs (batch, n)."""

    def _output_scale(self) -> float:
        """Units of the prediction per unit of model output (y_scale_ for regression)."""
        return 1.0

    def _stratify_labels(self, target: np.ndarray):
        """Labels the early-stopping split keeps the proportions of (None: a plain random split)."""
        return None

    def _initialize_model(self, *, device, dtype, backend: str, generator=None) -> SpectralModel:
        """The one place the torch model is built, in fit and in predict: variants plug in here."""
        spec = getattr(self, "encoding_", None)
        encoder = None if spec is None or spec.is_plain_linear else FeatureEncoder(spec, dtype=dtype, device=device)
        return model_class(self.structure)(
            self.n_features_in_, self.dim_, self.eigval_idx_, n_outputs=self._n_outputs(),
            n_members=self.n_estimators, encoder=encoder,
            backend=backend, generator=generator, dtype=dtype, device=device,
            monotonic=getattr(self, "_column_monotonic", None), smoothing=self.smoothing,
        )

    # ---- scikit-learn ---------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        tags.input_tags.allow_nan = True  # a missing value owns a learned matrix
        return tags

    def _continues_previous_fit(self) -> bool:
        """fit with warm_start on a fitted estimator goes on from where it stopped."""
        return self.warm_start and hasattr(self, "_module_state_")

    def fit_iter(self, X, y, sample_weight=None, eval_set=None):
        """Fit as ``fit`` does, yielding each epoch's record as it completes.

        ``for record in est.fit_iter(X, y, eval_set=[(X_test, y_test)]): ...``
        The estimator is fitted when the loop ends, and also when the consumer
        stops early.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
        eval_set : list of (X, y) pairs, default=None
            Scored at the end of every epoch; never affects training.

        Yields
        ------
        record : dict
            The epoch's record, as appended to ``history_``.
        """
        self._validate_params()
        records = self._fit_epochs(X, y, sample_weight, first_call=not self._continues_previous_fit(),
                                   incremental=False, eval_set=eval_set)
        return self._tearing_down_callbacks(records)

    def _tearing_down_callbacks(self, records):
        # fit gets this from @_fit_context; fit_iter's generator outlives the call
        managed = callback_management_context(self) if callback_management_context else contextlib.nullcontext()
        with managed:
            yield from records

    def _fit(self, X, y, sample_weight, *, first_call, incremental, classes=None, eval_set=None):
        for _ in self._fit_epochs(X, y, sample_weight, first_call=first_call, incremental=incremental,
                                  classes=classes, eval_set=eval_set):
            pass
        return self

    # ---- validate -> prepare the rows -> fit core ------------------------------------------
    def _fit_epochs(self, X, y, sample_weight, *, first_call, incremental, classes=None, eval_set=None):
        """Generator of per-epoch records; the estimator is fitted when it ends or is closed."""
        X_given = X  # what callbacks score fitted copies on: the caller's own X
        X, y = self._validate_inputs(X, y, reset=first_call)
        encoded = self._encode_target(y, first_call, classes)
        eval_sets = check_eval_set(eval_set, self._validate_eval_pair)
        self._resolve_settings()
        distributed = getattr(self, "_distributed", None)
        if distributed is None:
            X_rows, y_rows, weight = check_rows(X, encoded, sample_weight)
        else:  # a shard of a data-parallel fit: no merging, the ranks' row counts must agree
            weight = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
            X_rows, y_rows = X, encoded
        given = distributed is not None and distributed.statistics is not None
        if first_call:
            if given:  # computed over every shard (skspectral.dask)
                for name, value in distributed.statistics.items():
                    setattr(self, name, value)
            else:
                self._fit_standardisation(X_rows, weight)
            self._column_monotonic = self._monotonic_columns()
        target, weight = self._training_target(y_rows, weight, first_call and not given)
        yield from self._fit_core(
            X=X_rows,  # raw: standardised a chunk at a time on its way to the device
            target=target,
            weight=weight,
            eval_sets=eval_sets,
            max_iter=1 if incremental else self.max_iter,
            incremental=incremental,
            resume=not first_call,
            callback_data={"X": X_given, "y": y,
                           "metadata": None if sample_weight is None else {"sample_weight": sample_weight}},
        )

    def _validate_inputs(self, X, y=None, *, reset: bool):
        """X as float rows (numeric values, NaN for missing; categorical level codes) and y;
        float32 input stays float32, anything else is float64.

        On the first fit this finds the categorical columns and learns their levels.
        """
        with_y = y is not None
        explicit = self.categorical_features is not None and not isinstance(self.categorical_features, str)
        if not is_dataframe(X) and (explicit if reset else getattr(self, "is_categorical_", None) is not None):
            # categorical columns in an array: scikit-learn's errors for sparse, 1-D or empty input first
            X = check_array(X, dtype=None, ensure_all_finite=False)
        if reset:
            self.is_categorical_ = categorical_mask(X, self.categorical_features)
        mask = getattr(self, "is_categorical_", None)
        if mask is None:
            check = dict(reset=reset, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan")
            if with_y:
                X, y = validate_data(self, X, y, y_numeric=self._y_numeric, **check)
            else:
                X = validate_data(self, X, **check)
            return X, y  # float32 stays float32: no float64 copy of a tall X
        validate_data(self, X, reset=reset, skip_check_array=True)  # feature names and count only
        if with_y:
            y = _check_y(y, y_numeric=self._y_numeric, estimator=self)
            check_consistent_length(X, y)
        if reset:
            self._category_codes = CategoryCodes()
        return coded_rows(X, mask, self._category_codes, fit=reset), y

    def _validate_eval_pair(self, X, y) -> tuple:
        X, y = self._validate_inputs(X, y, reset=False)
        return X, self._encode_target(y, False)

    def _resolve_settings(self) -> None:
        """Resolve eigval_idx, device, dtype and backend; fail here, at fit, on bad values."""
        device = resolve_device(self.device)
        # a dim-45 step costs little more than a dim-15 one on a GPU (benchmarks/RESULTS.md, section 3);
        # on a CPU the cost grows like dim**3
        self.dim_ = (45 if device.type == "cuda" else 15) if self.dim == "auto" else self.dim
        self.eigval_idx_ = self.dim_ // 2 if self.eigval_idx is None else check_eigval_index(
            self.eigval_idx, self.dim_, "eigval_idx"
        )
        dtype = resolve_dtype(self.dtype, device)
        self.backend_ = select_model_backend(self.backend, device, self.dim_, dtype, structure=self.structure,
                                             smoothing=self.smoothing).name
        self.device_, self.dtype_ = str(device), str(dtype).replace("torch.", "")

    def _fit_standardisation(self, X: np.ndarray, weight: np.ndarray) -> None:
        """Means, scales and ranges of the numeric columns (missing values ignored); the
        encoding of every column. Categorical columns keep their codes (mean 0, scale 1)."""
        mask = self.is_categorical_ if self.is_categorical_ is not None else np.zeros(X.shape[1], dtype=bool)
        numeric_index = np.flatnonzero(~mask)
        self.x_mean_, self.x_scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        self.x_min_, self.x_max_ = np.full(X.shape[1], -np.inf), np.full(X.shape[1], np.inf)
        # every column numeric (the common case): a view, not a copy of X
        numeric = X if len(numeric_index) == X.shape[1] else X[:, numeric_index]
        if numeric.shape[1]:
            mean, scale = weighted_standardisation(numeric, weight, "feature", column_index=numeric_index)
            self.x_mean_[numeric_index], self.x_scale_[numeric_index] = mean, scale
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns
                self.x_min_[numeric_index] = np.nan_to_num(np.nanmin(numeric, axis=0), nan=-np.inf)
                self.x_max_[numeric_index] = np.nan_to_num(np.nanmax(numeric, axis=0), nan=np.inf)
        self.encoding_ = encoding_spec(
            numeric, self.x_mean_[numeric_index], self.x_scale_[numeric_index], numeric_index, weight,
            n_features=X.shape[1], encoding=self.feature_encoding, n_bins=self.n_bins,
            categories=getattr(self, "_category_codes", None) if self.is_categorical_ is not None else None,
            categorical_index=np.flatnonzero(mask), bin_rows=self._bin_rows(len(X)),
        )

    def _bin_rows(self, n_rows: int) -> np.ndarray | None:
        """Rows the quantile bins are computed on: all of them up to _BIN_SUBSAMPLE, else a
        seeded subsample of that many (a column's 200k-row quantiles are within ~0.2 % of the
        full ones in rank, and sorting 28 columns of 10M rows would take half a minute)."""
        if self.feature_encoding != "piecewise_linear" or n_rows <= _BIN_SUBSAMPLE:
            return None
        return np.sort(np.random.default_rng(self._seed()).choice(n_rows, _BIN_SUBSAMPLE, replace=False))

    def _monotonic_columns(self) -> np.ndarray | None:
        """monotonic_cst checked and spread over the encoded columns (-1/0/+1 each), or None."""
        constraints = self.monotonic_cst
        if constraints is None:
            return None
        names = getattr(self, "feature_names_in_", None)
        if isinstance(constraints, dict):
            signs = np.array(monotonic_by_position(constraints, names))
        else:
            signs = np.asarray(constraints)
            if signs.shape != (self.n_features_in_,):
                raise ValueError(f"monotonic_cst must have one entry per feature ({self.n_features_in_}), "
                                 f"got shape {signs.shape}.")
        if signs.dtype.kind not in "iuf" or not np.isin(signs, (-1, 0, 1)).all():
            raise ValueError(f"monotonic_cst entries must be -1, 0 or +1, got {constraints!r}.")
        signs = signs.astype(np.int64)
        if not signs.any():
            return None
        if self._n_outputs() is not None:
            raise ValueError("monotonic_cst is not supported for multiclass classification (as in "
                             "HistGradientBoostingClassifier): a class's probability also moves with the "
                             "other classes' logits. Use it for regression or binary classification.")
        categorical = self.is_categorical_ if self.is_categorical_ is not None else np.zeros(len(signs), bool)
        if (signs[categorical] != 0).any():
            bad = np.flatnonzero(categorical & (signs != 0))
            label = [str(names[i]) for i in bad] if names is not None else bad.tolist()
            raise ValueError(f"monotonic_cst constrains categorical feature(s) {label}: their levels have no "
                             "order. Set their constraint to 0, or leave them out of categorical_features.")
        feature, kind, _ = self.encoding_.columns()
        return np.where((kind == LINEAR) | (kind == PIECEWISE), signs[feature], 0)

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _batch_size(self, n_rows: int) -> int:
        size = 200 if self.batch_size == "auto" else self.batch_size
        distributed = getattr(self, "_distributed", None)
        if distributed is not None:  # batch_size is the global batch: each rank takes its share
            size = -(-size // distributed.world_size)
        return max(1, min(size, n_rows))

    def _dataset(self, X, target, weight, device, dtype, *, rows=None, n_rows=None, clip=False,
                 stream=False) -> Dataset:
        """Raw rows ``X[rows]`` standardised on their way to the device (zero-weight padding up
        to ``n_rows``; clipped to the training range with ``clip``), with their targets and
        weights (given for those rows). With ``stream`` the raw rows stay in host memory and
        every epoch streams them to the device, standardised there."""
        if n_rows is not None:
            target, weight = _pad_rows(target, weight, n_rows)
        if stream:  # the caller's rows stay where they are; each epoch standardises them block by block
            low, high = (self.x_min_, self.x_max_) if clip else (None, None)
            features = HostRows(np.asarray(X), self.x_mean_, self.x_scale_, dtype, rows=rows, n_rows=n_rows,
                                low=low, high=high)
        else:
            features = self._standardised_on(X, device, dtype, rows=rows, n_rows=n_rows, clip=clip)
        return Dataset(features, _to_device(target, device, dtype), _to_device(weight, device, dtype),
                       stream_rows=stream)

    def _fit_core(self, *, X, target, weight, eval_sets, max_iter, incremental, resume, callback_data):
        """Split, build (or reuse) the model, train; yields records and stores the fitted state."""
        device, dtype = torch.device(self.device_), DTYPES[self.dtype_]
        distributed = getattr(self, "_distributed", None)
        seed = self._seed() if distributed is None else distributed.broadcast_int(self._seed())  # one model
        model = self._initialize_model(device=device, dtype=dtype, backend=self.backend_,
                                       generator=torch.Generator().manual_seed(seed))
        if resume:  # warm start / partial_fit: continue from the fitted values
            self._load_fitted_state(model)
        validation = None
        self.early_stopping_ = not incremental and (
            self.early_stopping if self.early_stopping != "auto" else len(X) >= _AUTO_EARLY_STOPPING_ROWS)
        if distributed is not None:
            self.early_stopping_ = bool(distributed.all_max(self.early_stopping_))  # the same on every rank
        shard_seed = seed if distributed is None else seed + distributed.rank  # ranks split and shuffle apart
        train_rows = None  # every row, in order
        if self.early_stopping_:
            rng = np.random.RandomState(shard_seed)
            train_rows, val_rows = validation_split(len(X), self.validation_fraction, rng,
                                                    stratify=self._stratify_labels(target))
            n_val = None if distributed is None else distributed.all_max(len(val_rows))
            validation = self._dataset(X, target[val_rows], weight[val_rows], device, dtype, rows=val_rows,
                                       n_rows=n_val)
        train_target, train_weight = (target, weight) if train_rows is None else (target[train_rows], weight[train_rows])
        n_train = len(train_weight)
        total_weight = float(train_weight.sum())
        n_padded = None
        if distributed is not None:  # every rank takes the same number of steps
            n_padded = distributed.all_max(n_train)
            total_weight = distributed.all_sum(total_weight)
        n_rows = n_train if n_padded is None else n_padded
        stream = _stream_rows(n_rows * X.shape[1] * dtype.itemsize, device)
        if distributed is not None:
            stream = bool(distributed.all_max(int(stream)))  # one kind of epoch on every rank
        train = self._dataset(X, train_target, train_weight, device, dtype, rows=train_rows, n_rows=n_padded,
                              stream=stream)
        evaluations = [self._eval_dataset(Xe, ye, device, dtype) for Xe, ye in eval_sets]
        loss = get_loss(self._loss_name())
        members = self.n_estimators
        output_scale = self._output_scale()
        options = TrainingOptions(
            learning_rate_init=self.learning_rate_init,
            learning_rate_schedule=self.learning_rate_schedule,
            batch_size=self._batch_size(len(train)),
            max_iter=max_iter,
            shuffle=self.shuffle,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            verbose=bool(self.verbose),
            # data-parallel steps replay from CUDA graphs too, all-reduce included, unless the context says not
            cuda_graph=None if distributed is None or distributed.capture_steps else False,
        )
        trainer = Trainer(
            model,
            loss.members_fn(members),
            options,
            torch.Generator(device=device).manual_seed(shard_seed),
            score_fn=loss.ensemble_fn(get_metric(self._validation_metric).fn, members),
            penalty_fn=make_penalty(model, alpha=self.alpha, spectral_penalty=self.spectral_penalty,
                                    total_weight=total_weight),
            train_metric=(loss.metric, lambda mean_loss: loss.to_metric(mean_loss, output_scale)),
            chunk_rows=self._chunk_rows(dtype),
            state=self._resumed_state() if resume else None,
            distributed=distributed,
        )
        tasks = _EpochTasks(self, max_iter, callback_data) if not incremental else None
        records = trainer.epochs(train, validation, self._epoch_recorder(model, evaluations),
                                 on_epoch_begin=tasks.begin if tasks else None)
        fit_history = list(getattr(self, "history_", [])) if resume else []
        first_record = None
        finished = False
        try:
            for record in records:
                fit_history.append(record)
                first_record = first_record or record
                stop = tasks.end(lambda: self._fitted_attributes(model, trainer.state, fit_history)) if tasks else False
                yield record
                if stop:
                    break
            finished = True
        finally:  # also when a fit_iter consumer or a callback stops early: leave a fitted estimator
            records.close()  # restores the best parameters of early stopping
            self._training_state = trainer.state
            self.history_ = fit_history
            if trainer.state.n_iter > 0:
                for name, value in self._fitted_attributes(model, trainer.state, fit_history).items():
                    setattr(self, name, value)
                self._module = model
            if tasks:
                tasks.close()
        if finished and not incremental:
            self._warn_if_not_converged(trainer.state, first_record, fit_history[-1] if fit_history else None,
                                        loss, loss.constant_floor(train_target, train_weight), output_scale)

    def _warn_if_not_converged(self, state, first, last, loss, floor, output_scale) -> None:
        name = type(self).__name__
        if not state.converged and self.learning_rate_schedule == "constant":
            # (the cosine schedule anneals to zero at max_iter: ending there is the plan)
            warnings.warn(
                f"{name}: the maximum number of epochs (max_iter={self.max_iter}) was reached "
                "and the optimisation has not converged yet; raise max_iter or learning_rate_init.",
                ConvergenceWarning,
            )
        key = history.train_key(loss.metric)
        if last is None or key not in last:
            return
        relative, absolute = _FLOOR_MARGIN
        allowed = floor + max(relative * floor, absolute)
        floor_metric, allowed_metric = (float(loss.to_metric(torch.tensor(v, dtype=torch.float64), output_scale))
                                        for v in (floor, allowed))
        final, start = last[key], first[key]
        metric = f"training {loss.metric}"
        if last is not first and final > _DIVERGENCE_MARGIN * start:
            warnings.warn(
                f"{name}: the fit diverged: the {metric} rose from {start:.6g} in the first epoch to {final:.6g}. "
                f"Lower learning_rate_init (now {self.learning_rate_init}).",
                ConvergenceWarning,
            )
        elif final > allowed_metric:
            warnings.warn(
                f"{name}: the fit did not converge: the final {metric} ({final:.6g}) is worse than a constant "
                f"prediction's ({floor_metric:.6g}). Raise max_iter (now {self.max_iter}) if it was still "
                f"improving, else lower learning_rate_init (now {self.learning_rate_init}).",
                ConvergenceWarning,
            )

    def _eval_dataset(self, X, y, device, dtype) -> Dataset:
        ones = np.ones(len(y))
        target, _ = self._training_target(y, ones, False)  # eval metrics are unweighted (no class_weight)
        return self._dataset(X, target, ones, device, dtype, clip=self.clip_features)

    def _resumed_state(self) -> TrainingState:
        """Counters and curves of the previous fit, to continue from (warm start, partial_fit)."""
        state = getattr(self, "_training_state", None)
        if state is not None:
            return state
        return TrainingState(n_iter=self.n_iter_, t=self.t_, loss_curve=list(self.loss_curve_))

    # ---- per-epoch records: sensitivities and eval sets, read in the epoch's one sync -----
    def _epoch_recorder(self, model: SpectralModel, evaluations: list):
        x_scale = torch.as_tensor(self.x_scale_, dtype=model.dtype, device=model.device)
        single = self._n_outputs() is None
        chunk = self._chunk_rows(model.dtype)
        output_scale = self._output_scale()
        loss = get_loss(self._loss_name())
        metrics = {name: get_metric(name) for name in self._metrics}
        members = self.n_estimators

        @torch.no_grad()
        def record() -> dict:
            bounds = feature_bounds(model.feature_matrices(), self.encoding_, norms=model.matrix_norms)
            if members > 1:  # (members * outputs, features) -> the members' mean
                bounds = bounds.view(members, -1, bounds.shape[-1]).mean(dim=0)
            sensitivities = to_user_units(bounds, output_scale, x_scale)
            out = {history.SENSITIVITIES: sensitivities[0] if single else sensitivities}
            for i, data in enumerate(evaluations):
                output = predict_in_chunks(model, data.X, chunk)
                output = loss.combine_members(output) if members > 1 else output
                for name, metric in metrics.items():
                    value = metric.fn(output, data.y, data.weight)
                    out[history.eval_key(i, name)] = value * output_scale if metric.in_target_units else value
            return out

        return record

    # ---- fitted state ---------------------------------------------------------------------
    def _fitted_attributes(self, model: SpectralModel, state: TrainingState, fit_history: list) -> dict:
        """Everything predict and the sensitivities need, as numpy values."""
        with torch.no_grad():
            mu = model.mu().cpu().numpy().astype(np.float64)
            A = model.feature_matrices().cpu().numpy().astype(np.float64)
        # (members * outputs, ...) -> (members, outputs, ...), without axes of length one
        shape = ((self.n_estimators,) if self.n_estimators > 1 else ()) + (
            (self._n_outputs(),) if self._n_outputs() is not None else ())
        return {
            "_module_state_": {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
                               if k in dict(model.named_parameters())},
            "mu_": mu.reshape(shape + mu.shape[1:]),
            "feature_matrices_": A.reshape(shape + A.shape[1:]),
            "n_iter_": state.n_iter,
            "t_": state.t,
            "loss_curve_": list(state.loss_curve),
            "best_loss_": None if self.early_stopping_ else state.best_loss,
            "validation_scores_": list(state.validation_scores) if self.early_stopping_ else None,
            "best_validation_score_": state.best_validation_score if self.early_stopping_ else None,
            "history_": list(fit_history),
        }

    def _load_fitted_state(self, model: SpectralModel) -> None:
        # parameters only: the encoder's buffers (bin edges) are rebuilt from encoding_
        model.load_state_dict({k: torch.as_tensor(v) for k, v in self._module_state_.items()}, strict=False)

    # ---- prediction -------------------------------------------------------------------------
    def _chunk_rows(self, dtype: torch.dtype) -> int:
        n_outputs = (self._n_outputs() or 1) * self.n_estimators
        per_matrix = model_class(self.structure).elements_per_matrix(self.dim_, self.smoothing)
        row_bytes = n_outputs * per_matrix * torch.finfo(dtype).bits // 8
        return max(1, _PREDICT_CHUNK_BYTES // row_bytes)

    def _predict_device(self) -> tuple[torch.device, torch.dtype, str]:
        """The fitted device and backend, or what runs here where they are gone (a CUDA model
        unpickled without a GPU, a Numba-fitted one where Numba is missing)."""
        device, backend = torch.device(self.device_), self.backend_
        if device.type == "cuda" and (not torch.cuda.is_available() or device.index >= torch.cuda.device_count()):
            device, backend = torch.device("cpu"), "auto"  # the fitted backend may not run there
        elif not REGISTRY[backend].is_available():  # e.g. fitted with Numba, loaded where it is missing
            backend = "auto"
        return device, DTYPES[self.dtype_], backend

    def _model_for_prediction(self) -> SpectralModel:
        device, dtype, backend = self._predict_device()
        model = getattr(self, "_module", None)
        if model is None or model.device != device or model.backend != backend:
            model = self._initialize_model(device=device, dtype=dtype, backend=backend)
            self._load_fitted_state(model)
            self._module = model
        return model

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        """The model's input for validated rows X (clipped with clip_features), as float64 numpy."""
        return self._standardised_on(X, torch.device("cpu"), torch.float64, clip=self.clip_features).numpy()

    def _standardised_on(self, X, device, dtype, *, rows=None, n_rows=None, clip=False) -> torch.Tensor:
        # Tree models never extrapolate; with clip_features neither do we past the training range.
        low, high = (self.x_min_, self.x_max_) if clip else (None, None)
        return standardised_rows(X, self.x_mean_, self.x_scale_, device, dtype, rows=rows, n_rows=n_rows,
                                 low=low, high=high)

    def _raw_output(self, X) -> np.ndarray:
        """The model's (ensemble's) output for X (validated here), on the fitted device, as float64 numpy."""
        check_is_fitted(self, "_module_state_")
        X, _ = self._validate_inputs(X, reset=False)
        model = self._model_for_prediction()
        model.eval()
        chunk_rows = self._chunk_rows(model.dtype)
        # blocks of rows travel to the device in turn: tall X is never on the device whole
        block = max(chunk_rows, CHUNK_BYTES // (8 * max(1, X.shape[1])))
        output = torch.cat([
            predict_in_chunks(model, self._standardised_on(X[start : start + block], model.device, model.dtype,
                                                           clip=self.clip_features), chunk_rows)
            for start in range(0, max(1, len(X)), block)  # one (empty) block for no rows
        ])
        if self.n_estimators > 1:
            output = get_loss(self._loss_name()).combine_members(output)
        return output.cpu().numpy().astype(np.float64)

    # ---- pickling: numpy only, no torch module or device state ----------------------------
    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_module", None)
        state.pop("_training_state", None)
        return state


def monotonic_by_position(constraints: dict, names) -> list:
    """monotonic_cst given by feature name, as one constraint per column of X (names: X's columns)."""
    if names is None:
        raise ValueError("monotonic_cst as a dict needs X with feature names (a DataFrame); "
                         "pass one -1/0/+1 per feature instead.")
    unknown = sorted(set(constraints) - set(names))
    if unknown:
        raise ValueError(f"monotonic_cst names features that X does not have: {unknown}; "
                         f"X's features are {list(names)}.")
    return [constraints.get(name, 0) for name in names]


def _pad_rows(target, weight, n_rows: int):
    """Targets and weights of zero-weight rows appended up to n_rows (their features are
    zeros): no effect on any weighted loss or score."""
    extra = n_rows - len(weight)
    if extra <= 0:
        return target, weight
    pad = lambda a: np.concatenate([a, np.zeros((extra,) + a.shape[1:], a.dtype)])  # noqa: E731
    return pad(target), pad(weight)


def _stream_rows(n_bytes: int, device: torch.device) -> bool:
    """Whether training rows of this many bytes stay in host memory, streamed to the device each
    epoch: where they would take over _DEVICE_ROWS_SHARE of the device's free memory (the rest is
    for the model's working memory and the validation rows)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes > _DEVICE_ROWS_SHARE * free


def _to_device(array, device, dtype) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(array), dtype=dtype, device=device)


class _EpochTasks:
    """scikit-learn callbacks (>= 1.9): the fit is the root task, each epoch a subtask.

    A callback whose ``on_fit_task_end`` returns True stops the fit after that
    epoch; the estimator is fitted as of that epoch.
    """

    def __init__(self, estimator, max_iter: int, data: dict):
        self.estimator, self.data = estimator, data
        self.root = None
        self.epoch = None
        if hasattr(estimator, "_init_callback_context"):
            self.root = estimator._init_callback_context(max_subtasks=max_iter)
            self.root.call_on_fit_task_begin(estimator=estimator, **self.data)

    def begin(self) -> None:
        if self.root is not None:
            self.epoch = self.root.subcontext(task_name="epoch")
            self.epoch.call_on_fit_task_begin(estimator=self.estimator, **self.data)

    def end(self, fitted_attributes) -> bool:
        """End the epoch's task; True when a callback asks to stop."""
        if self.epoch is None:
            return False
        epoch, self.epoch = self.epoch, None
        return epoch.call_on_fit_task_end(
            estimator=self.estimator, **self.data,
            # a copy of the estimator as fitted so far, built only if a callback asks for it
            reconstruction_attributes=lambda: {**fitted_attributes(), "_module": None},
        )

    def close(self) -> None:
        if self.root is None:
            return
        if self.epoch is not None:  # begun, but training ended before the epoch ran
            self.epoch.call_on_fit_task_end(estimator=self.estimator)
            self.epoch = None
        self.root.call_on_fit_task_end(estimator=self.estimator, **self.data, reconstruction_attributes={})
        self.root = None
