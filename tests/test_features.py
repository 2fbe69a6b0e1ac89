"""Which columns are categorical, their level codes, and the quantile bins."""

import numpy as np
import pytest

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
