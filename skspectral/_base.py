"""What SpectralRegressor and SpectralClassifier share: parameters, data
handling, the fit loop around the Trainer, pickling and prediction."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._device import resolve_device
from ._training import (
    Dataset,
    Trainer,
    TrainingOptions,
    TrainingState,
    predict_in_chunks,
)
from .eig import BACKENDS, check_eigval_index
from .eig._api import check_backend
from .model import SpectralModel

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Rows of matrices evaluated at once in predict: bounds memory to ~64 MiB.
_PREDICT_CHUNK_BYTES = 64 * 2**20


def weighted_standardisation(values: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations; constant columns get scale 1."""
    mean = np.average(values, axis=0, weights=weight)
    var = np.average((values - mean) ** 2, axis=0, weights=weight)
    scale = np.sqrt(var)
    scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(mean)), scale, 1.0)
    return mean, scale


def merge_duplicate_rows(X: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """One row per distinct (x, y), weighted by the sum of its copies' weights.

    The loss is unchanged, an epoch visits fewer rows, and weighting a row by
    k trains exactly as repeating it k times: both reach the same canonical
    (sorted) rows and weights, bit for bit. Without duplicates or weights the
    caller's row order is kept.
    """
    rows, inverse = np.unique(np.column_stack([X, y]), axis=0, return_inverse=True)
    if len(rows) == len(X) and np.all(weight == 1.0):
        return X, y, weight
    return rows[:, :-1], rows[:, -1], np.bincount(inverse.ravel(), weights=weight, minlength=len(rows))


class SpectralEstimatorBase(BaseEstimator):
    """Shared machinery; subclasses define the target handling and the loss."""

    _parameter_constraints: dict = {
        "dim": [Interval(numbers.Integral, 1, None, closed="left")],
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
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "spectral_penalty": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "clip_features": ["boolean"],
    }

    # ---- to be provided by subclasses -------------------------------------------------
    def _n_models(self) -> int | None:  # None: one model with output shape (batch,)
        raise NotImplementedError

    def _loss(self, output, target, weight):
        raise NotImplementedError

    def _validation_score(self, output, target, weight):
        raise NotImplementedError

    def _encode_target(self, y, first_call: bool, classes=None) -> np.ndarray:
        """Validated y as a float64 array for training (labels as class indices)."""
        raise NotImplementedError

    def _training_target(self, y: np.ndarray, weight: np.ndarray, first_call: bool):
        """(target, weight) as the loss sees them: e.g. standardised y, class-weighted rows."""
        raise NotImplementedError

    _y_numeric = False

    # ---- the fit skeleton -------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags

    def _continues_previous_fit(self) -> bool:
        """fit with warm_start on a fitted estimator goes on from where it stopped."""
        return self.warm_start and hasattr(self, "_module_state_")

    def fit_iter(self, X, y, sample_weight=None, eval_set=None):
        """Fit as ``fit`` does, yielding each epoch's record as it completes.

        ``for record in est.fit_iter(X, y, eval_set=[(X_test, y_test)]): ...``
        Records are those of ``history_``. The estimator is fitted when the
        loop ends, and also when the consumer stops early.
        """
        self._validate_params()
        return self._fit_epochs(X, y, sample_weight, first_call=not self._continues_previous_fit(),
                                incremental=False, eval_set=eval_set)

    def _fit(self, X, y, sample_weight, *, first_call, incremental, classes=None, eval_set=None):
        for _ in self._fit_epochs(X, y, sample_weight, first_call=first_call, incremental=incremental,
                                  classes=classes, eval_set=eval_set):
            pass
        return self

    def _fit_epochs(self, X, y, sample_weight, *, first_call, incremental, classes=None, eval_set=None):
        """Generator of per-epoch records; the estimator is fitted when it ends or is closed."""
        X, y = validate_data(self, X, y, reset=first_call, y_numeric=self._y_numeric, dtype=[np.float64, np.float32])
        X = X.astype(np.float64, copy=False)
        y = self._encode_target(y, first_call, classes)
        eval_set = self._check_eval_set(eval_set)
        model, Xs, y, weight, device, dtype, seed = self._prepare_fit(X, y, sample_weight, first_call)
        target, weight = self._training_target(y, weight, first_call)
        evaluations = [self._eval_dataset(Xe, ye, device, dtype) for Xe, ye in eval_set]
        yield from self._run_training(
            model, Xs, target, weight, device, dtype, seed, evaluations,
            max_iter=1 if incremental else self.max_iter, incremental=incremental, resume=not first_call,
        )

    def _check_eval_set(self, eval_set) -> list:
        if eval_set is None:
            return []
        if isinstance(eval_set, tuple) and len(eval_set) == 2 and not isinstance(eval_set[0], tuple):
            eval_set = [eval_set]
        checked = []
        for i, pair in enumerate(eval_set):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"eval_set must be a list of (X, y) pairs; item {i} is {type(pair).__name__}.")
            Xe, ye = validate_data(self, pair[0], pair[1], reset=False, y_numeric=self._y_numeric,
                                   dtype=[np.float64, np.float32])
            checked.append((Xe.astype(np.float64, copy=False), self._encode_target(ye, False)))
        return checked

    def _eval_dataset(self, X, y, device, dtype) -> Dataset:
        ones = np.ones(len(y))
        target, _ = self._training_target(y, ones, False)  # eval metrics are unweighted (no class_weight)
        return Dataset(*(self._to_device(a, device, dtype) for a in (self._standardised(X), target, ones)))

    # ---- resolution of device, dtype and sizes ----------------------------------------
    def _resolve_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            # float64 on CPU: exact, reproducible sklearn behaviour at little cost;
            # float32 on CUDA, where it is several times faster.
            return torch.float32 if device.type == "cuda" else torch.float64
        return _DTYPES[self.dtype]

    def _batch_size(self, n_samples: int) -> int:
        size = 200 if self.batch_size == "auto" else self.batch_size
        return max(1, min(size, n_samples))

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # ---- fitting ----------------------------------------------------------------------
    def _prepare_fit(self, X: np.ndarray, y: np.ndarray, sample_weight, first_call: bool):
        """Resolve device/backend, standardise, split, and build (or reuse) the model."""
        self.eigval_idx_ = self.dim // 2 if self.eigval_idx is None else check_eigval_index(
            self.eigval_idx, self.dim, "eigval_idx"
        )
        device = resolve_device(self.device)
        dtype = self._resolve_dtype(device)
        backend = check_backend(self.backend, device, self.dim, dtype)
        sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not sample_weight.sum() > 0:
            raise ValueError("sample_weight sums to zero: at least one sample needs a positive weight.")
        keep = sample_weight > 0  # a zero weight is the same as leaving the row out
        X, y, sample_weight = merge_duplicate_rows(X[keep], y[keep], sample_weight[keep])

        if first_call:
            self.x_mean_, self.x_scale_ = weighted_standardisation(X, sample_weight)
            self.x_min_, self.x_max_ = X.min(axis=0), X.max(axis=0)
        seed = self._seed()
        reuse = not first_call and getattr(self, "_module_state_", None) is not None
        self.device_, self.dtype_, self.backend_ = str(device), str(dtype).replace("torch.", ""), backend
        model = self._build_module(device, dtype, seed=None if reuse else seed)
        Xs = (X - self.x_mean_) / self.x_scale_
        return model, Xs, y, sample_weight, device, dtype, seed

    def _build_module(self, device, dtype, seed=None) -> SpectralModel:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        model = SpectralModel(
            self.n_features_in_,
            self.dim,
            self.eigval_idx_,
            n_outputs=self._n_models(),
            backend=self.backend_,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        if seed is None:  # warm start / partial_fit: continue from the fitted values
            model.load_state_dict({k: torch.as_tensor(v) for k, v in self._module_state_.items()})
        return model

    def _to_device(self, array, device, dtype):
        return torch.tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    def _resumed_state(self) -> TrainingState:
        """Counters and curves of the previous fit, to continue from (warm start, partial_fit)."""
        state = getattr(self, "_training_state", None)
        if state is not None:
            return state
        return TrainingState(n_iter=self.n_iter_, t=self.t_, loss_curve=list(self.loss_curve_))

    def _run_training(self, model, Xs, target, weight, device, dtype, seed, evaluations, *, max_iter, incremental, resume):
        options = TrainingOptions(
            learning_rate_init=self.learning_rate_init,
            learning_rate_schedule=self.learning_rate_schedule,
            batch_size=self._batch_size(Xs.shape[0]),
            max_iter=max_iter,
            shuffle=self.shuffle,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            verbose=bool(self.verbose),
            # the fused kernel is capture-safe: each step is one replay of a CUDA graph
            cuda_graph=device.type == "cuda" and self.backend_ == "kernel",
        )
        n_train = Xs.shape[0]
        rng = np.random.RandomState(seed)
        validation = None
        if self.early_stopping and not incremental:
            n_val = int(round(self.validation_fraction * n_train))
            if n_val < 1 or n_train - n_val < 1:
                raise ValueError(
                    f"early_stopping needs at least one training and one validation row; with {n_train} rows "
                    f"and validation_fraction={self.validation_fraction} that is not possible."
                )
            order = rng.permutation(n_train)
            val_rows, train_rows = order[:n_val], order[n_val:]
            validation = Dataset(*(self._to_device(a[val_rows], device, dtype) for a in (Xs, target, weight)))
            Xs, target, weight = Xs[train_rows], target[train_rows], weight[train_rows]
        train = Dataset(*(self._to_device(a, device, dtype) for a in (Xs, target, weight)))

        generator = torch.Generator(device=device).manual_seed(seed)
        penalty = self._penalty_fn(model, float(weight.sum()))
        state = self._resumed_state() if resume else None
        trainer = Trainer(
            model,
            self._loss,
            options,
            generator,
            score_fn=self._validation_score,
            penalty_fn=penalty,
            chunk_rows=self._chunk_rows(dtype),
            state=state,
        )
        history = list(getattr(self, "history_", [])) if resume else []
        finished = False
        try:
            for record in trainer.epochs(train, validation, self._epoch_recorder(model, evaluations)):
                history.append(record)
                yield record
            finished = True
        finally:  # also when a fit_iter consumer stops early: leave a fitted estimator
            self._training_state = trainer.state
            self.history_ = history
            if trainer.state.n_iter > 0:
                self._store_fitted(model, trainer.state)
        # The cosine schedule anneals to zero at max_iter: ending there is the plan.
        if finished and not incremental and not trainer.state.converged and self.learning_rate_schedule == "constant":
            warnings.warn(
                f"{type(self).__name__}: the maximum number of epochs (max_iter={max_iter}) was reached "
                "and the optimisation has not converged yet; raise max_iter or learning_rate_init.",
                ConvergenceWarning,
            )

    # ---- per-epoch records: sensitivities and eval sets, read in the epoch's one sync ----
    def _output_scale(self) -> float:
        """Units of the model output per unit of the prediction (y_scale_ for regression)."""
        return 1.0

    def _eval_metrics(self, output, target, weight) -> dict:
        raise NotImplementedError

    def _epoch_recorder(self, model: SpectralModel, evaluations: list):
        x_scale = torch.as_tensor(self.x_scale_, dtype=model.weight.dtype, device=model.weight.device)
        single = self._n_models() is None
        chunk = self._chunk_rows(model.weight.dtype)

        @torch.no_grad()
        def record() -> dict:
            sensitivities = model.spectral_norms() * self._output_scale() / x_scale
            out = {"sensitivities": sensitivities[0] if single else sensitivities}
            for i, data in enumerate(evaluations):
                output = predict_in_chunks(model, data.X, chunk)
                for name, value in self._eval_metrics(output, data.y, data.weight).items():
                    out[f"eval_{i}_{name}"] = value
            return out

        return record

    def _penalty_fn(self, model: SpectralModel, total_weight: float):
        alpha, spectral = float(self.alpha), float(self.spectral_penalty)
        if alpha == 0 and spectral == 0:
            return None

        def penalty():
            value = 0.0
            if alpha:
                # MLP's convention: alpha/2 * ||W||^2, scaled as one sample's worth per unit weight.
                value = value + 0.5 * alpha * model.feature_matrices().square().sum() / total_weight
            if spectral:
                value = value + spectral * model.spectral_norms().sum()
            return value

        return penalty

    def _store_fitted(self, model: SpectralModel, state: TrainingState) -> None:
        self._module_state_ = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        with torch.no_grad():
            mu = model.mu().detach().cpu().numpy().astype(np.float64)
            A = model.feature_matrices().detach().cpu().numpy().astype(np.float64)
        single = self._n_models() is None
        self.mu_ = mu[0] if single else mu
        self.feature_matrices_ = A[0] if single else A
        self.n_iter_ = state.n_iter
        self.t_ = state.t
        self.loss_curve_ = list(state.loss_curve)
        self.best_loss_ = None if self.early_stopping else state.best_loss
        if self.early_stopping:
            self.validation_scores_ = list(state.validation_scores)
            self.best_validation_score_ = state.best_validation_score
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
        self._module = model

    # ---- prediction -------------------------------------------------------------------
    def _chunk_rows(self, dtype: torch.dtype) -> int:
        n_models = self._n_models() or 1
        row_bytes = n_models * self.dim * self.dim * torch.finfo(dtype).bits // 8
        return max(1, _PREDICT_CHUNK_BYTES // row_bytes)

    def _predict_device(self) -> tuple[torch.device, torch.dtype, str]:
        """The fitted device, or the CPU where it is gone (e.g. a CUDA model unpickled without a GPU)."""
        device = torch.device(self.device_)
        if device.type == "cuda" and (not torch.cuda.is_available() or device.index >= torch.cuda.device_count()):
            device = torch.device("cpu")
        backend = self.backend_ if device.type == "cuda" else "torch"
        return device, _DTYPES[self.dtype_], backend

    def _model_for_prediction(self) -> SpectralModel:
        device, dtype, backend = self._predict_device()
        model = getattr(self, "_module", None)
        if model is None or model.weight.device != device or model.backend != backend:
            model = SpectralModel(
                self.n_features_in_, self.dim, self.eigval_idx_, n_outputs=self._n_models(),
                backend=backend, dtype=dtype, device=device,
            )
            model.load_state_dict({k: torch.as_tensor(v) for k, v in self._module_state_.items()})
            self._module = model
        return model

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        if self.clip_features:
            # Tree models never extrapolate; neither do we past the training range.
            X = np.clip(X, self.x_min_, self.x_max_)
        return (X - self.x_mean_) / self.x_scale_

    def _raw_output(self, X: np.ndarray) -> np.ndarray:
        """The model's eigenvalues for validated X, on the fitted device, as float64 numpy."""
        check_is_fitted(self, "_module_state_")
        model = self._model_for_prediction()
        Xt = self._to_device(self._standardised(X), model.weight.device, model.weight.dtype)
        model.eval()
        output = predict_in_chunks(model, Xt, self._chunk_rows(model.weight.dtype))
        return output.cpu().numpy().astype(np.float64)

    # ---- certified sensitivities ---------------------------------------------------------
    def _feature_matrix_norms(self) -> np.ndarray:
        """||A_i||_2 of the fitted feature matrices (standardised units), shape (..., n_features)."""
        check_is_fitted(self, "_module_state_")
        return np.abs(np.linalg.eigvalsh(self.feature_matrices_)).max(axis=-1)

    @property
    def feature_sensitivities_(self) -> np.ndarray:
        """Certified bound on |d prediction / d x_i| in the user's units.

        By Weyl's inequality the model output moves by at most
        sum_i |delta_i| * ||A_i||_2 (standardised units); this converts to the
        original feature and target units: ||A_i||_2 * output_scale / x_scale_i.
        Shape (n_features,), or (n_classes, n_features) for a multiclass
        classifier (bounds on each class's logit; binary: on the logit).
        """
        return self._feature_matrix_norms() * self._output_scale() / self.x_scale_

    def sensitivity_bound(self, delta) -> np.ndarray:
        """Largest possible change of the prediction (regression) or logit(s)
        (classification) when the features move by ``delta``.

        delta : array of shape (n_features,) or (n_rows, n_features), in the
        features' units. Returns shape () or (n_rows,), with a trailing
        n_classes axis for a multiclass classifier. Holds for any x, also with
        clip_features (clipping never increases |delta_i|).
        """
        sensitivities = self.feature_sensitivities_
        delta = np.asarray(delta, dtype=np.float64)
        if delta.ndim not in (1, 2) or delta.shape[-1] != self.n_features_in_:
            raise ValueError(
                f"delta must have shape (n_features,) or (n_rows, n_features) with n_features="
                f"{self.n_features_in_}; got {delta.shape}."
            )
        return np.abs(delta) @ sensitivities.T

    @property
    def feature_importances_(self) -> np.ndarray:
        """Share of the certified sensitivity per feature for a one-standard-deviation move.

        ||A_i||_2 on standardised features, normalised to sum to 1 (summed over
        classes for multiclass). Unlike permutation importance, this is a
        property of the model alone (no data, no randomness) and a worst case:
        a feature whose matrix is large but rarely aligned with the k-th
        eigenvector ranks high here and lower under permutation.
        """
        per_std = self._feature_matrix_norms().reshape(-1, self.n_features_in_).sum(axis=0)
        total = per_std.sum()
        return per_std / total if total > 0 else np.full(self.n_features_in_, 1.0 / self.n_features_in_)

    # ---- pickling: numpy only, no torch module or device state ------------------------
    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop("_module", None)
        state.pop("_training_state", None)
        return state
