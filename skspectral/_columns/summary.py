"""Mergeable statistics of the training rows, column by column.

A :class:`ColumnSummary` is made from one block of rows (``of_block``), two summaries of
disjoint rows merge into the summary of their union (``merge``), and the summary of all
the rows becomes the fitted :class:`~.mapper.ColumnMapper` (``finalize``). A plain fit is
the summary of one block; a Dask fit maps ``of_block`` over its partitions and merges:
one implementation of every statistic.

Per numeric column, over the rows of positive weight: the observed values' total weight,
weighted mean and variance (merged with Chan et al.'s pairwise update; one block is two
compiled passes, the mean and then the squared deviations), minimum, maximum, whether a
value is missing, and the observed values and weights of the quantile-bin subsample
(HistGradientBoosting's 200,000 rows: the bins and the median come from them). Per
categorical column: each level's row count and the missing rows (of every row as given,
as scikit-learn's OrdinalEncoder counts them: the levels must be known before rows can be
coded, so a plain fit counts them before it merges duplicate rows, and takes the numeric
statistics of the merged rows it trains on).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..eig._numba_support import numba_module, parallel_threads
from .kinds import ColumnKinds
from .levels import add_level_counts

# Quantile bins (and the median) come from at most this many rows: HistGradientBoosting's
# subsample (a column's 200k-row quantiles are within ~0.2 % of the full ones in rank, and
# sorting 28 columns of 10M rows would take half a minute).
BIN_SUBSAMPLE = 200_000
# A merge keeps at most this many values of a column's subsample; beyond, an even weighted
# sketch of half as many (one block, and merges that stay under it, are exact).
SAMPLE_LIMIT = 2**16

_STATISTICS_CHUNK = 16384  # rows per partial sum of the compiled statistics (fixed: results do not depend on threads)
_STATISTICS_ELEMENTS = 2**22  # the numpy fallback's temporaries: about this many values per column block


def subsample_rows(n_rows: int, seed) -> np.ndarray | None:
    """The rows (sorted) the bins are computed on: all of them (None) up to BIN_SUBSAMPLE, else
    a seeded subsample of that many. ``seed``: an int, or a function giving one (called only
    where a subsample is drawn)."""
    if n_rows <= BIN_SUBSAMPLE:
        return None
    seed = seed() if callable(seed) else seed
    return np.sort(np.random.default_rng(seed).choice(n_rows, BIN_SUBSAMPLE, replace=False))


@dataclass
class ColumnSummary:
    """Statistics of a set of rows; arrays have one entry per input column (categorical
    columns: weight 0, mean 0, variance 0, no range, no subsample)."""

    kinds: ColumnKinds
    n_rows: int
    total_weight: float
    weight: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    low: np.ndarray  # NaN where no value was observed
    high: np.ndarray
    has_missing: np.ndarray
    # per numeric column: (values, weights) of the bin subsample (missing values and zero weights
    # included; one block's are views of its rows: no copy), None for categorical columns
    sample: list = field(default_factory=list)
    levels: list = field(default_factory=list)  # per categorical column: ({level: rows}, missing rows)

    @classmethod
    def of_block(cls, numeric: np.ndarray, weight: np.ndarray, kinds: ColumnKinds, *, levels: list | None = None,
                 sample_rows: np.ndarray | None = None) -> "ColumnSummary":
        """The summary of one block of rows.

        numeric: (n, numeric columns) float32/float64 values, NaN for missing; weight (n,) finite
        and non-negative; levels: the categorical columns' :func:`~.levels.level_counts` (None
        where there are none); sample_rows: the rows of this block in the bin subsample (sorted;
        None: all).
        """
        weight = np.ascontiguousarray(weight, dtype=np.float64)
        if weight.size and not (np.isfinite(weight).all() and weight.min() >= 0):
            raise ValueError("sample_weight must be finite and non-negative.")
        numeric_index = kinds.numeric_index
        out = cls.empty(kinds)
        out.n_rows, out.total_weight = int(len(weight)), float(weight.sum())
        if len(numeric_index) and len(weight):
            total, mean, var, low, high, missing, infinite = _moments(numeric, weight)
            if infinite.any():
                j = int(numeric_index[np.flatnonzero(infinite)[0]])
                raise ValueError(f"Input X contains infinity in column {kinds.label(j)}; replace it with a finite "
                                 "value or NaN (a missing value).")
            out.weight[numeric_index], out.mean[numeric_index], out.var[numeric_index] = total, mean, var
            out.low[numeric_index], out.high[numeric_index], out.has_missing[numeric_index] = low, high, missing
            sample_weight = weight if sample_rows is None else weight[sample_rows]
            for position, j in enumerate(numeric_index):
                values = numeric[:, position] if sample_rows is None else numeric[sample_rows, position]
                out.sample[j] = (values, sample_weight)
        if kinds.categorical is not None:
            out.levels = levels
        return out

    @classmethod
    def empty(cls, kinds: ColumnKinds) -> "ColumnSummary":
        """The summary of no rows (the identity of ``merge``)."""
        p = kinds.n_features
        return cls(kinds, 0, 0.0, np.zeros(p), np.zeros(p), np.zeros(p), np.full(p, np.nan), np.full(p, np.nan),
                   np.zeros(p, dtype=bool),
                   [None if c else (np.empty(0), np.empty(0)) for c in kinds.is_categorical],
                   [({}, 0) for _ in kinds.categorical_index])

    def merge(self, other: "ColumnSummary") -> "ColumnSummary":
        """The summary of this summary's rows and ``other``'s together (this one's first)."""
        wa, wb = self.weight, other.weight
        total = wa + wb
        safe = np.where(total > 0, total, 1.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * (wb / safe)
        var = (self.var * wa + other.var * wb + delta * delta * (wa * wb / safe)) / safe
        # merging with no observed values is the identity, to the bit
        mean = np.where(wa == 0, other.mean, np.where(wb == 0, self.mean, mean))
        var = np.where(wa == 0, other.var, np.where(wb == 0, self.var, var))
        sample = [None if a is None else _limited(*(np.concatenate(pair) for pair in zip(_kept(*a), _kept(*b))))
                  for a, b in zip(self.sample, other.sample)]
        return ColumnSummary(
            self.kinds, self.n_rows + other.n_rows, self.total_weight + other.total_weight, total, mean, var,
            np.fmin(self.low, other.low), np.fmax(self.high, other.high), self.has_missing | other.has_missing,
            sample, add_level_counts(self.levels, other.levels))

    def finalize(self, options, codes=None) -> "ColumnMapper":  # noqa: F821 - defined in .mapper
        """The fitted column mapper (see :meth:`.mapper.ColumnMapper.fit`); ``codes``: the
        CategoryCodes of these levels where the caller made them already."""
        from .mapper import ColumnMapper

        return ColumnMapper.fit(self, options, codes)


def merge_all(summaries) -> ColumnSummary:
    """The summaries of consecutive blocks of rows merged, in order."""
    summaries = list(summaries)
    return functools.reduce(ColumnSummary.merge, summaries[1:], summaries[0])


def sample_values(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column's subsample as the bins read it: the observed values of positive weight, in order."""
    return _kept(values, weights)


def _kept(values, weights):
    keep = ~np.isnan(values) & (weights > 0)
    return values[keep], weights[keep]


def _limited(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A subsample of at most SAMPLE_LIMIT values: as it is, else SAMPLE_LIMIT // 2 values at even
    steps of the weighted distribution, each carrying an equal share of the weight."""
    if len(values) <= SAMPLE_LIMIT:
        return values, weights
    n_points = SAMPLE_LIMIT // 2
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    positions = (np.arange(n_points) + 0.5) * (cumulative[-1] / n_points)
    picked = values[np.searchsorted(cumulative, positions).clip(0, len(values) - 1)]
    return picked, np.full(n_points, cumulative[-1] / n_points)


# ---- weighted column statistics ---------------------------------------------------------------
def _moments(values: np.ndarray, weight: np.ndarray):
    """Per column over the rows of positive weight: total weight of the observed values, weighted
    mean and variance (NaN ignored; accumulated in float64 from any float dtype, so a float32 X
    is never copied to float64), minimum, maximum (NaN where none), whether a value is missing,
    whether one is infinite."""
    kernel = _moments_kernel()
    if kernel is not None:
        values = values if values.flags.c_contiguous else np.ascontiguousarray(values)
        n_chunks = max(1, -(-values.shape[0] // _STATISTICS_CHUNK))
        with np.errstate(over="ignore", invalid="ignore"):
            return kernel(values, weight, _STATISTICS_CHUNK, n_chunks)
    return _moments_numpy(values, weight)


def _moments_numpy(values: np.ndarray, weight: np.ndarray):
    """Without Numba: a few columns at a time, so that the n x block temporaries stay small."""
    p = values.shape[1]
    total, mean, var = np.empty(p), np.empty(p), np.empty(p)
    low, high = np.full(p, np.nan), np.full(p, np.nan)
    missing, infinite = np.zeros(p, dtype=bool), np.zeros(p, dtype=bool)
    step = max(1, min(p, _STATISTICS_ELEMENTS // max(1, values.shape[0])))
    positive = weight > 0
    for start in range(0, p, step):
        block = values[:, start : start + step]
        columns = slice(start, start + block.shape[1])
        nan = np.isnan(block)
        observed = ~nan
        w = np.where(observed, weight[:, None], 0.0)
        column_total = w.sum(axis=0)
        safe_total = np.where(column_total > 0, column_total, 1.0)
        filled = np.where(observed, block, 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            block_mean = (w * filled).sum(axis=0) / safe_total
            var[columns] = (w * (filled - block_mean) ** 2).sum(axis=0) / safe_total
        total[columns], mean[columns] = column_total, block_mean
        kept = np.where(observed & positive[:, None], block, np.nan)
        if kept.shape[0]:
            with np.errstate(invalid="ignore"):
                low[columns], high[columns] = np.fmin.reduce(kept, axis=0), np.fmax.reduce(kept, axis=0)
        missing[columns] = (nan & positive[:, None]).any(axis=0)
        infinite[columns] = np.isinf(block).any(axis=0)
    return total, mean, var, low, high, missing, infinite


@functools.cache
def _moments_kernel():
    """Two compiled passes over the rows (sums, range and missing values; then squared
    deviations from the means), summed in fixed chunks of rows; None without Numba. One thread:
    the passes take ~0.25 s on 2M x 28 float32 rows (~0.15-0.25 s on two cores), and a parallel
    kernel took ~4 s longer to compile (a first fit's cost on an empty cache)."""
    numba = numba_module()
    if numba is None:
        return None

    @numba.njit(cache=True, nogil=True)
    def chunk_sums(values, weight, shift, chunk, n_chunks, with_range):
        """Per chunk of rows and column, over the observed values: sum w, sum w (v - shift),
        sum w (v - shift)**2; with ``with_range`` also the minimum and maximum over the rows of
        positive weight, their missing values, and infinite values."""
        n, p = values.shape
        sums = np.zeros((3, n_chunks, p))
        low = np.full((n_chunks, p), np.inf)
        high = np.full((n_chunks, p), -np.inf)
        flags = np.zeros((2, n_chunks, p), dtype=np.bool_)
        for c in range(n_chunks):
            for i in range(c * chunk, min(n, (c + 1) * chunk)):
                w = weight[i]
                for j in range(p):
                    v = values[i, j]
                    if v == v:  # not missing
                        d = v - shift[j]
                        sums[0, c, j] += w
                        sums[1, c, j] += w * d
                        sums[2, c, j] += w * d * d
                        if with_range:
                            if v - v != 0:
                                flags[1, c, j] = True
                            if w > 0:
                                if v < low[c, j]:
                                    low[c, j] = v
                                if v > high[c, j]:
                                    high[c, j] = v
                    elif with_range and w > 0:
                        flags[0, c, j] = True
        return sums, low, high, flags

    def moments(values, weight, chunk, n_chunks):
        # (no parallel kernel here now) Numba's thread count set from torch's at a fit's start, as before:
        # a fit whose kernels all run serially still leaves it following torch's (test_preprocessing)
        parallel_threads()
        first, low, high, flags = chunk_sums(values, weight, np.zeros(values.shape[1]), chunk, n_chunks, True)
        first = first.sum(axis=1)
        safe_total = np.where(first[0] > 0, first[0], 1.0)
        mean = first[1] / safe_total
        second = chunk_sums(values, weight, mean, chunk, n_chunks, False)[0]
        low, high = low.min(axis=0), high.max(axis=0)
        none = low > high  # no observed value of positive weight
        return (first[0], mean, second[2].sum(axis=0) / safe_total, np.where(none, np.nan, low),
                np.where(none, np.nan, high), flags[0].any(axis=0), flags[1].any(axis=0))

    return moments


def check_total_weight(total: float) -> None:
    if not total > 0:
        raise ValueError("sample_weight sums to zero: at least one sample needs a positive weight.")


# Values whose standard deviation is at most CONSTANT_SPREAD times max(1, |mean|) are one value, to rounding
CONSTANT_SPREAD = 1e-12


def is_constant(mean, scale):
    """Whether values of this mean and standard deviation (arrays or floats) are constant (NaN: all missing)."""
    return ~(scale > CONSTANT_SPREAD * np.maximum(1.0, np.abs(mean)))


def usable_scale(mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standard deviations, with 1 for constant (and all-missing) columns."""
    return np.where(is_constant(mean, scale), 1.0, scale)


def checked_scale(mean: np.ndarray, var: np.ndarray, labels: list, largest) -> np.ndarray:
    """The standard deviations of columns with these means and variances (1 for constant ones),
    or a clear error where a column's values are too large for float64 (its variance overflows).
    ``labels`` names the columns; ``largest(i)`` is the i-th column's largest |value|."""
    scale = np.sqrt(var)
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"The {labels[i]} has values too large to standardise in float64 (largest |value| = {largest(i):.3g}); "
            "rescale it, e.g. divide it by a power of ten, before fitting."
        )
    return usable_scale(mean, scale)


# ---- weighted quantiles ---------------------------------------------------------------------------
def weighted_quantiles(values: np.ndarray, weight: np.ndarray, n_bins: int, with_median: bool = False):
    """The minimum, the weighted quantiles 0, 1/n_bins, ..., 1 and the maximum of the
    non-missing values (None where there are none); with ``with_median`` also the weighted
    median, as (quantiles, median). The quantile at p is the first value (ascending) whose
    cumulative weight reaches p times the total. Unit weights pick order statistics by
    partition (no sort, one copy of the values); others sort."""
    observed = ~np.isnan(values)
    if not observed.all():
        values, weight = values[observed], weight[observed]
    if values.size == 0:
        return None
    n = len(values)
    if weight.min() == 1.0 and weight.max() == 1.0:  # cumulative weights 1, 2, ..., n: exact
        positions = np.linspace(0.0, float(n), n_bins + 1)
        positions = np.r_[positions, 0.5 * n] if with_median else positions
        index = (np.ceil(positions) - 1).clip(0, n - 1).astype(np.intp)  # = searchsorted(1..n, positions)
        ordered = np.partition(values, np.unique(np.r_[0, n - 1, index]))
    else:
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weight[order])
        positions = np.linspace(0.0, cumulative[-1], n_bins + 1)
        positions = np.r_[positions, 0.5 * cumulative[-1]] if with_median else positions
        index = np.searchsorted(cumulative, positions, side="left").clip(0, n - 1)
        ordered = values[order]
    quantiles = np.r_[ordered[0], ordered[index[: n_bins + 1]], ordered[n - 1]]
    return (quantiles, ordered[index[-1]]) if with_median else quantiles


def edges_of(quantiles: np.ndarray | None) -> np.ndarray | None:
    """Distinct bin edges from a column's quantiles; None where fewer than two remain (a
    constant column)."""
    if quantiles is None:
        return None
    edges = np.unique(quantiles)
    edges = edges[np.isfinite(edges)]
    return edges if len(edges) >= 2 else None


def weighted_quantile_edges(values: np.ndarray, weight: np.ndarray, n_bins: int) -> np.ndarray | None:
    """Bin edges at the weighted quantiles 0, 1/n_bins, ..., 1 of the non-missing values;
    None where fewer than two distinct edges remain (a constant column)."""
    return edges_of(weighted_quantiles(values, weight, n_bins))
