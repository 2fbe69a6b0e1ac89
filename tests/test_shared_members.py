"""Members that share their matrices (``shared_members`` / ``n_shared_members``): member m's matrix
for column j is r_{m,j} A_j over one shared set. The model's matrices, values and gradients on every
path against the composition written out, the estimator's option, its guarantees and its errors."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._compiled_pass import SharedMembersPass
from skspectral._estimator import shared_member_count
from skspectral.eig import REGISTRY
from skspectral.encoding import EncodingSpec, FeatureEncoder
from skspectral.model import OnGatheredTerms, model_class

from .conftest import make_data

HAS_NUMBA = REGISTRY["numba"].is_available()


def _model(structure="dense", *, n_members=3, n_shared=2, n_outputs=None, monotonic=None, seed=0, dim=6):
    """A float64 model with a piecewise column with missing values, a categorical one and a linear one."""
    spec = EncodingSpec(3, numeric=[0, 2], edges=[[-1.0, 0.0, 0.5, 1.0, 2.0], None], missing=[0], categorical=[1],
                        n_levels=[4], has_missing_level=[False])
    encoder = FeatureEncoder(spec, dtype=torch.float64)
    if monotonic == "first":  # +1 on the first feature's columns, -1 on the linear one's
        feature = np.asarray(spec.columns()[0])
        monotonic = np.where(feature == 0, 1, np.where(feature == 2, -1, 0))
    return model_class(structure)(3, dim, n_members=n_members, n_outputs=n_outputs, encoder=encoder,
                                  dtype=torch.float64, generator=torch.Generator().manual_seed(seed),
                                  n_shared_members=n_shared, monotonic=monotonic)


def _rows(n_rows, seed):
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(np.column_stack([rng.normal(size=n_rows), rng.integers(-1, 4, n_rows),
                                         3 * rng.normal(size=n_rows)]), dtype=torch.float64)
    X[::5, 0] = float("nan")
    return X


def _own_matrices(model, stored):
    """The matrices one stored weight stands for, written out (no shared members involved)."""
    if model.structure == "tridiagonal":
        return model._stored_bands(stored)
    return model._symmetrised(stored)


@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
@pytest.mark.parametrize("monotonic", [None, "first"])
@pytest.mark.parametrize("n_outputs", [None, 3])
def test_sharing_members_matrices_are_their_factors_times_the_shared_set(structure, monotonic, n_outputs):
    model = _model(structure, monotonic=monotonic, n_outputs=n_outputs)
    outputs = n_outputs or 1
    A = model.feature_matrices().detach()
    assert A.shape[0] == 3 * outputs and model.n_own_models == outputs
    stored_own = model.band_weight if structure == "tridiagonal" else model.weight
    torch.testing.assert_close(A[:outputs], _own_matrices(model, stored_own).detach(), rtol=0, atol=0)
    shared = _own_matrices(model, model.shared_weight).detach()
    factors = model.shared_factor_gain * model.member_scales.detach()  # stored divided by the gain
    if monotonic is not None:  # a monotone column's factor is |r|: r A keeps the column's sign
        factors = torch.where(model.monotonic_signs.reshape(-1) != 0, factors.abs(), factors)
        assert (model.shared_factors()[:, model.monotonic_signs.reshape(-1) != 0] >= 0).all()
    for m in range(2):
        for o in range(outputs):
            for j in range(model.n_matrices):
                expected = factors[m, j] * shared[o, j]
                assert torch.equal(A[(1 + m) * outputs + o, j], expected)
    # the factors start at +-1, both signs present
    assert set(model.shared_factors().detach().abs().reshape(-1).tolist()) == {1.0}
    signs = model.shared_factors().detach().sign()
    free = (torch.ones(model.n_matrices, dtype=torch.bool) if monotonic is None
            else model.monotonic_signs.reshape(-1) == 0)
    assert set(signs[:, free].reshape(-1).tolist()) == {-1.0, 1.0} and (signs[:, ~free] == 1).all()


def test_no_shared_members_draw_the_same_model_as_before():
    """n_shared_members=0 adds no parameter and draws nothing more: the models a default fit starts
    from are unchanged."""
    plain, zero = _model(n_shared=0), _model(n_shared=0)
    assert [name for name, _ in plain.named_parameters()] == ["mu_start", "mu_increments", "weight"]
    assert torch.equal(plain.weight, zero.weight) and plain.weight.shape[0] == 3
    with pytest.raises(ValueError, match="n_shared_members must be between 0 and n_members=3"):
        _model(n_shared=4)


@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
@pytest.mark.parametrize("monotonic", [None, "first"])
def test_every_path_gives_the_dense_products_values_and_gradients(structure, monotonic):
    """The gather path (CPU kernels), the compiled pass and the dense product agree, values and every
    parameter's gradient (float64 to rounding)."""
    X = _rows(41, 1)
    results = []
    for gather in (False, True):
        model = _model(structure, monotonic=monotonic, seed=4)
        model.gather = gather
        out = model(X)
        grads = torch.autograd.grad((out * torch.linspace(-1, 2, out.numel()).view_as(out)).sum(),
                                    list(model.parameters()))
        results.append([out.detach(), *grads])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.skipif(not HAS_NUMBA, reason="needs Numba (the compiled pass)")
def test_the_cpu_fit_steps_through_the_compiled_pass_with_the_chain_rule():
    model = _model()
    step = OnGatheredTerms(model).compiled_pass()
    assert isinstance(step, SharedMembersPass)
    # a monotone model takes autograd's path (its W W^T), as without shared members
    assert OnGatheredTerms(_model(monotonic="first")).compiled_pass() is None


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), structure=st.sampled_from(["dense", "tridiagonal"]))
def test_gradcheck_through_the_shared_set_and_the_factors(seed, structure):
    model = _model(structure, n_members=2, n_shared=1, seed=seed, dim=4)
    X = _rows(7, seed)
    names = [name for name, _ in model.named_parameters()]
    values = [p.detach().clone().requires_grad_() for p in model.parameters()]

    def f(*params):
        return torch.func.functional_call(model, dict(zip(names, params)), (X,))

    # away from repeated eigenvalues (random matrices): lambda_k is smooth there
    assert torch.autograd.gradcheck(f, values, eps=1e-6, atol=1e-5)


def test_the_count_of_sharing_members_rounds_up():
    assert [shared_member_count(0.5, n) for n in (1, 2, 3, 4)] == [1, 1, 2, 2]
    assert shared_member_count(0.0, 4) == 0 and shared_member_count(1.0, 3) == 3
    assert shared_member_count(1 / 3, 3) == 1


def test_estimator_option_fits_pickles_and_keeps_its_shape():
    X, y = make_data(n=300)
    params = dict(shared_members=0.5, n_estimators=3, max_iter=20, learning_rate_init=0.02, random_state=0,
                  device="cpu")
    est = SpectralRegressor(**params).fit(X, y)
    assert est.n_shared_members_ == 2 and est.feature_matrices_.shape[0] == 3
    assert est.score(X, y) > 0.95
    again = SpectralRegressor(**params).fit(X, y)
    np.testing.assert_array_equal(est.predict(X), again.predict(X))  # seeded and deterministic on the CPU
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    # a fitted model's sharing members are r A: the stored matrices say so
    A = est.feature_matrices_
    ratio = A[2] / np.where(A[1] == 0, 1, A[1])
    per_column = ratio.reshape(ratio.shape[0], -1)
    nonzero = A[1].reshape(A.shape[1], -1) != 0
    for j in range(A.shape[1]):
        if nonzero[j].any():
            np.testing.assert_allclose(per_column[j][nonzero[j]], per_column[j][nonzero[j]][0], rtol=1e-4)
    # continuing the fit with another sharing is refused, as for any parameter that shapes the model
    est.set_params(warm_start=True, shared_members=0.0)
    with pytest.raises(ValueError, match="shared_members"):
        est.fit(X, y)
    with pytest.raises(ValueError, match="shared_members"):
        SpectralRegressor(shared_members=1.5, max_iter=1).fit(X, y)


def test_classifier_with_shared_members_learns():
    X, y = make_data(n=300)
    labels = np.digitize(y, np.quantile(y, [0.33, 0.66]))
    est = SpectralClassifier(shared_members=1.0, n_estimators=2, max_iter=20, learning_rate_init=0.02, random_state=0,
                             device="cpu")
    est.fit(X, labels)
    assert est.n_shared_members_ == 2 and est.score(X, labels) > 0.7


@pytest.mark.skipif(not HAS_NUMBA, reason="needs Numba (the compiled pass)")
@pytest.mark.parametrize("estimator", ["regressor", "classifier", "quantiles"])
@pytest.mark.parametrize("params", [dict(dtype="float64", alpha=1e-2), dict(dtype="float32"),
                                    dict(dtype="float64", alpha=1e-2, shared_factor_l1=2e-2),
                                    dict(dtype="float32", shared_factor_l1=2e-2)])
def test_compiled_steps_one_step_and_autograd_fits_agree(monkeypatch, estimator, params):
    """A CPU fit with sharing members takes the compiled steps (Adam, the chain rule and the factors'
    pull inside the compiled call, on packed lower triangles); the same fit one step at a time through
    the pass, and through autograd, to rounding (the factors' inner products sum packed or full entries)."""
    from skspectral._training.compiled_steps import CompiledSteps

    from .test_compiled_pass import _mixed

    X, y = _mixed(5, classes=estimator == "classifier")
    cls = SpectralClassifier if estimator == "classifier" else SpectralRegressor
    extra = dict(loss="quantile", quantile=[0.1, 0.5, 0.9]) if estimator == "quantiles" else {}
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=3, shared_members=0.5, early_stopping=True,
                  refit=False, categorical_features=[1], random_state=0, device="cpu") | extra | params
    counts = []
    monkeypatch.setattr(CompiledSteps, "_steps", lambda self, count, *args, original=CompiledSteps._steps: (
        counts.append(count), original(self, count, *args))[1])
    compiled = cls(**params).fit(X, y)
    assert compiled.n_shared_members_ == 2 and sum(counts) == compiled.t_ and max(counts) > 1
    monkeypatch.setattr(CompiledSteps, "applies", staticmethod(lambda *args: False))
    one_by_one = cls(**params).fit(X, y)
    monkeypatch.setattr(SharedMembersPass, "__init__", lambda *args: (_ for _ in ()).throw(AssertionError()))
    from skspectral.model import SpectralModel

    monkeypatch.setattr(SpectralModel, "compiled_pass", lambda self, terms_of=None: None)
    autograd = cls(**params).fit(X, y)
    tolerance = dict(rtol=1e-4, atol=1e-5) if params["dtype"] == "float32" else dict(rtol=1e-9, atol=1e-11)
    output = "predict_proba" if cls is SpectralClassifier else "predict"
    for other in (one_by_one, autograd):
        np.testing.assert_allclose(compiled.loss_curve_, other.loss_curve_, **tolerance)
        for name, value in compiled._module_state_.items():
            np.testing.assert_allclose(value, other._module_state_[name], **tolerance)
        np.testing.assert_allclose(getattr(compiled, output)(X), getattr(other, output)(X), **tolerance)


def test_an_estimator_pickled_before_the_option_loads_without_sharing():
    X, y = make_data(n=200)
    est = SpectralRegressor(n_estimators=2, max_iter=3, shared_members=0.0, random_state=0, device="cpu").fit(X, y)
    state = est.__getstate__()
    del state["shared_members"], state["n_shared_members_"], state["shared_factor_l1"]  # as an older version
    old = SpectralRegressor.__new__(SpectralRegressor)
    old.__setstate__(state)
    assert old.get_params()["shared_members"] == 0.0 and old.n_shared_members_ == 0
    assert old.get_params()["shared_factor_l1"] == 0.0
    np.testing.assert_array_equal(old.predict(X), est.predict(X))


# ---- the shared factors' pull (shared_factor_l1) ------------------------------------------------
def test_the_pull_is_an_l1_on_the_factors_relative_to_the_batch_loss():
    """shared_factor_l1 * data_loss * sum |stored r|: its gradient is the pull times sign(r) on the
    factors and nothing on the data loss (held constant); with the other terms as before."""
    from skspectral._losses import make_penalty

    model = _model(n_members=3, n_shared=2)
    data_loss = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    penalty = make_penalty(model, alpha=0.0, spectral_penalty=0.0, total_weight=10.0, shared_factor_l1=0.1)
    value = penalty(data_loss)
    value.backward()
    scales = model.member_scales
    assert value.item() == pytest.approx(0.1 * 0.3 * scales.detach().abs().sum().item(), rel=1e-12)
    np.testing.assert_allclose(scales.grad.numpy(), 0.03 * np.sign(scales.detach().numpy()), rtol=1e-12)
    assert data_loss.grad is None and model.weight.grad is None
    with_alpha = make_penalty(model, alpha=2.0, spectral_penalty=0.0, total_weight=10.0, shared_factor_l1=0.1)
    alone = make_penalty(model, alpha=2.0, spectral_penalty=0.0, total_weight=10.0)
    assert with_alpha(data_loss).item() == pytest.approx(alone(data_loss).item() + value.item(), rel=1e-12)
    # the CPU's compiled steps add both terms themselves; a spectral penalty goes through autograd
    assert alone.pass_terms == (0.2, 0.0) and with_alpha.pass_terms == (0.2, 0.1)
    assert make_penalty(model, alpha=2.0, spectral_penalty=1e-3, total_weight=10.0,
                        shared_factor_l1=0.1).pass_terms is None
    # a model without sharing members has no factors to pull
    assert make_penalty(_model(n_shared=0), alpha=0.0, spectral_penalty=0.0, total_weight=10.0,
                        shared_factor_l1=0.1) is None
    # without the pull (which CUDA's step adds by its kernel after the backward): the other terms, or 0.0
    assert with_alpha(data_loss, pull=False).item() == pytest.approx(alone(data_loss).item(), rel=1e-12)
    assert penalty(data_loss, pull=False) == 0.0 and not penalty.pulls_apart_on(torch.device("cpu"))


@pytest.mark.skipif(not HAS_NUMBA, reason="needs Numba (the compiled pull)")
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), double=st.booleans(), log_factor=st.floats(-5, 0))
def test_the_compiled_pull_adds_autograds_gradient_to_the_bit(seed, double, log_factor):
    """add_factor_pull (the CPU's compiled steps) against the penalty's term through autograd, added onto
    an existing gradient as the step's backward adds it: the same bits in float32 and float64, factors at
    0 included (no pull there)."""
    from skspectral._step_kernels import add_factor_pull

    dtype = torch.float64 if double else torch.float32
    rng = np.random.default_rng(seed)
    scales = torch.tensor(rng.normal(size=(3, 7)), dtype=dtype)
    scales[torch.as_tensor(rng.random(size=(3, 7)) < 0.2)] = 0.0  # (torch 2.1 takes no numpy mask)
    before = torch.tensor(rng.normal(size=(3, 7)), dtype=dtype)
    data_loss, factor_l1 = torch.tensor(rng.exponential(), dtype=dtype), 10.0**log_factor
    leaf = scales.clone().requires_grad_()
    leaf.grad = before.clone()
    value = factor_l1 * data_loss * leaf.abs().sum()
    value.backward()
    grad = before.clone().numpy()
    compiled = add_factor_pull(scales.numpy(), grad, np.empty(2, dtype=grad.dtype), factor_l1, float(data_loss))
    np.testing.assert_array_equal(grad, leaf.grad.numpy())
    assert compiled == pytest.approx(value.item(), rel=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.skipif(not HAS_NUMBA, reason="needs Numba (the compiled chain rule)")
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), double=st.booleans(), n_outputs=st.integers(1, 3), n_shared=st.integers(1, 4),
       n_own=st.integers(0, 2))
def test_the_compiled_chain_rule_to_the_shared_set_and_its_factors(seed, double, n_outputs, n_shared, n_own):
    """shared_grads (the CPU's compiled steps) against the chain rule written out in float64: the shared
    set's gradient sum_m r_m grad_m, each member's product rounded to the dtype and summed in member
    order, to the bit; each factor's gain sum_o <w S_o, grad_o> to float64's rounding."""
    from skspectral._step_kernels import shared_grads

    dtype = np.float64 if double else np.float32
    rng = np.random.default_rng(seed)
    n_columns, n_entries, gain = 5, 21, dtype(10.0)
    shared = rng.normal(size=(n_outputs, n_columns, n_entries)).astype(dtype)
    grad = rng.normal(size=(n_own + n_shared * n_outputs, n_columns, n_entries)).astype(dtype)
    scales = rng.normal(size=(n_shared, n_columns)).astype(dtype)
    scales[rng.random(size=scales.shape) < 0.2] = 0.0
    entry_weights = np.where(rng.random(n_entries) < 0.7, 2.0, 1.0).astype(dtype)  # packed: off-diagonals twice
    grad_shared, grad_scales = np.full_like(shared, np.nan), np.full_like(scales, np.nan)
    shared_grads(grad, shared, scales, gain, entry_weights, n_own, grad_shared, grad_scales)
    members = grad[n_own:].reshape(n_shared, n_outputs, n_columns, n_entries)
    expected = np.zeros(shared.shape, np.float64)
    for m in range(n_shared):
        expected += (gain * scales[m])[None, :, None] * members[m]  # the product in dtype, the sum in float64
    np.testing.assert_array_equal(grad_shared, expected.astype(dtype))
    products = (entry_weights * shared[None] * members).astype(np.float64)
    np.testing.assert_allclose(grad_scales, gain * products.sum(axis=(1, 3)), rtol=1e-12 if double else 1e-6,
                               atol=1e-12)


def test_the_pull_takes_the_factors_of_noise_columns_down_most():
    """Two columns carry the target, two are noise: the pull shrinks the noise columns' factors more
    than the signal's, where a member can switch a column off."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4))
    y = np.sin(2 * X[:, 0]) + X[:, 1] + 0.1 * rng.normal(size=600)

    def noise_over_signal(pull):
        est = SpectralRegressor(shared_members=1.0, shared_factor_l1=pull, n_estimators=2, max_iter=40,
                                random_state=0, device="cpu").fit(X, y)
        factors = np.abs(est._module_state_["member_scales"])
        feature = est.column_mapper_.spec.columns()[0]
        mean = [factors[:, feature == i].mean() for i in range(4)]
        return (mean[2] + mean[3]) / (mean[0] + mean[1]), est.score(X, y)

    without, score_without = noise_over_signal(0.0)
    pulled, score_pulled = noise_over_signal(2e-2)
    assert pulled < without - 0.05
    assert score_pulled > score_without - 0.02


def test_the_pull_has_no_effect_without_sharing_members():
    """The default pull (shared_factor_l1=2e-3) on a fit whose members own their matrices: no factors to
    pull, the fit of shared_factor_l1=0 to the bit; a negative pull is refused."""
    X, y = make_data(n=200)
    params = dict(shared_members=0.0, n_estimators=2, max_iter=3, random_state=0, device="cpu")
    pulled = SpectralRegressor(**params).fit(X, y)
    assert pulled.get_params()["shared_factor_l1"] > 0 and pulled.n_shared_members_ == 0
    np.testing.assert_array_equal(pulled.predict(X), SpectralRegressor(shared_factor_l1=0.0, **params).fit(X, y)
                                  .predict(X))
    with pytest.raises(ValueError, match="shared_factor_l1"):
        SpectralRegressor(shared_members=0.5, shared_factor_l1=-1.0, max_iter=1, device="cpu").fit(X, y)


def test_the_defaults_share_half_the_members_and_pull_their_factors():
    X, y = make_data(n=300)
    est = SpectralRegressor(n_estimators=4, max_iter=2, random_state=0, device="cpu").fit(X, y)
    assert est.n_shared_members_ == 2 and est.get_params()["shared_factor_l1"] == 2e-3
    assert est._module_state_["member_scales"].shape[0] == 2
