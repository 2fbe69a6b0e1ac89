"""The rows the model trains on: duplicate merging, eval sets, the early-stopping split."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral._preprocessing import check_eval_set, merge_duplicate_rows, merged_training_rows, validation_split


def test_duplicates_merge_into_summed_weights_and_differing_targets_stay_apart():
    X = np.array([[1.0, 2.0], [0.0, 5.0], [1.0, 2.0], [1.0, 2.0], [0.0, 5.0]])
    y = np.array([3.0, 4.0, 3.0, 9.0, 4.0])
    w = np.array([1.0, 2.0, 0.5, 1.0, 1.0])
    Xm, ym, wm = merge_duplicate_rows(X, y, w)
    rows = {(tuple(x), t): weight for x, t, weight in zip(Xm, ym, wm)}
    assert rows == {((1.0, 2.0), 3.0): 1.5, ((0.0, 5.0), 4.0): 3.0, ((1.0, 2.0), 9.0): 1.0}
    np.testing.assert_allclose(wm.sum(), w.sum())


def test_weighting_and_repeating_give_the_same_rows_bit_for_bit():
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    counts = rng.randint(0, 4, size=30)
    weighted = merged_training_rows(X, y, counts.astype(float))
    repeated = merged_training_rows(X.repeat(counts, axis=0), y.repeat(counts), np.ones(counts.sum()))
    for a, b in zip(weighted, repeated):
        np.testing.assert_array_equal(a, b)


def test_rows_without_duplicates_or_weights_keep_their_order():
    X = np.arange(12.0).reshape(6, 2)[::-1].copy()
    y = np.arange(6.0)
    Xm, ym, wm = merged_training_rows(X, y, np.ones(6))
    np.testing.assert_array_equal(Xm, X)
    np.testing.assert_array_equal(ym, y)
    assert np.all(wm == 1)


def test_weights_that_sum_to_zero_are_an_error():
    with pytest.raises(ValueError, match="sums to zero"):
        merged_training_rows(np.ones((3, 2)), np.arange(3.0), np.zeros(3))


def test_check_eval_set_accepts_one_pair_or_a_list():
    validate = lambda X, y: (np.asarray(X, dtype=float), np.asarray(y, dtype=float))  # noqa: E731
    assert len(check_eval_set(None, validate)) == 0
    assert len(check_eval_set(([[1.0]], [2.0]), validate)) == 1
    assert len(check_eval_set([([[1.0]], [2.0]), ([[3.0]], [4.0])], validate)) == 2
    with pytest.raises(ValueError, match="item 1 is str"):
        check_eval_set([([[1.0]], [2.0]), "nope"], validate)
    with pytest.raises(ValueError, match="item 0 is a tuple of 3 items .*unweighted"):  # (X, y, weights)
        check_eval_set([([[1.0]], [2.0], [1.0])], validate)


def test_validation_split_is_stratified_for_labels_and_random_otherwise():
    labels = np.r_[np.zeros(90), np.ones(10)]
    train, val = validation_split(100, 0.2, np.random.RandomState(0), stratify=labels)
    assert len(val) == 20 and len(train) == 80 and len(np.intersect1d(train, val)) == 0
    assert labels[val].sum() == 2  # the minority keeps its 10 % share
    order = np.random.RandomState(1).permutation(100)
    train, val = validation_split(100, 0.2, np.random.RandomState(1))
    np.testing.assert_array_equal(val, order[:20])
    np.testing.assert_array_equal(train, order[20:])
    # a class with one row cannot be stratified: plain random split
    train, val = validation_split(10, 0.3, np.random.RandomState(0), stratify=np.r_[np.zeros(9), 1])
    assert len(val) == 3
    with pytest.raises(ValueError, match="at least one training and one validation row"):
        validation_split(1, 0.5, np.random.RandomState(0))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 60), p=st.integers(1, 4), duplicates=st.integers(0, 3), signed_zeros=st.booleans(),
       nans=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_rows_are_distinct_never_misses_a_duplicate(n, p, duplicates, signed_zeros, nans, seed):
    """Distinct hashes must prove distinct rows: whenever it says True, sorting every row
    (the exact path) finds no two equal rows; and merging gives what the exact path gives."""
    from skspectral._preprocessing import rows_are_distinct

    rng = np.random.default_rng(seed)
    X = rng.integers(-2, 3, size=(n, p)).astype(np.float64)  # small integers: real duplicates are common
    y = rng.integers(0, 2, size=n).astype(np.float64)
    if duplicates:
        picks = rng.integers(0, n, size=duplicates)
        X, y = np.vstack([X, X[picks]]), np.r_[y, y[picks]]
    if signed_zeros:
        X[X == 0] = -0.0
        X[: len(X) // 2][X[: len(X) // 2] == 0] = 0.0
    if nans:
        X[rng.random(X.shape) < 0.1] = np.nan
    exact_rows = np.unique(np.column_stack([X, y]), axis=0)
    if rows_are_distinct(X, y):
        assert len(exact_rows) == len(X)
    merged = merge_duplicate_rows(X, y, np.ones(len(X)))
    assert merged[0].shape[0] == len(exact_rows)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), p=st.integers(1, 4), nans=st.booleans(), signed_zeros=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_sorted_distinct_rows_are_numpys_unique_rows(n, p, nans, signed_zeros, seed):
    """The duplicate merge's sort: np.unique(axis=0)'s rows and inverse, bit for bit where every pair of
    rows that sort alike is equal (no NaN, zeros of one sign); with NaN or signed zeros, the same rows
    up to the order of rows that sort alike (np.unique's sort does not keep it), each input row mapped
    to an equal one, NaN rows never merged, every distinct row once and the rows ascending."""
    from skspectral._preprocessing import sorted_distinct_rows

    rng = np.random.default_rng(seed)
    A = rng.integers(-2, 3, size=(n, p)).astype(np.float64)
    A = np.vstack([A, A[rng.integers(0, n, size=n // 2)]])  # duplicates
    if signed_zeros:
        A[(A == 0) & (rng.random(A.shape) < 0.5)] = -0.0
    if nans:
        A[rng.random(A.shape) < 0.1] = np.nan
    rows, inverse = sorted_distinct_rows(A)
    expected_rows, expected_inverse = np.unique(A, axis=0, return_inverse=True)
    if not nans and not signed_zeros:
        np.testing.assert_array_equal(rows.view(np.uint64), expected_rows.view(np.uint64))
        np.testing.assert_array_equal(inverse, expected_inverse.ravel())
    assert rows.shape == expected_rows.shape
    np.testing.assert_array_equal(rows[inverse], A)  # each row maps to an equal one (NaN to NaN)
    keys = np.where(np.isnan(rows), np.inf, rows)  # NaN sorts last
    assert all(tuple(a) <= tuple(b) for a, b in zip(keys[:-1], keys[1:]))
    nan_rows = np.isnan(A).any(axis=1)
    assert len(np.unique(inverse[nan_rows])) == nan_rows.sum()  # a row with a NaN is never merged


def test_merging_does_not_copy_the_rows_it_keeps():
    X = np.random.default_rng(0).normal(size=(500, 3))
    y = np.arange(500.0)
    kept, _, weight = merged_training_rows(X, y, np.ones(500))
    assert np.shares_memory(kept, X) and (weight == 1).all()


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=6), fraction=st.floats(0.05, 0.6),
       integer_labels=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_stratified_split_keeps_each_class_share(counts, fraction, integer_labels, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    if n < 2 or not 1 <= int(round(fraction * n)) <= n - 1:
        return
    labels = np.random.default_rng(seed).permutation(labels)
    stratify = labels.astype(np.uint8) if integer_labels else np.array([f"class {c}" for c in labels])
    train, val = validation_split(n, fraction, np.random.RandomState(seed), stratify=stratify)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == n
    seen = np.array([c for c in counts if c > 0])
    n_val = int(round(fraction * n))
    if seen.min() >= 2 and len(seen) <= min(n_val, n - n_val):  # stratified
        held = np.bincount(labels[val], minlength=len(counts))
        for c, count in enumerate(counts):
            if count:
                assert 1 <= held[c] <= count - 1
                assert abs(held[c] - n_val * count / n) <= 1 or held[c] in (1, count - 1)
        assert abs(len(val) - n_val) <= len(counts)


def test_compiled_kernels_keep_torchs_thread_count_and_follow_it():
    """Starting Numba's OpenMP threads set the calling thread's OpenMP count (which torch
    reads) to Numba's pool: a Dask worker limited to 1 thread ran every later fit on all
    cores, several workers oversubscribing the machine. A fresh process, so that Numba's
    threads start inside the fit."""
    pytest.importorskip("numba")
    code = (
        "import numpy as np, torch, numba\n"
        "torch.set_num_threads(1)\n"
        "from skspectral import SpectralRegressor, kth_eigvalsh\n"
        "X = np.random.RandomState(0).normal(size=(5000, 4))\n"
        "SpectralRegressor(dim=4, max_iter=1, backend='numba').fit(X, X[:, 0])\n"
        "kth_eigvalsh(torch.randn(64, 20, 20, dtype=torch.float64), 3, backend='numba')\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "1"]
