"""Which columns are categorical, their level codes, and the quantile bins."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral._features import CategoryCodes, categorical_mask, weighted_quantile_edges

pd = pytest.importorskip("pandas")


def frame():
    return pd.DataFrame({
        "size": [1.0, 2.0, 3.0, 4.0],
        "colour": pd.Categorical(["red", "blue", "red", None]),
        "city": ["a", "b", None, "a"],
        "flag": [True, False, True, True],
    })


def test_categorical_mask_forms():
    X = frame()
    np.testing.assert_array_equal(categorical_mask(X, "from_dtype"), [False, True, True, True])
    np.testing.assert_array_equal(categorical_mask(X, ["colour"]), [False, True, False, False])
    np.testing.assert_array_equal(categorical_mask(X, [2]), [False, False, True, False])
    np.testing.assert_array_equal(categorical_mask(X, [True, False, False, False]), [True, False, False, False])
    assert categorical_mask(X, None) is None
    assert categorical_mask(np.ones((3, 2)), "from_dtype") is None
    assert categorical_mask(X[["size"]], "from_dtype") is None


@pytest.mark.parametrize("features,match", [
    ([4], r"indices must lie in \[0, 3\]"),
    (["weight"], "not a column of X"),
    ([True, False], r"shape \(n_features,\)"),
    ([0.5], "must be 'from_dtype'"),
])
def test_categorical_mask_errors(features, match):
    with pytest.raises(ValueError, match=match):
        categorical_mask(frame(), features)


def test_names_need_a_dataframe():
    with pytest.raises(ValueError, match="needs X with column names"):
        categorical_mask(np.ones((3, 2)), ["a"])


def test_category_codes_rare_unseen_and_missing():
    train = pd.DataFrame({"c": ["x"] * 12 + ["y"] * 11 + ["rare"] * 2 + [None] * 10})
    codes = CategoryCodes()
    fitted = codes.fit_transform(train)
    assert codes.n_seen == [2] and codes.has_missing == [True] and codes.n_levels() == [4]
    assert set(fitted[:, 0]) == {0.0, 1.0, 2.0, -2.0}  # x, y, rare -> the "other" code 2, missing
    new = codes.transform(pd.DataFrame({"c": ["y", "never seen", None, "rare"]}))
    np.testing.assert_array_equal(new[:, 0], [1, -1, -2, 2])


def test_weighted_quantile_edges():
    values = np.r_[np.arange(10.0), np.nan]
    edges = weighted_quantile_edges(values, np.ones(11), 5)
    assert edges[0] == 0 and edges[-1] == 9 and np.all(np.diff(edges) > 0) and len(edges) <= 6
    # a weight of 3 counts as three rows
    heavy = weighted_quantile_edges(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 10.0]), 2)
    assert heavy[1] == 2.0
    assert weighted_quantile_edges(np.full(5, 3.0), np.ones(5), 4) is None
    assert weighted_quantile_edges(np.full(3, np.nan), np.ones(3), 4) is None


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=300), n_missing=st.integers(0, 30),
       as_category=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_levels_from_counts_match_levels_from_rows(counts, n_missing, as_category, seed):
    """What a distributed fit learns from each level's row count is what a fit on the rows
    learns: the same codes for every level, an unseen one and a missing one (more than
    MAX_LEVELS frequent levels exercise the cut by count)."""
    counts = np.asarray(counts) * (1 + (np.arange(len(counts)) % 3 == 0) * 9)  # some levels frequent
    levels = np.array([f"l{i:03d}" for i in range(len(counts))], dtype=object)
    rows = np.r_[np.repeat(levels, counts), [None] * n_missing]
    if len(rows) == 0:
        return
    rows = np.random.default_rng(seed).permutation(rows)
    column = pd.Series(rows, dtype="category" if as_category else object)
    from_rows = CategoryCodes()
    from_rows.fit_transform(column.to_frame())
    from_counts = CategoryCodes().fit_counts([column.value_counts(dropna=False)])
    assert from_counts.n_levels() == from_rows.n_levels() and from_counts.has_missing == from_rows.has_missing
    probe = pd.DataFrame({"c": pd.Series(list(levels) + ["never seen", None], dtype=object)})
    np.testing.assert_array_equal(from_counts.transform(probe), from_rows.transform(probe))


@pytest.mark.parametrize("dtype", [object, "category", None])
@pytest.mark.parametrize("n_missing", [1, 12])
def test_missing_values_get_the_missing_code_in_any_column_dtype(dtype, n_missing):
    """None in an object column is a missing value, not a level of its own: its code is -2,
    and every code stays within the levels the model reserves (a code past them would spill
    into the next feature's levels)."""
    column = ["x"] * 12 + ["y"] * 11 + ["rare"] * 2 + [None] * n_missing
    codes = CategoryCodes()
    fitted = codes.fit_transform(pd.DataFrame({"c": pd.Series(column, dtype=dtype)}))
    assert codes.n_levels() == [4] and codes.has_missing == [True]
    np.testing.assert_array_equal(np.unique(fitted[:, 0]), [-2, 0, 1, 2])
    assert fitted[-1, 0] == -2
