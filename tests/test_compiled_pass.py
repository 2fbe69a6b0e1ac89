"""The CPU's compiled training pass: the autograd path's values and gradients (to rounding)."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._compiled_pass import CompiledDensePass
from skspectral._training import threads as threads_module
from skspectral.eig import REGISTRY
from skspectral.encoding import EncodingSpec, FeatureEncoder
from skspectral.model import OnGatheredTerms, SpectralModel, model_class

pytestmark = pytest.mark.skipif(not REGISTRY["numba"].is_available(), reason="needs Numba (the gathered path)")


def _model(dim, dtype, seed, *, structure="dense", n_members=2, eigval_idx=None, n_outputs=None, **kwargs):
    """A model with a piecewise column with missing values, a categorical one and a linear one."""
    spec = EncodingSpec(3, numeric=[0, 2], edges=[[-1.0, 0.0, 0.5, 1.0, 2.0], None], missing=[0], categorical=[1],
                        n_levels=[4], has_missing_level=[False])
    return model_class(structure)(3, dim, eigval_idx, encoder=FeatureEncoder(spec, dtype=dtype), n_members=n_members,
                                  n_outputs=n_outputs, dtype=dtype, generator=torch.Generator().manual_seed(seed),
                                  **kwargs)


def _rows(n_rows, dtype, seed):
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(np.column_stack([rng.normal(size=n_rows), rng.integers(-1, 4, n_rows),
                                         3 * rng.normal(size=n_rows)]), dtype=dtype)
    X[::5, 0] = float("nan")
    return X


# the pass's diagonal mu is summed in float64, torch's in the model's dtype: equal to rounding
_ROUNDING = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
# a gradient summed over many matrices, whose eigenvectors a rounding-level change of mu moves by
# rounding / gap: compared on the scale of its largest entry (float32: CI drew a mu_start gradient
# 6e-4 apart relatively, 2e-5 absolutely, on a scale of 0.04)
_GRADIENT_ROUNDING = {torch.float32: 1e-3, torch.float64: 1e-9}


def _assert_gradient_close(actual, expected):
    scale = _GRADIENT_ROUNDING[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=scale, atol=scale * float(expected.abs().max()) + 1e-12)


def _loss(output, seed):
    """A loss that weighs every output differently (its gradient reaches every value)."""
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (output * weights.to(output.dtype)).sum() + output.square().sum()


@settings(max_examples=12, deadline=None)
@example(seed=3061, dim=7, dtype=torch.float32, variant="several", terms=False)  # CI's: a sum of gradients
@example(seed=5, dim=6, dtype=torch.float64, variant="shared_outputs", terms=True)
@given(seed=st.integers(0, 2**16), dim=st.integers(2, 8), dtype=st.sampled_from([torch.float32, torch.float64]),
       variant=st.sampled_from(["members", "several", "outputs", "one", "shared", "shared_outputs"]),
       terms=st.booleans())
def test_the_compiled_pass_is_autograds_forward_and_backward(seed, dim, dtype, variant, terms):
    """values/output/backward of the pass: forward's output and every parameter's gradient as autograd
    makes them (to rounding), on rows or on packed terms; one or several indices, members, outputs,
    members that share their matrices (the chain rule to the shared set and the factors)."""
    kwargs = dict(members=dict(n_members=3), several=dict(eigval_idx=[0, dim // 2, dim - 1]),
                  outputs=dict(n_outputs=3), one=dict(n_members=1), shared=dict(n_members=3, n_shared_members=2),
                  shared_outputs=dict(n_members=2, n_shared_members=1, n_outputs=3))[variant]
    if variant == "several" and dim < 3:
        kwargs = dict(eigval_idx=[0, dim - 1])
    model = _model(dim, dtype, seed, **kwargs)
    X = _rows(37, dtype, seed)
    module, batch = (OnGatheredTerms(model), OnGatheredTerms.pack(model, X)) if terms else (model, X)
    expected = module(batch)
    parameters = list(model.parameters())
    expected_grads = torch.autograd.grad(_loss(expected, seed), parameters)

    step = module.compiled_pass()
    assert isinstance(step, CompiledDensePass)
    for _ in range(2):  # the second call reuses the pass's buffers
        values = step.values(batch).detach().requires_grad_()
        output = step.output(values)
        torch.testing.assert_close(output, expected, **_ROUNDING[dtype])
        (grad_values,) = torch.autograd.grad(_loss(output, seed), values)
        step.backward(grad_values)
        for parameter, grad in zip(parameters, expected_grads):
            _assert_gradient_close(parameter.grad, grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("params", [dict(), dict(n_members=1, eigval_idx=2), dict(eigval_idx=(1, 2, 4)),
                                    dict(n_outputs=3)])
def test_the_pass_forward_is_the_models_forward_to_the_bit(dtype, params):
    """The trainer scores its early-stopping rows through the pass's forward (its kernels on its
    buffers, the model's mu): the model's own output, bit for bit, for any batch size."""
    model = _model(5, dtype, 2, **params)
    module = OnGatheredTerms(model)
    step = module.compiled_pass()
    if step is None:
        pytest.skip("needs the gather path (Numba)")
    for n_rows in (1, 37, 300):
        terms = OnGatheredTerms.pack(model, _rows(n_rows, dtype, n_rows))
        with torch.no_grad():
            expected = module(terms)
        got = step.forward(terms)
        assert got.shape == expected.shape and torch.equal(got, expected)


def test_the_pass_refuses_parameters_moved_to_new_storage():
    """The pass keeps its kernels' arrays of the model's tensors: parameters given new storage
    (a model.to(), a new .data) would leave it reading the old ones, so it says so instead."""
    model = _model(5, torch.float32, 0)
    step = OnGatheredTerms(model).compiled_pass()
    if step is None:
        pytest.skip("needs the gather path (Numba)")
    terms = OnGatheredTerms.pack(model, _rows(16, torch.float32, 0))
    step.values(terms)
    model.weight.data = model.weight.data.clone()
    with pytest.raises(RuntimeError, match="new storage"):
        step.values(terms)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_parameters_are_the_symmetric_weights_lower_triangles(dtype):
    """Compiled steps keep the weight as its lower triangles (pack) and give it back as the symmetric
    matrices (unpack): the model's weight starts symmetric to the bit, so packing loses nothing; an
    asymmetric weight (set from outside) is packed as 0.5 (W + W^T), the matrices the model uses, and
    comes back symmetric with the same feature matrices. Moments pack and unpack the same way."""
    model = _model(5, dtype, 1)
    step = OnGatheredTerms(model).compiled_pass()
    if step is None:
        pytest.skip("needs the gather path (Numba)")
    W = model.weight.detach()
    assert torch.equal(W, W.transpose(-1, -2))  # the premise: a symmetric start
    lower = torch.tril_indices(5, 5)
    with torch.no_grad():
        W.add_(torch.randn(W.shape, dtype=dtype, generator=torch.Generator().manual_seed(3)) * 0.1)  # asymmetric
    A = model.feature_matrices().detach().clone()
    columns = step.pack()
    assert torch.equal(columns, A[..., lower[0], lower[1]])
    step.grad_packed.copy_(torch.randn(step.grad_packed.shape, dtype=dtype))
    step.unpack()
    assert torch.equal(W, A) and torch.equal(model.feature_matrices(), A)
    grad = step.grad_weight
    assert torch.equal(grad, grad.transpose(-1, -2)) and torch.equal(grad[..., lower[0], lower[1]], step.grad_packed)
    packed = torch.empty_like(columns)
    step.lower_triangles(A, packed)
    back = torch.empty_like(A)
    step.symmetric_from_lower(packed, back)
    assert torch.equal(packed, columns) and torch.equal(back, A)


def test_a_compiled_fit_keeps_the_weight_symmetric_to_the_bit():
    """The premise of packed steps, in a whole fit: the weight stays symmetric to the bit (it starts so,
    each step's gradient is symmetric and Adam's update is elementwise)."""
    X, y = _mixed(7)
    est = SpectralRegressor(dim=6, max_iter=3, batch_size=64, categorical_features=[1], random_state=0,
                            device="cpu").fit(X, y)
    W = torch.as_tensor(est._module_state_["weight"])
    assert torch.equal(W, W.transpose(-1, -2))


@pytest.mark.parametrize("change", [dict(structure="tridiagonal"), dict(monotonic=[1] + [0] * 9),
                                    dict(smoothing=0.1), dict(backend="torch")])
def test_models_the_pass_does_not_differentiate_take_the_autograd_path(change):
    model = _model(5, torch.float64, 0, **change)
    assert model.compiled_pass() is None
    assert OnGatheredTerms(model).compiled_pass() is None


class _WithExtraParameter(SpectralModel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = torch.nn.Parameter(torch.zeros(1, dtype=self.dtype))


def test_a_variant_with_parameters_of_its_own_takes_the_autograd_path():
    spec = EncodingSpec(1, numeric=[0], edges=[[0.0, 1.0, 2.0]], missing=[], categorical=[], n_levels=[],
                        has_missing_level=[])
    model = _WithExtraParameter(1, 4, encoder=FeatureEncoder(spec, dtype=torch.float64), dtype=torch.float64)
    assert model.compiled_pass() is None


def _mixed(seed, classes=False):
    rng = np.random.RandomState(seed)
    X = np.column_stack([rng.normal(size=700), rng.randint(0, 4, 700), rng.normal(size=700)])
    X[::11, 0] = np.nan
    y = np.nan_to_num(X[:, 0]) + (X[:, 1] == 2) - X[:, 2] ** 2 + 0.1 * rng.normal(size=700)
    return X, (np.digitize(y, [-1.0, 0.5]) if classes else y)


@pytest.mark.parametrize("estimator, params", [
    (SpectralRegressor, dict()),
    (SpectralRegressor, dict(loss="quantile", quantile=[0.1, 0.5, 0.9])),
    (SpectralRegressor, dict(loss="quantile", quantile=0.3)),
    (SpectralRegressor, dict(loss="absolute_error")),
    (SpectralRegressor, dict(loss="huber")),
    (SpectralRegressor, dict(loss="poisson")),
    (SpectralRegressor, dict(loss="gamma")),
    (SpectralClassifier, dict()),
    (SpectralClassifier, dict(binary=True)),
    (SpectralRegressor, dict(dtype="float64", n_estimators=1)),
])
def test_a_fit_through_the_compiled_pass_is_the_autograd_fit(monkeypatch, estimator, params):
    """The trainer steps through the pass on the CPU (every step; the loss's own gradient where the
    output is a view of the values, autograd's on the ordered values of several quantiles), and the fit
    is the one autograd steps make: the same loss curve and predictions to rounding."""
    X, y = _mixed(3, classes=estimator is SpectralClassifier)
    if params.pop("binary", False):
        y = (y == 1).astype(int)
    if params.get("loss") in ("poisson", "gamma"):
        y = np.abs(y) + (params["loss"] == "gamma")
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=2, early_stopping=True, refit=False, categorical_features=[1],
                  random_state=0, device="cpu") | params
    calls, own_gradient = [], []
    original = CompiledDensePass.values
    monkeypatch.setattr(CompiledDensePass, "values", lambda self, batch: (calls.append(1), original(self, batch))[1])

    def counted(loss):  # the loss with its own gradient counted
        fn = loss.fn_and_gradient
        return loss if fn is None else dataclasses.replace(
            loss, fn_and_gradient=lambda *args: (own_gradient.append(1), fn(*args))[1])

    for cls in (SpectralRegressor, SpectralClassifier):
        monkeypatch.setattr(cls, "_loss", lambda self, original=cls._loss: counted(original(self)))
    with warnings.catch_warnings():  # the pass reads autograd's loss as a number without torch's warning
        warnings.filterwarnings("error", message="Converting a tensor with requires_grad")
        compiled = estimator(**params).fit(X, y)
    assert len(calls) == compiled.t_  # every step
    # every loss has its own gradient; the step takes it where the output is a view of the values
    has_gradient = np.ndim(params.get("quantile", 0.5)) == 0
    assert len(own_gradient) == (compiled.t_ if has_gradient else 0)
    monkeypatch.setattr(SpectralModel, "compiled_pass", lambda self, terms_of=None: None)
    autograd = estimator(**params).fit(X, y)
    tolerance = dict(rtol=1e-4, atol=1e-5) if compiled.dtype_ == "float32" else dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(compiled.loss_curve_, autograd.loss_curve_, **tolerance)
    output = "predict_proba" if estimator is SpectralClassifier else "predict"
    np.testing.assert_allclose(getattr(compiled, output)(X), getattr(autograd, output)(X), **tolerance)


# each loss the compiled pass runs: the estimator's parameters and the kernel's name
_PASS_LOSSES = {
    "regressor": (dict(), "squared_error_and_gradient"),
    "binary": (dict(), "binary_log_loss_and_gradient"),
    "multiclass": (dict(), "multiclass_log_loss_and_gradient"),
    "absolute_error": (dict(loss="absolute_error"), "absolute_error_and_gradient"),
    "huber": (dict(loss="huber"), "huber_and_gradient"),
    "quantile": (dict(loss="quantile", quantile=0.3), "pinball_and_gradient"),
    "quantiles": (dict(loss="quantile", quantile=[0.1, 0.5, 0.9]), "pinball_and_gradient"),
    "poisson": (dict(loss="poisson"), "poisson_and_gradient"),
    "gamma": (dict(loss="gamma"), "gamma_and_gradient"),
}


@pytest.mark.parametrize("estimator", list(_PASS_LOSSES))
@pytest.mark.parametrize("n_members", [1, 3])
@pytest.mark.parametrize("params", [dict(dtype="float32"), dict(dtype="float64", alpha=1e-2)])
def test_compiled_steps_are_the_steps_taken_one_by_one_and_apart(monkeypatch, estimator, n_members, params):
    """Three ways to take the same steps, the same fit to the bit -- the loss curve, the fitted
    parameters and the predictions -- for every loss, one member or several, float32 and
    float64, with a Frobenius penalty (alpha) and without: whole batches several at a time in one
    compiled call with Adam's update (CompiledSteps, the default), each step in the pass's one call
    (CompiledDensePass.step) then Adam from Python, and the pass's kernels and the loss's own
    gradient called one by one (values, the loss, backward). 700 rows in batches of 64: a short last
    batch every epoch, and the thread tuner's probed steps one at a time. Several quantiles' third way
    is autograd's on the ordered values (their output is no view of the values): that fit to rounding."""
    from skspectral._step_kernels import TRAINING_LOSSES
    from skspectral._training.compiled_steps import CompiledSteps

    X, y = _mixed(5, classes=estimator == "multiclass")
    y = (y > 0).astype(int) if estimator == "binary" else y
    y = np.abs(y) + (estimator == "gamma") if estimator in ("poisson", "gamma") else y
    cls = SpectralClassifier if estimator in ("binary", "multiclass") else SpectralRegressor
    loss_params, kernel_name = _PASS_LOSSES[estimator]
    # members that own their matrices: sharing ones sum their factors' inner products over packed or full
    # entries on these paths, equal to rounding only (tests/test_shared_members.py)
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=n_members, early_stopping=True, refit=False,
                  shared_members=0.0,
                  categorical_features=[1], random_state=0, device="cpu") | loss_params | params
    counts, steps = [], []
    monkeypatch.setattr(CompiledSteps, "_steps", lambda self, count, *args, original=CompiledSteps._steps: (
        counts.append((count, self.loss_code)), original(self, count, *args))[1])
    monkeypatch.setattr(CompiledDensePass, "step", lambda self, *args, original=CompiledDensePass.step: (
        steps.append(args[3]), original(self, *args))[1])
    compiled = cls(**params).fit(X, y)
    assert sum(count for count, _ in counts) == compiled.t_ and not steps
    assert max(count for count, _ in counts) > 1  # whole batches several at a time
    assert {code for _, code in counts} == {TRAINING_LOSSES.index(kernel_name)}
    monkeypatch.setattr(CompiledSteps, "applies", staticmethod(lambda *args: False))
    one_by_one = cls(**params).fit(X, y)
    assert len(steps) == one_by_one.t_ == compiled.t_
    monkeypatch.setattr(CompiledDensePass, "loss_code", lambda self, loss_and_gradient: None)
    apart = cls(**params).fit(X, y)
    assert len(steps) == compiled.t_  # the third fit took the kernels one by one
    output = "predict_proba" if cls is SpectralClassifier else "predict"
    for other in (one_by_one, apart):
        if other is apart and estimator == "quantiles":
            tolerance = dict(rtol=1e-4, atol=1e-5) if params["dtype"] == "float32" else dict(rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(compiled.loss_curve_, other.loss_curve_, **tolerance)
            np.testing.assert_allclose(compiled.predict(X), other.predict(X), **tolerance)
            continue
        assert compiled.loss_curve_ == other.loss_curve_
        for name, value in compiled._module_state_.items():
            np.testing.assert_array_equal(value, other._module_state_[name])
        np.testing.assert_array_equal(getattr(compiled, output)(X), getattr(other, output)(X))


def test_compiled_steps_take_found_terms_as_they_are_or_find_them_a_chunk_at_a_time(monkeypatch):
    """A fit that found its rows' terms once hands them to the steps as they are, packed (each step unpacks
    its batch's): one run of every row an epoch, however small TERMS_BYTES. A fit over the size limit finds
    and packs its rows' terms a chunk of whole batches at a time (TERMS_BYTES: a tall fit's block of rows
    would hold them all at once). The same batches either way, so the same fit to the bit."""
    from skspectral import _estimator
    from skspectral._training import compiled_steps

    X, y = _mixed(8)
    params = dict(dim=6, max_iter=2, batch_size=64, categorical_features=[1], random_state=0, device="cpu", refit=False)
    runs = []
    original = compiled_steps.CompiledSteps._run
    monkeypatch.setattr(compiled_steps.CompiledSteps, "_run", lambda self, terms, *args: (
        runs.append(terms.shape[0]), original(self, terms, *args))[1])
    monkeypatch.setattr(compiled_steps, "TERMS_BYTES", 1)  # one batch a chunk
    found_once = SpectralRegressor(**params).fit(X, y)
    assert len(runs) == found_once.n_iter_ and len(set(runs)) == 1 and runs[0] > 2 * 64  # every row each epoch
    runs.clear()
    monkeypatch.setattr(_estimator, "_GATHERED_TERMS_BYTES", 0)
    chunked = SpectralRegressor(**params).fit(X, y)
    assert max(runs) == 64 and len(runs) > 2 * 8
    assert found_once.loss_curve_ == chunked.loss_curve_
    np.testing.assert_array_equal(found_once.predict(X), chunked.predict(X))


def test_packed_terms_hold_every_table_row_exactly():
    """Rows' terms packed for the compiled steps (the rows' table rows as floats, then their weights) keep
    every table row exact: in the model's dtype where it holds them (float32 below 2**24), else in float64;
    the steps unpack the same integers (and -1, no row) and weights."""
    from types import SimpleNamespace

    from skspectral._training.compiled_steps import CompiledSteps

    weights = torch.tensor([[0.25, 1.0, 0.0]], dtype=torch.float32)
    for top, dtype in ((2**24 - 1, torch.float32), (2**24 + 1, torch.float64)):
        rows = torch.tensor([[top, 3, -1]])
        steps = SimpleNamespace(compiled_pass=SimpleNamespace(terms_of=lambda X, rows=rows: (rows, weights)),
                                dtype=torch.float32)
        packed = CompiledSteps._packed_terms(steps, None)
        assert packed.dtype == dtype and packed.shape == (1, 2, 3)
        assert torch.equal(packed[:, 0].long(), rows) and torch.equal(packed[:, 1].float(), weights)


@pytest.mark.parametrize("shared_members", [0.0, 0.5])
def test_adams_moments_stay_packed_between_runs_and_come_back_when_read(monkeypatch, shared_members):
    """Compiled steps keep Adam's moments of the weight as packed triangles from one run (an epoch) to
    the next, without writing them back as full matrices after each run; the optimizer writes them back
    when it reads them. A fit whose compiled steps stop after its first epoch (the later epochs one step
    at a time through the optimizer's own moments) is the fit compiled throughout, to the bit."""
    from skspectral._training import compiled_steps
    from skspectral._training import trainer as trainer_module

    X, y = _mixed(5)
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=3, shared_members=shared_members,
                  categorical_features=[1], random_state=0, device="cpu", refit=False)
    packed, back = [], []
    original_pack, original_back = compiled_steps.CompiledSteps._pack, compiled_steps.CompiledSteps._moments_back
    monkeypatch.setattr(compiled_steps.CompiledSteps, "_pack", lambda self: (
        packed.append(self.optimizer._held_elsewhere.copy()), original_pack(self))[1])
    monkeypatch.setattr(compiled_steps.CompiledSteps, "_moments_back", lambda self, *args: (
        back.append(args[0]), original_back(self, *args))[1])
    compiled = SpectralRegressor(**params).fit(X, y)
    assert len(packed) == 3 and not packed[0] and all(held for held in packed[1:])  # held from the first run on
    assert not back  # never read back during the fit
    original_epoch = trainer_module.Trainer._epoch

    def compiled_once(self, train):
        means = original_epoch(self, train)
        self._compiled_steps = None  # the next epochs step by step, through the optimizer's moments
        return means

    monkeypatch.setattr(trainer_module.Trainer, "_epoch", compiled_once)
    switched = SpectralRegressor(**params).fit(X, y)
    assert back  # the one-step path read the moments: written back first
    assert compiled.loss_curve_ == switched.loss_curve_
    for name, value in compiled._module_state_.items():
        np.testing.assert_array_equal(value, switched._module_state_[name])


def test_the_compiled_steps_follow_the_threads(monkeypatch):
    """The kernels' thread split is chosen as run_kernel chooses it, for the thread count of the steps
    (the trainer's thread choice changes it): on one thread every kernel runs on the calling thread,
    on two the eigenpairs are split; the same fit either way (the kernels' sums do not depend on the
    split)."""
    X, y = _mixed(6)
    # (the trainer times its first steps on one thread, then on two: 30 steps see both, where the tuner
    # cannot read the machine's idle cores -- else its warm-up lasts 50 ms, longer than this fit)
    params = dict(dim=15, max_iter=6, batch_size=128, categorical_features=[1], random_state=0, device="cpu")
    splits = []
    monkeypatch.setattr(threads_module.IdleCores, "_idle_seconds", lambda self: None)

    def recorded(self, *args, original=CompiledDensePass.step_state, **kwargs):
        state = original(self, *args, **kwargs)
        splits.append((state[3], state[11], state[14], state[16]))  # the four kernels' chunks
        return state

    monkeypatch.setattr(CompiledDensePass, "step_state", recorded)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = SpectralRegressor(**params).fit(X, y)
        one_split, splits[:] = list(splits), []
        torch.set_num_threads(2)
        two = SpectralRegressor(**params).fit(X, y)
    finally:
        torch.set_num_threads(threads)
    assert one_split and not any(any(split) for split in one_split)
    assert any(split[1] == 2 for split in splits)  # the eigenpairs in two chunks
    np.testing.assert_array_equal(one.predict(X), two.predict(X))


# (estimator, its members and the share that shares matrices, a parameter's other values): every loss with
# two members, one of which shares; four members of which one (its group holds an own member too), two (a
# group of their own) or three (over both groups: their shared set's steps after the groups) share; none
_GROUPED = [(name, 2, 0.5, dict(dtype="float32")) for name in _PASS_LOSSES] + [
    ("regressor", 4, 0.25, dict(dtype="float64", alpha=1e-2)),
    ("regressor", 4, 0.5, dict(dtype="float32", alpha=1e-2, shared_factor_l1=1e-2)),
    ("regressor", 4, 0.75, dict(dtype="float64", shared_factor_l1=1e-2)),
    ("regressor", 2, 0.0, dict(dtype="float64", alpha=1e-2)),
    ("multiclass", 2, 0.5, dict(dtype="float64", alpha=1e-2)),
]


@pytest.mark.parametrize("estimator, n_members, shared_members, params", _GROUPED)
def test_steps_with_the_models_a_group_a_thread_are_the_steps_over_the_rows(monkeypatch, estimator, n_members,
                                                                           shared_members, params):
    """Compiled steps on two threads with the models in two groups, a group a thread (grouped_step), take
    the steps the pass's kernels take with their rows over the threads, and on one thread: the same fit to the
    bit (loss curve, parameters, predictions) for every loss, with members that share matrices in a group of
    their own, beside an own member, or over both groups, a Frobenius penalty, the shared factors' pull."""
    from skspectral._training import compiled_steps
    from skspectral.eig import _numba_support

    X, y = _mixed(7, classes=estimator == "multiclass")
    y = (y > 0).astype(int) if estimator == "binary" else y
    y = np.abs(y) + (estimator == "gamma") if estimator in ("poisson", "gamma") else y
    cls = SpectralClassifier if estimator in ("binary", "multiclass") else SpectralRegressor
    params = dict(dim=6, max_iter=3, batch_size=64, n_estimators=n_members, shared_members=shared_members,
                  early_stopping=True, refit=False, categorical_features=[1], random_state=0,
                  device="cpu") | _PASS_LOSSES[estimator][0] | params
    # the kernels split these small steps over two threads (else they run on one), the tuner times both
    monkeypatch.setattr(_numba_support, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(threads_module.IdleCores, "_idle_seconds", lambda self: None)
    original, groups = compiled_steps.CompiledSteps._groups, []
    threads = torch.get_num_threads()
    fits = []
    try:
        # grouped on two threads (the tuner's one-thread blocks: one group), the rows over two threads and one
        # thread's (no groups), and one thread's steps as one group
        for count, grouped in ((2, True), (2, False), (1, False), (1, True)):
            if not grouped:
                monkeypatch.setattr(compiled_steps.CompiledSteps, "_groups", lambda self, *args: None)
            else:
                monkeypatch.setattr(compiled_steps.CompiledSteps, "_groups", lambda self, *args: (
                    groups.append(original(self, *args)), groups[-1])[1])
            groups.clear()
            torch.set_num_threads(count)
            fits.append(cls(**params).fit(X, y))
            if grouped:
                assert {len(bounds) - 1 for bounds in groups} == ({1, 2} if count == 2 else {1})
    finally:
        torch.set_num_threads(threads)
    output = "predict_proba" if cls is SpectralClassifier else "predict"
    grouped = fits[0]
    for other in fits[1:]:
        assert grouped.loss_curve_ == other.loss_curve_
        for name, value in grouped._module_state_.items():
            np.testing.assert_array_equal(value, other._module_state_[name])
        np.testing.assert_array_equal(getattr(grouped, output)(X), getattr(other, output)(X))


@pytest.mark.parametrize("n_models, threads, chunks, expected", [
    (2, 2, (0, 2, 2, 0), [0, 1, 2]), (4, 2, (0, 2, 2, 0), [0, 2, 4]), (3, 2, (0, 2, 2, 0), None),
    (4, 4, (0, 2, 2, 0), [0, 1, 2, 3, 4]), (2, 4, (0, 2, 2, 0), None), (4, 1, (0, 2, 2, 0), [0, 4]),
    (3, 2, (0, 0, 0, 0), [0, 3]), (1, 2, (0, 2, 2, 0), None), (1, 1, (0, 0, 0, 0), None)])
def test_the_models_run_a_group_a_thread_where_they_divide_evenly_among_the_threads(monkeypatch, n_models, threads,
                                                                                   chunks, expected):
    """Groups of models where several threads would run the step's kernels and the models divide among them
    evenly; where the step runs on one thread (one thread, or a batch too small to split), several models as
    one group; else none (the kernels' rows over the threads; one model on one thread). The grouped steps'
    parameter slots are the ones the kernel names."""
    from skspectral._training import _steps_kernel, compiled_steps

    assert compiled_steps._SLOTS == {"weight": _steps_kernel.SLOT_WEIGHT, "mu_start": _steps_kernel.SLOT_MU_START,
                                     "mu_increments": _steps_kernel.SLOT_MU_INCREMENTS,
                                     "shared_weight": _steps_kernel.SLOT_SHARED_WEIGHT,
                                     "member_scales": _steps_kernel.SLOT_MEMBER_SCALES}
    steps = compiled_steps.CompiledSteps.__new__(compiled_steps.CompiledSteps)
    steps.compiled_pass = type("Pass", (), dict(mu=torch.zeros(n_models, 3), step_chunks=lambda self, B, K: chunks))()
    steps._adam_slots = np.zeros((2, 5), np.int64)
    monkeypatch.setattr(compiled_steps, "parallel_threads", lambda: torch.get_num_threads())  # (any pool's size)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        bounds = compiled_steps.CompiledSteps._groups(steps, 200, 10)
        steps._adam_slots[0, 0] = -1  # a parameter the slots do not name: no groups
        assert compiled_steps.CompiledSteps._groups(steps, 200, 10) is None
    finally:
        torch.set_num_threads(previous)
    assert (None if bounds is None else bounds.tolist()) == expected


@pytest.mark.parametrize("spectral_penalty", [0.0, 1e-3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_penalty_adds_its_gradient_to_the_passs(monkeypatch, spectral_penalty, dtype):
    """alpha alone (the classifier's default): the pass adds the Frobenius term's gradient itself
    (inside its one compiled call, so the steps run in compiled blocks); with spectral_penalty the
    whole penalty's goes through autograd onto the pass's, step by step. Either way the autograd fit,
    to rounding."""
    from skspectral._training.compiled_steps import CompiledSteps

    X, y = _mixed(4)
    params = dict(dim=6, max_iter=3, batch_size=64, categorical_features=[1], random_state=0, device="cpu",
                  dtype=dtype, alpha=1e-2, spectral_penalty=spectral_penalty, refit=False)
    factors, blocks = [], []
    monkeypatch.setattr(CompiledDensePass, "step", lambda self, *args, original=CompiledDensePass.step: (
        factors.append(args[4]), original(self, *args))[1])
    monkeypatch.setattr(CompiledSteps, "_steps", lambda self, count, *args, original=CompiledSteps._steps: (
        blocks.append((count, self.penalty_terms[0])), original(self, count, *args))[1])
    compiled = SpectralRegressor(**params).fit(X, y)
    if spectral_penalty == 0:
        assert not factors and sum(count for count, _ in blocks) == compiled.t_
        assert all(factor for _, factor in blocks)
    else:
        assert not blocks and len(factors) == compiled.t_ and not any(factors)  # every step in one call
    monkeypatch.setattr(SpectralModel, "compiled_pass", lambda self, terms_of=None: None)
    autograd = SpectralRegressor(**params).fit(X, y)
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(compiled.loss_curve_, autograd.loss_curve_, **tolerance)
    np.testing.assert_allclose(compiled.predict(X), autograd.predict(X), **tolerance)


def _assert_own_gradient_is_autograds(loss, output, target, weight, n_members: int, compiled: bool) -> None:
    """loss.fn_and_gradient's value and gradient are members_fn's and autograd's: to rounding where
    the kernel runs (float64 sums), else exactly (torch's ops)."""
    leaf = output.clone().requires_grad_()
    expected = loss.members_fn(n_members)(leaf, target, weight)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    value, grad = loss.fn_and_gradient(output, target, weight)
    tolerance = _ROUNDING[output.dtype] if compiled else dict(rtol=0, atol=0)
    torch.testing.assert_close(value, expected.detach(), **tolerance)
    torch.testing.assert_close(grad, expected_grad, **tolerance)
    assert grad.shape == output.shape and value.dtype == output.dtype


@pytest.mark.parametrize("name", ["squared_error", "binary_log_loss", "log_loss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_members", [1, 3])
@pytest.mark.parametrize("compiled", [True, False])
def test_a_losss_own_gradient_is_autograds(monkeypatch, name, dtype, n_members, compiled):
    """fn_and_gradient (what the compiled step takes instead of autograd): members_fn's value and
    autograd's gradient of it, to rounding (compiled: float64 sums; else torch's ops, exactly); zero
    weights included, and the members' mean over (batch, members)."""
    from skspectral import _losses

    if not compiled:
        monkeypatch.setattr(_losses, "_step_kernels", lambda: None)
    loss = _losses.get_loss(name)
    rng = np.random.default_rng(7)
    classes = (4,) if name == "log_loss" else ()  # multiclass: logits (batch[, members], classes)
    output = torch.as_tensor(8 * rng.normal(size=((50, n_members) if n_members > 1 else (50,)) + classes), dtype=dtype)
    target = torch.as_tensor(rng.integers(0, 4 if classes else 2, 50) if name != "squared_error"
                             else rng.normal(size=50), dtype=dtype)
    weight = torch.as_tensor(rng.uniform(0, 2, 50), dtype=dtype)
    weight[::4] = 0.0
    _assert_own_gradient_is_autograds(loss, output, target, weight, n_members, compiled)


@pytest.mark.parametrize("name, kwargs", [("absolute_error", {}), ("huber", dict(delta=0.7)),
                                          ("quantile", dict(quantiles=[0.3])),
                                          ("quantile", dict(quantiles=[0.05, 0.5, 0.95])),
                                          ("poisson", {}), ("gamma", {})])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_members", [1, 3])
@pytest.mark.parametrize("compiled", [True, False])
def test_a_regression_losss_own_gradient_is_autograds(monkeypatch, name, kwargs, dtype, n_members, compiled):
    """Each regression loss's fn_and_gradient: members_fn's value and autograd's gradient, to rounding
    (compiled: float64 sums; else torch's ops, exactly), zero weights, outputs equal to their targets
    (the kinks: abs' gradient 0 there, the pinball's the mean of its two slopes as torch's maximum
    splits a tie), Poisson's zero counts, and several quantiles' (batch[, members], quantiles)."""
    from skspectral import _losses

    if not compiled:
        monkeypatch.setattr(_losses, "_step_kernels", lambda: None)
    loss = _losses.regression_loss(name, **kwargs)
    n_quantiles = len(kwargs.get("quantiles", [0]))
    rng = np.random.default_rng(11)
    shape = (60,) + ((n_members,) if n_members > 1 else ()) + ((n_quantiles,) if n_quantiles > 1 else ())
    output = torch.as_tensor(rng.normal(size=shape), dtype=dtype)
    log_link = name in ("poisson", "gamma")
    target = torch.as_tensor(rng.gamma(2.0, size=60) if log_link else rng.normal(size=60), dtype=dtype)
    if name == "poisson":
        target[::5] = 0.0
    if not log_link:  # outputs on their targets
        output.view(60, -1)[::3, 0] = target[::3]
    if n_quantiles > 1:
        output = output.sort(dim=-1).values  # the model's output is ordered
    weight = torch.as_tensor(rng.uniform(0, 2, 60), dtype=dtype)
    weight[::4] = 0.0
    _assert_own_gradient_is_autograds(loss, output, target, weight, n_members, compiled)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_levels=st.integers(1, 5), n_members=st.integers(1, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]))
@example(seed=3, n_levels=4, n_members=2, dtype=torch.float32)
def test_the_pinball_kernel_orders_the_values_as_the_model_does(seed, n_levels, n_members, dtype):
    """Inside the pass the pinball kernel takes the raw eigenvalues of several indices and orders them
    itself (the model's running maximum, which moves a value only by the solvers' rounding): its loss
    and gradient are autograd's through cummax, to rounding, on fresh values with ties, values out of
    order and targets on a value (the pinball's kink: a later equal value takes the gradient, as in
    torch's cummax, and a tie of the two slopes splits it, as torch's maximum does)."""
    from skspectral import _losses
    from skspectral._step_kernels import pinball_and_gradient

    rng = np.random.default_rng(seed)
    levels = tuple(np.sort(rng.uniform(0.01, 0.99, n_levels)))
    values = torch.as_tensor(rng.normal(size=(40, n_members, n_levels)), dtype=dtype)
    if n_levels > 1:
        values[::2, :, -1] = values[::2, :, 0]  # ties
        values[1::4, 0, -1] = values[1::4, 0, 0] - rng.uniform(0, 1)  # out of order
    target = torch.as_tensor(rng.normal(size=40), dtype=dtype)
    target[::5] = values[::5, -1, 0]  # on a value
    weight = torch.as_tensor(rng.uniform(0, 2, 40), dtype=dtype)
    weight[::7] = 0.0
    leaf = values.clone().requires_grad_()
    fn = _losses.regression_loss("quantile", quantiles=levels).members_fn(n_members)
    # the model's output: (rows[, members][, levels])
    shape = (40,) + ((n_members,) if n_members > 1 else ()) + ((n_levels,) if n_levels > 1 else ())
    expected = fn(leaf.cummax(dim=-1).values.reshape(shape), target, weight)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    gradient = torch.empty_like(values)
    value = pinball_and_gradient(values.numpy(), target.numpy(), weight.numpy(), np.asarray(levels), gradient.numpy())
    torch.testing.assert_close(torch.tensor(value, dtype=dtype), expected.detach(), **_ROUNDING[dtype])
    torch.testing.assert_close(gradient, expected_grad, **_ROUNDING[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_diagonal_and_its_gradient_are_torchs(dtype):
    """The pass's mu (one compiled call) is SpectralModel.mu's, and its gradient autograd's, to
    rounding; increments above softplus' threshold included."""
    from skspectral._compiled_pass import _kernels

    model = _model(7, dtype, 3)
    with torch.no_grad():
        model.mu_increments[0, 2] = 25.0
        model.mu_increments[1, 4] = -30.0
    expected = model.mu()
    grad_mu = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    expected_grads = torch.autograd.grad(expected, [model.mu_start, model.mu_increments], grad_mu)
    mu = torch.empty_like(expected)
    _kernels().diagonal(model.mu_start.detach().numpy(), model.mu_increments.detach().numpy(), mu.numpy())
    torch.testing.assert_close(mu, expected.detach(), **_ROUNDING[dtype])
    grads = torch.empty_like(model.mu_start), torch.empty_like(model.mu_increments)
    _kernels().diagonal_grad(grad_mu.numpy(), model.mu_increments.detach().numpy(), *(g.numpy() for g in grads))
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, **_ROUNDING[dtype])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 16), models=st.integers(1, 4), columns=st.integers(1, 9),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_the_frobenius_penalty_and_its_gradient(seed, n, models, columns, dtype):
    """add_frobenius_penalty on packed lower triangles: the value is 0.5 factor sum ||A||_F^2 of the whole
    symmetric matrices (float64 reference, to 1e-12 relatively: its sum is reassociated), and each entry's
    gradient, added to what the buffer held, is factor times the entry (twice off the diagonal: it stands
    for a_ij and a_ji) to the bit, in the one-step arithmetic grad + factor * twice * a."""
    from skspectral._step_kernels import add_frobenius_penalty

    rng = np.random.default_rng(seed)
    L = n * (n + 1) // 2
    packed = rng.normal(size=(models, columns, L)).astype(dtype)
    grad = rng.normal(size=packed.shape).astype(dtype)
    before = grad.copy()
    factor = float(rng.uniform(1e-4, 1.0))
    value = add_frobenius_penalty(packed, grad, factor)
    i, j = np.tril_indices(n)
    full = np.zeros((models, columns, n, n))
    full[..., i, j] = packed
    full[..., j, i] = packed
    np.testing.assert_allclose(value, 0.5 * factor * np.square(full).sum(), rtol=1e-12)
    twice = np.where(i == j, 1.0, 2.0)
    np.testing.assert_array_equal(grad, (before + factor * twice * packed.astype(np.float64)).astype(dtype))
