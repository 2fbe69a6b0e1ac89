"""The base of SpectralRegressor and SpectralClassifier.

One path through every fit:

1. validate the input (at the boundary, once);
2. on a fresh fit, fit the columns (:class:`~skspectral._columns.ColumnMapper`) and the
   target from their one-block summaries (a data-parallel rank gets both, fitted over
   every shard);
3. the rows the device receives (numeric values, level codes), duplicates merged;
4. the fit core: what the fit does, agreed across ranks where it is one rank of a
   data-parallel fit (:class:`FitAgreement`), the model, the trainer, the fitted state.

Then prediction (on the fitted device, or the CPU where that device is gone) and pickling
as numpy state. The hooks a subclass supplies are together at the top of the class.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (_check_sample_weight, _check_y, _get_feature_names, check_array,
                                      check_consistent_length, check_is_fitted, validate_data)

from ._callbacks import CallbackSupportMixin, EpochTasks, tearing_down_callbacks
from ._columns import (CategoryCodes, ColumnKinds, ColumnOptions, ColumnSummary, coded_rows, column_kinds,
                       is_dataframe, level_counts, split_columns, subsample_rows)
from ._columns.gates import interaction_sums, with_chosen_gates
from ._columns.kinds import check_readable
from ._device import DTYPES, check_memory, own_stream, resolve_device, resolve_dtype, stream_lease
from ._losses import make_penalty
from ._preprocessing import check_eval_set, merged_training_rows, validation_split
from ._resumed import resumed_within
from ._sensitivity import (CertifiedSensitivityMixin, bounds_plan_on, diverged_fit_error, ensemble_bounds, feature_bounds,
                           to_user_units)
from ._training import (Dataset, HostRows, StepThreads, Trainer, TrainingOptions, TrainingState, history,
                        FitThreads, predict_in_chunks, schedule_share, step_threads)
from ._transfer import CHUNK_BYTES, standardised_rows
from ._warn import warn
from .eig import BACKENDS, REGISTRY, check_eigval_index
from .encoding import FeatureEncoder
from .model import OnEncodedRows, OnGatheredTerms, SpectralModel, gathers_with, model_class, select_model_backend

# Rows of matrices evaluated at once in predict: bounds memory to ~64 MiB.
_PREDICT_CHUNK_BYTES = 64 * 2**20
# A fit whose final training metric is this much worse than its own first epoch's has
# diverged; one whose final loss exceeds a constant prediction's by more than
# max(relative * floor, absolute) (loss units: standardised squared error, nats) has
# not learned. The absolute part keeps a near-zero log-loss floor (one class holding
# almost all the weight) from flagging a regularised fit.
_DIVERGENCE_MARGIN = 1.1
_FLOOR_MARGIN = (0.1, 0.25)
# early_stopping="auto" holds out validation_fraction of the rows from this many rows up (an estimator
# may start lower: _auto_early_stopping_rows)
_AUTO_EARLY_STOPPING_ROWS = 1000
# With early stopping, the validation score and the model kept are those of the running average
# of the epochs' last parameters (decay per epoch), and n_iter_no_change="auto" waits
# _AUTO_PATIENCE[0] epochs, or _AUTO_PATIENCE[1] from _STEADY_VALIDATION_ROWS validation rows,
# whose score is steady enough to call a plateau sooner (chosen on the selection fold:
# benchmarks/RESULTS.md, section 9); under _FEW_VALIDATION_ROWS it waits max_iter epochs (never stops early)
# and keeps the best epoch of the whole schedule: that score jumps so much that even a 20-epoch wait stopped
# small tables' fits at a chance dip (concrete's RMSE 21 % up on one fold; section 12). The shorter wait
# saves epochs, which on a GPU only a tall fit needs (flights' fit is near issue 24's 2x HGB's time): there it
# starts from _STEADY_VALIDATION_ROWS_GPU validation rows. The longer wait under it: diamonds' RMSE -1.1 to -1.3 %
# (a five-epoch plateau had stopped some fits early), California and cps1988 within 0.1 %, on every one of three
# seeds, for 1.3x the three tables' fit time (H200; section 9).
_AVERAGE_DECAY = 0.5
_AUTO_PATIENCE = (10, 5)
_FEW_VALIDATION_ROWS = 100
_STEADY_VALIDATION_ROWS, _STEADY_VALIDATION_ROWS_GPU = 1000, 10_000
# batch_size="auto": this many rows a step, more where an epoch would take over _AUTO_STEPS steps
# (measured on the suite's tallest tables: flights 2.4x faster on an H200, its RMSE 0.5 % lower;
# benchmarks/RESULTS.md, section 9)
_AUTO_BATCH = 200
_AUTO_STEPS = 200
# n_estimators="auto": _AUTO_MEMBERS[0] members, and on the CPU _AUTO_MEMBERS[1] from _AUTO_MEMBERS_ROWS fit
# rows, where a CPU step's cost follows the members and the rows are many enough that more members' average
# no longer paid (chosen on the selection fold: with the shared members and 32 bins there two scored as three
# with 16 bins at 0.6x the time; flights took more epochs with 3: benchmarks/RESULTS.md, section 9), and
# _AUTO_MEMBERS_TALL from _AUTO_MEMBERS_TALL_ROWS, where with 32 bins one member scored as three (flights on
# the selection fold, section 9). On a GPU a step costs about the same with 4 or 8 members: _AUTO_MEMBERS_GPU
# where early stopping scores the fit on _FEW_VALIDATION_ROWS validation rows or more (on fewer it runs its
# whole schedule and keeps its best epoch: there 8 scored worse than 4 on the selection fold -- concrete's 82
# held-out rows, +1.4 % over four seeds, three of them higher; why is not established) and the fit has fewer
# than _AUTO_MEMBERS_GPU_ROWS rows (flights' fit took 2.7 s with 8 against 1.9 s with 4, past issue 24's
# limit). Eight there: the selection fold -0.6 % over four seeds (California -0.7 to -1.4 %, churn -1.2 to
# -5.2 %), the GPU suite 0.937 -> 0.931 x HGB's on the report folds at 0.83x against 0.69x HGB's fit time
# (section 12). From _AUTO_MEMBERS_GPU_ROWS rows a GPU regressor takes _AUTO_MEMBERS_GPU_TALL
# (``_fewer_members_when_tall``), as the CPU's fit takes fewer there: flights' fit 1.5-1.8 s against 2.4-2.7 s
# with 4 (fewer epochs to its early stop; HGB 0.9-1.0 s), its RMSE +0.5 to +0.9 % (sections 9 and 12: issue
# 24's GPU fit-time goal within its 1 % accuracy rule)
_AUTO_MEMBERS = (4, 2)
_AUTO_MEMBERS_ROWS = 10_000
_AUTO_MEMBERS_TALL, _AUTO_MEMBERS_TALL_ROWS = 1, 100_000
# max_iter="auto": _AUTO_MAX_ITER[0] epochs, and _AUTO_MAX_ITER[1] on the CPU from _AUTO_MEMBERS_TALL_ROWS fit rows
# (one member there). That member's early stop came anywhere from 50 to 82 epochs (flights, by fold and seed),
# the step size still at 60-80 % of its start; a cosine annealed over 60 epochs scored better on the selection fold
# (RMSE -0.4 % over three seeds; 55 epochs +0.0 %, 50 +0.6 %, 70 -0.8 % but as long a fit as before) and bounds the
# fit's cost: issue 24's 10x HGB's time, which flights' 75-82-epoch fits passed (benchmarks/RESULTS.md, section 9).
# A GPU (two members there) keeps the long schedule: 80-110 epochs scored no better on flights' selection fold.
_AUTO_MAX_ITER = (140, 60)
_AUTO_MEMBERS_GPU, _AUTO_MEMBERS_GPU_TALL, _AUTO_MEMBERS_GPU_ROWS = 8, 2, 100_000
# refit="auto": a fit of fewer than this many rows (every rank's) refits on every row once early stopping has
# chosen the epoch. Chosen on the selection fold: the held-out rows lowered the errors (the GPU's suite 0.9397 ->
# 0.9372 x HGB's; cps1988 +0.5 %, the others lower or within 0.1 %); a tall table gains ~1 % for 1.5x its fit
# (flights' GPU fit 2.7 -> 4.1 s). The CPU refitted under 20,000 rows until 2026-12-07, when its fits had grown
# cheap enough for diamonds' and cps1988's refits within issue 24's 5x HGB's time: diamonds' RMSE -2.0 % on the
# selection fold (every one of three seeds), cps1988 +0.1 %, at 1.2-1.3x their fits (benchmarks/RESULTS.md, section 12).
_AUTO_REFIT_ROWS = 100_000
# A refit continues the chosen model on every row for this share of the epochs early stopping chose
# (rounded up): as low an error as training anew for all of them, at ~60 % of that second fit's cost
# (benchmarks/RESULTS.md, section 12)
_REFIT_SHARE = 0.5
# Training rows larger than this share of the GPU's free memory stay on the host, streamed each epoch;
# on the CPU, rows whose standardised copy would take more than _HOST_ROWS_BYTES are read from the
# caller's X a block at a time (no copy of X: a 2M x 28 float32 fit's float64 copy was 1.8x the input).
_DEVICE_ROWS_SHARE = 0.5
_HOST_ROWS_BYTES = 256 * 2**20
# Training and validation rows are encoded once for a fit up to this size (and, on a GPU, this
# share of its free memory); larger ones are encoded at every step.
_ENCODED_ROWS_BYTES = 2**30
_ENCODED_ROWS_SHARE = 0.25
# On the CPU's gathered path the rows' terms (two numbers a term: 2-3x the rows' bytes) are found
# once up to this size, else at every step (a 2M x 28 fit keeps to its memory goal, 2x the input).
_GATHERED_TERMS_BYTES = 256 * 2**20
# The parameters that shape the fitted model: a warm start or partial_fit must keep them.
_MODEL_SHAPE = ("n_estimators", "shared_members", "structure", "feature_encoding", "n_bins", "categorical_features",
                "min_level_count", "gated_columns", "monotonic_cst", "smoothing", "eigval_idx")


def shared_member_count(shared_members: float, n_members: int) -> int:
    """The members (of ``n_members``) whose matrices are scaled copies of one shared set: the share
    ``shared_members`` of them, rounded up (half of 3 members: 2 share, 1 owns its matrices)."""
    return min(n_members, math.ceil(shared_members * n_members - 1e-9))


_NO_TARGET = object()  # _validate_inputs without y (predict), where a fit's y may be None


def auto_patience(n_validation: int, max_iter: int, steady_score: bool = True,
                  steady_rows: int = _STEADY_VALIDATION_ROWS) -> int:
    """n_iter_no_change="auto"'s wait for a fit of ``max_iter`` epochs scored on ``n_validation``
    early-stopping rows; ``steady_score``: the score steadies with more rows (not so several quantile
    levels' mean), and from ``steady_rows`` of them the wait is the shorter one; without early-stopping
    rows (0) the wait applies to the training loss."""
    if 0 < n_validation < _FEW_VALIDATION_ROWS:
        return max_iter  # the whole schedule, its best epoch kept
    return _AUTO_PATIENCE[1] if steady_score and n_validation >= steady_rows else _AUTO_PATIENCE[0]


@dataclass(frozen=True)
class FitPlan:
    """What a fit call does, known before it looks at the rows.

    ``fresh``: fit the columns and the target anew and start a new model (else continue
    the fitted one: warm start, partial_fit after the first call). ``incremental``:
    partial_fit -- one epoch, no early stopping, no callbacks, no convergence warnings.
    ``live``: fit_iter -- while its consumer reads an epoch's record, the estimator is fitted
    as of that epoch.
    """

    fresh: bool
    incremental: bool = False
    live: bool = False


@dataclass(frozen=True)
class FitAgreement:
    """What the fit core decides from the rows, the same on every rank of a data-parallel fit."""

    seed: int  # the model's initial values (rank 0's): one model
    early_stopping: bool
    n_train: int  # training rows per rank: the longest shard (the others pad with zero weight)
    n_validation: int  # validation rows per rank, likewise
    total_weight: float  # of the training rows, over every rank
    stream: bool  # training rows stay in host memory, streamed every epoch (on every rank, or none)
    validation_rows: int = 0  # validation rows over every rank (n_validation: a rank's)


def _names_differ(estimator, X) -> bool:
    """Whether the fitted estimator and the frame X both name their columns and the names differ: only then
    does scikit-learn's name check raise (its error names the columns); where one side has no names it
    warns, which the validation of the values reports once. (Checked here, not by silencing a second
    check's warnings: ``warnings.catch_warnings`` is not thread-safe, and predicts on several threads left
    an "ignore every warning" filter in force for the whole process.)"""
    fitted, given = getattr(estimator, "feature_names_in_", None), _get_feature_names(X)
    return fitted is not None and given is not None and (len(fitted) != len(given) or bool(np.any(fitted != given)))


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
        "max_iter": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "refit": [StrOptions({"auto"}), "boolean"],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "spectral_penalty": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "clip_features": ["boolean"],
        "categorical_features": ["array-like", StrOptions({"from_dtype"}), None],
        "min_level_count": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "gated_columns": [StrOptions({"auto"}), Interval(numbers.Integral, 0, None, closed="left")],
        "feature_encoding": [StrOptions({"linear", "piecewise_linear"})],
        "n_bins": [StrOptions({"auto"}), Interval(numbers.Integral, 2, None, closed="left")],
        "n_estimators": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "shared_members": [Interval(numbers.Real, 0, 1, closed="both")],
        "shared_factor_l1": [Interval(numbers.Real, 0, None, closed="left")],
        "monotonic_cst": ["array-like", dict, None],
        "structure": [StrOptions({"dense", "tridiagonal"})],
        "smoothing": [Interval(numbers.Real, 0, None, closed="neither"), None],
    }

    # ---- the hooks a subclass supplies --------------------------------------------------
    _y_numeric: bool = False  # validate_data's y_numeric
    _model_shape: tuple = _MODEL_SHAPE  # the parameters a warm start must keep
    # The target is summarised from the rows as given (labels must be coded before rows can
    # merge), else from the merged rows the model trains on (as the numeric columns are).
    _target_summarised_as_given: bool = False

    @abstractmethod
    def _check_target(self, y) -> np.ndarray:
        """y validated as a 1-D array (the boundary's check)."""

    @abstractmethod
    def _summarise_target(self, y: np.ndarray, weight: np.ndarray):
        """The target's mergeable summary (``skspectral._target``) of these rows: validated y as
        given, or ``_encode_target``'s y of the merged rows (see ``_target_summarised_as_given``)."""

    @abstractmethod
    def _fit_target(self, summary, classes=None) -> None:
        """Store the target's fitted state (scaler, label coder) from the summary of every row."""

    @abstractmethod
    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        """y as float64 values the rows are merged on (regression: y; classification: class indices)."""

    @abstractmethod
    def _gate_target(self, y_rows: np.ndarray) -> np.ndarray:
        """(n, targets) floats the gated columns' test reads (skspectral._columns.gates): regression's
        y, a classifier's class indicators."""

    @abstractmethod
    def _training_target(self, y_rows: np.ndarray, weight: np.ndarray) -> tuple:
        """(target, weight) as the loss sees them: e.g. standardised y, class-weighted rows."""

    @abstractmethod
    def _loss(self):
        """The training loss (an ``_losses.Loss``), for the fitted target."""

    @abstractmethod
    def _eval_metrics(self) -> dict:
        """name -> ``_losses.Metric`` recorded for each eval set every epoch (model space in, the
        reported units out: a metric ``in_target_units`` is multiplied by ``_output_scale()``)."""

    @abstractmethod
    def _validation_score(self):
        """The early-stopping score, an ``_losses.Metric`` (greater is better)."""

    def _validation_score_scale(self) -> float:
        """The early-stopping score's change for a change of one in the training loss (tol is
        read in the loss's units); 1 where the score is unit-free (R^2, log-loss)."""
        return 1.0

    def _eigen_indices(self):
        """The eigenvalue index the model outputs, or a tuple of them (one output each)."""
        return self.eigval_idx_

    def _member_bounds(self) -> str:
        """How members' certified bounds combine into the ensemble output's (``Loss.member_bounds``)."""
        return self._loss().member_bounds

    @abstractmethod
    def _n_outputs(self) -> int | None:
        """None: one model with output shape (batch,); an int: that many outputs (batch, n)."""

    def _output_scale(self) -> float:
        """Units of the prediction per unit of model output (y_scale_ for regression)."""
        return 1.0

    def _stratify_labels(self, target: np.ndarray):
        """Labels the early-stopping split keeps the proportions of (None: a plain random split)."""
        return None

    def _initialize_model(self, *, device, dtype, backend: str, generator=None, draw: bool = True) -> SpectralModel:
        """The one place the torch model is built, in fit and in predict: variants plug in here. ``draw=False``
        where the fitted state is loaded next: no initial matrices drawn (a large model's draw took 10-30 ms, and
        prediction took numbers from torch's global generator)."""
        mapper = self.column_mapper_
        spec = mapper.spec
        encoder = None if spec.is_plain_linear else FeatureEncoder(spec, dtype=dtype, device=device)
        return model_class(self.structure)(
            self.n_features_in_, self.dim_, self._eigen_indices(), n_outputs=self._n_outputs(),
            n_members=self.n_estimators_, encoder=encoder,
            backend=backend, generator=generator, dtype=dtype, device=device,
            monotonic=mapper.monotone, smoothing=self.smoothing, n_shared_members=self.n_shared_members_, draw=draw,
        )

    # ---- scikit-learn ---------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        tags.input_tags.allow_nan = True  # a missing value owns a learned matrix
        return tags

    def _plan(self, *, incremental: bool) -> FitPlan:
        """fit starts anew unless warm_start continues a fitted model; partial_fit continues
        from its second call."""
        fitted = hasattr(self, "_module_state_")
        fresh = not fitted if incremental else not (self.warm_start and fitted)
        if not fresh:
            self._check_same_model_shape()
        return FitPlan(fresh=fresh, incremental=incremental)

    def _check_same_model_shape(self) -> None:
        """A fit that continues the fitted model needs the parameters that shaped it unchanged."""
        changed = [name for name in self._model_shape if name != "n_estimators"
                   and _comparable(getattr(self, name)) != _comparable(self._model_shape_[name])]
        if self.n_estimators not in ("auto", self.n_estimators_):  # "auto": the fitted members
            changed.insert(0, "n_estimators")
        dim = self._resolved_dim(resolve_device(self.device))
        if dim != self.dim_:
            changed.insert(0, "dim")
        if changed:
            was = {**self._model_shape_, "dim": self.dim_, "n_estimators": self.n_estimators_}
            now = ", ".join(f"{name}={getattr(self, name)!r} (was {was[name]!r})" for name in changed)
            raise ValueError(f"{type(self).__name__} continues its fitted model (warm_start=True or partial_fit), "
                             f"whose shape these parameters changed: {now}. Restore them, or fit anew "
                             "(warm_start=False, or a clone of the estimator).")

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

        Notes
        -----
        While the loop's body runs, the estimator is fitted as of the epoch just yielded
        (its parameters at that epoch's end, as callbacks see them): ``predict``, ``score``
        and the sensitivities work there, at the price of a copy of the parameters an epoch.
        When the loop ends or stops early, it holds the fit's model -- early stopping's best
        epoch and, where ``refit_``, its refit on every row -- as ``fit`` leaves it. A loop
        left with ``break`` over a generator the caller still holds ends when that generator
        is closed (``close()``) or collected.
        """
        self._validate_params()
        plan = dataclasses.replace(self._plan(incremental=False), live=True)
        records = self._fit_epochs(X, y, sample_weight, plan, eval_set=eval_set)
        return tearing_down_callbacks(self, records)

    def _fit(self, X, y, sample_weight, *, incremental: bool, classes=None, eval_set=None):
        for _ in self._fit_epochs(X, y, sample_weight, self._plan(incremental=incremental), classes=classes,
                                  eval_set=eval_set):
            pass
        return self

    # ---- validate -> columns and target -> rows -> fit core ---------------------------------
    def _fit_epochs(self, X, y, sample_weight, plan: FitPlan, *, classes=None, eval_set=None):
        """Generator of per-epoch records; the estimator is fitted when it ends or is closed. From the
        columns on, its code runs on one thread on the CPU (the steps set their own count; they are tuned
        from the caller's) and its training on CUDA on a stream it alone holds -- each entered around every
        resumption of the generator (resumed_within), so a ``fit_iter`` consumer's code between the epochs
        runs on its own thread count and stream, and loops interleaved on one thread leave it as it was."""
        X_given = X  # what callbacks score fitted copies on: the caller's own X
        X, y = self._validate_inputs(X, y, reset=plan.fresh)
        weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        self._resolve_settings()
        device = torch.device(self.device_)
        threads = step_threads(device.type == "cpu")  # the caller's count, read before the fit runs on one thread
        set_up_and_fit = self._set_up_and_fit(X, y, weight, plan, classes, eval_set, device, threads, callback_data={
            "X": X_given, "y": y, "metadata": None if sample_weight is None else {"sample_weight": sample_weight}})
        yield from resumed_within(set_up_and_fit, FitThreads(device.type == "cpu").running)

    def _set_up_and_fit(self, X, y, weight, plan: FitPlan, classes, eval_set, device: torch.device, threads,
                        callback_data: dict):
        """_fit_epochs' generator from the columns on: the rows, the columns' and the target's fitted rules,
        then the fit core."""
        if plan.fresh:  # levels before codes, codes before rows, rows before their statistics
            kinds = self._column_kinds
            numeric, categorical = split_columns(X, kinds)
            levels = None if categorical is None else level_counts(
                categorical, kinds.labels(kinds.categorical_index))
            codes = None if levels is None else CategoryCodes(levels, self.min_level_count)
            rows = coded_rows(numeric, categorical, kinds, codes)
            if self._target_summarised_as_given:
                self._fit_target(self._summarise_target(y, weight), classes)
        else:
            rows = self.column_mapper_.rows(X)
        rows, y_rows, weight = merged_training_rows(rows, self._encode_target(y), weight)
        if plan.fresh:
            self._fit_columns(rows, weight, levels, codes, y_rows)
            rows = self.column_mapper_.gated(rows)
            if not self._target_summarised_as_given:
                self._fit_target(self._summarise_target(y_rows, weight), classes)
        eval_sets = check_eval_set(eval_set, self._validate_eval_pair)
        # on CUDA the fit's training on a stream it alone holds: fits on other threads run beside it
        with stream_lease(device) as stream:
            core = self._fit_core(rows, *self._training_target(y_rows, weight), eval_sets, plan,
                                  callback_data=callback_data, threads=threads)
            yield from resumed_within(core, functools.partial(own_stream, device, stream))

    def _fit_shard(self, rows, y, weight, *, mapper, target, context, eval_sets=()) -> None:
        """One rank's part of a data-parallel fit (``skspectral.dask``): ``rows`` are coded float
        rows, ``y`` raw targets; the columns (``mapper``) and the target's summary (``target``)
        come fitted over every shard; ``context`` is the rank's DistributedContext; ``eval_sets``
        validated pairs (``_validate_eval_pair``'s). No duplicate merging: the ranks' rows stay as
        the partitions hold them."""
        self._resolve_settings(context)
        self._fit_target(target)
        self.column_mapper_ = mapper
        self._check_monotone_outputs()
        records = self._fit_core(rows, *self._training_target(self._encode_target(self._check_target(y)), weight),
                                 eval_sets, FitPlan(fresh=True), context=context)
        for _ in records:
            pass

    def _validate_inputs(self, X, y=_NO_TARGET, *, reset: bool):
        """X as validated input (numeric arrays as float, float32 staying float32; DataFrames and
        arrays with categorical columns as given, their names and counts checked) and y (where
        given: a fit's y, None included).

        On a fresh fit this decides which columns are categorical.
        """
        with_y = y is not _NO_TARGET
        if reset:
            explicit = self.categorical_features is not None and not isinstance(self.categorical_features, str)
            if explicit and not is_dataframe(X):  # scikit-learn's errors for sparse, 1-D or empty input first
                X = check_array(X, dtype=None, ensure_all_finite=False)
            kinds = column_kinds(X, self.categorical_features)
        else:
            check_is_fitted(self, "column_mapper_")
            kinds = self.column_mapper_.kinds
            if kinds.categorical is not None and not is_dataframe(X):
                X = check_array(X, dtype=None, ensure_all_finite=False)
            if is_dataframe(X) and _names_differ(self, X):
                # the names before the values: a frame with its columns in another order would
                # otherwise be reported as a column holding the wrong kind of values
                validate_data(self, X, reset=False, skip_check_array=True)
            check_readable(X, kinds, fitted=True)
        if kinds.categorical is None:
            check = dict(reset=reset, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan")
            if with_y:
                X, y = validate_data(self, X, y, y_numeric=self._y_numeric, **check)
            else:
                X = validate_data(self, X, **check)
            if reset:  # (a 1-D X was left to validate_data's error)
                kinds = ColumnKinds(X.shape[1], None, kinds.names)
        elif with_y:  # feature names and count only; X's columns are read by the column mapper
            X, y = validate_data(self, X, y, reset=reset, skip_check_array=True)
            y = _check_y(y, y_numeric=self._y_numeric, estimator=self)
            check_consistent_length(X, y)
        else:
            validate_data(self, X, reset=reset, skip_check_array=True)
        if reset:
            self._column_kinds = kinds
        return X, (self._check_target(y) if with_y else None)

    def _validate_eval_pair(self, X, y) -> tuple:
        X, y = self._validate_inputs(X, y, reset=False)
        return self.column_mapper_.rows(X), self._encode_target(y)

    def _resolve_settings(self, context=None) -> None:
        """Resolve dim, eigval_idx, device, dtype and backend; fail here, at fit, on bad values.
        An explicit CPU-only backend with device="auto" runs on the CPU."""
        device = resolve_device(self.device)
        if (isinstance(self.device, str) and self.device == "auto" and self.backend != "auto"
                and device.type not in REGISTRY[self.backend].device_types):
            device = torch.device("cpu")  # e.g. backend="numba" on a GPU host
        if context is not None and device.type == "cuda":
            device = context.device  # the rank's own GPU
        self.dim_ = self._resolved_dim(device)
        self.eigval_idx_ = self.dim_ // 2 if self.eigval_idx is None else check_eigval_index(
            self.eigval_idx, self.dim_, "eigval_idx"
        )
        def backend(dtype):
            return select_model_backend(self.backend, device, self.dim_, dtype, structure=self.structure,
                                        smoothing=self.smoothing)

        dtype = resolve_dtype(self.dtype, device, cpu_kernels=gathers_with(backend(torch.float32), self.smoothing))
        self.backend_ = backend(dtype).name
        self.device_, self.dtype_ = str(device), str(dtype).replace("torch.", "")

    def _resolved_dim(self, device: torch.device) -> int:
        # a dim-45 step costs little more than a dim-15 one on a GPU (benchmarks/RESULTS.md, section 3);
        # on a CPU the cost grows like dim**3
        return (45 if device.type == "cuda" else 15) if self.dim == "auto" else self.dim

    def _fit_columns(self, rows: np.ndarray, weight: np.ndarray, levels, codes, y_rows) -> None:
        """The column mapper of a plain fit: the summary of one block -- the rows it trains on,
        with the levels counted before they were coded -- finalized, and the gated copies its
        target asks for (on the bins' subsample of rows). Warns about the columns that carry
        nothing."""
        kinds = self._column_kinds
        numeric = rows if kinds.categorical is None else rows[:, kinds.numeric_index]
        sample = subsample_rows(len(weight), self._seed)
        summary = ColumnSummary.of_block(numeric, weight, kinds, levels=levels, sample_rows=sample)
        mapper = summary.finalize(self._column_options(), codes)
        chosen = slice(None) if sample is None else sample
        self.column_mapper_ = with_chosen_gates(
            mapper, self.gated_columns, summary.n_rows, lambda candidates: interaction_sums(
                mapper, candidates, rows[chosen], self._gate_target(y_rows[chosen]), weight[chosen]))
        self._check_monotone_outputs()
        message = self.column_mapper_.ignored_message()
        if message:
            warn(f"{type(self).__name__}: {message}")

    def _column_options(self) -> ColumnOptions:
        """The encoding options, monotonic_cst as one constraint per column of X."""
        constraints = self.monotonic_cst
        if isinstance(constraints, dict):
            constraints = monotonic_by_position(constraints, getattr(self, "feature_names_in_", None))
        return ColumnOptions(self.feature_encoding, self.n_bins,
                             None if constraints is None else np.asarray(constraints), self.min_level_count)

    def _check_monotone_outputs(self) -> None:
        if self.column_mapper_.monotone is not None and self._n_outputs() is not None:
            raise ValueError("monotonic_cst is not supported for multiclass classification (as in "
                             "HistGradientBoostingClassifier): a class's probability also moves with the "
                             "other classes' logits. Use it for regression or binary classification.")

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _batch_size(self, n_rows: int, context=None) -> int:
        """Rows per step (a rank's share of the global batch in a data-parallel fit). "auto":
        _AUTO_BATCH rows, or on tall data as many as keep an epoch to _AUTO_STEPS steps (a GPU
        step costs about the same up to thousands of rows; a CPU step's fixed costs are shared)."""
        world = 1 if context is None else context.world_size
        size = self.batch_size
        if size == "auto":
            size = max(_AUTO_BATCH, -(-n_rows * world // _AUTO_STEPS))
        size = -(-size // world)  # batch_size is the global batch: each rank takes its share
        return max(1, min(size, n_rows))

    def _members(self, n_rows: int, device: torch.device, n_validation: int = 0) -> int:
        """n_estimators; "auto": on the CPU, fewer members where the fit's rows (every rank's,
        duplicates merged) are many: they average less noise out there, and each costs its share of
        a step. On a GPU, more where early stopping scores the fit on ``n_validation`` rows (every
        rank's) of at least _FEW_VALIDATION_ROWS, and fewer from _AUTO_MEMBERS_GPU_ROWS rows where
        ``_fewer_members_when_tall``."""
        if self.n_estimators != "auto":
            return self.n_estimators
        if device.type != "cpu":
            if n_rows >= _AUTO_MEMBERS_GPU_ROWS:
                return _AUTO_MEMBERS_GPU_TALL if self._fewer_members_when_tall() else _AUTO_MEMBERS[0]
            return _AUTO_MEMBERS_GPU if n_validation >= _FEW_VALIDATION_ROWS else _AUTO_MEMBERS[0]
        if n_rows < _AUTO_MEMBERS_ROWS:
            return _AUTO_MEMBERS[0]
        one_member_rows = _AUTO_MEMBERS_ROWS if self._one_member_sooner() else _AUTO_MEMBERS_TALL_ROWS
        return _AUTO_MEMBERS_TALL if n_rows >= one_member_rows else _AUTO_MEMBERS[1]

    def _max_iter(self, n_rows: int, device: torch.device) -> int:
        """max_iter; "auto": _AUTO_MAX_ITER[0] epochs, or on the CPU _AUTO_MAX_ITER[1] from
        _AUTO_MEMBERS_TALL_ROWS fit rows (every rank's)."""
        if self.max_iter != "auto":
            return self.max_iter
        return _AUTO_MAX_ITER[1] if device.type == "cpu" and n_rows >= _AUTO_MEMBERS_TALL_ROWS else _AUTO_MAX_ITER[0]

    def _refits(self, n_rows: int, n_held_out: int) -> bool:
        """refit; "auto": under _AUTO_REFIT_ROWS fit rows (every rank's), unless the fit reads its held-out
        rows for itself (``_reads_held_out_rows``; ``n_held_out``: a rank's count, the most of any rank's)."""
        if self.refit != "auto":
            return self.refit
        return n_rows < _AUTO_REFIT_ROWS and not self._reads_held_out_rows(n_held_out)

    def _reads_held_out_rows(self, n_held_out: int) -> bool:
        """Whether a fit reads its ``n_held_out`` early-stopping rows once trained (which a refit would
        train on)."""
        return False

    def _fewer_members_when_tall(self) -> bool:
        """Whether this fit takes _AUTO_MEMBERS_GPU_TALL members on a GPU from _AUTO_MEMBERS_GPU_ROWS rows."""
        return False

    def _one_member_sooner(self) -> bool:
        """Whether this fit takes one member on the CPU from _AUTO_MEMBERS_ROWS, where others take two."""
        return False

    def _patience(self, n_validation: int, device: torch.device, max_iter: int) -> int:
        """n_iter_no_change for a fit of ``max_iter`` epochs; "auto": a shorter wait where the validation
        rows (every rank's, in a data-parallel fit: its score is their average) are many enough for a
        steady score; on a GPU, where an epoch is cheap, only where they are a tall fit's
        (_STEADY_VALIDATION_ROWS_GPU)."""
        if self.n_iter_no_change != "auto":
            return self.n_iter_no_change
        steady_rows = _STEADY_VALIDATION_ROWS if device.type == "cpu" else _STEADY_VALIDATION_ROWS_GPU
        return auto_patience(n_validation, max_iter, self._score_steadies_with_rows(), steady_rows)

    def _auto_early_stopping_rows(self) -> int:
        """The fit rows (every rank's) from which early_stopping="auto" holds out rows."""
        return _AUTO_EARLY_STOPPING_ROWS

    def _score_steadies_with_rows(self) -> bool:
        """Whether the early-stopping score on many rows (_STEADY_VALIDATION_ROWS) is steady enough
        from epoch to epoch to call a plateau after the shortest wait."""
        return True

    def _step_size(self, batch_size: int, context=None) -> float:
        """Adam's step size: learning_rate_init, grown with the square root of an "auto" batch
        above _AUTO_BATCH rows (the noise of a step's gradient shrinks so)."""
        world = 1 if context is None else context.world_size
        if self.batch_size != "auto" or batch_size * world <= _AUTO_BATCH:
            return self.learning_rate_init
        return self.learning_rate_init * math.sqrt(batch_size * world / _AUTO_BATCH)

    # ---- the fit core ----------------------------------------------------------------------
    def _start_diagonal(self, model, target, weight, context) -> None:
        """The hook where a loss sets the diagonal a fresh fit's models start from (``target``: the training
        rows' targets as trained, ``weight`` theirs; ``context``: a data-parallel fit's, whose ranks must
        start alike); by default the model's own (evenly spaced)."""

    def _agree(self, context, proposals: dict) -> dict:
        """The proposals themselves in a plain fit; agreed over the ranks (one collective) in a
        data-parallel one."""
        if context is None:
            return {name: value for name, (value, _) in proposals.items()}
        return context.agree(proposals)

    def _fit_core(self, X, target, weight, eval_sets, plan: FitPlan, *, context=None, callback_data=None,
                  threads: StepThreads | None = None):
        """Agree on the plan, split, build (or reuse) the model, train; yields records and stores
        the fitted state. ``threads``: what the CPU steps are tuned from (step_threads'; None:
        torch's thread count)."""
        device, dtype = torch.device(self.device_), DTYPES[self.dtype_]
        start = self._agree(context, {
            "seed": (self._seed(), "first"),
            "n_rows": (len(X), "sum"),
        })
        seed = int(start["seed"])
        early_stopping = not plan.incremental and (
            self.early_stopping if self.early_stopping != "auto"
            else start["n_rows"] >= self._auto_early_stopping_rows())
        rank = 0 if context is None else context.rank
        train_rows = val_rows = None  # every row, in order; no validation rows
        if early_stopping:  # the ranks split (and shuffle) apart
            train_rows, val_rows = validation_split(len(X), self.validation_fraction,
                                                    np.random.RandomState(seed + rank),
                                                    stratify=self._stratify_labels(target))
        train_target = target if train_rows is None else target[train_rows]
        train_weight = weight if train_rows is None else weight[train_rows]
        row_bytes = X.shape[1] * dtype.itemsize
        agreed = self._agree(context, {
            "n_train": (len(train_weight), "max"),
            "n_validation": (0 if val_rows is None else len(val_rows), "max"),
            "validation_rows": (0 if val_rows is None else len(val_rows), "sum"),
            "total_weight": (float(train_weight.sum()), "sum"),
            "stream": (_stream_rows(len(train_weight) * row_bytes, device), "max"),
        })
        fit = FitAgreement(seed, bool(early_stopping), int(agreed["n_train"]), int(agreed["n_validation"]),
                           float(agreed["total_weight"]), bool(agreed["stream"]), int(agreed["validation_rows"]))
        self.max_iter_ = self._max_iter(int(start["n_rows"]), device)
        if plan.fresh:  # a continued fit keeps its members
            self.n_estimators_ = self._members(int(start["n_rows"]), device, fit.validation_rows)
            self.n_shared_members_ = shared_member_count(self.shared_members, self.n_estimators_)
        model = self._fit_start(fit, device, dtype, draw=plan.fresh)
        if not plan.fresh:  # warm start / partial_fit: continue from the fitted values
            self._load_fitted_state(model)
        else:
            self._start_diagonal(model, train_target, train_weight, context)
        self.early_stopping_ = fit.early_stopping
        self.refit_ = fit.early_stopping and plan.fresh and self._refits(int(start["n_rows"]), fit.n_validation)
        pad = context is not None  # every rank takes the same number of steps
        weight_scale = _weight_scale(fit.total_weight, int(start["n_rows"]) - fit.validation_rows)
        train = self._dataset(X, train_target, train_weight * weight_scale, device, dtype,
                              rows=train_rows, n_rows=fit.n_train if pad else None, stream=fit.stream)
        validation = None if val_rows is None else self._dataset(
            X, target[val_rows], weight[val_rows] * weight_scale, device, dtype, rows=val_rows,
            n_rows=fit.n_validation if pad else None)
        evaluations = [self._eval_dataset(Xe, ye, device, dtype) for Xe, ye in eval_sets]
        trained, train, validation = self._encoded_once(model, train, validation)
        trainer = self._trainer(model, fit, len(train), plan, context, module=trained, threads=threads)
        # the loss of the best constant prediction: a fit that learned anything beats it
        floor = self._loss().constant_floor(train_target, train_weight)
        del train_target  # (a copy of the training rows' targets, not held through the epochs)
        finished = yield from self._train(trainer, model, train, validation, evaluations, plan, floor, callback_data)
        best = trainer.state.best_validation_score
        if finished and self.refit_ and math.isfinite(best):
            epochs = 1 + trainer.state.validation_scores.index(best)  # the epoch whose model early stopping kept
            del trainer, trained, train, validation, model  # the selection's rows and steps (the model is kept)
            self._refit_on_every_row(X, target, weight, fit, epochs, plan, context, threads, weight_scale)

    def _refit_on_every_row(self, X, target, weight, fit: FitAgreement, epochs: int, plan: FitPlan, context,
                            threads, weight_scale: float) -> None:
        """A refit (``refit_``): the model early stopping kept goes on training on every row -- the
        early-stopping rows too -- for _REFIT_SHARE of the ``epochs`` it took (rounded up), from the step
        size the schedule gave as many epochs before the chosen one down to 0 (a cosine); its last
        parameters are kept.
        Replaces the fitted model; the selection's record (history_, n_iter_, the validation scores)
        stays."""
        device, dtype = torch.device(self.device_), DTYPES[self.dtype_]
        agreed = self._agree(context, {
            "n_train": (len(weight), "max"),
            "total_weight": (float(weight.sum()), "sum"),
            "stream": (_stream_rows(len(weight) * X.shape[1] * dtype.itemsize, device), "max"),
        })
        every_row = FitAgreement(fit.seed, False, int(agreed["n_train"]), 0, float(agreed["total_weight"]),
                                 bool(agreed["stream"]))
        model = self._fit_start(every_row, device, dtype, draw=False)
        self._load_fitted_state(model)  # the chosen model
        pad = context is not None  # every rank takes the same number of steps
        train = self._dataset(X, target, weight * weight_scale, device, dtype,
                              n_rows=every_row.n_train if pad else None, stream=every_row.stream)
        trained, train, _ = self._encoded_once(model, train, None)
        length = math.ceil(_REFIT_SHARE * epochs)
        # The step size the schedule gave ``length`` epochs before the chosen one (index epochs - 1): the
        # refit replays the schedule's last stretch on every row. From the chosen epoch's own step, a fit
        # that ran its schedule to the end refitted at ~0 and learnt nothing from the held-out rows
        # (concrete: 6 % lower RMSE rewound; benchmarks/RESULTS.md, section 12).
        rewound = schedule_share(self.learning_rate_schedule, max(epochs - 1 - length, 0), self.max_iter_)
        trainer = self._trainer(model, every_row, len(train), plan, context, module=trained, threads=threads,
                                length=length, step_factor=rewound)
        if self.verbose:
            print(f"Refit: the epoch {epochs} model on every row ({every_row.n_train}) for {length} more epochs")
        for _ in trainer.epochs(train, look_ahead=True):
            pass
        attributes = self._fitted_attributes(model, trainer.state, self.history_)
        for name in ("_module_state_", "mu_", "feature_matrices_"):
            setattr(self, name, attributes[name])
        self.refit_epochs_ = trainer.state.n_iter
        self._module = model
        # The model kept is the refit's, which no held-out row scored: a warm start continues it,
        # with no best epoch of the selecting model's to return to or to beat.
        self._training_state.best_parameters = None
        self._training_state.best_validation_score = -float("inf")

    def _fit_start(self, fit: FitAgreement, device: torch.device, dtype: torch.dtype, draw: bool) -> SpectralModel:
        """The model a fit starts from, drawn from its seed, or not drawn where the caller loads a fitted state
        into it (after checking the device holds what it needs)."""
        check_memory(self._model_bytes(dtype, fit.n_train), device, what=self._model_description())
        return self._initialize_model(device=device, dtype=dtype, backend=self.backend_,
                                      generator=torch.Generator().manual_seed(fit.seed), draw=draw)

    def _encoded_once(self, model, train: Dataset, validation: Dataset | None):
        """(the module a step calls, train, validation): where the forward multiplies encoded
        columns (not on the CPU's gathered path) and they fit in memory, the resident rows
        encoded once for the whole fit and the model taking them (OnEncodedRows); a step then
        skips the encoder's dozen small kernels (10-20 % of a GPU step). On the CPU's gathered path,
        where they fit in _GATHERED_TERMS_BYTES, the rows' gathered terms found once (OnGatheredTerms).
        Else as they are."""
        datasets = [d for d in (train, validation) if d is not None]
        if model.encoder is None or any(d.stream_rows for d in datasets):
            return model, train, validation
        if model.gathers:
            n_terms = model.gathered_terms(train.X[:1])[0].shape[1]
            n_bytes = sum(len(d) for d in datasets) * 2 * n_terms * model.dtype.itemsize
            if n_bytes > _GATHERED_TERMS_BYTES or not OnGatheredTerms.packs(model):
                return model, train, validation
            chunk = self._chunk_rows(model.dtype)

            def packed(d: Dataset) -> Dataset:
                terms = [OnGatheredTerms.pack(model, d.X[start:start + chunk]) for start in range(0, len(d), chunk)]
                return Dataset(torch.cat(terms), d.y, d.weight)

            return OnGatheredTerms(model), packed(train), None if validation is None else packed(validation)
        n_bytes = sum(len(d) for d in datasets) * model.n_matrices * model.dtype.itemsize
        if n_bytes > _ENCODED_ROWS_BYTES or (
                model.device.type == "cuda" and n_bytes > _ENCODED_ROWS_SHARE * torch.cuda.mem_get_info(model.device)[0]):
            return model, train, validation
        chunk = self._chunk_rows(model.dtype)

        @torch.no_grad()
        def encoded(d: Dataset) -> Dataset:
            Z = torch.cat([model.encoded(d.X[start:start + chunk]) for start in range(0, len(d), chunk)])
            return Dataset(Z, d.y, d.weight)

        return (OnEncodedRows(model), encoded(train),
                None if validation is None else encoded(validation))

    def _trainer(self, model, fit: FitAgreement, n_train: int, plan: FitPlan, context, module=None,
                 threads: StepThreads | None = None, length: int | None = None,
                 step_factor: float = 1.0) -> Trainer:
        """The fit's trainer; ``length`` and ``step_factor``: a refit's epochs, and its step size's share of
        the fit's."""
        loss = self._loss()
        members, output_scale = self.n_estimators_, self._output_scale()
        batch_size = self._batch_size(n_train, context)
        options = TrainingOptions(
            learning_rate_init=self._step_size(batch_size, context) * step_factor,
            learning_rate_schedule=self.learning_rate_schedule,
            batch_size=batch_size,
            max_iter=length if length is not None else 1 if plan.incremental else self.max_iter_,
            shuffle=self.shuffle,
            tol=self.tol,
            score_scale=self._validation_score_scale(),
            n_iter_no_change=self._patience(fit.validation_rows, model.device, self.max_iter_),
            average_decay=_AVERAGE_DECAY,
            verbose=bool(self.verbose),
            threads=None if threads is None else threads.count,
            idle_cores=None if threads is None else threads.idle_cores,
        )
        return Trainer(
            model if module is None else module,  # module: the model on rows encoded once
            loss.members_fn(members),
            options,
            # the ranks shuffle apart
            torch.Generator(device=model.device).manual_seed(fit.seed + (0 if context is None else context.rank)),
            score_fn=loss.ensemble_fn(self._validation_score().fn, members),
            penalty_fn=make_penalty(model, alpha=self.alpha, spectral_penalty=self.spectral_penalty,
                                    total_weight=fit.total_weight, shared_factor_l1=self.shared_factor_l1),
            train_metric=(loss.metric, lambda mean_loss: loss.to_metric(mean_loss, output_scale)),
            chunk_rows=self._chunk_rows(model.dtype),
            state=None if plan.fresh else self._resumed_state(),
            distributed=context,
            loss_and_gradient=loss.fn_and_gradient,  # the members' mean loss over (batch, members)
        )

    def _train(self, trainer: Trainer, model, train, validation, evaluations, plan: FitPlan, floor: float,
               callback_data):
        """The trainer's epochs, with callbacks; stores the fitted state when they end (also when a
        consumer or a callback stops them early)."""
        loss = self._loss()
        tasks = None if plan.incremental else EpochTasks(self, self.max_iter_, callback_data or {})
        # where nothing reads the model between the epochs (no callback asking for the fitted copy, no fit_iter
        # consumer), the next epoch is queued before this one's record is read
        records = trainer.epochs(train, validation, self._epoch_recorder(model, evaluations),
                                 on_epoch_begin=tasks.begin if tasks else None,
                                 look_ahead=not plan.live and not (tasks and tasks.watching))
        fit_history = [] if plan.fresh else list(getattr(self, "history_", []))
        first_record = None
        finished = False
        try:
            for record in records:
                fit_history.append(record)
                first_record = first_record or record
                # the fitted attributes as of this epoch, built once for a callback's fitted copy and fit_iter's
                # consumer (each built them before), and only where one of them asks
                as_of_epoch = functools.cache(functools.partial(self._fitted_attributes, model, trainer.state,
                                                                fit_history))
                stop = tasks.end(as_of_epoch) if tasks else False
                if plan.live:  # fit_iter's consumer reads the estimator as of this epoch
                    self._store_fitted(model, trainer, fit_history, validation, live=True, attributes=as_of_epoch())
                yield record
                if stop:
                    break
            finished = True
        finally:  # also when a fit_iter consumer or a callback stops early: leave a fitted estimator
            records.close()  # restores the best parameters of early stopping
            self._training_state = trainer.state
            self.history_ = fit_history
            if trainer.state.n_iter > 0:
                self._store_fitted(model, trainer, fit_history, validation)
            if tasks:
                tasks.close()
        if finished and not plan.incremental:
            self._warn_if_not_converged(trainer.state, first_record, fit_history[-1] if fit_history else None,
                                        loss, floor, self._output_scale())
        return finished

    def _store_fitted(self, model, trainer: Trainer, fit_history: list, validation, *, live: bool = False,
                      attributes: dict | None = None) -> None:
        """The fitted attributes of ``model`` as it stands (``attributes``: :meth:`_fitted_attributes`' already
        built; not changed here). ``live``: mid-fit (fit_iter's consumer), where training goes on in ``model``:
        predict builds its own module from the copied state."""
        if attributes is None:
            attributes = self._fitted_attributes(model, trainer.state, fit_history)
        attributes = {**attributes, **self._held_out_attributes(trainer.model, validation)}
        for name, value in attributes.items():
            setattr(self, name, value)
        self._module = None if live else model

    def _held_out_attributes(self, module, validation) -> dict:
        """Fitted attributes read off the early-stopping rows (``validation``, None without them) once
        training ends, ``module`` the trained module that takes their X: a variant's hook (the
        regressor's quantile calibration); none here."""
        return {}

    def _model_bytes(self, dtype: torch.dtype, n_train: int) -> int:
        """Memory a fit's model needs at least: its matrices with their gradients and Adam's two
        moments, and one batch's matrices with their gradients."""
        per_matrix = model_class(self.structure).elements_per_matrix(self.dim_, self.smoothing)
        n_models = self.n_estimators_ * (self._n_outputs() or 1)
        parameters = n_models * max(1, self.column_mapper_.spec.n_columns) * per_matrix
        batch = self._batch_size(max(1, n_train)) * n_models * per_matrix
        return (4 * parameters + 2 * batch) * dtype.itemsize

    def _model_description(self) -> str:
        return (f"dim={self.dim_} ({self.n_estimators_} member(s) of {self._n_outputs() or 1} output(s), "
                f"{self.column_mapper_.spec.n_columns} encoded columns)")

    def _warn_if_not_converged(self, state, first, last, loss, floor, output_scale) -> None:
        if floor <= 0.0:  # a constant fits the target exactly (e.g. a constant y): nothing was to be learnt
            return
        name = type(self).__name__
        if not state.converged and self.learning_rate_schedule == "constant":
            # (the cosine schedule anneals to zero at max_iter: ending there is the plan)
            warn(
                f"{name}: the maximum number of epochs (max_iter={self.max_iter_}) was reached "
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
            warn(
                f"{name}: the fit diverged: the {metric} rose from {start:.6g} in the first epoch to {final:.6g}. "
                f"Lower learning_rate_init (now {self.learning_rate_init}).",
                ConvergenceWarning,
            )
        elif final > allowed_metric:
            warn(
                f"{name}: the fit did not converge: the final {metric} ({final:.6g}) is worse than a constant "
                f"prediction's ({floor_metric:.6g}). Raise max_iter (now {self.max_iter_}) if it was still "
                f"improving, else lower learning_rate_init (now {self.learning_rate_init}).",
                ConvergenceWarning,
            )

    def _dataset(self, X, target, weight, device, dtype, *, rows=None, n_rows=None, stream=False,
                 standardisation=None) -> Dataset:
        """Rows ``X[rows]`` standardised on their way to the device (zero-weight padding up to
        ``n_rows``), with their targets and weights (given for those rows). Training rows by
        default (no clip, no fill); ``standardisation`` for others. With ``stream`` the rows stay
        in host memory and every epoch streams them to the device, standardised there."""
        if n_rows is not None:
            target, weight = _pad_rows(target, weight, n_rows)
        if standardisation is None:
            standardisation = self.column_mapper_.standardisation(clip=False, fill=False)
        if stream:  # the caller's rows stay where they are; each epoch standardises them block by block
            features = HostRows(np.asarray(X), standardisation, dtype, rows=rows, n_rows=n_rows)
        else:
            features = standardised_rows(X, standardisation, device, dtype, rows=rows, n_rows=n_rows)
        return Dataset(features, _to_device(target, device, dtype), _to_device(weight, device, dtype),
                       stream_rows=stream)

    def _eval_dataset(self, X, y, device, dtype) -> Dataset:
        ones = np.ones(len(y))
        target, _ = self._training_target(y, ones)  # eval metrics are unweighted (no class_weight)
        return self._dataset(X, target, ones, device, dtype, standardisation=self._predict_standardisation())

    def _predict_standardisation(self):
        """Rows from outside the training set: missing values filled where fit saw none, clipped
        to the training range with clip_features (tree models never extrapolate; nor do we)."""
        return self.column_mapper_.standardisation(clip=self.clip_features, fill=True)

    def _resumed_state(self) -> TrainingState:
        """Counters and curves of the previous fit, to continue from (warm start, partial_fit)."""
        state = getattr(self, "_training_state", None)
        if state is not None:
            return state
        return TrainingState(n_iter=self.n_iter_, t=self.t_, loss_curve=list(self.loss_curve_))

    # ---- per-epoch records: sensitivities and eval sets, read in the epoch's one sync -----
    def _epoch_recorder(self, model: SpectralModel, evaluations: list):
        x_scale = torch.as_tensor(self.column_mapper_.scale, dtype=model.dtype, device=model.device)
        spec = self.column_mapper_.spec
        single = self._n_outputs() is None
        chunk = self._chunk_rows(model.dtype)
        output_scale = self._output_scale()
        loss = self._loss()
        metrics = self._eval_metrics()
        members = self.n_estimators_
        reduce = self._member_bounds()
        # found once and put on the model's device, read every epoch
        plan = None if spec is None or spec.is_plain_linear else bounds_plan_on(spec, model.dtype, model.device)

        @torch.no_grad()
        def record() -> dict:
            bounds = feature_bounds(model.feature_matrices(), spec, norms=model.matrix_norms, plan=plan,
                                    frobenius_rows=model.stored_frobenius_rows)
            if members > 1:  # (members * outputs, features) -> the ensemble output's (outputs, features)
                bounds = ensemble_bounds(bounds.view(members, -1, bounds.shape[-1]), reduce)
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
        shape = ((self.n_estimators_,) if self.n_estimators_ > 1 else ()) + (
            (self._n_outputs(),) if self._n_outputs() is not None else ())
        return {
            "_module_state_": {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
                               if k in dict(model.named_parameters())},
            "_model_shape_": {name: _copied(getattr(self, name)) for name in self._model_shape},
            "mu_": mu.reshape(shape + mu.shape[1:]),
            "feature_matrices_": A.reshape(shape + A.shape[1:]),
            "n_iter_": state.n_iter,
            "t_": state.t,
            "loss_curve_": list(state.loss_curve),
            "best_loss_": None if self.early_stopping_ else state.best_loss,
            "validation_scores_": list(state.validation_scores) if self.early_stopping_ else None,
            "best_validation_score_": state.best_validation_score if self.early_stopping_ else None,
            "history_": list(fit_history),
            "refit_epochs_": None,
        }

    def _load_fitted_state(self, model: SpectralModel) -> None:
        # parameters only: the encoder's buffers (bin edges) are rebuilt from the column mapper
        model.load_state_dict({k: torch.as_tensor(v) for k, v in self._module_state_.items()}, strict=False)

    # ---- the column mapper's facts, under their fitted-attribute names ---------------------
    @property
    def is_categorical_(self) -> np.ndarray | None:
        return self.column_mapper_.kinds.categorical

    @property
    def encoding_(self):
        return self.column_mapper_.spec

    @property
    def ignored_features_(self) -> np.ndarray:
        return self.column_mapper_.ignored

    @property
    def x_mean_(self) -> np.ndarray:
        return self.column_mapper_.mean

    @property
    def x_scale_(self) -> np.ndarray:
        return self.column_mapper_.scale

    @property
    def x_min_(self) -> np.ndarray:
        return self.column_mapper_.low

    @property
    def x_max_(self) -> np.ndarray:
        return self.column_mapper_.high

    # ---- prediction -------------------------------------------------------------------------
    def _chunk_rows(self, dtype: torch.dtype) -> int:
        """Rows evaluated at once in predict (and on validation rows): about _PREDICT_CHUNK_BYTES of
        matrices and of the encoder's per-row temporaries (its columns, and a piecewise feature's
        every bin while it finds the row's one)."""
        n_outputs = (self._n_outputs() or 1) * self.n_estimators_
        per_matrix = model_class(self.structure).elements_per_matrix(self.dim_, self.smoothing)
        spec = self.column_mapper_.spec
        bins = sum(len(edges) - 1 for edges in spec.edges if edges is not None)
        row_bytes = (n_outputs * per_matrix + spec.n_columns + 3 * bins) * torch.finfo(dtype).bits // 8
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
            model = self._initialize_model(device=device, dtype=dtype, backend=backend, draw=False)
            self._load_fitted_state(model)
            self._module = model
        return model

    def _model_input(self, X) -> np.ndarray:
        """The model's input for X (validated here, clipped with clip_features), as float64 numpy."""
        X, _ = self._validate_inputs(X, reset=False)
        return standardised_rows(self.column_mapper_.rows(X), self._predict_standardisation(), torch.device("cpu"),
                                 torch.float64).numpy()

    def _raw_output(self, X) -> np.ndarray:
        """The model's (ensemble's) output for X (validated here), on the fitted device, as float64 numpy."""
        check_is_fitted(self, "_module_state_")
        X, _ = self._validate_inputs(X, reset=False)
        rows = self.column_mapper_.rows(X)
        model = self._model_for_prediction()
        model.eval()
        chunk_rows = self._chunk_rows(model.dtype)
        standardisation = self._predict_standardisation()
        # blocks of rows travel to the device in turn: tall X is never on the device whole
        block = max(chunk_rows, CHUNK_BYTES // (8 * max(1, rows.shape[1])))
        output = torch.cat([
            predict_in_chunks(model, standardised_rows(rows[start : start + block], standardisation, model.device,
                                                       model.dtype), chunk_rows)
            for start in range(0, max(1, len(rows)), block)  # one (empty) block for no rows
        ])
        output = self._combined_members(output).cpu().numpy().astype(np.float64)
        if not np.isfinite(output).all():  # (the parameters are looked at only then)
            self._check_parameters_finite()
        return output

    def _check_parameters_finite(self) -> None:
        """A clear error where the fitted parameters are not finite: a fit that diverged (its training loss
        NaN: it raised FloatingPointError, and kept what it had) left them so, and predict returned NaN for
        every row without a word."""
        if not all(np.isfinite(values).all() for values in self._module_state_.values()):
            raise diverged_fit_error(self, "parameters are not finite")

    def _combined_members(self, output: torch.Tensor) -> torch.Tensor:
        """The model's output (rows, members * outputs, ...) as the ensemble's (the loss's combination)."""
        return self._loss().combine_members(output) if self.n_estimators_ > 1 else output

    # ---- pickling: numpy only, no torch module or device state ----------------------------
    def __setstate__(self, state):
        if "_module_state_" in state and "n_estimators_" not in state:  # fitted when n_estimators was an int
            state = {**state, "n_estimators_": state["n_estimators"]}
        if "shared_members" not in state:  # pickled before members could share their matrices
            state = {**state, "shared_members": 0.0}
            if "_module_state_" in state:
                state["n_shared_members_"] = 0
        if "shared_factor_l1" not in state:  # pickled before the shared factors' pull
            state = {**state, "shared_factor_l1": 0.0}
        if "refit" not in state:  # pickled before a fit could refit on every row
            state = {**state, "refit": False}
            if "_module_state_" in state:
                state.update(refit_=False, refit_epochs_=None)
        super().__setstate__(state)

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


def _comparable(value):
    """A parameter's value in a form that compares by content (arrays, lists, dicts)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _comparable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(np.asarray(value, dtype=object).ravel().tolist())
    return value


def _copied(value):
    return dict(value) if isinstance(value, dict) else (np.array(value) if isinstance(value, (list, np.ndarray))
                                                       else value)


def _weight_scale(total_weight: float, n_rows: int) -> float:
    """A power of two that brings the training rows' mean weight near 1 before the weights' copy in the
    training dtype (float32): each use of that copy is a weighted mean (a batch's loss, the epoch's means,
    the validation score, quantile offsets), which a power of two leaves the same to the bit, and weights of
    any float64 scale stay normal float32 numbers (1e-300 or 1e300 underflowed or overflowed there: "the
    training loss is nan"). The same on every rank (from agreed sums); the penalty keeps the user's total."""
    mean = total_weight / max(n_rows, 1)
    if not (0.0 < mean < math.inf):
        return 1.0
    return 2.0 ** -round(math.log2(mean))


def _pad_rows(target, weight, n_rows: int):
    """Targets and weights of zero-weight rows appended up to n_rows (their features are
    zeros): no effect on any weighted loss or score."""
    extra = n_rows - len(weight)
    if extra <= 0:
        return target, weight
    pad = lambda a: np.concatenate([a, np.zeros((extra,) + a.shape[1:], a.dtype)])  # noqa: E731
    return pad(target), pad(weight)


def _stream_rows(n_bytes: int, device: torch.device) -> bool:
    """Whether training rows of this many bytes (standardised, in the training dtype) stay as the
    caller gave them, streamed to the device a block at a time each epoch: on a GPU where they would
    take over _DEVICE_ROWS_SHARE of its free memory (the rest is for the model's working memory and
    the validation rows); on the CPU above _HOST_ROWS_BYTES (re-standardising a block costs little
    next to its steps)."""
    if device.type != "cuda":
        return n_bytes > _HOST_ROWS_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return n_bytes > _DEVICE_ROWS_SHARE * free


def _to_device(array, device, dtype) -> torch.Tensor:
    return torch.tensor(np.ascontiguousarray(array), dtype=dtype, device=device)
