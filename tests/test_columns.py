"""The column mapper (skspectral/_columns): column kinds, level codes, mergeable summaries and
what a fitted mapper decides for every column."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral import SpectralRegressor
from skspectral._columns import (CategoryCodes, ColumnKinds, ColumnOptions, ColumnSummary, coded_rows, column_kinds,
                                 level_counts, merge_all, split_columns)
from skspectral._columns import summary as summary_module
from skspectral._columns.kinds import categorical_mask
from skspectral._columns.levels import _level_encoder, level_threshold
from skspectral._columns.mapper import bins_for
from skspectral._columns.summary import _moments, _moments_numpy, weighted_quantile_edges, weighted_quantiles

pd = pytest.importorskip("pandas")


def frame():
    return pd.DataFrame({
        "size": [1.0, 2.0, 3.0, 4.0],
        "colour": pd.Categorical(["red", "blue", "red", None]),
        "city": ["a", "b", None, "a"],
        "flag": [True, False, True, True],
    })


# ---- kinds ------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("column,match", [
    (pd.to_datetime(["2020-01-01", "2021-05-02", "2022-03-04"]), "dtype datetime64.*Turn it into numbers"),
    (pd.to_timedelta([1, 2, 3], unit="D"), "dtype timedelta64.*a timedelta column"),
])
def test_columns_no_model_can_read_are_clear_errors(column, match):
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "when": column})
    with pytest.raises(ValueError, match=f"Column 'when' has {match}"):
        column_kinds(X, "from_dtype")


def test_strings_in_a_numeric_column_say_how_to_declare_it_categorical():
    X = np.array([[1.0, "a"], [2.0, "b"]], dtype=object)
    with pytest.raises(ValueError, match=r"Column 1 of X holds values that are not numbers \(e.g. 'a'\).*"
                                         r"DataFrame.*categorical_features=\[1\]"):
        column_kinds(X, "from_dtype")
    kinds = column_kinds(X, [1])  # declared: fine
    assert kinds.categorical.tolist() == [False, True]
    X = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    with pytest.raises(ValueError, match="Column 'b' holds values that are not numbers.*categorical_features"):
        column_kinds(X, None)


# ---- levels -----------------------------------------------------------------------------------
def test_category_codes_rare_unseen_and_missing():
    train = pd.DataFrame({"c": ["x"] * 12 + ["y"] * 11 + ["rare"] * 2 + [None] * 10})
    codes = CategoryCodes(level_counts(train))
    assert codes.n_seen == [2] and codes.has_missing == [True] and codes.n_levels() == [4]
    assert codes.used_levels() == [4]  # x, y, "other" (rare), "missing"
    np.testing.assert_array_equal(np.unique(codes.transform(train)[:, 0]), [-2, 0, 1, 2])
    new = codes.transform(pd.DataFrame({"c": ["y", "never seen", None, "rare"]}))
    np.testing.assert_array_equal(new[:, 0], [1, -1, -2, 2])


@pytest.mark.parametrize("min_count, expected", [(1, [1, 2, 0, -1]), (11, [0, 1, 2, -1]), (12, [0, 1, 1, -1])])
def test_category_codes_min_count(min_count, expected):
    """A level needs min_count rows to own a code: x (12 rows), y (11) and a (2) own theirs or
    share "other" (the code after the frequent ones) at the threshold exactly; unseen is -1."""
    train = pd.DataFrame({"c": ["x"] * 12 + ["y"] * 11 + ["a"] * 2})
    codes = CategoryCodes(level_counts(train), min_count)
    assert codes.n_levels() == [{1: 4, 11: 3, 12: 2}[min_count]]  # the frequent levels and "other"
    np.testing.assert_array_equal(codes.transform(pd.DataFrame({"c": ["x", "y", "a", "unseen"]}))[:, 0], expected)


@pytest.mark.parametrize("n_rows, expected", [(35, 10), (400, 10), (1000, 25), (3999, 99), (4000, 100), (10**6, 100)])
def test_auto_level_threshold_is_a_share_of_the_rows_within_10_and_100(n_rows, expected):
    counts = [({"x": n_rows - 5, "y": 2}, 3)]  # every column counts every row: levels and missing
    assert level_threshold("auto", n_rows) == expected == CategoryCodes(counts).min_count
    assert level_threshold(7, n_rows) == 7 == CategoryCodes(counts, 7).min_count


@pytest.mark.parametrize("n_rows, expected", [(9_999, 16), (10_000, 32)])
def test_auto_bins_grow_with_the_rows(n_rows, expected):
    """n_bins="auto": 16 quantile bins, 32 from 10,000 rows (a continuous feature gets them all),
    whatever the device; an integer is taken as given."""
    X = np.random.default_rng(0).normal(size=(n_rows, 2))
    for n_bins, bins in (("auto", expected), (5, 5)):
        summary = ColumnSummary.of_block(X, np.ones(n_rows), column_kinds(X, None))
        mapper = summary.finalize(ColumnOptions(n_bins=n_bins))
        assert [len(edges) - 1 for edges in mapper.spec.edges] == [bins, bins]
    assert bins_for("auto", n_rows) == expected and bins_for(7, n_rows) == 7


def test_a_categorical_column_of_another_kind_at_predict_is_an_error():
    codes = CategoryCodes(level_counts(pd.DataFrame({"c": ["x"] * 12 + ["y"] * 11})))
    with pytest.raises(ValueError, match="'city' held strings levels in fit .* holds numbers now"):
        codes.transform(pd.DataFrame({"c": [0, 1, 1]}), labels=["city"])
    numbers = CategoryCodes(level_counts(pd.DataFrame({"c": [1.0] * 12 + [2.0] * 11})))
    np.testing.assert_array_equal(numbers.transform(pd.DataFrame({"c": [2, 1, 7]}))[:, 0], [1, 0, -1])
    with pytest.raises(ValueError, match="held numbers levels in fit"):
        numbers.transform(pd.DataFrame({"c": ["1", "2"]}))


def test_a_categorical_column_mixing_numbers_and_strings_is_named_in_its_error():
    """scikit-learn's encoder refused it ("Encoders require their input argument must be uniformly strings or
    numbers") without naming the column or saying what to do; missing values are neither kind."""
    frame = pd.DataFrame({"zip": pd.Series([10115, "SW1A", None, 2.5] * 5, dtype=object)})
    with pytest.raises(ValueError, match=r"Categorical column 'zip' mixes numbers and strings \(e.g. 10115, "
                                         r"'SW1A'\).*X\['zip'\] = X\['zip'\].astype\(str\)"):
        level_counts(frame, ["zip"])
    with pytest.raises(ValueError, match=r"Categorical column 3 mixes.*X\[:, 3\] = X\[:, 3\].astype\(str\)"):
        level_counts(frame.to_numpy(), [3])
    assert level_counts(pd.DataFrame({"c": [1, 2.5, None, True]}), ["c"])[0][1] == 1  # numbers (and NaN): fine
    X = pd.DataFrame({"a": np.arange(20.0), "zip": frame["zip"]})
    with pytest.raises(ValueError, match="Categorical column 'zip' mixes"):
        SpectralRegressor(max_iter=1).fit(X, np.arange(20.0))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=300), n_missing=st.integers(0, 30),
       as_category=st.booleans(), n_blocks=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_levels_from_counts_of_any_split_are_the_encoders_levels_of_the_rows(counts, n_missing, as_category,
                                                                              n_blocks, seed):
    """Level counts added over any split of the rows give the codes scikit-learn's OrdinalEncoder
    learns from the rows themselves: for every level, an unseen one and a missing one (more than
    MAX_LEVELS frequent levels exercise the cut by count)."""
    counts = np.asarray(counts) * (1 + (np.arange(len(counts)) % 3 == 0) * 9)  # some levels frequent
    levels = np.array([f"l{i:03d}" for i in range(len(counts))], dtype=object)
    rows = np.r_[np.repeat(levels, counts), [None] * n_missing]
    if len(rows) == 0:
        return
    rng = np.random.default_rng(seed)
    column = pd.Series(rng.permutation(rows), dtype="category" if as_category else object)
    bounds = np.r_[0, np.sort(rng.integers(0, len(column) + 1, n_blocks - 1)), len(column)]
    blocks = [level_counts(column.iloc[a:b].to_frame()) for a, b in zip(bounds[:-1], bounds[1:])]
    from skspectral._columns.levels import add_level_counts

    merged = blocks[0]
    for block in blocks[1:]:
        merged = add_level_counts(merged, block)
    codes = CategoryCodes(merged)
    encoder = _level_encoder(codes.min_count).fit(_as_objects(column.to_frame()))
    probe = pd.DataFrame({"c": pd.Series(list(levels) + ["never seen", None], dtype=object)})
    np.testing.assert_array_equal(codes.transform(probe)[:, 0], encoder.transform(_as_objects(probe)).ravel())
    assert codes.has_missing == [n_missing > 0]


def _as_objects(frame):
    """A frame's values as objects, every missing value NaN, one column named 0 (as the encoders read)."""
    frame = frame.astype(object).where(frame.notna(), np.nan)
    return frame.set_axis(range(frame.shape[1]), axis=1)


@settings(max_examples=40, deadline=None)
@given(n_levels=st.integers(1, 30), n_unused=st.integers(0, 3), numbers=st.booleans(), n_rows=st.integers(0, 400),
       missing=st.floats(0, 0.3), min_count=st.sampled_from(["auto", 1, 5]), seed=st.integers(0, 2**31 - 1))
def test_a_category_column_is_counted_and_coded_as_its_values_as_objects(n_levels, n_unused, numbers, n_rows, missing,
                                                                          min_count, seed):
    """A column is counted and coded from integer codes, each distinct value once (a pandas category
    column's own codes, an object column's factorised): the same level counts from both, and the
    codes OrdinalEncoder gives each row's object (categories no row holds, unseen ones at
    transform, numbers as categories, missing values)."""
    rng = np.random.default_rng(seed)
    names = [float(i) if numbers else f"l{i}" for i in range(n_levels + n_unused + 1)]
    held = rng.choice(names[:n_levels], size=n_rows, p=rng.dirichlet(np.ones(n_levels)))
    rows = pd.Series(np.where(rng.random(n_rows) < missing, None, held.astype(object)), dtype=object)
    category = rows.astype(pd.CategoricalDtype(names[:-1]))
    counts = level_counts(category.to_frame())
    assert counts == level_counts(rows.to_frame())
    if not counts[0][0] and not counts[0][1]:
        return
    codes = CategoryCodes(counts, min_count)
    probe = pd.Series(names + [None], dtype=object)  # the last name: a category unseen in fit
    for column in (rows, probe):
        row_by_row = codes.encoders[0].transform(_as_objects(column.to_frame()))  # each row's object encoded
        np.testing.assert_array_equal(codes.transform(column.to_frame()), row_by_row)
        np.testing.assert_array_equal(codes.transform(column.astype(pd.CategoricalDtype(names)).to_frame()),
                                      row_by_row)


@pytest.mark.parametrize("dtype", [object, "category", None])
@pytest.mark.parametrize("n_missing", [1, 12])
def test_missing_values_get_the_missing_code_in_any_column_dtype(dtype, n_missing):
    """None in an object column is a missing value, not a level of its own: its code is -2,
    and every code stays within the levels the model reserves (a code past them would spill
    into the next feature's levels)."""
    column = pd.DataFrame({"c": pd.Series(["x"] * 12 + ["y"] * 11 + ["rare"] * 2 + [None] * n_missing, dtype=dtype)})
    codes = CategoryCodes(level_counts(column))
    assert codes.n_levels() == [4] and codes.has_missing == [True]
    coded = codes.transform(column)[:, 0]
    np.testing.assert_array_equal(np.unique(coded), [-2, 0, 1, 2])
    assert coded[-1] == -2


# ---- summaries: any split of the rows merges into the summary of the whole ---------------------
def _mixed_rows(rng, n, nan_share):
    numeric = rng.normal(size=(n, 3)) * [1.0, 1e4, 1e-3] + [0.0, 5e5, 2.0]
    numeric[rng.random((n, 3)) < nan_share] = np.nan
    numeric[:, 2] = np.where(rng.random(n) < 0.5, 7.0, numeric[:, 2])  # ties
    levels = rng.choice(["a", "b", "c", "rare", None], size=n, p=[0.4, 0.3, 0.2, 0.02, 0.08])
    return numeric, pd.DataFrame({"level": pd.Series(levels, dtype=object)})


KINDS = ColumnKinds(4, np.array([False, True, False, False]), ("x", "level", "big", "small"))


def _summary(numeric, categorical, weight, sample_rows=None):
    return ColumnSummary.of_block(numeric, weight, KINDS, levels=level_counts(categorical), sample_rows=sample_rows)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), n_blocks=st.integers(1, 5), nan_share=st.sampled_from([0.0, 0.1, 0.9]),
       integer_weights=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_merging_the_summaries_of_any_split_of_the_rows_is_the_summary_of_the_whole(n, n_blocks, nan_share,
                                                                                      integer_weights, seed):
    rng = np.random.default_rng(seed)
    numeric, categorical = _mixed_rows(rng, n, nan_share)
    weight = rng.integers(0, 4, n).astype(float) if integer_weights else rng.uniform(0, 3, n)
    weight[0] = max(weight[0], 1.0)
    whole = _summary(numeric, categorical, weight)
    cuts = np.sort(rng.integers(0, n + 1, n_blocks - 1))
    bounds = np.r_[0, cuts, n]
    merged = merge_all(_summary(numeric[a:b], categorical.iloc[a:b], weight[a:b])
                       for a, b in zip(bounds[:-1], bounds[1:]))
    assert merged.n_rows == whole.n_rows == n
    np.testing.assert_allclose(merged.total_weight, whole.total_weight, rtol=1e-13)
    np.testing.assert_allclose(merged.weight, whole.weight, rtol=1e-13)
    observed = whole.weight > 0
    scale = np.sqrt(np.where(observed, whole.var, 0)) + np.abs(whole.mean) + 1e-300
    # to rounding, column by column (merges add in another order)
    assert np.all(np.abs(merged.mean - whole.mean)[observed] <= 1e-12 * scale[observed])
    assert np.all(np.abs(merged.var - whole.var)[observed] <= 1e-9 * whole.var[observed] + 1e-12 * scale[observed] ** 2)
    for name in ("low", "high", "has_missing"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name), err_msg=name)
    assert merged.levels == whole.levels
    for a, b in zip(merged.sample, whole.sample):  # the subsample, as the bins read it: in row order
        if a is not None:
            for got, expected in zip(summary_module.sample_values(*a), summary_module.sample_values(*b)):
                np.testing.assert_array_equal(got, expected)
    options = ColumnOptions("piecewise_linear", 8)
    mapped, expected = merged.finalize(options), whole.finalize(options)
    assert mapped.spec.numeric == expected.spec.numeric and mapped.spec.missing == expected.spec.missing
    assert mapped.spec.n_levels == expected.spec.n_levels and list(mapped.ignored) == list(expected.ignored)
    for a, b in zip(mapped.spec.edges, expected.spec.edges):
        assert (a is None) == (b is None)
        if a is not None and len(a) == len(b):  # rounding can merge two edges a hair apart
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mapped.fill, expected.fill, rtol=1e-9, atol=1e-9)


def test_merged_subsamples_above_the_limit_keep_the_weighted_quantiles(monkeypatch):
    """Past SAMPLE_LIMIT values a merge keeps an even weighted sketch of the column: its
    quantiles stay within 1 % of the full weighted distribution in rank."""
    monkeypatch.setattr(summary_module, "SAMPLE_LIMIT", 4096)
    rng = np.random.default_rng(0)
    kinds = ColumnKinds(1)
    parts = [rng.lognormal(sigma=i + 1, size=(20_000, 1)) for i in range(4)]  # partitions unlike each other
    weights = [rng.uniform(0.5, 2.0, 20_000) for _ in parts]
    merged = merge_all(ColumnSummary.of_block(x, w, kinds) for x, w in zip(parts, weights))
    values, w = merged.sample[0]
    assert len(values) <= 4096
    X, W = np.concatenate(parts)[:, 0], np.concatenate(weights)
    quantiles = weighted_quantiles(values, w, 16)[2:-2]  # the inner ones: 1/16 ... 15/16
    order = np.argsort(X)
    cdf = np.cumsum(W[order]) / W.sum()
    np.testing.assert_allclose(cdf[np.searchsorted(X[order], quantiles)], np.arange(1, 16) / 16, atol=0.01)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), n_bins=st.integers(1, 20), ties=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_unit_weight_quantiles_by_partition_are_the_sorted_ones(n, n_bins, ties, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
    values[rng.random(n) < 0.1] = np.nan
    quantiles = weighted_quantiles(values, np.ones(n), n_bins, with_median=True)
    # the same weights as fractions of 2: the general (sorting) path, the same cumulative sums
    halves = weighted_quantiles(values, np.full(n, 0.5), n_bins, with_median=True)
    if quantiles is None:
        assert halves is None
        return
    np.testing.assert_array_equal(quantiles[0], halves[0])
    assert quantiles[1] == halves[1]


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
@given(n=st.integers(1, 3000), p=st.integers(1, 5), nan_share=st.floats(0, 0.5), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_compiled_moments_match_numpy_and_a_float64_reference(n, p, nan_share, seed, dtype):
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=(n, p)) * 10 ** rng.uniform(-5, 5, p) + rng.normal(size=p) * 100).astype(dtype)
    values[rng.random((n, p)) < nan_share] = np.nan
    weight = rng.uniform(0.1, 3, n)
    weight[rng.random(n) < 0.1] = 0.0  # rows of weight 0 count for nothing, not even in the range
    compiled, fallback = _moments(values, weight), _moments_numpy(values, weight)
    for j in range(p):
        observed = ~np.isnan(values[:, j])
        positive = observed & (weight > 0)
        for got in (compiled, fallback):
            assert got[5][j] == bool((~observed & (weight > 0)).any())
            assert not got[6][j]
        if not positive.any():
            assert np.isnan(compiled[3][j]) and np.isnan(fallback[3][j])
            continue
        x, w = values[positive, j].astype(np.float64), weight[positive]
        mean = np.average(x, weights=w)
        var = np.average((x - mean) ** 2, weights=w)
        for got in (compiled, fallback):
            np.testing.assert_allclose(got[0][j], w.sum(), rtol=1e-12)
            np.testing.assert_allclose(got[1][j], mean, rtol=1e-9, atol=1e-12 * np.abs(x).max())
            np.testing.assert_allclose(got[2][j], var, rtol=1e-8, atol=1e-12 * var + 1e-300)
            assert got[3][j] == x.min() and got[4][j] == x.max()


def test_infinity_and_values_too_large_are_clear_errors():
    kinds = ColumnKinds(2)
    with pytest.raises(ValueError, match="infinity in column 1"):
        ColumnSummary.of_block(np.array([[1.0, np.inf], [2.0, 1.0]]), np.ones(2), kinds)
    huge = ColumnSummary.of_block(np.array([[1.0, 1e300], [2.0, -1e300], [3.0, 5e299]]), np.ones(3), kinds)
    with pytest.raises(ValueError, match="feature 1 has values too large.*largest \\|value\\| = 1e\\+300"):
        huge.finalize(ColumnOptions())
    with pytest.raises(ValueError, match="non-negative"):
        ColumnSummary.of_block(np.ones((2, 2)), np.array([1.0, -1.0]), kinds)
    with pytest.raises(ValueError, match="sums to zero"):
        ColumnSummary.of_block(np.ones((2, 2)), np.zeros(2), kinds).finalize(ColumnOptions())


# ---- what the mapper decides -------------------------------------------------------------------
def _mapper(numeric, categorical=None, weight=None, options=ColumnOptions("piecewise_linear", 4), kinds=None):
    weight = np.ones(len(numeric)) if weight is None else weight
    kinds = kinds or ColumnKinds(numeric.shape[1])
    levels = None if categorical is None else level_counts(categorical)
    return ColumnSummary.of_block(numeric, weight, kinds, levels=levels).finalize(options)


def test_columns_that_carry_nothing_get_no_encoded_column():
    rng = np.random.default_rng(0)
    n = 200
    numeric = np.column_stack([
        rng.normal(size=n),  # 0: varies
        np.full(n, np.nan),  # 1: never observed
        np.full(n, 3.0),  # 2: constant
        np.where(rng.random(n) < 0.3, np.nan, 3.0),  # 3: constant where observed: missingness only
        rng.normal(size=n),  # 4: varies, but only in rows of weight 0
    ])
    weight = np.ones(n)
    numeric[:100, 4] = 5.0
    weight[100:] = np.where(np.arange(100) % 2 == 0, 0.0, 1.0)
    numeric[100:, 4] = np.where(weight[100:] > 0, 5.0, numeric[100:, 4])
    mapper = _mapper(numeric, weight=weight)
    assert mapper.spec.numeric == [0] and mapper.spec.missing == [3]
    assert mapper.ignored.tolist() == [1, 2, 4]
    assert "[1, 2, 4] hold a single value (or none)" in mapper.ignored_message()
    assert mapper.low[4] == mapper.high[4] == 5.0  # the range of the rows of positive weight
    # a categorical column whose rows all hold one level: ignored; one level and missing ones: kept
    categorical = pd.DataFrame({"one": ["a"] * n, "two": ["a"] * (n - 20) + [None] * 20})
    kinds = ColumnKinds(3, np.array([False, True, True]))
    mapper = _mapper(numeric[:, :1], categorical, kinds=kinds)
    assert mapper.spec.categorical == [2] and mapper.ignored.tolist() == [1]
    assert "[1] hold a single value" in mapper.ignored_message()
    # an ID column: many levels, each under min_level_count (10 here), all in "other": ignored, and said why
    ids = pd.DataFrame({"id": [f"id{i}" for i in range(n)], "two": categorical["two"]})
    mapper = _mapper(numeric[:, :1], ids, kinds=kinds)
    assert mapper.ignored.tolist() == [1]
    message = mapper.ignored_message()
    assert "hold a single value" not in message
    assert "[1] (1: 200 levels) have no level seen in min_level_count=10 rows or more" in message
    assert "Lower min_level_count" in message


def test_a_missing_value_where_fit_saw_none_becomes_the_training_median():
    rng = np.random.default_rng(1)
    numeric = np.column_stack([rng.exponential(size=301),
                               np.where(rng.random(301) < 0.2, np.nan, 1.0 + rng.random(301))])
    mapper = _mapper(numeric)
    median = np.median(numeric[:, 0])
    assert mapper.fill[0] == (median - mapper.mean[0]) / mapper.scale[0] and np.isnan(mapper.fill[1])
    rows = np.array([[np.nan, np.nan], [median, 1.5]])
    out = mapper.standardisation(clip=True).apply(rows.copy())
    assert out[0, 0] == out[1, 0] and np.isnan(out[0, 1])  # column 1 had missing values: they stay missing
    training = mapper.standardisation(fill=False).apply(rows.copy())
    assert np.isnan(training[0, 0])  # training rows are never filled


def test_coded_rows_and_split_columns():
    X = frame()
    kinds = column_kinds(X, "from_dtype")
    numeric, categorical = split_columns(X, kinds)
    assert numeric.shape == (4, 1) and categorical.shape == (4, 3)
    codes = CategoryCodes(level_counts(categorical))
    rows = coded_rows(numeric, categorical, kinds, codes)
    np.testing.assert_array_equal(rows[:, 0], X["size"])
    assert rows.dtype == np.float64 and (rows[:, 1:] >= -2).all()
    plain = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert split_columns(plain, ColumnKinds(2))[0] is plain  # a validated numeric X: no copy


@pytest.mark.parametrize("as_category", [False, True])
def test_a_frame_of_categorical_columns_only_fits_and_predicts(as_category):
    """No numeric column at all (a frame of strings or of pandas categories): fit, predict with an
    unseen level and a missing value, and the same predictions from the pickled model."""
    import pickle

    from skspectral import SpectralClassifier

    rng = np.random.default_rng(4)
    colour, size = rng.choice(["red", "blue", "green"], 300), rng.choice(["S", "L"], 300)
    y = (colour == "red") * 1.0 + (size == "L") * 2.0
    X = pd.DataFrame({"colour": colour, "size": size})
    new = pd.DataFrame({"colour": ["red", "pink", None], "size": ["L", "S", "S"]})
    if as_category:
        X, new = X.astype("category"), new.astype("category")
    kinds = column_kinds(X, "from_dtype")
    numeric, categorical = split_columns(X, kinds)
    assert numeric.shape == (300, 0) and categorical.shape == (300, 2)
    model = SpectralRegressor(random_state=0).fit(X, y)  # (6 distinct rows, merged: a step an epoch)
    predictions = model.predict(new)
    assert predictions.shape == (3,) and np.isfinite(predictions).all()
    assert model.score(X, y) > 0.85  # the levels carry the whole target
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(new), predictions)
    probabilities = SpectralClassifier(max_iter=3, random_state=0).fit(X, y > 1).predict_proba(new)
    assert probabilities.shape == (3, 2) and np.isfinite(probabilities).all()


def test_monotone_constraints_spread_over_the_encoded_columns_and_clear_errors():
    rng = np.random.default_rng(2)
    numeric = rng.normal(size=(100, 2))
    mapper = _mapper(numeric, options=ColumnOptions("piecewise_linear", 4, np.array([1, -1])))
    feature, _, _ = mapper.spec.columns()
    np.testing.assert_array_equal(mapper.monotone, np.where(feature == 0, 1, -1))
    assert _mapper(numeric, options=ColumnOptions("linear", 4, np.array([0, 0]))).monotone is None
    with pytest.raises(ValueError, match="one entry per feature \\(2\\)"):
        _mapper(numeric, options=ColumnOptions("linear", 4, np.array([1])))
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        _mapper(numeric, options=ColumnOptions("linear", 4, np.array([2, 0])))
    kinds = ColumnKinds(2, np.array([False, True]), ("x", "level"))
    with pytest.raises(ValueError, match="categorical feature\\(s\\) \\['level'\\]"):
        _mapper(numeric[:, :1], pd.DataFrame({"level": ["a", "b"] * 50}), kinds=kinds,
                options=ColumnOptions("linear", 4, np.array([0, 1])))


def test_columns_find_their_quantiles_on_several_threads_as_on_one(monkeypatch):
    """From _THREADED_QUANTILE_ROWS rows the columns' quantiles are found on torch's threads: the same
    edges and training medians as one column after the other, in the columns' order (a constant column, one
    with missing values and one observed only in part among them)."""
    import threading

    import torch

    from skspectral._columns import mapper as mapper_module

    rng = np.random.default_rng(3)
    n = 3000
    numeric = np.column_stack([rng.normal(size=n), rng.exponential(size=n), np.full(n, 2.0),
                               np.where(rng.random(n) < 0.4, np.nan, rng.integers(0, 7, n)), rng.gamma(2.0, size=n)])
    threads = torch.get_num_threads()
    calls, workers = [], set()
    original = mapper_module._each_column

    def each_column(fn, columns, n_rows):
        calls.append(n_rows)
        return original(lambda j: (workers.add(threading.get_ident()), fn(j))[1], columns, n_rows)

    monkeypatch.setattr(mapper_module, "_each_column", each_column)
    try:
        torch.set_num_threads(1)
        serial = _mapper(numeric)
        assert workers == {threading.get_ident()}
        torch.set_num_threads(3)
        monkeypatch.setattr(mapper_module, "_THREADED_QUANTILE_ROWS", 1)
        threaded = _mapper(numeric)
    finally:
        torch.set_num_threads(threads)
    assert calls == [n, n] and len(workers) > 1  # (the pool's threads besides this one)
    assert serial.spec.numeric == threaded.spec.numeric == [0, 1, 3, 4]
    for a, b in zip(serial.spec.edges, threaded.spec.edges):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(serial.fill, threaded.fill)
