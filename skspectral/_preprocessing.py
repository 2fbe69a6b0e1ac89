"""What happens to the rows before training: sample weights, duplicate merging,
standardisation, eval-set checks and the early-stopping split."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import _check_sample_weight


def check_rows(X: np.ndarray, y: np.ndarray, sample_weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated sample weights; rows of zero weight dropped and duplicates merged."""
    weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if not weight.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one sample needs a positive weight.")
    keep = weight > 0  # a zero weight is the same as leaving the row out
    return merge_duplicate_rows(X[keep], y[keep], weight[keep])


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


def weighted_standardisation(values: np.ndarray, weight: np.ndarray, what: str = "feature", column_index=None):
    """Weighted column means and standard deviations, missing values (NaN) ignored;
    constant and all-missing columns get scale 1.

    Raises a clear error where a column's values are too large for float64 to
    standardise (its variance overflows), instead of training on infinities.
    ``column_index`` names the columns in that message (default 0, 1, ...).
    """
    observed = ~np.isnan(values)
    w = np.where(observed, weight[:, None], 0.0)
    total = w.sum(axis=0)
    safe_total = np.where(total > 0, total, 1.0)
    filled = np.where(observed, values, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = (w * filled).sum(axis=0) / safe_total
        var = (w * (filled - mean) ** 2).sum(axis=0) / safe_total
    scale = np.sqrt(var)
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        column = int(np.flatnonzero(bad)[0])
        largest = float(np.nanmax(np.abs(values[:, column])))
        label = column if column_index is None else int(column_index[column])
        name = f"{what} {label}" if values.shape[1] > 1 or what == "feature" else what
        raise ValueError(
            f"The {name} has values too large to standardise in float64 (largest |value| = {largest:.3g}); "
            "rescale it, e.g. divide it by a power of ten, before fitting."
        )
    scale = usable_scale(mean, scale)
    return mean, scale


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
            raise ValueError(f"eval_set must be a list of (X, y) pairs; item {i} is {type(pair).__name__}.")
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
    if stratify is not None:
        classes, counts = np.unique(stratify, return_counts=True)
        if counts.min() >= 2 and len(classes) <= min(n_val, n_rows - n_val):
            from sklearn.model_selection import StratifiedShuffleSplit

            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=rng)
            train_rows, val_rows = next(splitter.split(np.zeros((n_rows, 1)), stratify))
            return train_rows, val_rows
    order = rng.permutation(n_rows)
    return order[n_val:], order[:n_val]


def usable_scale(mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standard deviations, with 1 for constant (and all-missing) columns."""
    return np.where(scale > 1e-12 * np.maximum(1.0, np.abs(mean)), scale, 1.0)
