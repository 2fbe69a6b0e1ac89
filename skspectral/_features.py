"""What the input columns are, and how the host turns them into the rows the
device encoder reads: numeric columns (missing values allowed) and categorical
columns (as level codes), the standardisation of the numeric ones, and the bins
of the piecewise-linear encoding."""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import OrdinalEncoder
from sklearn.utils.validation import _num_features, check_array

from .encoding import EncodingSpec

# A level seen in fewer training rows than this shares the feature's "other" matrix with
# unseen levels: too few rows to learn a matrix of its own.
MIN_LEVEL_COUNT = 10
# At most this many levels per categorical feature (the rest: "other"), as HistGradientBoosting.
MAX_LEVELS = 255


def is_dataframe(X) -> bool:
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


def categorical_mask(X, categorical_features) -> np.ndarray | None:
    """Boolean mask of the categorical columns of X, or None when there are none.

    "from_dtype": the columns of a DataFrame whose dtype is categorical, object or
    string (a numeric array has none); else indices, names or a boolean mask, as
    HistGradientBoosting's ``categorical_features``.
    """
    if categorical_features is None:
        return None
    if isinstance(categorical_features, str) and categorical_features == "from_dtype":
        if not is_dataframe(X):
            return None
        import pandas as pd

        mask = np.array([
            isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
            for dtype in X.dtypes
        ])
        return mask if mask.any() else None
    features = np.asarray(categorical_features)
    n_features = _num_features(X)
    if features.size == 0 or n_features == 0:  # no columns: validation says so in scikit-learn's words
        return None
    if features.dtype.kind == "b":
        if features.shape != (n_features,):
            raise ValueError(
                f"categorical_features as a boolean mask must have shape (n_features,) = ({n_features},), "
                f"got {features.shape}."
            )
        return features.copy() if features.any() else None
    mask = np.zeros(n_features, dtype=bool)
    if features.dtype.kind in "iu":
        if features.min() < 0 or features.max() >= n_features:
            raise ValueError(f"categorical_features as indices must lie in [0, {n_features - 1}], got {features}.")
        mask[features] = True
        return mask
    if features.dtype.kind in "UO" and all(isinstance(f, str) for f in features.ravel()):
        names = list(getattr(X, "columns", []))
        if not names:
            raise ValueError("categorical_features given as names needs X with column names (a DataFrame); "
                             "pass indices or a boolean mask instead.")
        for name in features.ravel():
            if name not in names:
                raise ValueError(f"categorical_features names {name!r}, which is not a column of X: {names}.")
            mask[names.index(name)] = True
        return mask
    raise ValueError(
        "categorical_features must be 'from_dtype', None, or an array-like of bool, int or str; "
        f"got {categorical_features!r}."
    )


class CategoryCodes:
    """Level codes of the categorical columns (scikit-learn's OrdinalEncoder underneath, one
    per column).

    Frequent levels get 0..L-1; rare ones (fewer than MIN_LEVEL_COUNT rows) the code
    L, which the device encoder shares with unseen levels (-1); missing values -2.
    ``fit_transform`` learns the levels from the rows; ``fit_counts`` from each level's
    row count (a distributed fit counts them with dask), with the same result.
    """

    def fit_transform(self, columns) -> np.ndarray:
        frame = _as_frame(columns)
        self.encoders = []
        for j in range(frame.shape[1]):
            column = frame.iloc[:, [j]]
            column.columns = [0]
            self.encoders.append(_level_encoder().fit(column))
        codes = self.transform(frame)
        self._record_levels(has_missing=[bool((codes[:, j] == -2).any()) for j in range(codes.shape[1])])
        return codes

    def fit_counts(self, counts: list) -> "CategoryCodes":
        """Learn the levels from one pandas Series per column mapping each level (NaN for
        missing) to its number of rows. The encoder is fitted on a few rows per level that
        keep what it reads from the counts: which levels are rare (fewer than
        MIN_LEVEL_COUNT rows) and, for the MAX_LEVELS cut, their order by count."""
        import pandas as pd

        self.encoders = []
        has_missing = []
        for column in counts:
            column = column[column > 0]  # a categorical dtype lists unobserved categories too
            has_missing.append(bool(column.index.isna().any()))
            n_rows = column.to_numpy().astype(np.int64)
            frequent = n_rows >= MIN_LEVEL_COUNT
            dense_rank = np.unique(n_rows[frequent], return_inverse=True)[1].ravel()
            stand_in = n_rows.copy()  # rare levels keep their counts; frequent ones 10 + their rank
            stand_in[frequent] = MIN_LEVEL_COUNT + dense_rank
            rows = _as_frame(pd.DataFrame({0: column.index.repeat(stand_in)}))  # missing as NaN
            self.encoders.append(_level_encoder().fit(rows))
        self._record_levels(has_missing)
        return self

    def transform(self, columns) -> np.ndarray:
        frame = _as_frame(columns)
        if not hasattr(self, "encoders"):  # pickled by skspectral <= 0.3: one encoder for all columns
            return self.encoder.transform(frame)
        out = np.empty(frame.shape, dtype=np.float64)
        for j, encoder in enumerate(self.encoders):
            column = frame.iloc[:, [j]]
            column.columns = [0]
            out[:, j] = encoder.transform(column).ravel()
        return out

    def _record_levels(self, has_missing: list) -> None:
        self.n_seen, self.has_missing = [], list(has_missing)
        for encoder in self.encoders:
            infrequent = encoder.infrequent_categories_[0]
            rare = set() if infrequent is None else {c for c in infrequent if not _is_missing(c)}
            self.n_seen.append(sum(not _is_missing(c) and c not in rare for c in encoder.categories_[0]))

    def n_levels(self) -> list:
        """Levels per categorical feature: the frequent ones, "other", and "missing" where seen."""
        return [n + 1 + int(m) for n, m in zip(self.n_seen, self.has_missing)]


def _level_encoder() -> OrdinalEncoder:
    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                          min_frequency=MIN_LEVEL_COUNT, max_categories=MAX_LEVELS + 1, dtype=np.float64)


def _as_frame(columns):
    """Categorical columns as a DataFrame with positional column names (the encoders see one
    column each, whatever it was called)."""
    import pandas as pd

    frame = columns if is_dataframe(columns) else pd.DataFrame(np.asarray(columns, dtype=object))
    # every missing value as NaN in object columns: OrdinalEncoder takes None for a level of its
    # own (code L, not -2) and pd.NA for an unknown level, where "missing" has a level reserved
    frame = frame.astype(object).where(frame.notna(), np.nan)  # object: pd.NA in a string column too
    frame.columns = range(frame.shape[1])
    return frame


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def split_numeric(X, mask: np.ndarray | None):
    """(numeric columns as float64 with NaN allowed, categorical columns as given)."""
    if mask is None:
        return check_array(X, dtype=np.float64, ensure_all_finite="allow-nan"), None
    if is_dataframe(X):
        numeric = X.iloc[:, np.flatnonzero(~mask)]
        categorical = X.iloc[:, np.flatnonzero(mask)]
    else:
        X = np.asarray(X, dtype=object)
        numeric, categorical = X[:, ~mask], X[:, mask]
    numeric = check_array(numeric, dtype=np.float64, ensure_all_finite="allow-nan", ensure_min_features=0)
    return numeric, categorical


def coded_rows(X, mask: np.ndarray, codes: "CategoryCodes", fit: bool = False) -> np.ndarray:
    """Float64 rows: the numeric columns (NaN for missing) and the categorical ones as level
    codes (``codes`` learns its levels here with ``fit``)."""
    numeric, categorical = split_numeric(X, mask)
    rows = np.empty((numeric.shape[0], len(mask)))
    rows[:, ~mask] = numeric
    rows[:, mask] = codes.fit_transform(categorical) if fit else codes.transform(categorical)
    return rows


def weighted_quantile_edges(values: np.ndarray, weight: np.ndarray, n_bins: int) -> np.ndarray | None:
    """Bin edges at the weighted quantiles 0, 1/n_bins, ..., 1 of the non-missing values;
    None where fewer than two distinct edges remain (a constant column)."""
    quantiles = weighted_quantiles(values, weight, n_bins)
    return None if quantiles is None else edges_from_quantiles(quantiles)


def weighted_quantiles(values: np.ndarray, weight: np.ndarray, n_bins: int) -> np.ndarray | None:
    """The minimum, the weighted quantiles 0, 1/n_bins, ..., 1 and the maximum of the
    non-missing values (None where there are none)."""
    observed = ~np.isnan(values)
    values, weight = values[observed], weight[observed]
    if values.size == 0:
        return None
    order = np.argsort(values, kind="stable")
    values, weight = values[order], weight[order]
    cumulative = np.cumsum(weight)
    positions = np.linspace(0.0, cumulative[-1], n_bins + 1)
    index = np.searchsorted(cumulative, positions, side="left").clip(0, len(values) - 1)
    return np.r_[values[0], values[index], values[-1]]


def edges_from_quantiles(quantiles: np.ndarray) -> np.ndarray | None:
    """Distinct bin edges from a column's quantiles (min ... max); None for fewer than two."""
    edges = np.unique(np.asarray(quantiles, dtype=np.float64))
    edges = edges[np.isfinite(edges)]
    return edges if len(edges) >= 2 else None


def encoding_spec(numeric: np.ndarray, mean: np.ndarray, scale: np.ndarray, numeric_index: np.ndarray,
                  weight: np.ndarray, *, n_features: int, encoding: str, n_bins: int,
                  categories: CategoryCodes | None, categorical_index, bin_rows=None) -> EncodingSpec:
    """The encoding of every input column, fitted on the numeric training values standardised
    with (mean, scale) -- one column at a time, so tall data is never copied whole. The bin
    edges come from the rows ``bin_rows`` (default: all), as HistGradientBoosting bins a
    subsample of tall data."""
    edges = []
    bin_weight = weight if bin_rows is None else weight[bin_rows]
    for j in range(numeric.shape[1]):
        if encoding == "piecewise_linear":
            column = numeric[:, j] if bin_rows is None else numeric[bin_rows, j]
            edges.append(weighted_quantile_edges((column - mean[j]) / scale[j], bin_weight, n_bins))
        else:
            edges.append(None)
    missing = [int(numeric_index[j]) for j in range(numeric.shape[1]) if np.isnan(numeric[:, j]).any()]
    if categories is None:
        return EncodingSpec(n_features, numeric=[int(i) for i in numeric_index], edges=edges, missing=missing)
    return EncodingSpec(
        n_features,
        numeric=[int(i) for i in numeric_index],
        edges=edges,
        missing=missing,
        categorical=[int(i) for i in categorical_index],
        n_levels=categories.n_levels(),
        has_missing_level=list(categories.has_missing),
    )
