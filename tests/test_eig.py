"""kth_eigvalsh and the backend registry: values, gradients, errors; on CPU and,
where present, CUDA (tests marked ``cuda`` need a GPU: streams, no host sync,
graph capture, the fused kernel's accuracy)."""

import dataclasses
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from skspectral import kth_eigvalsh, resolve_backend
from skspectral.eig import REGISTRY, EigenBackend, _api, _torch_backend, select_backend

from .conftest import DEVICES, available_backends

CASES = [(d, b) for d in DEVICES for b in available_backends(d)]
TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


def random_symmetric(shape, n, dtype, device, generator):
    G = torch.randn(*shape, n, n, dtype=torch.float64, generator=generator)
    return ((G + G.mT) / 2).to(dtype=dtype, device=device)


def reference(A, k, lower=True):
    return torch.linalg.eigvalsh(A.double().cpu(), UPLO="L" if lower else "U")[..., k]


def assert_close_to_reference(got, A, k, lower=True):
    ref = reference(A, k, lower)
    assert got.shape == ref.shape and got.dtype == A.dtype and got.device == A.device
    # relative to the matrix scale: eigenvalues near 0 have no relative accuracy
    scale = torch.linalg.matrix_norm(A.double().cpu(), ord=2).clamp_min(1.0) if A.numel() else 1.0
    err = ((got.double().cpu() - ref).abs() / scale).max() if ref.numel() else 0.0
    assert err <= TOL[A.dtype] * max(1, A.shape[-1]) ** 0.5, f"error {err}"


@pytest.mark.parametrize("device,backend", CASES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.sampled_from([1, 2, 3, 8, 16, 31, 33, 45, 64, 100, 128]),
    batch_shape=st.sampled_from([(), (1,), (5,), (3, 4), (2, 0)]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    k_frac=st.floats(0, 0.999),
    negative=st.booleans(),
    lower=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_values_match_float64_reference(device, backend, n, batch_shape, dtype, k_frac, negative, lower, seed):
    assume(backend != "kernel" or n <= 64)
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch_shape, n, n, dtype=torch.float64, generator=g).to(dtype=dtype, device=device)
    k = int(k_frac * n) - (n if negative else 0)
    # non-symmetric input on purpose: only one triangle may be read
    got = kth_eigvalsh(A, k, lower=lower, backend=backend)
    assert_close_to_reference(got, A, k, lower)


@pytest.mark.parametrize("device,backend", CASES)
def test_large_batch_through_cpu_pool_matches_reference(device, backend):
    g = torch.Generator().manual_seed(0)
    A = random_symmetric((300,), 45, torch.float64, device, g)
    assert_close_to_reference(kth_eigvalsh(A, 7, backend=backend), A, 7)
    A.requires_grad_(True)
    assert_close_to_reference(kth_eigvalsh(A, -3, backend=backend).detach(), A.detach(), -3)


def test_cpu_pool_is_used_and_agrees_with_inline(monkeypatch):
    g = torch.Generator().manual_seed(1)
    A = random_symmetric((64,), 30, torch.float64, "cpu", g)
    pooled = kth_eigvalsh(A, 3)
    monkeypatch.setattr(_torch_backend, "_PARALLEL_MIN_WORK", float("inf"))
    inline = kth_eigvalsh(A, 3)
    torch.testing.assert_close(pooled, inline, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device,backend", CASES)
def test_non_contiguous_input(device, backend):
    g = torch.Generator().manual_seed(2)
    A = random_symmetric((6,), 40, torch.float64, device, g).transpose(0, 1)[:, ::2]  # (40, 3, 40) view
    A = A.transpose(0, 1)  # (3, 40, 40), not contiguous
    assert not A.is_contiguous()
    assert_close_to_reference(kth_eigvalsh(A, 5, backend=backend), A, 5)


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("n,k", [(5, 2), (12, -1), (40, 0), (45, 22)])
def test_gradcheck_simple_eigenvalues(device, backend, n, k):
    g = torch.Generator().manual_seed(n)
    M = torch.randn(2, n, n, dtype=torch.float64, generator=g, device="cpu").to(device).requires_grad_(True)

    def f(M):  # the op reads one triangle but returns the symmetric gradient
        return kth_eigvalsh((M + M.mT) / 2, k, backend=backend)

    assert torch.autograd.gradcheck(f, (M,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("device,backend", CASES)
def test_gradient_matches_torch_eigvalsh(device, backend):
    g = torch.Generator().manual_seed(3)
    A = random_symmetric((4,), 20, torch.float64, device, g).requires_grad_(True)
    (kth_eigvalsh(A, 6, backend=backend) * torch.arange(1.0, 5.0, dtype=A.dtype, device=device)).sum().backward()
    B = A.detach().clone().requires_grad_(True)
    (torch.linalg.eigvalsh(B)[:, 6] * torch.arange(1.0, 5.0, dtype=A.dtype, device=device)).sum().backward()
    torch.testing.assert_close(A.grad, B.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_eigenvalue_gives_clarke_element(device, backend, dtype):
    g = torch.Generator().manual_seed(4)
    n, k = 9, 4
    Q, _ = torch.linalg.qr(torch.randn(3, n, n, dtype=torch.float64, generator=g))
    spectrum = torch.tensor([-3.0, -2.0, -1.0, 0.5, 1.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)  # k=4 is double
    A = (Q * spectrum) @ Q.mT
    A = A.to(dtype=dtype, device=device).requires_grad_(True)
    upstream = torch.tensor([1.0, -2.0, 0.5], dtype=dtype, device=device)
    value = kth_eigvalsh(A, k, backend=backend)
    torch.testing.assert_close(value.double().cpu(), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    (value * upstream).sum().backward()
    G = A.grad.double().cpu()
    u = upstream.double().cpu()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(G, G.mT, atol=tol, rtol=0)
    torch.testing.assert_close(torch.diagonal(G, dim1=-2, dim2=-1).sum(-1), u, atol=tol, rtol=0)
    for Gi, ui in zip(G, u):
        eig = torch.linalg.eigvalsh(Gi / ui)  # rank one PSD: one eigenvalue 1, the rest 0
        torch.testing.assert_close(eig, torch.cat([torch.zeros(n - 1), torch.ones(1)]).double(), atol=tol * 10, rtol=0)
    # Clarke: G/u = q q^T with q in the eigenspace of lambda=1, so (A - I) G = 0
    residual = (A.detach().double().cpu() - torch.eye(n, dtype=torch.float64)) @ (G / u[:, None, None])
    assert residual.abs().max() < tol * 100


def test_backends_agree_up_to_sign_on_cuda():
    pytest.importorskip("cupy")
    if "cuda" not in DEVICES or len(available_backends("cuda")) < 2:
        pytest.skip("needs CUDA and CuPy")
    g = torch.Generator().manual_seed(5)
    A = random_symmetric((64,), 45, torch.float64, "cuda", g)
    grads = []
    values = []
    for backend in ("torch", "cupy"):
        X = A.clone().requires_grad_(True)
        v = kth_eigvalsh(X, 20, backend=backend)
        v.sum().backward()
        values.append(v.detach())
        grads.append(X.grad)  # q q^T: independent of the eigenvector's sign
    torch.testing.assert_close(values[0], values[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("device,backend", CASES)
def test_without_grad_only_eigenvalues_are_computed(device, backend, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eigenvectors computed without grad")

    monkeypatch.setitem(_api.REGISTRY, backend, dataclasses.replace(REGISTRY[backend], eigh_k=forbidden))
    A = random_symmetric((3,), 10, torch.float64, device, torch.Generator().manual_seed(6))
    kth_eigvalsh(A, 2, backend=backend)
    with torch.no_grad():
        kth_eigvalsh(A.requires_grad_(True), 2, backend=backend)


def test_double_backward_is_a_clear_error():
    A = random_symmetric((2,), 6, torch.float64, "cpu", torch.Generator().manual_seed(7)).requires_grad_(True)
    with pytest.raises(RuntimeError, match="differentiable once: double backward"):
        torch.autograd.grad(kth_eigvalsh(A, 1).sum(), A, create_graph=True)


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("k", [2, [4, 0]])
def test_torch_func_transforms_and_forward_mode_give_the_op_and_its_first_derivative(device, backend, k):
    """vmap, grad, per-sample gradients (vmap of grad), jvp, jacrev, jacfwd and forward-mode dual tensors:
    the batched op's values and autograd's gradient. Before, every transform raised (or, for dual tensors,
    the tangent was silently lost), and vmap's error spoke of data-dependent control flow."""
    from torch.autograd import forward_ad
    from torch.func import grad, jacfwd, jacrev, jvp, vmap

    g = torch.Generator().manual_seed(11)
    A = random_symmetric((5, 3), 6, torch.float64, device, g)
    T = random_symmetric((5, 3), 6, torch.float64, device, g)

    def f(M):
        return kth_eigvalsh(M, k, backend=backend)

    def loss(M):
        return (f(M) ** 2).sum()

    values = f(A)
    torch.testing.assert_close(vmap(f)(A), values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vmap(f, in_dims=1, out_dims=1)(A), values, rtol=1e-12, atol=1e-12)
    X = A.clone().requires_grad_(True)
    loss(X).backward()
    torch.testing.assert_close(grad(loss)(A), X.grad, rtol=1e-12, atol=1e-12)
    per_sample = vmap(grad(loss))(A)  # each of the 5 groups' gradient: the groups do not interact
    torch.testing.assert_close(per_sample, X.grad, rtol=1e-12, atol=1e-12)
    _, tangent = jvp(f, (A,), (T,))
    # <d lambda_j / dA, T> from autograd, index by index
    columns = values.unsqueeze(-1) if isinstance(k, int) else values
    for j in range(columns.shape[-1]):
        X = A.clone().requires_grad_(True)
        picked = f(X) if isinstance(k, int) else f(X)[..., j]
        (gradient,) = torch.autograd.grad(picked.sum(), X)
        expected = (gradient * T).sum((-1, -2))
        torch.testing.assert_close(tangent if isinstance(k, int) else tangent[..., j], expected, rtol=1e-10,
                                   atol=1e-12)
    with forward_ad.dual_level():
        dual = forward_ad.unpack_dual(f(forward_ad.make_dual(A, T))).tangent
    torch.testing.assert_close(dual, tangent, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jacrev(f)(A[0, 0]), jacfwd(f)(A[0, 0]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("second", ["hessian", "jacrev(jacrev)", "jacfwd(jacfwd)", "jacrev(jacfwd)", "grad(grad)"])
def test_a_second_derivative_under_torch_func_is_a_clear_error(second):
    """q_k's own derivative needs the other eigenpairs: each way to a second derivative is refused (it
    would otherwise treat q_k as constant and return a wrong Hessian without a word)."""
    from torch.func import grad, hessian, jacfwd, jacrev

    A = random_symmetric((), 6, torch.float64, "cpu", torch.Generator().manual_seed(12))

    def f(M):
        return kth_eigvalsh(M, 2).sum()

    transform = {"hessian": hessian(f), "jacrev(jacrev)": jacrev(jacrev(f)), "jacfwd(jacfwd)": jacfwd(jacfwd(f)),
                 "jacrev(jacfwd)": jacrev(jacfwd(f)), "grad(grad)": grad(lambda M: grad(f)(M).sum())}[second]
    with pytest.raises(RuntimeError, match="differentiable once"):
        transform(A)


@pytest.mark.parametrize("device,backend", CASES)
def test_nan_and_inf_give_nan_for_that_matrix_only(device, backend):
    A = random_symmetric((4,), 35, torch.float64, device, torch.Generator().manual_seed(8))
    A[1, 5, 2] = float("nan")  # lower triangle: read
    A[2, 3, 9] = float("inf")  # upper triangle: ignored with lower=True
    A[3, 9, 3] = float("-inf")
    out = kth_eigvalsh(A, 10, backend=backend)
    assert torch.isnan(out[1]) and torch.isnan(out[3])
    assert torch.isfinite(out[[0, 2]]).all()
    Ad = A.clone()
    Ad[2, 3, 9] = 0.0
    assert_close_to_reference(out[[0, 2]], Ad[[0, 2]], 10)
    X = A.clone().requires_grad_(True)
    kth_eigvalsh(X, 10, backend=backend).sum().backward()
    assert torch.isnan(X.grad[1]).all() and torch.isfinite(X.grad[0]).all()


def test_empty_batch_and_one_by_one():
    A = torch.zeros(0, 4, 4, requires_grad=True)
    out = kth_eigvalsh(A, 1)
    assert out.shape == (0,)
    out.sum().backward()
    assert A.grad.shape == A.shape
    B = torch.tensor([[[3.5]], [[-1.0]]], dtype=torch.float64)
    torch.testing.assert_close(kth_eigvalsh(B, 0), torch.tensor([3.5, -1.0], dtype=torch.float64))
    torch.testing.assert_close(kth_eigvalsh(B, -1), torch.tensor([3.5, -1.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "A,k,kwargs,error,match",
    [
        (torch.ones(3), 0, {}, ValueError, "square"),
        (torch.ones(3, 4), 0, {}, ValueError, "square"),
        (torch.ones(2, 3, 3, dtype=torch.int64), 0, {}, ValueError, "float32 or float64"),
        (torch.ones(3, 3, dtype=torch.complex64), 0, {}, ValueError, "float32 or float64"),
        (torch.ones(3, 3, dtype=torch.float16), 0, {}, ValueError, "float32 or float64"),
        (torch.ones(3, 3), 3, {}, ValueError, r"out of range .* \[-3, 2\]"),
        (torch.ones(3, 3), -4, {}, ValueError, "out of range"),
        (torch.ones(3, 3), 1.0, {}, TypeError, "integer"),
        (torch.ones(3, 3), True, {}, TypeError, "integer"),
        (torch.ones(3, 3), np.True_, {}, TypeError, "integer"),
        (torch.ones(3, 3), torch.tensor(True), {}, TypeError, "integer"),
        (torch.ones(3, 3), torch.tensor(1.0), {}, TypeError, "integer"),
        (torch.ones(3, 3), torch.tensor([0, 1]), {}, TypeError, "integer"),
        (torch.ones(3, 3), torch.tensor(3), {}, ValueError, "out of range"),
        (np.ones((3, 3)), 0, {}, TypeError, "torch.as_tensor"),
        (torch.ones(3, 3), 0, {"backend": "magma"}, ValueError, "backend must be one of"),
        (torch.ones(3, 3), 0, {"backend": "cupy"}, ValueError, "CUDA tensors"),
        (torch.ones(3, 3), 0, {"backend": "kernel"}, ValueError, "CUDA tensors"),
        (torch.ones(3, 3), 0, {"backend": None}, ValueError, "backend must be one of"),
        (torch.ones(3, 3), 0, {"lower": "L"}, TypeError, "lower"),
    ],
)
def test_errors(A, k, kwargs, error, match):
    with pytest.raises(error, match=match):
        kth_eigvalsh(A, k, **kwargs)


@pytest.mark.parametrize("k", [np.int64(-2), np.int32(1), torch.tensor(1), torch.tensor(-2, dtype=torch.int32)])
def test_an_integer_index_of_numpy_or_a_0d_tensor_is_the_python_int(k):
    A = torch.randn(6, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    A = A + A.mT
    torch.testing.assert_close(kth_eigvalsh(A, k), kth_eigvalsh(A, int(k)), rtol=0, atol=0)
    torch.testing.assert_close(kth_eigvalsh(A, int(k)), torch.linalg.eigvalsh(A)[:, int(k)])


def block_import(monkeypatch, module: str) -> None:
    """Make ``import module`` fail for the rest of the test, as where it is not installed."""
    import builtins

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named '{module}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)


def test_cupy_missing_says_which_extra(monkeypatch):
    block_import(monkeypatch, "cupy")
    major = (torch.version.cuda or "").split(".")[0]
    extra = rf"skspectral\[cuda{major}\]" if major in ("12", "13") else r"skspectral\[cuda12\].*skspectral\[cuda13\]"
    for backend in ("cupy", "kernel"):
        with pytest.raises(ImportError, match=rf"backend='{backend}' needs CuPy.*{extra}"):
            select_backend(backend, torch.device("cuda"), 45, torch.float32)


@pytest.fixture
def fresh_cupy_check():
    """CuPy's availability found anew in the test and after it (it is cached for a process)."""
    from skspectral.eig import _cupy_support

    for cached in (_cupy_support.is_available, _cupy_support.unusable_reason):
        cached.cache_clear()
    yield _cupy_support
    for cached in (_cupy_support.is_available, _cupy_support.unusable_reason):
        cached.cache_clear()


def fake_cupy(nvrtc_version):
    """A CuPy that imports and sees one device; ``nvrtc_version()`` stands for its loading of NVRTC."""
    import types

    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
                                 nvrtc=types.SimpleNamespace(getVersion=nvrtc_version))
    return types.SimpleNamespace(__version__="14.0.0", cuda=cuda)


def test_a_cupy_that_cannot_load_nvrtc_counts_as_missing_and_says_why(monkeypatch, fresh_cupy_check):
    """cupy-cuda12x beside a CUDA 13 torch imports and counts the devices, but fails at its first compile:
    the CUDA paths take torch's ops instead, with a warning naming the cause and the extra; a backend asked
    for by name raises it."""
    def missing_library():
        raise RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared "
                           "object file: No such file or directory")

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(missing_library))
    cause = r"CuPy 14.0.0 cannot load NVRTC.*libnvrtc\.so\.12.*skspectral\[cuda1[23]\]"
    with pytest.warns(RuntimeWarning, match=cause):
        assert not fresh_cupy_check.is_available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once a process
        assert not fresh_cupy_check.is_available()
        assert resolve_backend("cuda", 15, torch.float32) == "torch"
    for backend in ("cupy", "kernel"):
        with pytest.raises(RuntimeError, match=rf"backend='{backend}' needs CuPy's kernels, but .*libnvrtc\.so\.12"):
            select_backend(backend, torch.device("cuda"), 15, torch.float32)


@pytest.mark.parametrize("nvrtc", ["loads", "elsewhere"])
def test_a_cupy_that_loads_nvrtc_is_available_without_a_warning(monkeypatch, fresh_cupy_check, nvrtc):
    """Also a CuPy without ``cupy.cuda.nvrtc`` (not judged: only a failed load turns CuPy off)."""
    cupy = fake_cupy(lambda: (13, 0))
    if nvrtc == "elsewhere":
        del cupy.cuda.nvrtc
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fresh_cupy_check.is_available()
        assert fresh_cupy_check.require_cupy("backend='kernel'") is cupy


def test_resolve_backend_on_cpu():
    cpu_kernel = "numba" if REGISTRY["numba"].is_available() else "torch"
    assert resolve_backend("cpu", 45, torch.float32) == cpu_kernel
    assert resolve_backend(torch.device("cpu"), 3, torch.float64) == cpu_kernel
    assert resolve_backend("cpu", 65, torch.float64) == "torch"
    assert resolve_backend("cpu", 45, torch.float64, batch_size=1) == "torch"  # one matrix: LAPACK
    assert resolve_backend("cpu", 8, torch.float64, batch_size=16) == "torch"  # too little work
    assert resolve_backend("cpu", 15, torch.float64, batch_size=200) == cpu_kernel


def test_cpu_kernel_threads_agree_with_one_thread(monkeypatch):
    from skspectral.eig import _numba_backend, _numba_support

    if not _numba_backend.is_available():
        pytest.skip("needs Numba")
    A = random_symmetric((257,), 12, torch.float64, "cpu", torch.Generator().manual_seed(12))
    parallel = _numba_backend.eigh_k(A, 5, True)
    monkeypatch.setattr(_numba_support, "PARALLEL_MIN_WORK", float("inf"))
    serial = _numba_backend.eigh_k(A, 5, True)
    for a, b in zip(parallel, serial):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_without_numba_auto_falls_back_to_torch_with_one_warning(monkeypatch):
    from skspectral.eig import _numba_backend, _numba_support

    block_import(monkeypatch, "numba")
    for cached in (_numba_support.numba_module, _numba_backend._numba, _numba_backend._kernels):
        cached.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="falls back to torch.linalg") as record:
            assert resolve_backend("cpu", 15) == "torch"
            assert resolve_backend("cpu", 15) == "torch"
        assert len(record) == 1
        with pytest.raises(ImportError, match="backend='numba' needs Numba"):
            kth_eigvalsh(torch.eye(3), 0, backend="numba")
    finally:
        for cached in (_numba_support.numba_module, _numba_backend._numba, _numba_backend._kernels):
            cached.cache_clear()


def test_a_cpu_kernel_whose_simd_probe_fails_falls_back_to_torch_with_a_warning(monkeypatch):
    """The backend's start-up check runs the SIMD building blocks (not a whole kernel: compiling one
    costs tens of seconds); where they compute wrongly here, "auto" takes torch.linalg and says why."""
    from skspectral.eig import _numba_backend

    if not _numba_backend.is_available():
        pytest.skip("needs Numba")
    from skspectral.eig import _numba_kernels

    monkeypatch.setattr(_numba_kernels, "simd_probe", lambda values: values.__setitem__(0, np.nan))
    _numba_backend._kernels.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="SIMD probe computed .* falls back to torch.linalg"):
            assert resolve_backend("cpu", 15) == "torch"
    finally:
        monkeypatch.undo()
        _numba_backend._kernels.cache_clear()
    assert resolve_backend("cpu", 15) == "numba"


def test_model_gradients_flow_through_batch_dims():
    """(batch, outputs, n, n) as the classifier uses it: each matrix gets its own g q_k q_k^T."""
    g = torch.Generator().manual_seed(9)
    A = random_symmetric((5, 3), 7, torch.float64, "cpu", g).requires_grad_(True)
    out = kth_eigvalsh(A, 3)
    assert out.shape == (5, 3)
    weights = torch.arange(15, dtype=torch.float64).reshape(5, 3) - 7.0  # a different g for every matrix
    (out * weights).sum().backward()
    q = torch.linalg.eigh(A.detach())[1][..., 3]
    expected = weights[..., None, None] * q[..., :, None] * q[..., None, :]
    torch.testing.assert_close(A.grad, expected, rtol=1e-9, atol=1e-10)


# ---- the registry: what a backend declares is all the rest of the package reads -------------
def test_registry_declares_devices_limits_and_capture_safety():
    assert list(REGISTRY) == ["kernel", "cupy", "numba", "torch"]  # the order "auto" considers them in
    assert REGISTRY["torch"].device_types == {"cpu", "cuda"} and REGISTRY["torch"].max_n is None
    assert REGISTRY["kernel"].device_types == {"cuda"} and REGISTRY["kernel"].max_n == 64
    assert REGISTRY["kernel"].capture_safe and not REGISTRY["cupy"].capture_safe and not REGISTRY["torch"].capture_safe
    assert REGISTRY["kernel"].supports("cuda", 64) and not REGISTRY["kernel"].supports("cuda", 65)
    assert not REGISTRY["cupy"].supports("cpu", 4)
    assert REGISTRY["numba"].device_types == {"cpu"} and not REGISTRY["numba"].capture_safe


def test_a_registered_backend_is_chosen_by_auto_and_its_declarations_reach_the_model(monkeypatch):
    from skspectral import SpectralModel

    calls = []

    def values(A, k, lower):
        calls.append("values")
        return _torch_backend.eigvalsh_k(A, k, lower)

    def pair(A, k, lower):
        calls.append("pair")
        return _torch_backend.eigh_k(A, k, lower)

    fake = EigenBackend(name="fake", eigvalsh_k=values, eigh_k=pair, device_types=frozenset({"cpu"}),
                        max_n=8, capture_safe=True)
    monkeypatch.setattr(_api, "REGISTRY", {"fake": fake, **REGISTRY})
    monkeypatch.setattr(_api, "BACKENDS", ("auto", *_api.REGISTRY))
    assert resolve_backend("cpu", 8) == "fake" and resolve_backend("cpu", 9) != "fake"
    A = random_symmetric((3,), 6, torch.float64, "cpu", torch.Generator().manual_seed(11)).requires_grad_(True)
    assert_close_to_reference(kth_eigvalsh(A, 2).detach(), A.detach(), 2)
    kth_eigvalsh(A, 2).sum().backward()
    assert calls == ["pair", "pair"]
    model = SpectralModel(2, 6, dtype=torch.float64)
    assert model.eigen_backend is fake and model.capture_safe
    with pytest.raises(ValueError, match="handles n <= 8"):
        kth_eigvalsh(torch.eye(9, dtype=torch.float64), 0, backend="fake")


# ---- CUDA: streams, synchronisation, devices, graphs, the fused kernel's accuracy ---------------
def _sym_cuda(batch, n, dtype=torch.float32, device="cuda", seed=0):
    return random_symmetric((batch,), n, dtype, device, torch.Generator().manual_seed(seed))


@pytest.mark.cuda
@pytest.mark.parametrize("backend", available_backends("cuda"))
def test_result_is_ready_on_a_side_stream(backend):
    A = _sym_cuda(2048, 45)
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


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cupy", "kernel"])
def test_forward_backward_do_not_synchronise(backend):  # torch.linalg itself syncs to check errors
    if backend not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    A = _sym_cuda(256, 45).requires_grad_(True)
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


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", ["torch", "cupy", "kernel"])
def test_second_device(backend):
    if backend not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    A = _sym_cuda(64, 40, device="cuda:1").requires_grad_(True)
    out = kth_eigvalsh(A, 5, backend=backend)
    assert out.device == torch.device("cuda:1")
    out.sum().backward()
    assert A.grad.device == torch.device("cuda:1")
    expected = torch.linalg.eigvalsh(A.detach().double().cpu())[:, 5]
    torch.testing.assert_close(out.detach().double().cpu(), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.cuda
def test_auto_backend_on_cuda():
    name = resolve_backend("cuda", 45, torch.float32)
    assert name in available_backends("cuda")
    if "kernel" in available_backends("cuda"):
        assert name == "kernel" and resolve_backend("cuda", 100, torch.float32, 4096) == "cupy"
        assert resolve_backend("cuda", 100, torch.float32, 1) == "torch"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_forward_backward_replay_from_a_cuda_graph(dtype):
    if "kernel" not in available_backends("cuda"):
        pytest.skip("needs CuPy")
    static = _sym_cuda(512, 45, dtype=dtype, seed=1).requires_grad_(True)
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
            static.copy_(_sym_cuda(512, 45, dtype=dtype, seed=seed))
        graph.replay()
        M = static.detach().double().cpu()
        evals, evecs = torch.linalg.eigh(M)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(value.double().cpu(), evals[:, 7], atol=tol, rtol=tol)
        q = evecs[:, :, 7]
        expected = grad_out.double().cpu()[:, None, None] * q[:, :, None] * q[:, None, :]
        torch.testing.assert_close(static.grad.double().cpu(), expected, atol=10 * tol, rtol=10 * tol)


def _hard_matrices(kind, B, n, g):
    """Spectra that stress an eigensolver: clusters, exact repeats, zero, extreme scales."""
    if kind == "random":
        G = torch.randn(B, n, n, dtype=torch.float64, generator=g)
        return (G + G.mT) / 2
    if kind == "diagonal":
        return torch.diag_embed(torch.randn(B, n, dtype=torch.float64, generator=g).round(decimals=1))
    if kind == "zero":
        return torch.zeros(B, n, n, dtype=torch.float64)
    if kind in ("tiny", "huge"):
        return (1e-30 if kind == "tiny" else 1e30) * _hard_matrices("random", B, n, g)
    Q, _ = torch.linalg.qr(torch.randn(B, n, n, dtype=torch.float64, generator=g))
    if kind == "clustered":  # three tight clusters
        lam = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)[torch.arange(n) % 3]
        lam = lam + 1e-6 * torch.randn(B, n, dtype=torch.float64, generator=g)
    elif kind == "repeated":  # two eigenvalues, each of multiplicity ~n/2
        lam = torch.where(torch.arange(n) < n // 2, 2.0, -0.5).to(torch.float64).expand(B, n)
    else:  # near_singular: one eigenvalue ~1e-7 of the others
        lam = torch.randn(B, n, dtype=torch.float64, generator=g)
        lam[:, 0] = 1e-7
    return (Q * lam[:, None, :]) @ Q.mT


@pytest.mark.parametrize("device,backend", [pytest.param("cuda", "kernel", marks=pytest.mark.cuda), ("cpu", "numba")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 4, 8, 15, 32, 33, 45, 64])
def test_kernel_accuracy_on_hard_spectra(device, backend, dtype, n):
    """Eigenvalue error and eigenvector residual relative to ||M||_2, against float64 LAPACK: the
    CUDA kernel and the CPU's (its SIMD lanes: 256 matrices fill every lane position)."""
    if backend not in available_backends(device):
        pytest.skip(f"{backend} is not available on {device}")
    g = torch.Generator().manual_seed(n)
    tol, residual_tol = (1e-5, 1e-4) if dtype == torch.float32 else (1e-12, 1e-10)
    kinds = ["random", "clustered", "repeated", "diagonal", "zero", "near_singular"]
    kinds += ["tiny", "huge"] if dtype == torch.float64 else []  # 1e+-30 squared leaves fp32's range
    for kind in kinds:
        M = _hard_matrices(kind, 256, n, g)
        scale = torch.linalg.matrix_norm(M, ord=2).clamp_min(torch.finfo(torch.float64).tiny)
        for k in (0, n // 2, n - 1):
            ref = torch.linalg.eigvalsh(M)[:, k]
            X = M.to(dtype=dtype, device=device, copy=True).requires_grad_(True)
            value = kth_eigvalsh(X, k, backend=backend)
            value.sum().backward()
            lam = value.detach().double().cpu()
            assert ((lam - ref).abs() / scale).max() <= tol, (kind, k)
            # the gradient is q q^T: its trace is |q|^2, and its column j is q_j q; with j the
            # largest diagonal entry, column / sqrt(q_j^2) is q up to its sign
            grad = X.grad.double().cpu()
            diagonal = grad.diagonal(dim1=-2, dim2=-1)
            assert ((diagonal.sum(-1) - 1).abs() <= residual_tol).all(), (kind, k)
            j = diagonal.argmax(-1)
            q = grad[torch.arange(len(grad)), :, j] / diagonal[torch.arange(len(grad)), j, None].sqrt()
            if kind != "zero":
                residual = ((M @ q[:, :, None])[:, :, 0] - lam[:, None] * q).norm(dim=1) / scale
                assert residual.max() <= residual_tol, (kind, k, residual.max())
            without_grad = kth_eigvalsh(X.detach(), k, backend=backend).double().cpu()
            assert ((without_grad - lam).abs() / scale).max() <= tol, (kind, k)


# ---- several indices in one call: one reduction per matrix (issue 23's quantiles) -------------
@pytest.mark.parametrize("device,backend", CASES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 48), batch=st.integers(0, 9), dtype=st.sampled_from([torch.float32, torch.float64]),
       count=st.sampled_from([1, 2, 3, 4, 5, 17, 20]), spread=st.sampled_from(["consecutive", "every other", "any"]),
       repeated=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_several_indices_match_the_reference_and_one_index_at_a_time(device, backend, n, batch, dtype, count,
                                                                       spread, repeated, seed):
    """Values in the order asked (negative indices too) against float64 eigvalsh, equal to one
    call per index, gradients sum_j g_j q_j q_j^T; with a repeated eigenvalue too."""
    rng = np.random.default_rng(seed)
    count = min(count, n)
    step = 2 if spread == "every other" and 2 * count <= n else 1
    indices = ([int(i) for i in rng.choice(n, count, replace=False)] if spread == "any"
               else list(range(n - 1 - step * (count - 1), n, step)))  # evenly spaced: one launch of the kernel
    indices = [i - n if rng.random() < 0.3 else i for i in indices]
    A = random_symmetric((batch,), n, torch.float64, "cpu", torch.Generator().manual_seed(seed % 2**31))
    if repeated and n >= 3:  # eigenvalues 1, 1, ... : a Clarke element, not the unique gradient
        Q = torch.linalg.qr(A)[0]
        values = torch.as_tensor(np.sort(rng.normal(size=(batch, n))))
        values[:, 1] = values[:, 0]
        A = Q @ torch.diag_embed(values) @ Q.mT
        A = (A + A.mT) / 2
    A = A.to(dtype=dtype, device=device)
    got = kth_eigvalsh(A, indices, backend=backend)
    assert got.shape == (batch, count)
    for j, k in enumerate(indices):
        assert_close_to_reference(got[:, j], A, k)
        torch.testing.assert_close(got[:, j], kth_eigvalsh(A, k, backend=backend), rtol=0, atol=TOL[dtype] * n)
    if dtype == torch.float64 and batch and not repeated:
        g = torch.as_tensor(rng.normal(size=(batch, count)), device=device)
        leaf = A.clone().requires_grad_(True)
        (kth_eigvalsh(leaf, indices, backend=backend) * g).sum().backward()
        one_by_one = A.clone().requires_grad_(True)
        sum((kth_eigvalsh(one_by_one, k, backend=backend) * g[:, j]).sum() for j, k in enumerate(indices)).backward()
        torch.testing.assert_close(leaf.grad, one_by_one.grad, rtol=1e-7, atol=1e-8)


@pytest.mark.cuda
@pytest.mark.parametrize("several_max_n", [0, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 15, 16, 17, 33, 64])
def test_kernel_several_indices_side_by_side_or_one_by_one(monkeypatch, several_max_n, dtype, n):
    """The CUDA kernel's two ways with several indices, whatever n: side by side (compiled with
    SEVERAL; 16 indices at a time, so 20 take two rounds) or one after the other. Values as the
    float64 reference's, unit eigenvectors with small residuals, in the order asked."""
    from skspectral.eig import _kernel_backend

    monkeypatch.setattr(_kernel_backend, "SEVERAL_MAX_N", several_max_n)
    A = random_symmetric((37,), n, dtype, "cuda", torch.Generator().manual_seed(n))
    A[3] = 0.0  # the zero matrix: lambda = 0, q = e_k
    A[5, 1, 0] = float("nan")  # a NaN in the triangle read: NaN out
    ks = tuple(range(0, n, max(1, n // 20)))[:20]
    values, vectors = REGISTRY["kernel"].eigh_k(A, ks, True)
    finite = torch.ones(37, dtype=torch.bool)
    finite[5] = False
    assert values[5].isnan().all() and vectors[5].isnan().all()
    for j, k in enumerate(ks):
        assert_close_to_reference(values[finite, j], A[finite], k)
        q = vectors[finite, j].double().cpu()
        M = A[finite].double().cpu()
        lam = values[finite, j].double().cpu()
        scale = torch.linalg.matrix_norm(M, ord=2).clamp_min(1.0)
        residual = ((M @ q[:, :, None])[:, :, 0] - lam[:, None] * q).norm(dim=1) / scale
        assert residual.max() <= 10 * TOL[dtype] * n ** 0.5, (k, residual.max())
        torch.testing.assert_close(q.norm(dim=1), torch.ones(36, dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [2, 3, 8, 15, 16])
@pytest.mark.parametrize("batch", [1, 2, 7, 64])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("several", [False, True])
def test_kernel_two_matrices_a_warp_match_one_a_block(monkeypatch, dtype, n, batch, packed, several):
    """Two matrices a warp (n <= 16, a half-warp each) give what one matrix a block gives: values to
    rounding, unit vectors up to sign, whatever shares the warp -- a NaN matrix (NaN for it alone),
    the zero matrix (0 and e_k exactly), nothing (an odd batch's last block), a zero reflector."""
    from skspectral.eig import _kernel_backend

    A = random_symmetric((batch,), n, torch.float64, "cpu", torch.Generator().manual_seed(batch * 100 + n))
    if batch >= 7:
        A[2] = 0.0  # the zero matrix, its neighbour a random one
        A[5, n - 1, 0] = float("nan")  # NaN in the lower triangle: that matrix alone is NaN
        A[6] = torch.diag(torch.arange(n, dtype=torch.float64))  # diagonal: every reflector is zero
    A = A.to(dtype=dtype, device="cuda")
    ks = tuple(range(0, n, max(1, n // 3)))[:3] if several else n // 2
    rows, cols = torch.tril_indices(n, n)
    P = A[:, rows, cols].contiguous()

    monkeypatch.setattr(_kernel_backend, "PAIRED_SEVERAL", True)  # (a knob: on whatever its default)

    def solve(paired_max_n, want_vector=True):
        monkeypatch.setattr(_kernel_backend, "PAIRED_MAX_N", paired_max_n)
        if packed:
            return _kernel_backend.packed_k(P, n, ks, want_vector)
        return _kernel_backend.eigh_k(A, ks, True) if want_vector else (_kernel_backend.eigvalsh_k(A, ks, True), None)

    paired_values, paired_vectors = solve(16)
    values, vectors = solve(0)
    # without vectors: the same multisection, so the same bits
    assert torch.equal(solve(16, want_vector=False)[0].nan_to_num(7.0), paired_values.nan_to_num(7.0))
    assert paired_values.shape == values.shape and paired_vectors.shape == vectors.shape
    bad = torch.zeros(batch, dtype=torch.bool)
    if batch >= 7:
        bad[5] = True
        assert paired_values[5].isnan().all() and paired_vectors[5].isnan().all()
        assert (paired_values[2] == 0).all()
        expected = torch.eye(n, dtype=dtype, device="cuda")[list(ks) if several else ks]
        assert torch.equal(paired_vectors[2], expected)
    good = ~bad
    assert torch.isfinite(paired_values[good]).all() and torch.isfinite(paired_vectors[good]).all()
    scale = torch.linalg.matrix_norm(A[good].double(), ord=2).clamp_min(1.0)
    scale = scale[:, None] if several else scale
    assert ((paired_values[good].double() - values[good].double()).abs() / scale).max() <= TOL[dtype] * n ** 0.5
    # eigenvalues of these matrices are apart, so the vectors agree up to sign
    overlap = (paired_vectors[good].double() * vectors[good].double()).sum(-1).abs()
    assert (overlap - 1).abs().max() <= 1e3 * TOL[dtype], overlap


@pytest.mark.parametrize("device,backend", CASES)
def test_gradcheck_several_indices(device, backend):
    M = torch.randn(3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)

    def f(M):
        return kth_eigvalsh((M + M.mT) / 2, [2, 3, 7], backend=backend)

    assert torch.autograd.gradcheck(f, (M.requires_grad_(True),), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("k,match", [([1, 1], "distinct"), ([2, -3], "distinct"), ([], "distinct"), ([0, 5], "out of range")])
def test_several_indices_errors(k, match):
    A = torch.eye(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        kth_eigvalsh(A, k)


# ---- the CPU kernel's SIMD lanes: several matrices per vector --------------------------------
def _lane_test_matrix(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    """A float64 n x n test matrix of a kind: random, zero, nan (one entry), repeated (0.5 I), diagonal,
    clustered (three tight clusters) or tiny (random times 1e-30); a random one is drawn first for every kind."""
    A = random_symmetric((), n, torch.float64, "cpu", g)
    if kind == "zero":
        A = torch.zeros(n, n, dtype=torch.float64)
    elif kind == "nan":
        A[n - 1, 0] = float("nan")
    elif kind == "repeated":
        A = torch.eye(n, dtype=torch.float64) * 0.5
    elif kind == "diagonal":
        A = torch.diag(torch.randn(n, generator=g, dtype=torch.float64))
    elif kind == "clustered":
        Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
        spectrum = torch.tensor([(-1.0, 0.0, 1.0)[i % 3] + 1e-7 * i for i in range(n)], dtype=torch.float64)
        A = Q @ torch.diag(spectrum) @ Q.T
    elif kind == "tiny":
        A = A * 1e-30
    return A


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 20), dtype=st.sampled_from([torch.float32, torch.float64]),
       kinds=st.lists(st.sampled_from(["random", "zero", "nan", "repeated", "diagonal"]), min_size=1, max_size=11),
       count=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_cpu_lanes_give_each_matrix_the_bits_it_gets_alone(n, dtype, kinds, count, seed):
    """A matrix's eigenpair does not depend on the matrices sharing its vector (4 float64 or 8
    float32 lanes; batches that leave lanes empty, lanes that are done wait for others): every
    matrix of a batch gets the same bits as in a batch of its own."""
    from skspectral.eig import _numba_backend

    if not _numba_backend.is_available():
        pytest.skip("needs Numba")
    g = torch.Generator().manual_seed(seed)
    batch = torch.stack([_lane_test_matrix(kind, n, g) for kind in kinds]).to(dtype)
    ks = tuple(sorted(set(int(k) for k in torch.randint(0, n, (count,), generator=g))))
    values, vectors = _numba_backend.eigh_k(batch, ks, True)
    for b in range(len(batch)):
        alone_values, alone_vectors = _numba_backend.eigh_k(batch[b : b + 1].contiguous(), ks, True)
        assert torch.equal(values[b : b + 1].nan_to_num(7.0), alone_values.nan_to_num(7.0)), kinds[b]
        assert torch.equal(vectors[b : b + 1].nan_to_num(7.0), alone_vectors.nan_to_num(7.0)), kinds[b]
    for b, kind in enumerate(kinds):
        if kind == "nan":
            assert values[b].isnan().all() and vectors[b].isnan().all()
            continue
        ref = torch.linalg.eigvalsh(batch[b].double())[list(ks)]
        scale = max(torch.linalg.matrix_norm(batch[b].double(), ord=2).item(), 1.0)
        assert ((values[b].double() - ref).abs() / scale).max() <= TOL[dtype] * n**0.5, kind
        if kind == "zero":  # lambda = 0 and q = e_k exactly
            assert torch.equal(vectors[b], torch.eye(n, dtype=dtype)[list(ks)])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), dtype=st.sampled_from([torch.float32, torch.float64]),
       kinds=st.lists(st.sampled_from(["random", "zero", "nan", "repeated", "clustered", "tiny"]), min_size=1,
                      max_size=11),
       count=st.integers(2, 4), seed=st.integers(0, 2**31 - 1))
def test_cpu_several_indices_side_by_side_give_each_index_its_own_bits(n, dtype, kinds, count, seed):
    """Several indices after one reduction run side by side in the CPU kernel (kth_values,
    inverse_iterations, back_transforms: their chains overlap); each index's value and vector have the
    bits of a call with that index alone -- dense and tridiagonal matrices, with and without vectors,
    zero, non-finite, repeated, clustered and tiny matrices, indices in any order of distance."""
    from skspectral.eig import _numba_backend

    if not _numba_backend.is_available():
        pytest.skip("needs Numba")
    g = torch.Generator().manual_seed(seed)
    batch = torch.stack([_lane_test_matrix(kind, n, g) for kind in kinds]).to(dtype)
    ks = tuple(sorted(set(int(k) for k in torch.randint(0, n, (count,), generator=g))))
    if len(ks) < 2:
        ks = tuple(sorted({0, n - 1})) if n > 1 else ks
    assume(len(ks) > 1)
    values, vectors = _numba_backend.eigh_k(batch, ks, True)
    diagonal = batch.diagonal(dim1=-2, dim2=-1).contiguous()
    off = batch.diagonal(offset=-1, dim1=-2, dim2=-1).contiguous()
    for want_vector in (True, False):
        t_values, t_vectors = _numba_backend.tridiagonal_k(diagonal, off, ks, want_vector)
        for j, k in enumerate(ks):
            alone_values, alone_vectors = _numba_backend.eigh_k(batch, k, True)
            assert torch.equal(values[:, j].nan_to_num(7.0), alone_values.nan_to_num(7.0)), (k, kinds)
            assert torch.equal(vectors[:, j].nan_to_num(7.0), alone_vectors.nan_to_num(7.0)), (k, kinds)
            t_alone_values, t_alone_vectors = _numba_backend.tridiagonal_k(diagonal, off, k, want_vector)
            assert torch.equal(t_values[:, j].nan_to_num(7.0), t_alone_values.nan_to_num(7.0)), (k, kinds)
            if want_vector:
                assert torch.equal(t_vectors[:, j].nan_to_num(7.0), t_alone_vectors.nan_to_num(7.0)), (k, kinds)


def test_simd_vectors_compute_what_numpy_computes_element_by_element():
    """Each operation of skspectral.eig._simd on a vector gives numpy's bits in every lane
    (IEEE operations, no fast-math): arithmetic with vectors and numbers, sqrt, abs, copysign,
    min/max as Python's, comparisons into where, any_true / all_true."""
    numba = pytest.importorskip("numba")
    from skspectral.eig._simd import (absolute, all_true, any_true, copysign, lane_count, load, maximum,
                                      minimum, splat, sqrt, store, where)

    @numba.njit
    def apply(a, b, out):
        x, y = load(a, 0), load(b, 0)
        store(out, 0, x + y)
        store(out, 1, x - y)
        store(out, 2, x * y)
        store(out, 3, x / y)
        store(out, 4, sqrt(absolute(x)))
        store(out, 5, copysign(y, x))
        store(out, 6, minimum(x, y))
        store(out, 7, maximum(x, y))
        store(out, 8, where((x < y) | (x == 0.5), x, -y))
        store(out, 9, 2.0 * x - 1)
        store(out, 10, where(~(x >= y) & (y != 0.0), splat(a, 1.0), splat(a, 0.0)))
        return any_true(x > y), all_true(x > y), lane_count(a)

    for dtype in (np.float32, np.float64):
        width = 32 // np.dtype(dtype).itemsize
        rng = np.random.default_rng(0)
        a = rng.standard_normal((1, width)).astype(dtype)
        b = rng.standard_normal((1, width)).astype(dtype)
        a[0, 0], b[0, 1], a[0, 2] = 0.5, -0.0, b[0, 2]
        out = np.zeros((11, width), dtype)
        any_, all_, lanes = apply(a, b, out)
        x, y = a[0], b[0]
        with np.errstate(divide="ignore"):
            quotient = x / y
        expected = [x + y, x - y, x * y, quotient, np.sqrt(np.abs(x)), np.copysign(y, x),
                    np.where(y < x, y, x), np.where(y > x, y, x), np.where((x < y) | (x == 0.5), x, -y),
                    dtype(2.0) * x - dtype(1), np.where(~(x >= y) & (y != 0), 1, 0).astype(dtype)]
        for row, want in enumerate(expected):
            np.testing.assert_array_equal(out[row], want.astype(dtype), err_msg=f"{dtype} row {row}")
        assert (any_, all_, lanes) == ((x > y).any(), (x > y).all(), width)


def test_a_transposed_block_holds_every_rows_element_in_its_lane():
    """_simd.transpose_block: vector k of the output holds element k of each of the width rows (row l in
    lane l), rows read at any offset and stride, every bit moved (NaN, inf and -0.0 too)."""
    numba = pytest.importorskip("numba")
    from skspectral.eig._simd import transpose_block

    @numba.njit
    def transpose(source, offset, stride, out):
        transpose_block(source, offset, stride, out)

    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        width = 32 // np.dtype(dtype).itemsize
        for offset, stride in ((0, width), (3, 11), (5, 2 * width + 1)):
            source = rng.standard_normal(offset + stride * (width - 1) + width).astype(dtype)
            source[offset], source[offset + stride + 1], source[offset + 2 * stride + 2] = np.nan, -np.inf, -0.0
            out = np.zeros(width * width, dtype)
            transpose(source, offset, stride, out)
            rows = np.stack([source[offset + lane * stride: offset + lane * stride + width] for lane in range(width)])
            np.testing.assert_array_equal(out.reshape(width, width).view(np.uint8), rows.T.copy().view(np.uint8))
