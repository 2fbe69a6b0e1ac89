"""The levels of categorical columns: counted block by block, then one code per level.

Frequent levels (at least ``min_count`` rows, :func:`level_threshold`) get codes 0..L-1, at most MAX_LEVELS of
them by count; rare ones the code L, which the device encoder shares with unseen levels
(-1); missing values -2. The levels are learned from each level's row count, so that
counts of any split of the rows, added up, give the levels of the whole.
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import OrdinalEncoder

# min_level_count="auto": a level seen in fewer training rows than AUTO_LEVEL_SHARE of the rows
# (at least MIN_LEVEL_COUNT, at most AUTO_LEVEL_COUNT) shares its feature's "other" matrix with
# unseen levels: too few rows to learn a matrix of its own. AUTO_LEVEL_COUNT is LightGBM's
# min_data_per_group; 100 against 10 was chosen on the quality suite's selection fold
# (benchmarks/RESULTS.md, section 12); the share keeps a small table's levels their own matrices.
MIN_LEVEL_COUNT = 10
AUTO_LEVEL_COUNT = 100
AUTO_LEVEL_SHARE = 1 / 40
# At most this many levels per categorical feature (the rest: "other"), as HistGradientBoosting.
MAX_LEVELS = 255
# The encoders' min_frequency: they are fitted on stand-in rows (CategoryCodes), a rare level's one row under it
_STAND_IN_THRESHOLD = 2


def level_threshold(min_level_count, n_rows: int) -> int:
    """Rows a level needs to own a code: ``min_level_count`` itself, or for "auto"
    AUTO_LEVEL_SHARE of ``n_rows`` clipped to [MIN_LEVEL_COUNT, AUTO_LEVEL_COUNT]."""
    if min_level_count != "auto":
        return int(min_level_count)
    return int(min(AUTO_LEVEL_COUNT, max(MIN_LEVEL_COUNT, int(n_rows * AUTO_LEVEL_SHARE))))


def level_counts(columns, labels=None) -> list[tuple[dict, int]]:
    """Per categorical column: (rows of each level, rows missing). ``columns``: a DataFrame
    or a 2-D array of the categorical columns alone; ``labels``: their names in messages (else
    their positions among them). A column whose levels mix strings and numbers is an error here,
    naming it (scikit-learn's encoder would refuse it without saying which)."""
    frame = as_frame(columns)
    counts = []
    for j in range(frame.shape[1]):
        values, codes = _distinct(frame.iloc[:, j], j)
        n_rows = np.bincount(codes + 1, minlength=len(values))  # code -1 (missing) first
        levels = {values.iloc[i]: int(n) for i, n in enumerate(n_rows[1:]) if n > 0}
        _check_one_kind(levels, labels[j] if labels is not None else j)
        counts.append((levels, int(n_rows[0])))
    return counts


def _check_one_kind(levels: dict, label) -> None:
    """A column's levels (never a missing value: :func:`_distinct` counts those apart) hold strings beside
    levels of another kind: an error naming the column, one level of each shown."""
    kinds = {_level_kind(level) for level in levels}
    if "strings" in kinds and len(kinds) > 1:
        examples = ", ".join(repr(next(v for v in levels if isinstance(v, str) == strings))
                             for strings in (False, True))
        column = f"X[{label!r}]" if isinstance(label, str) else f"X[:, {label}]"
        raise ValueError(f"Categorical column {label!r} mixes numbers and strings (e.g. {examples}): a column's "
                         f"levels must be all strings or all numbers. Make them one kind first, e.g. strings: "
                         f"{column} = {column}.astype(str) (pandas keeps missing values missing with "
                         f".astype(str).where({column}.notna())).")


def add_level_counts(a: list, b: list) -> list:
    """The level counts of two sets of rows together."""
    out = []
    for (levels_a, missing_a), (levels_b, missing_b) in zip(a, b):
        levels = dict(levels_a)
        for level, n in levels_b.items():
            levels[level] = levels.get(level, 0) + n
        out.append((levels, missing_a + missing_b))
    return out


class CategoryCodes:
    """Level codes of the categorical columns (scikit-learn's OrdinalEncoder underneath, one
    per column), learned from level counts (:func:`level_counts`).

    ``transform`` maps raw categorical columns to float codes; ``n_levels()`` the model's
    levels per column (the frequent ones, "other", and "missing" where seen).
    """

    def __init__(self, counts: list, min_count="auto"):
        import pandas as pd

        # every column counts the same rows: its levels' and its missing values'
        counted_rows = sum(counts[0][0].values()) + counts[0][1] if counts else 0
        self.min_count = min_count = level_threshold(min_count, counted_rows)

        self.encoders, self.has_missing, self.level_kinds = [], [], []
        for levels, n_missing in counts:
            names = list(levels) + ([np.nan] if n_missing else [])  # missing as a level of its count
            n_rows = np.asarray([levels[name] for name in names[: len(levels)]] + ([n_missing] if n_missing else []),
                                dtype=np.int64)
            # The encoder is fitted on a few stand-in rows per level that keep what it reads
            # from the counts: which levels are rare (fewer than min_count rows: one stand-in
            # row, under the encoder's threshold of two) and, only where more than MAX_LEVELS
            # are frequent, their order by count (the cut keeps the most frequent)
            frequent = n_rows >= min_count
            stand_in = np.where(frequent, _STAND_IN_THRESHOLD, 1)
            if frequent.sum() > MAX_LEVELS:
                stand_in[frequent] += np.unique(n_rows[frequent], return_inverse=True)[1].ravel()
            values = np.empty(len(names), dtype=object)
            values[:] = names
            rows = pd.DataFrame({0: pd.Series(np.repeat(values, stand_in), dtype=object)})
            self.encoders.append(_level_encoder(_STAND_IN_THRESHOLD).fit(rows))
            self.has_missing.append(n_missing > 0)
            self.level_kinds.append(_kind_of(list(levels)))
        self.n_seen = []
        for encoder in self.encoders:
            infrequent = encoder.infrequent_categories_[0]
            rare = set() if infrequent is None else {c for c in infrequent if not _is_missing(c)}
            self.n_seen.append(sum(not _is_missing(c) and c not in rare for c in encoder.categories_[0]))

    def transform(self, columns, labels=None) -> np.ndarray:
        """Float codes of the categorical columns (a DataFrame or 2-D array of them alone).

        A column whose values are of another kind than the levels learned in fit (numbers where
        the levels were strings, or strings where they were numbers) is an error: every row
        would be an unseen level. ``labels`` names the columns in that message.
        """
        frame = as_frame(columns)
        out = np.empty(frame.shape, dtype=np.float64)
        for j, encoder in enumerate(self.encoders):
            # each distinct value (and a missing one) coded once, the rows by their integer codes
            # (-1, missing: the last): the codes the rows' own values get, without a Python pass
            # over the rows
            values, codes = _distinct(frame.iloc[:, j], j)
            seen = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=len(values)))  # ascending, as np.unique
            self._check_kind(values.iloc[seen], j, labels)
            out[:, j] = _encoded(encoder, values)[codes]
        return out

    def _check_kind(self, column, j: int, labels) -> None:
        fitted = self.level_kinds[j]
        observed = column[column.notna()]
        if fitted is None or observed.empty:
            return
        kind = _kind_of(observed.iloc[: min(len(observed), 1000)].tolist())
        if kind is not None and kind != fitted:
            name = labels[j] if labels is not None else j
            raise ValueError(
                f"Categorical column {name!r} held {fitted} levels in fit (e.g. "
                f"{self.encoders[j].categories_[0][0]!r}) but holds {kind} now (e.g. {observed.iloc[0]!r}): every "
                "row would be an unseen level. Pass the column as in fit (the same dtype, e.g. "
                ".astype(str) or a pandas category with the fit's levels).")

    def used_levels(self) -> list:
        """Per column, how many of its levels the counted rows hold: the frequent ones, "other"
        where some rows held a rare level, "missing" where some were missing."""
        rare = [encoder.infrequent_categories_[0] for encoder in self.encoders]
        return [n + int(r is not None and any(not _is_missing(c) for c in r)) + int(m)
                for n, r, m in zip(self.n_seen, rare, self.has_missing)]

    def n_levels(self) -> list:
        """Levels per categorical feature: the frequent ones, "other", and "missing" where seen."""
        return [n + 1 + int(m) for n, m in zip(self.n_seen, self.has_missing)]


def _level_kind(value) -> str:
    """"strings", "numbers" or "other" for one level."""
    if isinstance(value, str):
        return "strings"
    return "numbers" if isinstance(value, (bool, int, float, np.number, np.bool_)) else "other"


def _kind_of(values) -> str | None:
    """"strings" or "numbers" for a collection of levels (None when empty or mixed)."""
    kinds = {_level_kind(v) for v in values}
    return kinds.pop() if len(kinds) == 1 and "other" not in kinds else None


def _level_encoder(min_count: int) -> OrdinalEncoder:
    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2,
                          min_frequency=min_count, max_categories=MAX_LEVELS + 1, dtype=np.float64)


def as_frame(columns):
    """Categorical columns as a DataFrame with positional column names (the encoders see one
    column each, whatever it was called): a DataFrame's own columns and dtypes, an array's as
    objects. Each column is then read as integer codes of its distinct values (:func:`_distinct`)."""
    import pandas as pd

    from .kinds import is_dataframe

    frame = columns if is_dataframe(columns) else pd.DataFrame(np.asarray(columns, dtype=object))
    return frame.set_axis(range(frame.shape[1]), axis=1)


def _as_objects(column):
    """A column's values as objects, every missing value as NaN: OrdinalEncoder takes None for a
    level of its own (code L, not -2) and pd.NA for an unknown level, where "missing" has a level
    reserved (object: pd.NA in a string column too)."""
    return column.astype(object).where(column.notna(), np.nan)


def _is_category(column) -> bool:
    import pandas as pd

    return isinstance(column.dtype, pd.CategoricalDtype)


def _distinct(column, j: int):
    """(values, codes) of a column: its distinct values, then a missing value, as objects the way
    :func:`_as_objects` gives them (a Series), and each row's index into them (-1, missing: the
    last). A pandas category column's values are its categories and its codes are its own; any
    other column is factorised (hashed, as a dict would: 1 and 1.0 are one level)."""
    import pandas as pd

    if _is_category(column):
        codes = column.cat.codes.to_numpy().astype(np.intp)  # int8 codes: + 1 must not wrap
        index = np.append(np.arange(len(column.cat.categories)), -1)
        return _as_objects(pd.Series(pd.Categorical.from_codes(index, dtype=column.dtype))), codes
    try:
        codes, uniques = pd.factorize(column)  # None, NaN and pd.NA: missing (-1)
    except TypeError as exc:  # e.g. a dict or a list in the column
        raise TypeError(f"A level of categorical column {j} is {exc}: each level's argument must be a string "
                        "or a number.") from exc
    values = pd.Series(np.append(np.asarray(uniques, dtype=object), None), dtype=object)
    return _as_objects(values), codes.astype(np.intp)


def _encoded(encoder: OrdinalEncoder, values) -> np.ndarray:
    """The encoder's codes of a Series of objects (fitted on a frame with one column named 0)."""
    return encoder.transform(values.to_frame(0)).ravel()


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
