"""The fitted column mapper: everything that happens to an input column before the model.

The host/device contract, in one place. The host turns a validated X into float rows
(``rows``): numeric columns as given (float32 stays float32, NaN for missing), categorical
columns as level codes (0..L-1 frequent levels, L rare, -1 unseen, -2 missing). The device
standardises them (``standardisation``): a missing value in a column that had none in fit
becomes that column's training median (HistGradientBoosting sends such rows to the child
holding most training rows; the median is where most rows are), each column is clipped to
its training range where asked (``clip_features``), then ``(x - mean) / scale``; categorical
codes pass unchanged (mean 0, scale 1). The :class:`~skspectral.encoding.EncodingSpec` says
what each column becomes there: piecewise-linear (or linear) columns of a numeric value, a
missing-value column, one column per level.

Columns that carry nothing get no encoded column, so they contribute nothing to a
prediction and their certified sensitivity is zero: a numeric column with no observed
value, or with a single value and no missing one; a categorical column whose rows all
hold one level. A numeric column with one value and missing ones keeps only its
missing-value column. ``ignored`` lists the columns left out entirely; the estimators warn
about them at fit.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_array

from .._transfer import Standardisation, raw_floats
from ..encoding import LINEAR, PIECEWISE, EncodingSpec
from .gates import Gate
from .kinds import ColumnKinds, is_dataframe
from .levels import CategoryCodes, _is_missing, as_frame
from .summary import check_total_weight, checked_scale, edges_of, sample_values, weighted_quantiles


# n_bins="auto": AUTO_BINS quantile bins per numeric feature, and AUTO_BINS_TALL from AUTO_BINS_ROWS rows
# up, on every device. Chosen on the quality suite's selection fold (benchmarks/RESULTS.md, section 12):
# 32 bins helped the tables of 20,000 rows and more (flights' RMSE 4.7 % lower) and hurt those of 5,000
# and fewer but concrete (churn's log-loss 12 % higher). The CPU took them from 100,000 rows until
# 2026-12-03 (they cost epochs with three members of one's own); with shared members and two members there
# (n_estimators="auto") they pay from 10,000 rows too (section 9).
AUTO_BINS, AUTO_BINS_TALL, AUTO_BINS_ROWS = 16, 32, 10_000


def bins_for(n_bins, n_rows: int) -> int:
    """Quantile bins per numeric feature: ``n_bins`` itself, or for "auto" by the fit's rows."""
    if n_bins != "auto":
        return int(n_bins)
    return AUTO_BINS_TALL if n_rows >= AUTO_BINS_ROWS else AUTO_BINS


@dataclass(frozen=True)
class ColumnOptions:
    """How the columns are encoded: "piecewise_linear" on ``n_bins`` quantile bins (see
    :func:`bins_for`) or "linear";
    ``monotonic``: -1/0/+1 per input column (None: no constraint); a categorical level seen in
    fewer than ``min_level_count`` rows shares its feature's "other" level."""

    encoding: str = "piecewise_linear"
    n_bins: int | str = "auto"
    monotonic: np.ndarray | None = None
    min_level_count: int | str = "auto"


# from this many rows a fit's columns find their quantiles on several threads (fewer: a thread's start costs more)
_THREADED_QUANTILE_ROWS = 50_000


def _each_column(fn, columns: np.ndarray, n_rows: int) -> list:
    """[fn(j) for j in columns], from _THREADED_QUANTILE_ROWS rows on as many threads as torch uses (a
    worker's one thread: in order on this one): numpy's partition and sort release the GIL, and a tall
    table's columns' quantiles (flights' nine of 218,000 rows: ~70 ms on one core) are most of its column
    fit. One column's temporaries a thread."""
    threads = min(len(columns), torch.get_num_threads()) if n_rows >= _THREADED_QUANTILE_ROWS else 1
    if threads <= 1:
        return [fn(j) for j in columns]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, columns))


@dataclass(frozen=True)
class ColumnMapper:
    """What a fit learned about the input columns (numpy only: it pickles with the estimator).

    Arrays have one entry per input column: ``mean``/``scale`` standardise (0/1 for
    categorical columns), ``low``/``high`` are the training range (infinite where there is
    none), ``fill`` the value a missing entry takes, standardised (the training median; NaN:
    it stays missing, for the columns that had missing values in fit and own a missing-value
    matrix). ``monotone`` holds the constraint of every encoded column (None: none). ``gates``:
    the gated copies of numeric columns (:mod:`.gates`), which the host rows carry after the
    input columns and the device standardises as their sources.
    """

    kinds: ColumnKinds
    codes: CategoryCodes | None
    mean: np.ndarray
    scale: np.ndarray
    low: np.ndarray
    high: np.ndarray
    fill: np.ndarray
    spec: EncodingSpec
    ignored: np.ndarray
    monotone: np.ndarray | None = None
    gates: tuple = ()

    @classmethod
    def fit(cls, summary, options: ColumnOptions, codes: CategoryCodes | None = None) -> "ColumnMapper":
        """The mapper of the rows ``summary`` (a :class:`~.summary.ColumnSummary`) describes
        (``codes``: its levels' codes, where made already)."""
        kinds = summary.kinds
        check_total_weight(summary.total_weight)
        categorical, numeric = kinds.is_categorical, kinds.numeric_index
        p = kinds.n_features
        mean, scale = np.zeros(p), np.ones(p)
        if len(numeric):
            scale[numeric] = checked_scale(
                summary.mean[numeric], summary.var[numeric], [f"feature {j}" for j in numeric],
                lambda i: float(np.nanmax(np.abs([summary.low[numeric[i]], summary.high[numeric[i]]]))))
            mean[numeric] = summary.mean[numeric]
        observed = ~categorical & (summary.weight > 0)
        varies = observed & (summary.low < summary.high)
        with_missing = observed & summary.has_missing
        if codes is None and kinds.categorical is not None:
            codes = CategoryCodes(summary.levels, options.min_level_count)
        used_levels = np.zeros(p, dtype=np.int64)
        if codes is not None:
            used_levels[kinds.categorical_index] = codes.used_levels()
        kept_categorical = categorical & (used_levels > 1)
        ignored = np.flatnonzero(~varies & ~with_missing & ~kept_categorical)

        edges, fill = [], np.full(p, np.nan)
        piecewise = options.encoding == "piecewise_linear"
        n_bins = bins_for(options.n_bins, summary.n_rows) if piecewise else 1

        def column_quantiles(j):
            values, weight = sample_values(*summary.sample[j])
            # in float64 whatever X's dtype: NumPy 1.x keeps a float32 sample float32 beside float64 scalars
            # (value-based casting), so float32 X would get other edges than its float64 copy
            values = values.astype(np.float64, copy=False)  # (a float64 sample as it is)
            return weighted_quantiles((values - mean[j]) / scale[j], weight, n_bins, with_median=True)

        numeric_columns = np.flatnonzero(varies)
        for j, quantiles in zip(numeric_columns, _each_column(column_quantiles, numeric_columns, summary.n_rows)):
            quantiles, median = (None, 0.0) if quantiles is None else quantiles  # (a subsample without the column)
            edges.append(edges_of(quantiles) if piecewise else None)
            if not summary.has_missing[j]:
                fill[j] = median
        low = np.where(observed, summary.low, -np.inf)
        high = np.where(observed, summary.high, np.inf)
        levels = {}
        if codes is not None:
            keep = kept_categorical[kinds.categorical_index]
            levels = dict(categorical=[int(j) for j in kinds.categorical_index[keep]],
                          n_levels=[n for n, k in zip(codes.n_levels(), keep) if k],
                          has_missing_level=[m for m, k in zip(codes.has_missing, keep) if k])
        spec = EncodingSpec(p, numeric=[int(j) for j in numeric_columns], edges=edges,
                            missing=[int(j) for j in np.flatnonzero(with_missing)], **levels)
        mapper = cls(kinds, codes, mean, scale, low, high, fill, spec, ignored)
        if options.monotonic is not None:
            mapper = cls(kinds, codes, mean, scale, low, high, fill, spec, ignored,
                         mapper._monotone_columns(np.asarray(options.monotonic)))
        return mapper

    # ---- host rows -------------------------------------------------------------------------
    def split(self, X):
        """(numeric columns as float rows, NaN for missing; categorical columns as given, or None)
        of a validated X. All-numeric X is returned as it is (float32 stays float32)."""
        return split_columns(X, self.kinds)

    def rows(self, X) -> np.ndarray:
        """The float rows the device receives for a validated X: numeric values, categorical
        level codes."""
        return self.gated(coded_rows(*self.split(X), self.kinds, self.codes))

    def gated(self, rows: np.ndarray) -> np.ndarray:
        """Coded rows with the gated copies appended: the source's value where the row holds the
        gate's level, else the source's training minimum (below its every bin: the copy's columns
        are 0 there)."""
        if not self.gates:
            return rows
        copies = np.empty((len(rows), len(self.gates)), dtype=rows.dtype)
        for i, gate in enumerate(self.gates):
            copies[:, i] = np.where(rows[:, gate.categorical] == gate.level, rows[:, gate.source],
                                    self.low[gate.source])
        return np.concatenate([rows, copies], axis=1)

    def with_gates(self, gates) -> "ColumnMapper":
        """This mapper with the gated copies ``gates`` (:class:`.gates.Gate`, chosen by
        :func:`.gates.chosen_gates`): each a numeric feature on its source's bins, constrained as
        its source."""
        if not gates:
            return self
        gates = tuple(Gate(*map(int, gate)) for gate in gates)
        spec = self.spec
        first = spec.n_features
        edges = dict(zip(spec.numeric, spec.edges))
        gated_spec = dataclasses.replace(
            spec, n_features=first + len(gates), numeric=list(spec.numeric) + list(range(first, first + len(gates))),
            edges=list(spec.edges) + [edges[gate.source] for gate in gates],
            gated=tuple((gate.source, gate.categorical) for gate in gates))
        monotone = self.monotone
        if monotone is not None:  # the sources' signs, read back from their encoded columns
            signs = np.zeros(first, dtype=np.int64)
            feature, _, _ = spec.columns()
            signs[feature[monotone != 0]] = monotone[monotone != 0]
            monotone = _spread(np.concatenate([signs, signs[[gate.source for gate in gates]]]), gated_spec)
        return dataclasses.replace(self, spec=gated_spec, monotone=monotone, gates=gates)

    def standardisation(self, *, clip: bool = False, fill: bool = True) -> Standardisation:
        """The device's arithmetic for these columns: missing values filled where ``fill`` (rows
        that may hold them where fit saw none: prediction and eval sets), clipped to the training
        range where ``clip``. A gated copy as its source."""
        sources = [gate.source for gate in self.gates]
        mean, scale, low, high, fills = (np.concatenate([a, a[sources]])
                                         for a in (self.mean, self.scale, self.low, self.high, self.fill))
        fills = fills if fill and not np.isnan(fills).all() else None
        return Standardisation(mean, scale, low if clip else None, high if clip else None, fills)

    # ---- what the model reads ------------------------------------------------------------------
    def _monotone_columns(self, signs: np.ndarray) -> np.ndarray | None:
        """Constraints per input column (-1/0/+1) spread over the encoded columns, or None."""
        kinds = self.kinds
        if signs.shape != (kinds.n_features,):
            raise ValueError(f"monotonic_cst must have one entry per feature ({kinds.n_features}), "
                             f"got shape {signs.shape}.")
        if signs.dtype.kind not in "iuf" or not np.isin(signs, (-1, 0, 1)).all():
            raise ValueError(f"monotonic_cst entries must be -1, 0 or +1, got {signs.tolist()!r}.")
        signs = signs.astype(np.int64)
        if not signs.any():
            return None
        bad = np.flatnonzero(kinds.is_categorical & (signs != 0))
        if len(bad):
            raise ValueError(f"monotonic_cst constrains categorical feature(s) {kinds.labels(bad)}: their levels "
                             "have no order. Set their constraint to 0, or leave them out of categorical_features.")
        return _spread(signs, self.spec)

    def ignored_message(self) -> str | None:
        """Which columns carry nothing and were left out, for the fit's warning (None: none)."""
        if not len(self.ignored):
            return None
        # a categorical column of several levels, each too rare to own a matrix (an ID column): all "other"
        rare = [j for j in self.ignored if self.kinds.is_categorical[j] and self._distinct_levels(j) > 1]
        single = [j for j in self.ignored if j not in rare]
        parts = []
        if single:
            parts.append(f"column(s) {self.kinds.labels(single)} hold a single value (or none) in the rows of "
                         "positive weight: they carry nothing, so the model leaves them out (they contribute "
                         "nothing to a prediction and their sensitivity is 0).")
        if rare:
            counts = ", ".join(f"{label!r}: {self._distinct_levels(j)} levels"
                               for j, label in zip(rare, self.kinds.labels(rare)))
            parts.append(f"categorical column(s) {self.kinds.labels(rare)} ({counts}) have no level seen in "
                         f"min_level_count={self.codes.min_count} rows or more: every level shares the 'other' "
                         "matrix, so they carry nothing and the model leaves them out. Lower min_level_count "
                         "to give their levels matrices of their own, or drop or group such columns (an ID).")
        return " ".join([parts[0]] + [part[0].upper() + part[1:] for part in parts[1:]])

    def _distinct_levels(self, j: int) -> int:
        """How many levels categorical column ``j`` showed in fit (missing values not counted)."""
        i = int(np.searchsorted(self.kinds.categorical_index, j))
        return sum(not _is_missing(c) for c in self.codes.encoders[i].categories_[0])


def _spread(signs: np.ndarray, spec: EncodingSpec) -> np.ndarray:
    """Constraints per feature (-1/0/+1) spread over the encoded columns (their numeric columns)."""
    feature, kind, _ = spec.columns()
    return np.where((kind == LINEAR) | (kind == PIECEWISE), signs[feature], 0)


def coded_rows(numeric: np.ndarray, categorical, kinds: ColumnKinds, codes: CategoryCodes | None) -> np.ndarray:
    """The float rows of X from its :func:`split_columns` parts: numeric values (NaN for
    missing), categorical columns as level codes."""
    if categorical is None:
        return numeric
    rows = np.empty((numeric.shape[0], kinds.n_features))
    mask = kinds.is_categorical
    rows[:, ~mask] = numeric
    rows[:, mask] = codes.transform(categorical, labels=kinds.labels(kinds.categorical_index))
    return rows


def split_columns(X, kinds: ColumnKinds):
    """(numeric columns as float rows with NaN allowed, categorical columns as a frame) of X.
    Where no column is categorical, X's own values (float32 stays float32, other dtypes become
    float64; a validated array is returned as it is)."""
    if kinds.categorical is None:
        return raw_floats(X.to_numpy() if is_dataframe(X) else np.asarray(X)), None
    mask = kinds.categorical
    if is_dataframe(X):
        numeric, categorical = X.iloc[:, np.flatnonzero(~mask)], X.iloc[:, np.flatnonzero(mask)]
    else:
        X = np.asarray(X, dtype=object)
        numeric, categorical = X[:, ~mask], X[:, mask]
    if mask.all():  # no numeric column (check_array cannot take a frame without columns)
        return np.empty((X.shape[0], 0)), as_frame(categorical)
    numeric = check_array(numeric, dtype=np.float64, ensure_all_finite="allow-nan", ensure_min_features=0)
    return numeric, as_frame(categorical)
