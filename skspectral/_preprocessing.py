"""What happens to the rows the model trains on: duplicate merging, eval-set checks and
the early-stopping split. (What happens to each column is :mod:`skspectral._columns`'.)"""

from __future__ import annotations

import functools

import numpy as np

from ._columns.summary import check_total_weight
from .eig._numba_support import numba_module


def merged_training_rows(X: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """The rows to train on: rows of zero weight dropped, duplicates merged (weights summed)."""
    check_total_weight(float(weight.sum()))
    keep = weight > 0  # a zero weight is the same as leaving the row out
    if keep.all():  # no copy of X where nothing is dropped
        return merge_duplicate_rows(X, y, weight)
    return merge_duplicate_rows(X[keep], y[keep], weight[keep])


def merge_duplicate_rows(X: np.ndarray, y: np.ndarray, weight: np.ndarray):
    """One row per distinct (x, y), weighted by the sum of its copies' weights.

    The loss is unchanged, an epoch visits fewer rows, and weighting a row by
    k trains exactly as repeating it k times: both reach the same canonical
    (sorted) rows and weights, bit for bit. Without duplicates or weights the
    caller's row order is kept.
    """
    unit_weights = bool(np.all(weight == 1.0))
    if unit_weights and rows_are_distinct(X, y):  # the common case, without sorting every row
        return X, y, weight
    rows, inverse = sorted_distinct_rows(np.column_stack([X, y]))
    if len(rows) == len(X) and unit_weights:
        return X, y, weight
    return rows[:, :-1], rows[:, -1], np.bincount(inverse, weights=weight, minlength=len(rows))


def sorted_distinct_rows(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of A in ascending lexicographic order (NaN after every number in a column) and
    each row's index among them: ``np.unique(A, axis=0, return_inverse=True)``'s rows and order, rows
    with a NaN never equal to another (NaN != NaN), from a stable sort of the columns as keys instead of
    comparing whole rows as records (3-7x faster on the benchmark tables' rows, the same rows to the
    bit). Rows that sort alike without being merged (a NaN in the same place, zeros of either sign)
    keep their order in A."""
    order = np.lexsort(A.T[::-1])  # the last key sorts first: the first column leads
    ordered = A[order]
    starts = np.ones(len(A), dtype=bool)  # a row unlike the one before it starts a new distinct row
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(A), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse


def rows_are_distinct(X: np.ndarray, y: np.ndarray) -> bool:
    """True when no two rows of (X, y) are equal, found by sorting one 64-bit hash per row
    instead of every row (8 bytes a row). Equal rows have equal hashes (-0.0 and 0.0 hash
    alike; so do all NaNs), so distinct hashes prove distinct rows; a repeated hash (a real
    duplicate, NaNs, or a collision) returns False and the caller compares the rows."""
    # float32 rows hash as they are (each value widened exactly inside the kernel): no float64 copy
    X = np.ascontiguousarray(X) if X.dtype in (np.float32, np.float64) else np.ascontiguousarray(X, dtype=np.float64)
    hashes = _row_hashes(X, np.ascontiguousarray(y, dtype=np.float64))
    if hashes is None:
        return False
    hashes.sort()
    return not bool((hashes[1:] == hashes[:-1]).any())


def _row_hashes(X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    kernel = _row_hash_kernel()
    return None if kernel is None else kernel(X, y)


@functools.cache
def _row_hash_kernel():
    """A compiled row hash (splitmix64 over the canonical bits), or None without Numba."""
    numba = numba_module()  # (the kernel cache's stamp installed: see _kernel_cache)
    if numba is None:
        return None

    @numba.njit(cache=True, nogil=True)
    def row_hashes(X, y):
        n, p = X.shape
        out = np.empty(n, np.uint64)
        canonical_nan = np.float64(np.nan)
        for i in range(n):
            h = np.uint64(0x9E3779B97F4A7C15)
            for j in range(p + 1):
                v = X[i, j] if j < p else y[i]
                v = canonical_nan if v != v else v + 0.0  # one NaN; -0.0 -> 0.0
                bits = np.float64(v).view(np.uint64)
                h ^= bits + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
                h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                h ^= h >> np.uint64(31)
            out[i] = h
        return out

    return row_hashes


def check_eval_set(eval_set, validate_pair) -> list:
    """Normalise ``eval_set`` to a list of validated (X, y) pairs.

    ``validate_pair(X, y) -> (X, y)`` checks one pair against the fitted
    estimator (feature count and names, target encoding).
    """
    if eval_set is None:
        return []
    if isinstance(eval_set, tuple) and len(eval_set) == 2 and not isinstance(eval_set[0], tuple):
        eval_set = [eval_set]
    checked = []
    for i, pair in enumerate(eval_set):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            what = (f"a {type(pair).__name__} of {len(pair)} items" if isinstance(pair, (tuple, list))
                    else type(pair).__name__)
            raise ValueError(f"eval_set must be a list of (X, y) pairs; item {i} is {what} (an eval set's rows are "
                             "scored unweighted).")
        checked.append(validate_pair(pair[0], pair[1]))
    return checked


def validation_split(n_rows: int, fraction: float, rng: np.random.RandomState, stratify=None):
    """(train_rows, validation_rows) for early stopping.

    With ``stratify`` (class labels) each class keeps its share in both parts,
    where every class has at least two rows; otherwise a random permutation.
    """
    n_val = int(round(fraction * n_rows))
    if n_val < 1 or n_rows - n_val < 1:
        raise ValueError(
            f"early_stopping needs at least one training and one validation row; with {n_rows} rows "
            f"and validation_fraction={fraction} that is not possible."
        )
    order = rng.permutation(n_rows)
    if stratify is not None:
        stratify = np.asarray(stratify)
        if stratify.dtype.kind in "iu" and stratify.min() >= 0:  # class indices: no sort of n labels
            codes, counts = stratify, np.bincount(stratify)
        else:
            _, codes, counts = np.unique(stratify, return_inverse=True, return_counts=True)
        seen = counts[counts > 0]
        if seen.min() >= 2 and len(seen) <= min(n_val, n_rows - n_val):
            return _stratified_split(order, codes.ravel(), counts, n_val)
    return order[n_val:], order[:n_val]


def _stratified_split(order: np.ndarray, codes: np.ndarray, counts: np.ndarray, n_val: int):
    """The first share of each class along the random ``order`` is held out: shares by
    largest remainder, at least one row of each class on both sides (``counts`` by code;
    a code with no rows gets none). A few n-length
    integer arrays, where scikit-learn's StratifiedShuffleSplit holds about ten."""
    exact = n_val * counts / counts.sum()
    share = np.floor(exact).astype(np.int64)
    for c in np.argsort(share - exact, kind="stable")[: n_val - share.sum()]:  # largest remainders first
        share[c] += 1
    share = np.where(counts > 0, np.clip(share, 1, counts - 1), 0)
    codes_in_order = codes.astype(np.min_scalar_type(len(counts)), copy=False)[order]
    held = np.zeros(len(order), dtype=bool)
    for c in np.flatnonzero(share):
        held[np.flatnonzero(codes_in_order == c)[: share[c]]] = True
    return order[~held], order[held]
