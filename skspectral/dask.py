"""Data-parallel fits on a Dask cluster: DaskSpectralRegressor and DaskSpectralClassifier.

The pattern of ``lightgbm.dask`` / ``xgboost.dask``: the estimators' parameters plus
``client``; ``fit`` takes dask arrays or dask DataFrames (categorical columns as the
plain estimators take them) and dask sample weights. The preprocessing statistics
(means, scales, ranges, quantile bins, category levels, classes) are computed with
dask; every partition stays on the worker that holds it; one task pinned to each of
those workers joins a ``torch.distributed`` process group (gloo on CPUs, NCCL on
GPUs; the rendezvous on a free port of the rank-0 worker) and trains on its shard,
the gradients averaged over the ranks after every backward (on GPUs inside the step's
CUDA graph; see ``skspectral._training.distributed``). Rank 0 returns the fitted state,
once the ranks have checked that they hold the same parameters. The fit never hangs:
it raises with a rank's error (a rank whose peer hangs or dies errs within
``collective_timeout``), and at once when a rank's worker leaves the cluster, which
the scheduler alone would not report (tested with gloo on CPUs and NCCL on GPUs).
The cluster then serves the next fit: under gloo the other ranks err and return; under
NCCL a rank left in a captured all-reduce stays there until ``collective_timeout``, when
NCCL's watchdog ends its worker process (after torch's 60 s debug-dump wait) and the
nanny restarts it (measured on two H200s at ``collective_timeout=30``: the next fit
finished 100 s after the failure).

``predict`` returns a dask array (``map_blocks``); ``to_local()`` returns a plain
fitted SpectralRegressor / SpectralClassifier.

Searches need none of this: scikit-learn's GridSearchCV under joblib's Dask backend
places whole fits on workers (README, examples/dask_search.py).

Needs ``pip install 'skspectral[dask]'``.
"""

from __future__ import annotations

import inspect
import socket
from numbers import Integral, Real
from datetime import timedelta

import numpy as np
from sklearn.utils._param_validation import Interval

from ._estimator import _BIN_SUBSAMPLE, monotonic_by_position
from ._features import CategoryCodes, categorical_mask, coded_rows, edges_from_quantiles, weighted_quantiles
from ._preprocessing import check_eval_set, usable_scale
from ._transfer import raw_floats
from .classifier import SpectralClassifier
from .encoding import EncodingSpec
from .regressor import SpectralRegressor

try:
    import dask
    import dask.array as da
    import distributed
except ImportError as exc:  # pragma: no cover - exercised where dask is missing
    raise ImportError("skspectral.dask needs dask and distributed: pip install 'skspectral[dask]'.") from exc

COLLECTIVE_TIMEOUT_S = 120


def local_gpu_cluster(n_workers: int | None = None, **kwargs):
    """A local cluster of one single-threaded worker per GPU, each seeing its card as cuda:0.

    dask-cuda's ``LocalCUDACluster`` where it is installed and imports; otherwise the same
    layout from distributed's own parts (a Scheduler and one Nanny per GPU, with
    ``CUDA_VISIBLE_DEVICES`` set for each worker), e.g. where dask-cuda's pinned dask
    version does not match the installed one. ``n_workers``: default every visible GPU.
    """
    import os
    import warnings

    import torch

    available = torch.cuda.device_count()
    n_workers = available if n_workers is None else n_workers
    if isinstance(n_workers, bool) or not isinstance(n_workers, Integral) or not 1 <= n_workers <= available:
        raise ValueError(f"local_gpu_cluster needs 1 to {available} workers on this machine (its GPUs), "
                         f"got n_workers={n_workers}.")
    try:
        from dask_cuda import LocalCUDACluster
    except Exception as exc:  # missing, or built against another dask
        warnings.warn(f"dask-cuda is not usable here ({exc!r}); one worker per GPU from distributed's "
                      "Nanny with CUDA_VISIBLE_DEVICES instead.", RuntimeWarning, stacklevel=2)
    else:
        return LocalCUDACluster(n_workers=n_workers, threads_per_worker=1, **kwargs)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(available)]
    workers = {
        f"gpu-{ids[i]}": {"cls": distributed.Nanny,
                          "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": ids[i]}}}
        for i in range(n_workers)
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    return distributed.SpecCluster(workers=workers, scheduler=scheduler, **kwargs)


# Points of a partition's weighted quantile sketch, per column: the bins' edges (16 by default)
# are then within 1/_SKETCH_POINTS of each partition's weight of the exact weighted quantiles.
_SKETCH_POINTS = 512
# Up to this many values (rows x columns, within the 200k-row bin subsample) the bins come from all of them.
_EXACT_BIN_VALUES = 200_000 * 32


def _quantile_sketch(X: np.ndarray, weight: np.ndarray, n_points: int | None, share: float = 1.0,
                     seed=None) -> list[np.ndarray]:
    """Per column, a (2, m) array of values and weights summarising the observed, positively
    weighted values of one partition: all of them where there are at most n_points (or
    n_points is None), else n_points values at evenly spaced weighted quantiles, each carrying an equal share of the
    partition's weight (the caller knows the exact range). With ``share`` < 1, of a seeded
    random ``share`` of the partition's rows (the plain estimators' 200k-row bin subsample,
    spread over the partitions: sorting every row of a tall table dominated the statistics)."""
    if share < 1.0:
        keep_rows = np.random.default_rng(seed).random(X.shape[0]) < share
        X, weight = X[keep_rows], weight[keep_rows]
    sketches = []
    for j in range(X.shape[1]):
        keep = ~np.isnan(X[:, j]) & (weight > 0)
        values, w = X[keep, j].astype(np.float64), weight[keep]
        if n_points is not None and len(values) > n_points:  # kept whole, they are sorted once, merged
            order = np.argsort(values, kind="stable")
            values, w = values[order], w[order]
            cumulative = np.cumsum(w)
            positions = (np.arange(n_points) + 0.5) * (cumulative[-1] / n_points)
            values = values[np.searchsorted(cumulative, positions).clip(0, len(values) - 1)]
            w = np.full(n_points, cumulative[-1] / n_points)
        sketches.append(np.stack([values, w]))  # an array, not a tuple: dask reads tuples as tasks
    return sketches


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _as_dask_array(data, name: str, ndim: int):
    import dask.dataframe as dd
    import pandas as pd

    if isinstance(data, (dd.DataFrame, dd.Series)):
        if isinstance(data, dd.DataFrame):
            bad = [c for c, t in data.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
            if bad:
                raise ValueError(f"{name} has non-numeric columns {bad} that are not categorical: declare them "
                                 "in categorical_features (the default, 'from_dtype', takes category, object, "
                                 "string and bool columns), or encode them as numbers.")
        data = data.to_dask_array(lengths=True)
    if not isinstance(data, da.Array):
        raise TypeError(f"{name} must be a dask array or dask DataFrame/Series, got {type(data).__name__}; "
                        "for in-memory data use SpectralRegressor / SpectralClassifier.")
    if data.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {data.shape}.")
    return data


def _coded_with(X, mask, codes):
    """A dask DataFrame or array as a float dask array with the given level codes (mask None:
    every column numeric)."""
    import dask.dataframe as dd
    import pandas as pd

    if mask is None:
        return raw_floats(_as_dask_array(X, "X", 2))
    if not isinstance(X, dd.DataFrame):
        X = dd.from_dask_array(_as_dask_array(X, "X", 2), columns=list(range(len(mask))))
    meta = pd.DataFrame({j: pd.Series(dtype=np.float64) for j in range(len(mask))})
    coded = X.map_partitions(lambda part: pd.DataFrame(coded_rows(part, mask, codes), index=part.index), meta=meta)
    return coded.to_dask_array(lengths=True)


def _fit_shard(estimator, statistics, classes, x_parts, y_parts, w_parts, rank, world_size, init_method,
               timeout_s, eval_set=None):
    """One rank of a data-parallel fit, on the worker that holds its partitions."""
    import torch
    import torch.distributed as dist

    from ._device import resolve_device
    from ._training.distributed import DistributedContext

    device = resolve_device(estimator.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    try:
        X = np.concatenate(x_parts) if x_parts else np.empty((0, statistics["x_mean_"].shape[0]))
        y = np.concatenate(y_parts) if y_parts else np.empty(0)
        weight = np.concatenate(w_parts) if w_parts else np.empty(0)
        estimator._distributed = DistributedContext(
            rank, world_size, statistics,
            device=torch.device(device.type, torch.cuda.current_device()) if device.type == "cuda" else device)
        estimator._validate_params()
        estimator._fit(X, y, weight, first_call=True, incremental=False, classes=classes, eval_set=eval_set)
        if not estimator._distributed.same_on_every_rank(list(estimator._module.parameters())):
            raise RuntimeError("the ranks ended the data-parallel fit with different parameters: some step's "
                               "gradients were not averaged over every rank.")
        del estimator._distributed
        return estimator if rank == 0 else None
    finally:
        dist.destroy_process_group()


def _await_ranks(client, tasks, workers, poll_s: float = 0.5) -> None:
    """Wait for every rank's task; the first error, or the loss of a worker whose rank has not
    finished, ends the fit with a RuntimeError. A task pinned to a worker that died is not an
    error to the scheduler: it waits for that worker, which never returns (a restarted worker
    has a new address). The other ranks may not fail on their own either: on GPUs a rank can
    be stuck in a captured all-reduce, or its process ended by NCCL's watchdog, whose task
    then waits in the same way."""
    running = list(range(len(tasks)))
    while True:
        try:
            distributed.wait([tasks[rank] for rank in running], timeout=poll_s, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        for rank, task in enumerate(tasks):
            if task.status == "error":
                error = task.exception()
                raise RuntimeError(f"the data-parallel fit failed on worker {workers[rank]} (rank {rank} of "
                                   f"{len(workers)}): {error!r}") from error
        running = [rank for rank, task in enumerate(tasks) if task.status != "finished"]
        if not running:
            return
        alive = client.scheduler_info()["workers"]
        lost = [rank for rank in running if workers[rank] not in alive]
        if lost:
            raise RuntimeError(f"the data-parallel fit failed: worker {workers[lost[0]]} (rank {lost[0]} of "
                               f"{len(workers)}) left the cluster before its rank finished (it died or was "
                               "restarted). Fit again on the workers that remain.")


class _DaskSpectralMixin:
    """fit on dask collections over the workers that hold them; predict with map_blocks."""

    _local_class: type = None

    def _client(self):
        return self.client if self.client is not None else distributed.default_client()

    def _coded(self, X):
        """X as a float dask array (float32 stays float32), categorical columns as level codes
        learned from their level counts; with the categorical mask and the codes (or None)."""
        import dask.dataframe as dd

        frame = _is_frame(X)
        if not frame and not isinstance(X, da.Array):
            _as_dask_array(X, "X", 2)  # the clear error for anything else
        template = X._meta if frame else np.empty((0,) + X.shape[1:])
        mask = categorical_mask(template, self.categorical_features) if template.ndim == 2 else None
        if mask is None:
            return _coded_with(X, None, None), None, None
        if not frame:
            X = dd.from_dask_array(X, columns=list(range(X.shape[1])))
        counts = dask.compute(*[X[X.columns[j]].value_counts(dropna=False) for j in np.flatnonzero(mask)])
        codes = CategoryCodes().fit_counts(list(counts))
        return _coded_with(X, mask, codes), mask, codes

    def _statistics(self, X, y, weight, mask=None, codes=None) -> tuple[dict, np.ndarray | None]:
        """x_mean_, x_scale_, x_min_, x_max_, encoding_ (and y's) over all the data, weighted as
        the plain estimators weight them (rows of weight 0 left out), in two passes: sums,
        then squared deviations and quantile sketches. Categorical columns (``mask``) hold
        level codes: mean 0, scale 1, their levels from ``codes``."""
        n_features = X.shape[1]
        observed = ~da.isnan(X) & (weight > 0)[:, None]
        w_observed = da.where(observed, weight[:, None], 0.0)
        kept = da.where(observed, X, np.nan)  # NaN: missing, or in a row of weight 0
        first = {"w_min": weight.min(), "w_sum": weight.sum(), "w_finite": da.isfinite(weight).all(),
                 "total": w_observed.sum(axis=0), "sum": (w_observed * da.where(observed, X, 0.0)).sum(axis=0),
                 "min": da.nanmin(kept, axis=0), "max": da.nanmax(kept, axis=0), "has_nan": (da.isnan(X) & (weight > 0)[:, None]).any(axis=0)}
        if self._local_class is SpectralClassifier:
            first["classes"] = [dask.delayed(np.unique)(block) for block in y.to_delayed().ravel()]
        else:
            first["y_sum"] = (weight * y).sum()
        (first,) = dask.compute(first)
        if not (first["w_finite"] and first["w_min"] >= 0 and first["w_sum"] > 0):
            raise ValueError("sample_weight must be finite and non-negative, with a positive sum; got minimum "
                             f"{first['w_min']!r} and sum {first['w_sum']!r}.")
        total = np.where(first["total"] > 0, first["total"], 1.0)
        mean = first["sum"] / total
        second = {"var": (w_observed * (da.where(observed, X, mean) - mean) ** 2).sum(axis=0) / total}
        sketches = []
        if self.feature_encoding == "piecewise_linear":
            share = min(1.0, _BIN_SUBSAMPLE / max(1, X.shape[0]))
            # up to the plain estimators' subsample every value travels (where they are not too many):
            # their bins exactly, so that one worker's fit is the plain fit
            exact = share == 1.0 and X.shape[0] * n_features <= _EXACT_BIN_VALUES
            seed = self._seed()
            sketches = [dask.delayed(_quantile_sketch)(xb, wb, None if exact else _SKETCH_POINTS, share, [seed, i])
                        for i, (xb, wb) in enumerate(zip(X.to_delayed().ravel(), weight.to_delayed().ravel()))]
        if "y_sum" in first:
            y_mean = first["y_sum"] / first["w_sum"]
            second["y_var"] = (weight * (y - y_mean) ** 2).sum() / first["w_sum"]
        second, *sketches = dask.compute(second, *sketches)
        scale = usable_scale(mean, np.sqrt(second["var"]))
        categorical = np.zeros(n_features, dtype=bool) if mask is None else mask
        mean, scale = np.where(categorical, 0.0, mean), np.where(categorical, 1.0, scale)
        edges = [None] * n_features
        if self.feature_encoding == "piecewise_linear":
            for j in np.flatnonzero(~categorical):
                values, weights = np.concatenate([sketch[j] for sketch in sketches], axis=1)
                quantiles = weighted_quantiles(values, weights, self.n_bins)
                if quantiles is not None:  # the sketch's range is inside the data's: the exact ends
                    quantiles[[0, 1, -2, -1]] = first["min"][j], first["min"][j], first["max"][j], first["max"][j]
                    edges[j] = edges_from_quantiles((quantiles - mean[j]) / scale[j])
        numeric = np.flatnonzero(~categorical)
        levels = {} if codes is None else dict(categorical=[int(j) for j in np.flatnonzero(categorical)],
                                               n_levels=codes.n_levels(), has_missing_level=list(codes.has_missing))
        statistics = {
            "x_mean_": mean, "x_scale_": scale,
            "x_min_": np.where(categorical, -np.inf, np.nan_to_num(first["min"], nan=-np.inf)),
            "x_max_": np.where(categorical, np.inf, np.nan_to_num(first["max"], nan=np.inf)),
            "encoding_": EncodingSpec(n_features, numeric=[int(j) for j in numeric], edges=[edges[j] for j in numeric],
                                      missing=[int(j) for j in numeric if first["has_nan"][j]], **levels),
            "is_categorical_": mask,
        }
        if codes is not None:
            statistics["_category_codes"] = codes
        if "classes" in first:
            return statistics, np.unique(np.concatenate(first["classes"]))
        statistics["y_mean_"] = float(y_mean)
        statistics["y_scale_"] = float(usable_scale(np.array([y_mean]), np.sqrt(np.array([second["y_var"]])))[0])
        return statistics, None

    def fit(self, X, y, sample_weight=None, eval_set=None):
        """Fit on dask collections, data-parallel over the workers that hold them.

        Parameters
        ----------
        X : dask array of shape (n_samples, n_features) or dask DataFrame
            Categorical columns as ``categorical_features`` names them.
        y : dask array of shape (n_samples,) or dask Series
        sample_weight : dask array of shape (n_samples,), dask Series or None, default=None
            Weights of the rows, as the plain estimators take them: in the statistics, the
            bins and the loss (rows of weight 0 count for nothing). No duplicate merging.
        eval_set : list of (X, y) pairs of dask collections, default=None
            Scored at the end of every epoch into ``history_`` (never affects training), as
            the plain estimators do. Each pair is computed and sent to the first worker,
            which scores it: meant for held-out sets that fit one machine.

        Returns
        -------
        self
        """
        self._validate_params()
        client = self._client()
        names = np.asarray(X.columns, dtype=object) if hasattr(X, "columns") else None
        X, mask, codes = self._coded(X)
        X = X.rechunk({1: -1})
        y = _as_dask_array(y, "y", 1)
        if X.shape[0] != y.shape[0] or np.isnan(X.shape[0]):
            raise ValueError(f"X and y must have the same, known number of rows; got {X.shape[0]} and {y.shape[0]}.")
        y = y.rechunk((X.chunks[0],))
        if sample_weight is None:
            weight = da.ones(X.shape[0], chunks=(X.chunks[0],))
        else:
            weight = _as_dask_array(sample_weight, "sample_weight", 1).astype(np.float64)
            if weight.shape[0] != X.shape[0]:
                raise ValueError(f"sample_weight has {weight.shape[0]} rows, X has {X.shape[0]}.")
            weight = weight.rechunk((X.chunks[0],))
        if self._local_class is SpectralRegressor:
            y = y.astype(np.float64)
        statistics, classes = self._statistics(X, y, weight, mask, codes)
        if classes is not None:  # the workers train on class indices, the same on every shard
            labels = classes
            y = y.map_blocks(lambda block: np.searchsorted(labels, block).astype(np.float64), dtype=np.float64)
            classes = np.arange(len(labels)), labels
        evaluations = self._eval_pairs(eval_set, mask, codes, None if classes is None else classes[1])
        x_futures = client.compute(X.to_delayed().ravel().tolist())
        y_futures = client.compute(y.to_delayed().ravel().tolist())
        w_futures = client.compute(weight.to_delayed().ravel().tolist())
        distributed.wait(x_futures + y_futures + w_futures)
        holders = client.who_has(x_futures)
        by_worker: dict[str, list[int]] = {}
        for i, future in enumerate(x_futures):
            by_worker.setdefault(sorted(holders[future.key])[0], []).append(i)
        workers = sorted(by_worker)
        host = workers[0].split("://")[-1].rsplit(":", 1)[0]
        port = client.submit(_free_port, workers=[workers[0]], pure=False).result()
        local = self.to_local(fitted=False)
        local.categorical_features = None  # the shards hold level codes; the statistics say which columns
        # the shards reach the workers as numpy arrays of class indices: name-keyed options by position
        if isinstance(self.monotonic_cst, dict):
            local.monotonic_cst = monotonic_by_position(self.monotonic_cst, names)
        if classes is not None and isinstance(getattr(self, "class_weight", None), dict):
            local.class_weight = {int(np.searchsorted(classes[1], label)): w for label, w in self.class_weight.items()}
        tasks = [
            client.submit(
                _fit_shard, local, statistics, None if classes is None else classes[0],
                [x_futures[i] for i in by_worker[w]], [y_futures[i] for i in by_worker[w]],
                [w_futures[i] for i in by_worker[w]], rank, len(workers), f"tcp://{host}:{port}",
                self.collective_timeout, evaluations if rank == 0 else None,  # rank 0 scores the eval sets
                workers=[w], allow_other_workers=False, pure=False,
            )
            for rank, w in enumerate(workers)
        ]
        try:
            _await_ranks(client, tasks, workers)
        except RuntimeError:
            client.cancel(tasks + x_futures + y_futures + w_futures)
            raise
        fitted = tasks[0].result()
        client.cancel(x_futures + y_futures + w_futures)
        for name, value in vars(fitted).items():
            if name not in self.get_params():
                setattr(self, name, value)
        if classes is not None:  # the workers trained on class indices: back to the labels
            self.classes_ = classes[1]
        if names is not None:
            self.feature_names_in_ = names
        self.n_workers_ = len(workers)
        return self

    def _eval_pairs(self, eval_set, mask, codes, labels) -> list:
        """eval_set as numpy (X, y) pairs in the shards' terms: level codes, class indices."""

        def computed(X_eval, y_eval):
            if not (_is_dask(X_eval) and _is_dask(y_eval)):
                raise ValueError("eval_set must be a list of (X, y) pairs of dask collections; got a pair of "
                                 f"{type(X_eval).__name__} and {type(y_eval).__name__}.")
            X_eval, y_eval = dask.compute(_coded_with(X_eval, mask, codes), _as_dask_array(y_eval, "y", 1))
            if labels is not None:
                unseen = ~np.isin(y_eval, labels)
                if unseen.any():
                    raise ValueError(f"eval_set has labels not seen in fit: {np.unique(y_eval[unseen])[:5]}.")
                y_eval = np.searchsorted(labels, y_eval)
            return X_eval, y_eval

        return check_eval_set(eval_set, computed)  # the plain estimators' pair handling

    def partial_fit(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} fits data-parallel with fit only; for incremental "
                                  "fits on one machine use to_local().partial_fit(...).")

    def fit_iter(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} fits data-parallel with fit only; for per-epoch "
                                  "records read history_ after fit, or use to_local().fit_iter(...).")

    def to_local(self, fitted: bool = True):
        """The plain estimator with the same parameters (and, when fitted, the fitted state)."""
        params = {k: v for k, v in self.get_params().items() if k not in ("client", "collective_timeout")}
        local = self._local_class(**params)
        if fitted:
            for name, value in vars(self).items():
                if name not in self.get_params() and name != "n_workers_":
                    setattr(local, name, value)
        return local

    def predict(self, X):
        """Predictions: a dask array (one task per block of rows) for dask input, numpy otherwise."""
        local = self.to_local()
        if not _is_dask(X):
            return local.predict(X)
        labels = getattr(self, "classes_", None)
        return _map_rows(X, local.predict, np.float64 if labels is None else labels.dtype)


def _map_rows(X, method, dtype, n_outputs: int | None = None):
    """``method`` (a local estimator's predict or predict_proba) over each block of rows of dask
    X, as a dask array: 1-D, or (rows, n_outputs)."""
    if _is_frame(X):  # each partition as a DataFrame: names and categorical columns as in fit
        import pandas as pd

        if n_outputs is None:
            return X.map_partitions(lambda part: pd.Series(method(part), index=part.index),
                                    meta=(None, dtype)).to_dask_array()
        meta = pd.DataFrame({j: pd.Series(dtype=dtype) for j in range(n_outputs)})
        return X.map_partitions(lambda part: pd.DataFrame(method(part), index=part.index),
                                meta=meta).to_dask_array()
    X = raw_floats(_as_dask_array(X, "X", 2)).rechunk({1: -1})
    if n_outputs is None:
        return X.map_blocks(method, drop_axis=1, dtype=dtype)
    return X.map_blocks(method, chunks=(X.chunks[0], (n_outputs,)), dtype=dtype)


def _is_dask(data) -> bool:
    return dask.is_dask_collection(data)


def _is_frame(data) -> bool:
    import dask.dataframe as dd

    return isinstance(data, dd.DataFrame)


def _signature_with(base: type, extra: list[inspect.Parameter]) -> inspect.Signature:
    parameters = list(inspect.signature(base.__init__).parameters.values())
    return inspect.Signature(parameters + extra)


_DASK_PARAMETERS = [
    inspect.Parameter("client", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("collective_timeout", inspect.Parameter.KEYWORD_ONLY, default=COLLECTIVE_TIMEOUT_S),
]


def _dask_init(base: type):
    """__init__ taking the base estimator's parameters plus client and collective_timeout;
    it only stores them (scikit-learn reads the signature for get_params and clone)."""
    signature = _signature_with(base, _DASK_PARAMETERS)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__


class DaskSpectralRegressor(_DaskSpectralMixin, SpectralRegressor):
    """SpectralRegressor fitted data-parallel on a Dask cluster (module docstring).

    Parameters: those of :class:`skspectral.SpectralRegressor`, plus ``client``
    (a ``distributed.Client``; None: the default client) and ``collective_timeout``
    (seconds a rank waits for the others before the fit fails).
    """

    _local_class = SpectralRegressor
    __init__ = _dask_init(SpectralRegressor)
    _parameter_constraints = {**SpectralRegressor._parameter_constraints, "client": [None, object],
                              "collective_timeout": [Interval(Real, 0, None, closed="neither")]}


class DaskSpectralClassifier(_DaskSpectralMixin, SpectralClassifier):
    """SpectralClassifier fitted data-parallel on a Dask cluster (module docstring).

    Parameters: those of :class:`skspectral.SpectralClassifier`, plus ``client`` and
    ``collective_timeout``. ``class_weight="balanced"`` weighs by each shard's counts.
    """

    _local_class = SpectralClassifier
    __init__ = _dask_init(SpectralClassifier)
    _parameter_constraints = {**SpectralClassifier._parameter_constraints, "client": [None, object],
                              "collective_timeout": [Interval(Real, 0, None, closed="neither")]}

    def predict_proba(self, X):
        """Class probabilities: a dask array for dask input, numpy otherwise."""
        local = self.to_local()
        if not _is_dask(X):
            return local.predict_proba(X)
        return _map_rows(X, local.predict_proba, np.float64, n_outputs=len(self.classes_))
