"""The losses' CUDA kernel (skspectral._cuda_losses): every loss's value and gradient equal to
autograd's through members_fn, to rounding; the same every run; capturable in a CUDA graph; and a
CUDA fit that takes it (its training curve autograd's to rounding)."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor, _cuda_losses, _losses
from skspectral.eig._cupy_support import is_available

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not (torch.cuda.is_available() and is_available()),
                                                   reason="needs CUDA and CuPy")]

# float64 sums in the kernel against torch's sums (in the tensor's dtype)
_ROUNDING = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}

_LOSSES = [("squared_error", {}), ("binary_log_loss", {}), ("log_loss", {}), ("absolute_error", {}),
           ("huber", dict(delta=0.7)), ("quantile", dict(quantiles=[0.3])),
           ("quantile", dict(quantiles=[0.05, 0.5, 0.95])), ("poisson", {}), ("gamma", {})]


def _loss(name, kwargs):
    return _losses.get_loss(name) if name in _losses.LOSSES else _losses.regression_loss(name, **kwargs)


def _batch(name, kwargs, rows, n_members, dtype, seed, device="cuda"):
    """A batch as the model outputs it: (rows[, members][, classes or levels]), targets with the
    kinks (outputs on their targets, zero counts), zero weights."""
    rng = np.random.default_rng(seed)
    last = 4 if name == "log_loss" else len(kwargs.get("quantiles", [0]))
    shape = (rows,) + ((n_members,) if n_members > 1 else ()) + ((last,) if last > 1 else ())
    output = torch.as_tensor(3 * rng.normal(size=shape), dtype=dtype)
    log_link = name in ("poisson", "gamma")
    if name == "log_loss":
        target = rng.integers(0, last, rows).astype(float)
    elif name == "binary_log_loss":
        target = rng.integers(0, 2, rows).astype(float)
    else:
        target = rng.gamma(2.0, size=rows) if log_link else rng.normal(size=rows)
    target = torch.as_tensor(target, dtype=dtype)
    if name == "poisson":
        target[::5] = 0.0
    if name in ("squared_error", "absolute_error", "huber", "quantile"):
        output.view(rows, -1)[::3, 0] = target[::3]
    if last > 1 and name == "quantile":
        output = output.sort(dim=-1).values  # the model's output is ordered
    weight = torch.as_tensor(rng.uniform(0, 2, rows), dtype=dtype)
    weight[::4] = 0.0
    return output.to(device), target.to(device), weight.to(device)


@pytest.mark.parametrize("name, kwargs", _LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_members", [1, 4])
@pytest.mark.parametrize("rows", [1, 37, 1310])
def test_the_cuda_kernel_is_autograds(name, kwargs, dtype, n_members, rows):
    """fn_and_gradient on CUDA tensors runs the kernel: members_fn's value and autograd's gradient,
    to rounding; a device scalar; the same bits on a second call."""
    loss = _loss(name, kwargs)
    output, target, weight = _batch(name, kwargs, rows, n_members, dtype, seed=rows + n_members)
    if rows == 1:
        weight.fill_(1.0)
    leaf = output.clone().requires_grad_()
    expected = loss.members_fn(n_members)(leaf, target, weight)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    value, grad = loss.fn_and_gradient(output, target, weight)
    assert value.is_cuda and value.dim() == 0 and value.dtype == dtype
    assert grad.shape == output.shape and grad.dtype == dtype
    torch.testing.assert_close(value, expected.detach(), **_ROUNDING[dtype])
    torch.testing.assert_close(grad, expected_grad, **_ROUNDING[dtype])
    again_value, again_grad = loss.fn_and_gradient(output, target, weight)
    assert torch.equal(again_value, value) and torch.equal(again_grad, grad)


def test_zero_weights_give_zero_not_nan():
    loss = _losses.get_loss("squared_error")
    output, target, weight = _batch("squared_error", {}, 20, 2, torch.float32, 0)
    value, grad = loss.fn_and_gradient(output, target, torch.zeros_like(weight))
    assert value.item() == 0.0 and not grad.any()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_levels=st.integers(1, 6), n_members=st.integers(1, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]))
@example(seed=3, n_levels=4, n_members=2, dtype=torch.float32)
def test_the_pinball_kernel_orders_the_values_as_the_model_does(seed, n_levels, n_members, dtype):
    """Values out of order and with ties: the kernel's running maximum is the model's cummax (a later
    equal value takes the gradient, a tie of the two slopes splits it), to rounding."""
    rng = np.random.default_rng(seed)
    levels = tuple(np.sort(rng.uniform(0.01, 0.99, n_levels)))
    values = torch.as_tensor(rng.normal(size=(40, n_members, n_levels)), dtype=dtype)
    if n_levels > 1:
        values[::2, :, -1] = values[::2, :, 0]
        values[1::4, 0, -1] = values[1::4, 0, 0] - rng.uniform(0, 1)
    target = torch.as_tensor(rng.normal(size=40), dtype=dtype)
    target[::5] = values[::5, -1, 0]
    weight = torch.as_tensor(rng.uniform(0, 2, 40), dtype=dtype)
    weight[::7] = 0.0
    values, target, weight = values.cuda(), target.cuda(), weight.cuda()
    leaf = values.clone().requires_grad_()
    fn = _losses.regression_loss("quantile", quantiles=levels).members_fn(n_members)
    shape = (40,) + ((n_members,) if n_members > 1 else ()) + ((n_levels,) if n_levels > 1 else ())
    expected = fn(leaf.cummax(dim=-1).values.reshape(shape), target, weight)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    value, gradient = _cuda_losses.loss_and_gradient("pinball_and_gradient", values, target, weight, levels,
                                                     last_axis=True)
    torch.testing.assert_close(value, expected.detach(), **_ROUNDING[dtype])
    torch.testing.assert_close(gradient, expected_grad, **_ROUNDING[dtype])


def test_the_kernel_replays_from_a_cuda_graph():
    """Captured once, replayed on new values in the same buffers: the value and gradient of the new ones."""
    loss = _losses.get_loss("squared_error")
    output, target, weight = _batch("squared_error", {}, 300, 4, torch.float32, 1)
    loss.fn_and_gradient(output, target, weight)  # warm-up: the kernel loaded before capture
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        loss.fn_and_gradient(output, target, weight)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        value, grad = loss.fn_and_gradient(output, target, weight)
    output.copy_(torch.randn_like(output))
    graph.replay()
    expected_value, expected_grad = loss.fn_and_gradient(output.clone(), target, weight)
    assert torch.equal(value, expected_value) and torch.equal(grad, expected_grad)


@pytest.mark.parametrize("estimator, params", [
    (SpectralRegressor, dict()), (SpectralRegressor, dict(loss="quantile", quantile=[0.1, 0.5, 0.9])),
    (SpectralRegressor, dict(loss="poisson", alpha=1e-3)), (SpectralClassifier, dict())])
def test_a_cuda_fit_takes_the_kernel_and_trains_as_autograd_does(monkeypatch, estimator, params):
    """A CUDA fit's steps take the kernel (not autograd's loss); in float64 its training curve and
    predictions are the autograd fit's to rounding; two fits are the same to the bit."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    if estimator is SpectralClassifier:
        y = (X[:, 0] + 0.3 * rng.normal(size=600) > 0).astype(int)
    elif params.get("loss") == "poisson":
        y = rng.poisson(np.exp(0.5 * X[:, 0]))
    else:
        y = X[:, 0] - X[:, 1] ** 2 + 0.1 * rng.normal(size=600)
    common = dict(device="cuda", dtype="float64", max_iter=4, early_stopping=False, random_state=0, **params)
    calls = []
    kernel = _cuda_losses.loss_and_gradient
    monkeypatch.setattr(_cuda_losses, "loss_and_gradient", lambda *a, **k: (calls.append(1), kernel(*a, **k))[1])
    first = estimator(**common).fit(X, y)
    assert calls  # the steps took the kernel
    second = estimator(**common).fit(X, y)
    np.testing.assert_array_equal(first.loss_curve_, second.loss_curve_)
    monkeypatch.setattr(_cuda_losses, "applies", lambda *args: False)  # autograd's loss
    reference = estimator(**common).fit(X, y)
    np.testing.assert_allclose(first.loss_curve_, reference.loss_curve_, rtol=1e-8)
    predict = "predict_proba" if estimator is SpectralClassifier else "predict"
    np.testing.assert_allclose(getattr(first, predict)(X), getattr(reference, predict)(X), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_factor_pull_kernel_adds_autograds_gradient_to_the_bit(dtype):
    """add_factor_pull on the GPU: the gradient autograd's term adds, to the bit (factors at 0 get none),
    onto what the backward left; its value to rounding; replayed from a CUDA graph on new factors."""
    g = torch.Generator().manual_seed(5)
    scales = torch.nn.Parameter(torch.randn(3, 1500, generator=g, dtype=dtype).cuda())
    with torch.no_grad():
        scales[:, ::7] = 0.0
    before = torch.randn(3, 1500, generator=g, dtype=dtype).cuda()
    data_loss, factor_l1 = torch.tensor(0.41, dtype=dtype, device="cuda"), 2e-3
    leaf = scales.detach().clone().requires_grad_()
    leaf.grad = before.clone()
    expected = (factor_l1 * data_loss) * leaf.abs().sum()
    expected.backward()
    scales.grad = before.clone()
    value = _cuda_losses.add_factor_pull(scales, data_loss, factor_l1)
    assert value.is_cuda and value.dim() == 0 and torch.equal(scales.grad, leaf.grad)
    torch.testing.assert_close(value, expected.detach(), **_ROUNDING[dtype])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        scales.grad.copy_(before)
        replayed = _cuda_losses.add_factor_pull(scales, data_loss, factor_l1)
    with torch.no_grad():
        scales.mul_(-1.0)
    graph.replay()
    leaf = scales.detach().clone().requires_grad_()
    leaf.grad = before.clone()
    expected = (factor_l1 * data_loss) * leaf.abs().sum()
    expected.backward()
    assert torch.equal(scales.grad, leaf.grad)
    torch.testing.assert_close(replayed, expected.detach(), **_ROUNDING[dtype])


@pytest.mark.parametrize("estimator, params", [(SpectralRegressor, dict()), (SpectralRegressor, dict(alpha=1e-2)),
                                               (SpectralClassifier, dict())])
def test_a_cuda_fit_pulls_the_factors_apart_from_autograd_as_autograd_does(monkeypatch, estimator, params):
    """A CUDA fit with sharing members adds the factors' pull with its kernel after the backward (not
    through autograd); in float64 its training curve and predictions are those of the pull through
    autograd, to rounding; a float32 fit (the default dtype) trains finite."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 5))
    y = ((X[:, 0] + 0.3 * rng.normal(size=600) > 0).astype(int) if estimator is SpectralClassifier
         else X[:, 0] - X[:, 1] ** 2 + 0.1 * rng.normal(size=600))
    common = dict(device="cuda", dtype="float64", max_iter=4, early_stopping=False, random_state=0,
                  shared_factor_l1=2e-2, **params)
    calls = []
    kernel = _cuda_losses.add_factor_pull
    monkeypatch.setattr(_cuda_losses, "add_factor_pull", lambda *a: (calls.append(1), kernel(*a))[1])
    apart = estimator(**common).fit(X, y)
    assert apart.n_shared_members_ > 0 and calls  # (a captured step calls it once, then replays it)
    float32 = estimator(**{**common, "dtype": "float32"}).fit(X, y)
    assert np.isfinite(float32.loss_curve_).all()
    monkeypatch.setattr(_losses.Penalty, "pulls_apart_on", lambda self, device: False)
    calls.clear()
    through_autograd = estimator(**common).fit(X, y)
    assert not calls
    np.testing.assert_allclose(apart.loss_curve_, through_autograd.loss_curve_, rtol=1e-9)
    predict = "predict_proba" if estimator is SpectralClassifier else "predict"
    np.testing.assert_allclose(getattr(apart, predict)(X), getattr(through_autograd, predict)(X), rtol=1e-7,
                               atol=1e-9)
