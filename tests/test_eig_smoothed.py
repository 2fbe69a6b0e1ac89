"""smoothed_kth_eigvalsh: the Moreau envelope of lambda_k -- limit, gradient, the
1-Lipschitz bound the certified sensitivities rely on, Loewner monotonicity, errors."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skspectral.eig import REGISTRY, smoothed_kth_eigvalsh
from skspectral.eig._smoothed import capped_simplex_projection

from .conftest import DEVICES

CASES = [(device, name) for device in DEVICES for name, backend in REGISTRY.items()
         if backend.eigh_all is not None and torch.device(device).type in backend.device_types
         and backend.is_available()]


def symmetric(shape, n, generator, scale=1.0):
    G = torch.randn(*shape, n, n, dtype=torch.float64, generator=generator)
    return scale * (G + G.mT) / 2


@pytest.mark.parametrize("device,backend", CASES)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([1, 2, 5, 16]), k_frac=st.floats(0, 0.999), alpha=st.sampled_from([1e-6, 1e-2, 1.0, 10.0]),
       seed=st.integers(0, 2**31 - 1))
def test_within_alpha_n_over_2_of_the_eigenvalue(device, backend, n, k_frac, alpha, seed):
    """S_r is within [sum of the r largest - alpha r / 2, that sum], so the difference of two is
    within alpha n / 2 of lambda_k: it tends to lambda_k as alpha -> 0."""
    A = symmetric((6,), n, torch.Generator().manual_seed(seed))
    k = int(k_frac * n)
    exact = torch.linalg.eigvalsh(A)[:, k]
    got = smoothed_kth_eigvalsh(A.to(device), k, alpha, backend=backend).cpu()
    assert ((got - exact).abs() <= alpha * n / 2 + 1e-9).all()


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("k,alpha", [(0, 0.5), (3, 0.5), (-1, 2.0), (4, 0.01)])
def test_gradcheck(device, backend, k, alpha):
    A = symmetric((3,), 8, torch.Generator().manual_seed(1)).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda X: smoothed_kth_eigvalsh((X + X.mT) / 2, k, alpha, backend=backend), (A,))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 12), k_frac=st.floats(0, 0.999), alpha=st.floats(1e-3, 10.0), size=st.floats(1e-3, 10.0),
       seed=st.integers(0, 2**31 - 1))
def test_one_lipschitz_in_the_spectral_norm_and_monotone(n, k_frac, alpha, size, seed):
    """What the certified bounds and the monotone constraints need of the smoothed value."""
    g = torch.Generator().manual_seed(seed)
    A = symmetric((4,), n, g)
    D = symmetric((4,), n, g, scale=size)
    k = int(k_frac * n)
    change = smoothed_kth_eigvalsh(A + D, k, alpha) - smoothed_kth_eigvalsh(A, k, alpha)
    assert (change.abs() <= torch.linalg.matrix_norm(D, ord=2) * (1 + 1e-9) + 1e-12).all()
    P = D @ D.mT  # PSD: the value never falls
    assert (smoothed_kth_eigvalsh(A + P, k, alpha) >= smoothed_kth_eigvalsh(A, k, alpha) - 1e-10).all()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 20), r_frac=st.floats(0, 1), spread=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31 - 1))
def test_capped_simplex_projection_is_the_projection(n, r_frac, spread, seed):
    v = spread * torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    r = round(r_frac * n)
    q = capped_simplex_projection(v, r)
    assert (q >= 0).all() and (q <= 1).all()
    torch.testing.assert_close(q.sum(-1), torch.full((5,), float(r), dtype=torch.float64))
    # optimality: no feasible move along e_i - e_j (q_i < 1, q_j > 0) lowers ||q - v||: v_i - q_i <= v_j - q_j
    slack = v - q
    for row in range(5):
        up, down = q[row] < 1 - 1e-12, q[row] > 1e-12
        if up.any() and down.any():
            assert slack[row][up].max() <= slack[row][down].min() + 1e-9 * (1 + spread)


def test_nonfinite_and_errors():
    A = symmetric((2,), 4, torch.Generator().manual_seed(0))
    A[1, 2, 1] = float("nan")
    values = smoothed_kth_eigvalsh(A, 1, 0.1)
    assert torch.isfinite(values[0]) and torch.isnan(values[1])
    with pytest.raises(ValueError, match="positive finite"):
        smoothed_kth_eigvalsh(A, 1, 0.0)
    with pytest.raises(ValueError, match="every eigenpair"):
        smoothed_kth_eigvalsh(A, 1, 0.1, backend="numba")
    with pytest.raises(ValueError, match="out of range"):
        smoothed_kth_eigvalsh(A, 4, 0.1)


def test_torch_func_transforms_and_forward_mode_are_a_clear_error():
    from torch.autograd import forward_ad
    from torch.func import vmap

    A = torch.randn(3, 5, 5, dtype=torch.float64)
    A = A + A.mT
    with pytest.raises(NotImplementedError, match="smoothed_kth_eigvalsh does not support torch.func"):
        vmap(lambda M: smoothed_kth_eigvalsh(M, 2, 0.1))(A[None].expand(2, 3, 5, 5))
    with forward_ad.dual_level(), pytest.raises(NotImplementedError, match="forward-mode AD"):
        smoothed_kth_eigvalsh(forward_ad.make_dual(A, A), 2, 0.1)
