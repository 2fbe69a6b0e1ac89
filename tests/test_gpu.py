"""CUDA-only behaviour: streams, devices, no host sync, estimators on the GPU.

Skipped without CUDA (CI); run on a GPU before calling GPU work done."""

import pickle

import numpy as np
import pytest
import torch

from skspectral import SpectralRegressor, kth_eigvalsh, resolve_backend

from .conftest import available_backends, requires_cuda

pytestmark = requires_cuda


def _sym(batch, n, dtype=torch.float32, device="cuda", seed=0):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    return ((G + G.mT) / 2).to(dtype=dtype, device=device)


@pytest.mark.parametrize("backend", available_backends("cuda"))
def test_result_is_ready_on_a_side_stream(backend):
    A = _sym(2048, 45)
    ref = torch.linalg.eigvalsh(A.double().cpu())[:, 11]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            # long work queued first: a result read off the wrong stream would be stale
            B = A @ A
            out = kth_eigvalsh(A, 11, backend=backend)
            consumed = out * 2.0  # used on torch's stream at once
        host = consumed.cpu()
    torch.testing.assert_close(host.double() / 2, ref, atol=1e-4, rtol=1e-5)
    del B


@pytest.mark.parametrize("backend", [b for b in available_backends("cuda") if b != "torch"])
def test_forward_backward_do_not_synchronise(backend):  # torch.linalg itself syncs to check errors
    A = _sym(256, 45).requires_grad_(True)
    kth_eigvalsh(A, 3, backend=backend).sum().backward()  # warm-up: module loads, handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        A.grad = None
        out = kth_eigvalsh(A, 3, backend=backend)
        out.sum().backward()
        with torch.no_grad():
            kth_eigvalsh(A, 3, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert A.grad is not None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", available_backends("cuda"))
def test_second_device(backend):
    A = _sym(64, 40, device="cuda:1").requires_grad_(True)
    out = kth_eigvalsh(A, 5, backend=backend)
    assert out.device == torch.device("cuda:1")
    out.sum().backward()
    assert A.grad.device == torch.device("cuda:1")
    torch.testing.assert_close(out.detach().double().cpu(), torch.linalg.eigvalsh(A.detach().double().cpu())[:, 5], atol=1e-4, rtol=1e-5)


def test_auto_backend_on_cuda():
    name = resolve_backend("cuda", 45, torch.float32)
    assert name in available_backends("cuda")
    if "kernel" in available_backends("cuda"):
        assert name == "kernel" and resolve_backend("cuda", 100, torch.float32, 4096) == "cupy"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_forward_backward_replay_from_a_cuda_graph(dtype):
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    static = _sym(512, 45, dtype=dtype, seed=1).requires_grad_(True)
    grad_out = torch.linspace(-1, 1, 512, device="cuda", dtype=dtype)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: module load, compilation
        kth_eigvalsh(static, 7, backend="kernel").backward(grad_out)
    torch.cuda.current_stream().wait_stream(side)
    static.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        value = kth_eigvalsh(static, 7, backend="kernel")
        value.backward(grad_out)
    for seed in (2, 3):  # new matrices in the static input: the replay must see them
        with torch.no_grad():
            static.copy_(_sym(512, 45, dtype=dtype, seed=seed))
        graph.replay()
        M = static.detach().double().cpu()
        evals, evecs = torch.linalg.eigh(M)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(value.double().cpu(), evals[:, 7], atol=tol, rtol=tol)
        q = evecs[:, :, 7]
        expected = grad_out.double().cpu()[:, None, None] * q[:, :, None] * q[:, None, :]
        torch.testing.assert_close(static.grad.double().cpu(), expected, atol=10 * tol, rtol=10 * tol)


def test_cuda_fit_replays_the_step_from_a_cuda_graph(data, monkeypatch):
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    X, y = data
    replays = []
    original = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), original(self))[1])
    params = dict(dim=8, max_iter=4, random_state=0, dtype="float64", shuffle=True, batch_size=64)
    graphed = SpectralRegressor(device="cuda", **params).fit(X, y)
    assert graphed.backend_ == "kernel"
    # 600 rows in batches of 64: 10 steps per epoch, 3 eager warm-up steps, the rest replayed
    assert len(replays) == 4 * 10 - 3
    eager = SpectralRegressor(device="cuda", backend="cupy", **params).fit(X, y)
    np.testing.assert_allclose(graphed.predict(X), eager.predict(X), rtol=1e-5, atol=1e-5 * np.std(y))
    assert graphed.t_ == eager.t_ == 40


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(600, 6)) * [1, 10, 100, 0.1, 1, 5]
    y = np.sin(X[:, 0]) + 0.01 * X[:, 1] ** 2 + X[:, 3] * 3 + 0.1 * rng.normal(size=600)
    return X, y


def test_fit_predict_on_cuda_close_to_cpu(data):
    X, y = data
    # float64 on both; training amplifies rounding differences, so few epochs
    params = dict(dim=8, max_iter=5, random_state=0, dtype="float64", shuffle=False)
    gpu = SpectralRegressor(device="cuda", **params).fit(X, y)
    cpu = SpectralRegressor(device="cpu", **params).fit(X, y)
    assert gpu.device_.startswith("cuda") and cpu.device_ == "cpu"
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-5, atol=1e-5 * np.std(y))
    long_fit = SpectralRegressor(device="cuda", dim=8, max_iter=40, learning_rate_init=0.02, random_state=0).fit(X, y)
    assert long_fit.score(X, y) > 0.8


def test_cuda_fitted_pickle_predicts_on_cpu(data, monkeypatch):
    X, y = data
    est = SpectralRegressor(dim=8, max_iter=5, random_state=0, device="cuda").fit(X, y)
    expected = est.predict(X)
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(blob)
    assert loaded._predict_device()[0].type == "cpu"
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=1e-4, atol=1e-5)


def test_classifier_on_cuda_and_pickled_to_cpu(monkeypatch):
    from sklearn.datasets import load_iris

    from skspectral import SpectralClassifier

    X, y = load_iris(return_X_y=True)
    est = SpectralClassifier(dim=5, max_iter=60, learning_rate_init=0.02, random_state=0, device="cuda").fit(X, y)
    assert est.device_.startswith("cuda") and est.score(X, y) > 0.9
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    blob = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    np.testing.assert_allclose(pickle.loads(blob).predict_proba(X), proba, rtol=1e-4, atol=1e-6)
