"""What each input column is: numeric or categorical, and the checks that turn a column
no model could read into a clear error before anything is fitted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import _num_features


def is_dataframe(X) -> bool:
    return hasattr(X, "columns") and hasattr(X, "dtypes") and hasattr(X, "iloc")


@dataclass(frozen=True)
class ColumnKinds:
    """The input columns as a fit saw them: how many, which are categorical (a boolean mask,
    or None for none), and their names where X had names (for messages)."""

    n_features: int
    categorical: np.ndarray | None = None
    names: tuple | None = None

    @property
    def is_categorical(self) -> np.ndarray:
        """The mask, all False where no column is categorical."""
        return np.zeros(self.n_features, dtype=bool) if self.categorical is None else self.categorical

    @property
    def numeric_index(self) -> np.ndarray:
        return np.flatnonzero(~self.is_categorical)

    @property
    def categorical_index(self) -> np.ndarray:
        return np.flatnonzero(self.is_categorical)

    def label(self, j: int) -> str:
        """A column as messages name it: its name, else its position."""
        return repr(self.names[j]) if self.names is not None else f"{j}"

    def labels(self, index) -> list:
        return [self.names[j] if self.names is not None else int(j) for j in index]


def column_kinds(X, categorical_features) -> ColumnKinds:
    """The kinds of X's columns under ``categorical_features`` (HistGradientBoosting's forms),
    after checking that every column can be read: a datetime or timedelta column, or a
    non-numeric column that is not declared categorical, is an error that says what to do."""
    mask = categorical_mask(X, categorical_features)
    names = tuple(str(c) for c in X.columns) if is_dataframe(X) else None
    try:
        n_features = _num_features(X)
    except TypeError:  # not 2-D: scikit-learn's validation says so, in its words
        return ColumnKinds(0)
    kinds = ColumnKinds(n_features, mask, names)
    check_readable(X, kinds)
    return kinds


def categorical_mask(X, categorical_features) -> np.ndarray | None:
    """Boolean mask of the categorical columns of X, or None when there are none.

    "from_dtype": the columns of a DataFrame whose dtype is categorical, object, string or
    bool (a numeric array has none); else indices, names or a boolean mask, as
    HistGradientBoosting's ``categorical_features``.
    """
    if categorical_features is None:
        return None
    if isinstance(categorical_features, str) and categorical_features == "from_dtype":
        if not is_dataframe(X):
            return None
        mask = np.array([_is_categorical_dtype(dtype) for dtype in X.dtypes], dtype=bool)
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


def _is_categorical_dtype(dtype) -> bool:
    import pandas as pd

    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


_UNREADABLE = {"M": "a datetime", "m": "a timedelta"}  # (complex numbers: scikit-learn's own error)


def check_readable(X, kinds: ColumnKinds, fitted: bool = False) -> None:
    """Raise a ValueError that names the column and the fix where a column cannot be read:
    datetimes and timedeltas (in any column), and strings in a column that
    is to be read as numbers (``fitted``: one that was numeric in fit)."""
    if isinstance(X, list):
        X = np.asarray(X, dtype=object)
    if getattr(X, "ndim", 0) != 2 or X.shape[1] != kinds.n_features:
        return  # scikit-learn's validation says what is wrong with the shape
    if is_dataframe(X):
        import pandas as pd

        for j, dtype in enumerate(X.dtypes):
            kind = getattr(dtype, "kind", "O")
            if isinstance(dtype, pd.DatetimeTZDtype):
                kind = "M"
            if kind in _UNREADABLE:
                raise ValueError(
                    f"Column {kinds.label(j)} has dtype {dtype}: {_UNREADABLE[kind]} column cannot enter the "
                    "model. Turn it into numbers first (e.g. the year, the day of the year, or seconds since a "
                    "date), or pass it as strings and name it in categorical_features.")
            if not kinds.is_categorical[j] and _is_categorical_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
                sample = _first_non_number(X.iloc[:, j].to_numpy(dtype=object))
                if sample is not None:
                    raise ValueError(_not_numbers(kinds.label(j), sample, fitted))
        return
    array = X if isinstance(X, np.ndarray) else None
    if array is None:
        return  # sparse input: scikit-learn's validation says what is wrong
    if array.dtype.kind in _UNREADABLE:
        raise ValueError(f"X has dtype {array.dtype}: {_UNREADABLE[array.dtype.kind]} array cannot enter the "
                         "model. Turn it into numbers first (e.g. seconds since a date).")
    if array.dtype.kind in "OUS":
        for j in kinds.numeric_index:
            sample = _first_non_number(array[:, j])
            if sample is not None:
                raise ValueError(_not_numbers(f"{j} of X", sample, fitted) if fitted else
                                 f"Column {j} of X holds values that are not numbers (e.g. {sample!r}). Pass a "
                                 "pandas DataFrame (its object, string and category columns are categorical by "
                                 "default), or name the categorical columns in categorical_features (e.g. "
                                 f"categorical_features=[{j}]).")


def _not_numbers(label: str, sample, fitted: bool) -> str:
    if fitted:
        return (f"Column {label} was numeric in fit but holds values that are not numbers now (e.g. {sample!r}): "
                "pass it as in fit.")
    return (f"Column {label} holds values that are not numbers (e.g. {sample!r}) but is not categorical: name it "
            "in categorical_features (the default, 'from_dtype', takes the category, object, string and bool "
            "columns of a DataFrame), or convert it to numbers.")


def _first_non_number(values: np.ndarray):
    """The first string of a column that does not read as a number (missing values read as NaN), or
    None (other objects: scikit-learn's own error)."""
    if values.dtype.kind in "biuf":
        return None
    try:
        np.asarray(values).astype(np.float64)  # the common case, vectorised: every value reads
        return None
    except (TypeError, ValueError):
        pass
    for value in values:
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return value
    return None
