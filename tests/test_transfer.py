"""Rows to the training device in chunks, standardised on the way; tall fits in bounded host memory."""

import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral import _estimator, _transfer
from skspectral._columns import summary
from skspectral._transfer import Standardisation, standardised_rows

from .conftest import DEVICES


def reference(X, mean, scale, rows=None, n_rows=None, low=None, high=None, fill=None):
    values = (X if rows is None else X[rows]).astype(np.float64)
    if low is not None:
        values = np.clip(values, low, high)
    values = (values - mean) / scale
    if fill is not None:
        values = np.where(np.isnan(values), fill, values)
    if n_rows is not None:
        values = np.concatenate([values, np.zeros((n_rows - len(values), X.shape[1]))])
    return values


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), p=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       x_dtype=st.sampled_from([np.float32, np.float64]), with_rows=st.booleans(), pad=st.integers(0, 3),
       clip=st.booleans(), fill=st.booleans(), chunk_bytes=st.sampled_from([8, 100, 2**20]))
def test_standardised_rows_match_the_float64_computation(device, n, p, seed, x_dtype, with_rows, pad, clip, fill,
                                                         chunk_bytes):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, p)) * 10 ** rng.uniform(-3, 3, p)).astype(x_dtype)
    X[rng.random((n, p)) < 0.1] = np.nan
    mean, scale = rng.normal(size=p), rng.uniform(0.1, 5, p)
    rows = rng.permutation(n)[: rng.integers(0, n + 1)] if with_rows else None
    n_out = (n if rows is None else len(rows)) + pad
    low, high = (np.full(p, -1.0), np.full(p, 2.0)) if clip else (None, None)
    # a missing value becomes the fill where one is given (NaN in it: it stays missing)
    fills = np.where(rng.random(p) < 0.5, np.nan, rng.normal(size=p)) if fill else None
    standardisation = Standardisation(mean, scale, low, high, fills)
    old = _transfer.CHUNK_BYTES
    _transfer.CHUNK_BYTES = chunk_bytes  # several chunks, staging buffers reused
    try:
        for dtype in (torch.float32, torch.float64):
            got = standardised_rows(X, standardisation, torch.device(device), dtype, rows=rows, n_rows=n_out)
            expected = torch.from_numpy(reference(X, mean, scale, rows, n_out, low, high, fills)).to(dtype)
            assert got.shape == (n_out, p) and got.dtype == dtype and got.device.type == device
            torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=0, equal_nan=True)  # bit for bit
    finally:
        _transfer.CHUNK_BYTES = old


def test_float32_input_fits_exactly_as_its_float64_copy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4)).astype(np.float32)
    X[::37, 1] = np.nan
    y = X[:, 0] - np.nan_to_num(X[:, 1]) ** 2
    params = dict(dim=5, max_iter=4, random_state=0, device="cpu", early_stopping=True)
    a = SpectralRegressor(**params).fit(X, y)
    b = SpectralRegressor(**params).fit(X.astype(np.float64), y)
    np.testing.assert_array_equal(a.x_mean_, b.x_mean_)
    for edges_a, edges_b in zip(a.column_mapper_.spec.edges, b.column_mapper_.spec.edges):
        assert edges_a.dtype == np.float64  # (NumPy 1.x: float32 from a float32 column, unless cast)
        np.testing.assert_array_equal(edges_a, edges_b)
    np.testing.assert_array_equal(a.predict(X), b.predict(X.astype(np.float64)))
    assert a.loss_curve_ == b.loss_curve_


def test_a_tall_float32_fit_holds_no_copy_of_X_in_numpy(monkeypatch):
    """numpy's peak allocation during fit and predict stays a fraction of the input: no float64
    (or other whole) copy of X on the host; the chunks are small here (as they are next to 10M rows)."""
    monkeypatch.setattr(_transfer, "CHUNK_BYTES", 2**20)
    monkeypatch.setattr(_estimator, "CHUNK_BYTES", 2**20)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200_000, 28), dtype=np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(np.int64)
    params = dict(dim=5, batch_size=4096, max_iter=1, n_estimators=1, feature_encoding="linear",
                  early_stopping=True, device="cpu", dtype="float32", random_state=0)
    # the same fit first: every kernel it runs compiled (on an empty Numba cache the compiler's own allocations,
    # which tracemalloc counts too, took a first fit's peak to 0.78x on a 16-core host), every import done
    SpectralClassifier(**params).fit(X, y).predict(X[:3000])
    tracemalloc.start()
    try:
        model = SpectralClassifier(**params).fit(X, y)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        model.predict(X)
        predict_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fit_peak < 0.6 * X.nbytes, fit_peak / X.nbytes  # a float32 copy of X alone would be 1.0
    assert predict_peak < 0.3 * X.nbytes, predict_peak / X.nbytes


def test_bins_of_tall_data_come_from_a_seeded_subsample(monkeypatch):
    from skspectral._columns.summary import subsample_rows, weighted_quantile_edges

    monkeypatch.setattr(summary, "BIN_SUBSAMPLE", 500)
    rng = np.random.default_rng(1)
    X = rng.exponential(size=(3000, 2))
    y = X[:, 0] + rng.normal(size=3000)
    fit = lambda seed: SpectralRegressor(dim=3, max_iter=1, n_bins=8, random_state=seed).fit(X, y)  # noqa: E731
    a, b, c = fit(0), fit(0), fit(1)
    for j in range(2):
        np.testing.assert_array_equal(a.encoding_.edges[j], b.encoding_.edges[j])  # seeded
        assert not np.array_equal(a.encoding_.edges[j], c.encoding_.edges[j])  # a subsample, not all rows
    rows = subsample_rows(3000, a._seed())
    assert rows.shape == (500,) and np.all(np.diff(rows) > 0)
    column = (X[rows, 0] - a.x_mean_[0]) / a.x_scale_[0]
    np.testing.assert_array_equal(a.encoding_.edges[0], weighted_quantile_edges(column, np.ones(500), 8))
    full = weighted_quantile_edges((X[:, 0] - a.x_mean_[0]) / a.x_scale_[0], np.ones(3000), 8)
    np.testing.assert_allclose(a.encoding_.edges[0][1:-1], full[1:-1], atol=0.15)  # close to the full quantiles
