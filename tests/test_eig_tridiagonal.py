"""kth_eigvalsh_tridiagonal: values against float64 references, gradients, hard spectra,
errors; every backend with a tridiagonal solver on every device present."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skspectral.eig import REGISTRY, kth_eigvalsh_tridiagonal
from skspectral.eig._tridiagonal import select_tridiagonal_backend

from .conftest import DEVICES

CASES = [(device, name) for device in DEVICES for name, backend in REGISTRY.items()
         if backend.tridiagonal_k is not None and torch.device(device).type in backend.device_types
         and backend.is_available()]
TOL = {torch.float32: 3e-6, torch.float64: 1e-13}


def dense(d, e):
    return torch.diag_embed(d) + torch.diag_embed(e, offset=-1) + torch.diag_embed(e, offset=1)


def assert_matches_reference(got, d, e, k):
    T = dense(d.double().cpu(), e.double().cpu())
    ref = torch.linalg.eigvalsh(T)[..., k]
    scale = torch.linalg.matrix_norm(T, ord=2).clamp_min(1e-300) if T.numel() else 1.0
    assert got.shape == ref.shape and got.dtype == d.dtype and got.device == d.device
    if ref.numel():
        err = ((got.double().cpu() - ref).abs() / scale).max()
        assert err <= TOL[d.dtype] * max(1, d.shape[-1]) ** 0.5, f"relative error {err}"


@pytest.mark.parametrize("device,backend", CASES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.sampled_from([1, 2, 3, 8, 33, 100, 300]),
    batch_shape=st.sampled_from([(), (1,), (7,), (2, 3), (2, 0)]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    k_frac=st.floats(0, 0.999),
    negative=st.booleans(),
    scale=st.sampled_from([1.0, 1e-30, 1e30]),
    seed=st.integers(0, 2**31 - 1),
)
def test_values_match_float64_reference(device, backend, n, batch_shape, dtype, k_frac, negative, scale, seed):
    g = torch.Generator().manual_seed(seed)
    d = (scale * torch.randn(*batch_shape, n, dtype=torch.float64, generator=g)).to(dtype=dtype, device=device)
    e = (scale * torch.randn(*batch_shape, n - 1, dtype=torch.float64, generator=g)).to(dtype=dtype, device=device)
    k = int(k_frac * n) - (n if negative else 0)
    assert_matches_reference(kth_eigvalsh_tridiagonal(d, e, k, backend=backend), d, e, k % n)


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("k", [0, 4, -1])
def test_gradcheck(device, backend, k):
    g = torch.Generator().manual_seed(3)
    d = torch.randn(4, 9, dtype=torch.float64, generator=g).to(device).requires_grad_()
    e = torch.randn(4, 8, dtype=torch.float64, generator=g).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda d, e: kth_eigvalsh_tridiagonal(d, e, k, backend=backend), (d, e))


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_and_clustered_eigenvalues_give_a_valid_pair(device, backend, dtype):
    """Zero off-diagonals split T into blocks with equal eigenvalues; a glued Wilkinson matrix
    has pairs closer than any tolerance. The value is right and the gradient is q q^T for
    a unit eigenvector q (a Clarke element)."""
    n = 12
    split_d = torch.tensor([1.0, 2.0, 1.0, 2.0] * 3)
    split_e = torch.zeros(n - 1)
    wilkinson_d = torch.tensor([abs(i - 10.0) for i in range(21)])  # W21+: pairs within 1e-14
    wilkinson_e = torch.ones(20)
    for d, e in ((split_d, split_e), (wilkinson_d, wilkinson_e)):
        d = d.to(dtype=dtype, device=device).requires_grad_()
        e = e.to(dtype=dtype, device=device).requires_grad_()
        k = d.shape[0] - 1 if d.shape[0] == 21 else 3  # the top pair of W21+ / a repeated 1.0
        value = kth_eigvalsh_tridiagonal(d, e, k, backend=backend)
        assert_matches_reference(value.detach(), d.detach(), e.detach(), k)
        value.backward()
        q2 = d.grad.double().cpu()  # q_j^2
        assert abs(q2.sum() - 1) < 1e-4 and bool((q2 >= 0).all())
        T = dense(d.detach().double().cpu(), e.detach().double().cpu())
        # the gradient is that of a unit eigenvector: <T, q q^T> = lambda
        rayleigh = (T.diagonal() * q2).sum() + (torch.diagonal(T, -1) * e.grad.double().cpu()).sum()
        assert abs(rayleigh - value.item()) < 1e-4 * max(1.0, abs(value.item()))


@pytest.mark.parametrize("device,backend", CASES)
def test_nonfinite_zero_and_one_by_one(device, backend):
    d = torch.tensor([[1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]],
                     dtype=torch.float64, device=device)
    e = torch.tensor([[0.5, 0.5], [0.5, 0.5], [float("inf"), 0.5], [0.0, 0.0]], dtype=torch.float64, device=device)
    d.requires_grad_()
    values = kth_eigvalsh_tridiagonal(d, e, 1, backend=backend)
    assert torch.isfinite(values[0]) and torch.isnan(values[1]) and torch.isnan(values[2]) and values[3] == 0
    values[3].backward()
    torch.testing.assert_close(d.grad[3].cpu(), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # e_k
    one = torch.tensor([[-2.5]], dtype=torch.float32, device=device)
    assert kth_eigvalsh_tridiagonal(one, one[:, :0], 0, backend=backend).item() == -2.5


def test_clear_errors():
    d, e = torch.zeros(3, 5), torch.zeros(3, 4)
    with pytest.raises(ValueError, match="off_diagonal must have shape"):
        kth_eigvalsh_tridiagonal(d, torch.zeros(3, 5), 0)
    with pytest.raises(ValueError, match="float32 or float64"):
        kth_eigvalsh_tridiagonal(d.int(), e, 0)
    with pytest.raises(ValueError, match="out of range"):
        kth_eigvalsh_tridiagonal(d, e, 5)
    with pytest.raises(ValueError, match="same dtype"):
        kth_eigvalsh_tridiagonal(d, e.double(), 0)
    with pytest.raises(ValueError, match="cannot solve tridiagonal"):
        select_tridiagonal_backend("cupy", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        kth_eigvalsh_tridiagonal(d, e, 0, backend="lapack")
    assert select_tridiagonal_backend("auto", "cpu").name == ("numba" if REGISTRY["numba"].is_available() else "torch")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_kernel_matches_numba_and_replays_from_a_cuda_graph(dtype):
    if not any(backend == "kernel" for _, backend in CASES):
        pytest.skip("needs CuPy")
    g = torch.Generator().manual_seed(0)
    d = torch.randn(513, 300, dtype=torch.float64, generator=g)
    e = torch.randn(513, 299, dtype=torch.float64, generator=g)
    reference = kth_eigvalsh_tridiagonal(d, e, 150, backend="torch")
    dc, ec = d.to(dtype).cuda().requires_grad_(), e.to(dtype).cuda().requires_grad_()
    got = kth_eigvalsh_tridiagonal(dc, ec, 150, backend="kernel")
    scale = torch.linalg.matrix_norm(dense(d, e), ord=2)
    assert ((got.double().cpu() - reference).abs() / scale).max() < TOL[dtype] * 300**0.5
    got.sum().backward()
    assert torch.isfinite(dc.grad).all() and torch.isfinite(ec.grad).all()
    # capture forward + backward, then replay on new inputs
    static_d, static_e = dc.detach().clone().requires_grad_(), ec.detach().clone().requires_grad_()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        kth_eigvalsh_tridiagonal(static_d, static_e, 150, backend="kernel").sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    static_d.grad = static_e.grad = None
    with torch.cuda.graph(graph):
        static_value = kth_eigvalsh_tridiagonal(static_d, static_e, 150, backend="kernel")
        static_value.sum().backward()
    with torch.no_grad():
        static_d.mul_(2.0)
        static_e.mul_(2.0)
    graph.replay()
    torch.cuda.synchronize()
    assert ((static_value.double().cpu() - 2 * reference).abs() / (2 * scale)).max() < TOL[dtype] * 300**0.5


@pytest.mark.parametrize("n", [1, 6, 80])
def test_torch_func_transforms_and_forward_mode_solve_the_dense_matrices(n):
    """(vmap raised torch's error about data-dependent control flow, and a dual tensor's tangent was
    dropped without a word.) Under a transform the dense matrices go through kth_eigvalsh's op for them:
    the same values and first derivatives; a second derivative is refused."""
    from torch.autograd import forward_ad
    from torch.func import grad, hessian, jvp, vmap

    g = torch.Generator().manual_seed(n)
    d, e = (torch.randn(4, 3, m, dtype=torch.float64, generator=g) for m in (n, n - 1))

    def f(diagonal, off):
        return kth_eigvalsh_tridiagonal(diagonal, off, n // 2)

    torch.testing.assert_close(vmap(f)(d, e), f(d, e), rtol=1e-12, atol=1e-12)
    shared = vmap(lambda diagonal: f(diagonal, e[0, 0]))(d[:, 0])  # the off-diagonal not vmapped
    torch.testing.assert_close(shared, f(d[:, 0], e[0, 0].expand(4, n - 1)), rtol=1e-12, atol=1e-12)
    D, E = d.clone().requires_grad_(True), e.clone().requires_grad_(True)
    (f(D, E) ** 2).sum().backward()
    grad_d, grad_e = grad(lambda diagonal, off: (f(diagonal, off) ** 2).sum(), argnums=(0, 1))(d, e)
    torch.testing.assert_close(grad_d, D.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_e, E.grad, rtol=1e-10, atol=1e-12)
    t_d, t_e = torch.randn_like(d), torch.randn_like(e)
    D, E = d.clone().requires_grad_(True), e.clone().requires_grad_(True)
    f(D, E).sum().backward()
    expected = (D.grad * t_d).sum(-1) + (E.grad * t_e).sum(-1)
    torch.testing.assert_close(jvp(f, (d, e), (t_d, t_e))[1], expected, rtol=1e-10, atol=1e-12)
    with forward_ad.dual_level():
        dual = forward_ad.unpack_dual(f(forward_ad.make_dual(d, t_d), forward_ad.make_dual(e, t_e))).tangent
    torch.testing.assert_close(dual, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match="differentiable once"):
        hessian(lambda diagonal: f(diagonal, e[0, 0]).sum())(d[0, 0])
