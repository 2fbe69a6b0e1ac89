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

import asyncio
import inspect
import socket
import time
from datetime import timedelta
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval

from ._columns import ColumnSummary, column_kinds, level_counts, split_columns
from ._columns.gates import interaction_sums, with_chosen_gates
from ._preprocessing import check_eval_set
from ._transfer import raw_floats
from ._warn import warn
from .classifier import SpectralClassifier
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

    import torch

    available = torch.cuda.device_count()
    n_workers = available if n_workers is None else n_workers
    if isinstance(n_workers, bool) or not isinstance(n_workers, Integral) or not 1 <= n_workers <= available:
        raise ValueError(f"local_gpu_cluster needs 1 to {available} workers on this machine (its GPUs), "
                         f"got n_workers={n_workers}.")
    try:
        from dask_cuda import LocalCUDACluster
    except Exception as exc:  # missing, or built against another dask
        warn(f"dask-cuda is not usable here ({exc!r}); one worker per GPU from distributed's "
             "Nanny with CUDA_VISIBLE_DEVICES instead.", RuntimeWarning)
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


def _fit_shard(estimator, mapper, target, x_parts, y_parts, w_parts, rank, world_size, init_method, timeout_s,
               eval_sets=()):
    """One rank of a data-parallel fit, on the worker that holds its partitions: the plain
    estimator's fit core on the rank's rows, with the columns and the target fitted over every
    shard. An error leaves with the time it happened (the first rank's error is the cause)."""
    import torch
    import torch.distributed as dist

    from ._device import resolve_device
    from ._training.distributed import DistributedContext

    device = resolve_device(estimator.device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init_method, rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=timeout_s))
    try:
        X = np.concatenate(x_parts) if x_parts else np.empty((0, mapper.kinds.n_features))
        y = np.concatenate(y_parts) if y_parts else np.empty(0)
        weight = np.concatenate(w_parts) if w_parts else np.empty(0)
        context = DistributedContext(rank, world_size, device=torch.device(
            device.type, torch.cuda.current_device()) if device.type == "cuda" else device)
        estimator._validate_params()
        estimator._fit_shard(X, y, weight, mapper=mapper, target=target, context=context, eval_sets=eval_sets)
        if not context.same_on_every_rank(list(estimator._module.parameters())):
            raise RuntimeError("the ranks ended the data-parallel fit with different parameters: some step's "
                               "gradients were not averaged over every rank.")
        return estimator if rank == 0 else None
    except BaseException as exc:
        # when it happened (pickled with the exception, in its __dict__): before this rank leaves the
        # group, so before the errors it causes in the others
        exc.skspectral_failed_at = time.time()
        raise
    finally:
        dist.destroy_process_group()


def _await_ranks(client, tasks, workers, poll_s: float = 0.5, settle_s: float = 2.0) -> None:
    """Wait for every rank's task. A rank's error ends the fit with the first error any rank
    raised (the others' are usually their peers' broken connections), noted with its worker;
    the loss of a worker whose rank has not finished ends it with a RuntimeError. A task pinned
    to a worker that died is not an error to the scheduler: it waits for that worker, which
    never returns (a restarted worker has a new address). The other ranks may not fail on their
    own either: on GPUs a rank can be stuck in a captured all-reduce, or its process ended by
    NCCL's watchdog, whose task then waits in the same way."""
    running = list(range(len(tasks)))
    first_error_at = None
    while True:
        try:
            distributed.wait([tasks[rank] for rank in running], timeout=poll_s, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError):  # (the same class from Python 3.11; on 3.10 wait raises asyncio's)
            pass
        failed = [rank for rank, task in enumerate(tasks) if task.status == "error"]
        running = [rank for rank, task in enumerate(tasks) if task.status not in ("finished", "error")]
        if failed:  # give the other ranks a moment to report theirs: the earliest is the cause
            first_error_at = first_error_at or time.monotonic()
            if running and time.monotonic() - first_error_at < settle_s:
                continue
            errors = {rank: tasks[rank].exception() for rank in failed}
            rank = min(errors, key=lambda r: getattr(errors[r], "skspectral_failed_at", float("inf")))
            error = errors[rank]
            note = f"the data-parallel fit failed on worker {workers[rank]} (rank {rank} of {len(workers)})"
            if hasattr(error, "add_note"):
                error.add_note(note)
                raise error
            raise RuntimeError(f"{note}: {error!r}") from error
        if not running:
            return
        alive = set(_worker_addresses(client))
        lost = [rank for rank in running if workers[rank] not in alive]
        if lost:
            raise RuntimeError(f"the data-parallel fit failed: worker {workers[lost[0]]} (rank {lost[0]} of "
                               f"{len(workers)}) left the cluster before its rank finished (it died or was "
                               "restarted). Fit again on the workers that remain.")


def _addresses_on_scheduler(dask_scheduler) -> list:
    return list(dask_scheduler.workers)


def _worker_addresses(client) -> list:
    """The addresses of the cluster's workers, read on the scheduler itself. (distributed
    2026.8's ``client.scheduler_info()`` returns a cache that the client's periodic refresh
    can overwrite, between the fetch and the return, with one that lists no worker: a fit
    then took every worker of its ranks for lost.)"""
    return client.run_on_scheduler(_addresses_on_scheduler)


def _require_process_workers(client) -> None:
    """The ranks of a data-parallel fit are torch.distributed processes: one per worker process."""
    threads = [address for address in _worker_addresses(client) if address.startswith("inproc://")]
    if threads:
        raise ValueError("A data-parallel fit needs each Dask worker in its own process (each runs one "
                         "torch.distributed rank), but this cluster's workers are threads of one process "
                         f"({threads[0]}, e.g. LocalCluster(processes=False)). Use LocalCluster(processes=True) "
                         "(the default), or fit the plain estimator in this process.")


def _summarise(X, y, weight, kinds, sample_rows, labels: bool):
    """One partition's column summary and target summary (the plain estimators' statistics)."""
    from ._target import LabelSummary, TargetSummary

    numeric, categorical = split_columns(X, kinds)
    weight = np.asarray(weight, dtype=np.float64)
    columns = ColumnSummary.of_block(numeric, weight, kinds, sample_rows=sample_rows,
                                     levels=None if categorical is None else level_counts(
                                         categorical, kinds.labels(kinds.categorical_index)))
    target = LabelSummary.of_block(np.asarray(y)) if labels else TargetSummary.of_block(y, weight)
    return columns, target


def _gate_sums(rows, y, weight, sample_rows, mapper, candidates, local):
    """One partition's sums for the gated copies' test (the plain estimators': on the bins' subsample);
    ``rows``: its coded rows, without copies."""
    target = local._gate_target(local._encode_target(local._check_target(np.asarray(y))))
    weight = np.asarray(weight, dtype=np.float64)
    chosen = slice(None) if sample_rows is None else sample_rows
    return interaction_sums(mapper, candidates, rows[chosen], target[chosen], weight[chosen])


def _merged(pair_a, pair_b):
    return pair_a[0].merge(pair_b[0]), pair_a[1].merge(pair_b[1])


def _tree_merge(items: list):
    """Delayed summaries merged pairwise in a tree, in row order."""
    while len(items) > 1:
        items = [dask.delayed(_merged)(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def _subsample_by_partition(lengths: list, seed_fn) -> list:
    """The plain estimators' bin subsample of the rows of every partition together, as each
    partition's own row positions (None: all of its rows)."""
    from ._columns import subsample_rows

    rows = subsample_rows(int(sum(lengths)), seed_fn)
    if rows is None:
        return [None] * len(lengths)
    bounds = np.cumsum([0] + list(lengths))
    return [rows[(rows >= a) & (rows < b)] - a for a, b in zip(bounds[:-1], bounds[1:])]


class _DaskSpectralMixin:
    """fit on dask collections over the workers that hold them; predict with map_blocks."""

    _local_class: type = None

    def _client(self):
        return self.client if self.client is not None else distributed.default_client()

    def _partitions(self, X, y, sample_weight):
        """X's row blocks (delayed numpy arrays or DataFrames), with y's and the weights' blocks
        aligned to them, their lengths, and X's column kinds."""
        import dask.dataframe as dd

        if _is_frame(X):
            self._check_frame_columns(X)
            kinds = column_kinds(X._meta, self.categorical_features)
            lengths = [int(n) for n in dask.compute(X.map_partitions(len))[0]] if X.npartitions else []
            blocks = list(X.to_delayed())
        else:
            X = _as_dask_array(X, "X", 2)
            if any(np.isnan(c) for c in X.chunks[0]):
                X = X.compute_chunk_sizes()
            X = raw_floats(X).rechunk({1: -1})
            kinds = column_kinds(np.empty((0, X.shape[1]), dtype=X.dtype), self.categorical_features)
            lengths, blocks = [int(n) for n in X.chunks[0]], list(X.to_delayed().ravel())
        y = _as_dask_array(y, "y", 1)
        if y.shape[0] != sum(lengths) or np.isnan(y.shape[0]):
            raise ValueError(f"X and y must have the same, known number of rows; got {sum(lengths)} and {y.shape[0]}.")
        y = y.rechunk((tuple(lengths),))
        if sample_weight is None:
            weight = da.ones(sum(lengths), chunks=(tuple(lengths),))
        else:
            weight = _as_dask_array(sample_weight, "sample_weight", 1).astype(np.float64)
            if weight.shape[0] != sum(lengths):
                raise ValueError(f"sample_weight has {weight.shape[0]} rows, X has {sum(lengths)}.")
            weight = weight.rechunk((tuple(lengths),))
        del dd
        return blocks, list(y.to_delayed().ravel()), list(weight.to_delayed().ravel()), lengths, kinds

    def _check_frame_columns(self, X) -> None:
        import pandas as pd

        from ._columns.kinds import categorical_mask

        mask = categorical_mask(X._meta, self.categorical_features)
        mask = np.zeros(len(X.columns), dtype=bool) if mask is None else mask
        bad = [c for (c, t), categorical in zip(X.dtypes.items(), mask)
               if not categorical and not pd.api.types.is_numeric_dtype(t)]
        if bad:
            raise ValueError(f"X has non-numeric columns {bad} that are not categorical: declare them "
                             "in categorical_features (the default, 'from_dtype', takes category, object, "
                             "string and bool columns), or encode them as numbers.")

    def fit(self, X, y, sample_weight=None, eval_set=None):
        """Fit on dask collections, data-parallel over the workers that hold them.

        The columns and the target are summarised partition by partition where the partitions
        lie and the summaries merged (the plain estimators' statistics: a plain fit is the
        summary of one block), and so are the sums of the gated copies' test (``gated_columns``);
        each rank then trains on the coded rows of its partitions.

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
        _require_process_workers(client)
        if eval_set is not None:  # the pairs' form is checked before anything is computed
            check_eval_set(eval_set, _dask_pair)
        x_blocks, y_blocks, w_blocks, lengths, kinds = self._partitions(X, y, sample_weight)
        self.n_features_in_ = kinds.n_features
        if _is_frame(X):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        labels = self._local_class is SpectralClassifier
        samples = _subsample_by_partition(lengths, self._seed)
        summaries = [dask.delayed(_summarise)(xb, yb, wb, kinds, rows, labels)
                     for xb, yb, wb, rows in zip(x_blocks, y_blocks, w_blocks, samples)]
        columns, target = dask.compute(_tree_merge(summaries))[0]
        self._fit_target(target)  # classes_ here; each rank fits the same from the same summary
        self._column_kinds = kinds
        ungated = columns.finalize(self._column_options())
        y_futures, w_futures = client.compute(y_blocks), client.compute(w_blocks)
        coded = []  # the partitions' coded rows without copies: made once, by the gated copies' test or for training

        def coded_rows() -> list:
            if not coded:
                coded.extend(client.compute([dask.delayed(ungated.rows)(block) for block in x_blocks]))
            return coded

        def partitions_sums(candidates):  # the gated copies' test: its sums partition by partition, added up
            local = self.to_local()  # (the target's fitted state: a classifier's labels)
            sums = [client.submit(_gate_sums, rows, yf, wf, sample, ungated, candidates, local, pure=False)
                    for rows, yf, wf, sample in zip(coded_rows(), y_futures, w_futures, samples)]
            return sum(client.gather(sums))

        try:
            self.column_mapper_ = with_chosen_gates(ungated, self.gated_columns, columns.n_rows, partitions_sums)
            self._check_monotone_outputs()
            message = self.column_mapper_.ignored_message()
            if message:
                warn(f"{type(self).__name__}: {message}")
            # validated here, as the plain estimator validates them (labels, columns): errors before any rank starts
            evaluations = check_eval_set(eval_set, lambda Xe, ye: self._validate_eval_pair(*dask.compute(Xe, ye)))
        except BaseException:
            client.cancel(coded + y_futures + w_futures)
            raise
        mapper = self.column_mapper_
        ungated_rows = coded_rows()  # each partition's copies appended to them where they lie
        x_futures = [client.submit(mapper.gated, rows, pure=False) for rows in ungated_rows] if mapper.gates \
            else list(ungated_rows)
        distributed.wait(x_futures + y_futures + w_futures)
        del coded[:]  # the rows without copies: released once their copies' rows exist
        holders = client.who_has(x_futures)
        by_worker: dict[str, list[int]] = {}
        for i, future in enumerate(x_futures):
            by_worker.setdefault(sorted(holders[future.key])[0], []).append(i)
        workers = sorted(by_worker)
        host = workers[0].split("://")[-1].rsplit(":", 1)[0]
        port = client.submit(_free_port, workers=[workers[0]], pure=False).result()
        local = self.to_local(fitted=False)
        local.n_features_in_ = self.n_features_in_
        if hasattr(self, "feature_names_in_"):
            local.feature_names_in_ = self.feature_names_in_
        tasks = [
            client.submit(
                _fit_shard, local, mapper, target,
                [x_futures[i] for i in by_worker[w]], [y_futures[i] for i in by_worker[w]],
                [w_futures[i] for i in by_worker[w]], rank, len(workers), f"tcp://{host}:{port}",
                self.collective_timeout, evaluations if rank == 0 else [],  # rank 0 scores the eval sets
                workers=[w], allow_other_workers=False, pure=False,
            )
            for rank, w in enumerate(workers)
        ]
        try:
            _await_ranks(client, tasks, workers)
        except BaseException:
            client.cancel(tasks + x_futures + y_futures + w_futures)
            raise
        fitted = tasks[0].result()
        client.cancel(x_futures + y_futures + w_futures)
        for name, value in vars(fitted).items():
            if name not in self.get_params():
                setattr(self, name, value)
        self.n_workers_ = len(workers)
        return self

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
        if labels is not None:
            return _map_rows(X, local.predict, labels.dtype)
        levels = local._quantiles() if local._several_quantiles() else None  # one column per level
        return _map_rows(X, local.predict, np.float64, None if levels is None else len(levels))


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


def _dask_pair(X, y) -> tuple:
    if not (_is_dask(X) and _is_dask(y)):
        raise ValueError("eval_set must be a list of (X, y) pairs of dask collections; got a pair of "
                         f"{type(X).__name__} and {type(y).__name__}.")
    return X, y


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
    ``collective_timeout``. ``class_weight="balanced"`` weighs by the counts of every row.
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
