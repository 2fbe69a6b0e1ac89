"""Certified sensitivities: units, importances, and the Weyl bound as a property test."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._losses import get_loss, regression_loss
from skspectral._sensitivity import (PRUNED_PAIRS, _largest_pair_norms, bounds_plan, bounds_plan_on, ensemble_bounds,
                                    feature_bounds, spectral_norms)
from skspectral.encoding import EncodingSpec
from skspectral.model import model_class

from .conftest import DEVICES, SERIES, make_data


@pytest.fixture(scope="module")
def fitted():
    X, y = make_data()
    est = SpectralRegressor(dim=5, max_iter=15, learning_rate_init=0.02, random_state=0, device="cpu", **SERIES)
    return est.fit(X, y), X, y


def test_sensitivities_in_user_units(fitted):
    est, X, y = fitted
    s = est.feature_sensitivities_
    assert s.shape == (3,) and np.all(s >= 0)
    # feature 1 is in units 20x larger than feature 0: its per-unit bound carries 1/x_scale
    norms = np.abs(np.linalg.eigvalsh(est.feature_matrices_)).max(axis=-1)
    np.testing.assert_allclose(s, norms * est.y_scale_ / est.x_scale_)
    imp = est.feature_importances_
    np.testing.assert_allclose(imp.sum(), 1.0)
    np.testing.assert_allclose(imp, norms / norms.sum())
    np.testing.assert_allclose(spectral_norms(torch.as_tensor(est.feature_matrices_)).numpy(), norms)
    with pytest.raises(ValueError, match="delta must have shape"):
        est.sensitivity_bound(np.ones(4))
    with pytest.raises(ValueError, match="delta must have shape"):
        est.sensitivity_bound(1.0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0, 1e3]))
def test_no_change_exceeds_the_certified_bound(fitted, seed, scale):
    est, X, _ = fitted
    rng = np.random.RandomState(seed % (2**32 - 1))
    rows = X[rng.randint(len(X), size=20)] + rng.normal(size=(20, 3)) * X.std(0)
    delta = rng.standard_cauchy(size=(20, 3)) * X.std(0) * scale  # heavy tails: large moves too
    bound = est.sensitivity_bound(delta)
    for clip in (True, False):
        est.set_params(clip_features=clip)
        change = np.abs(est.predict(rows + delta) - est.predict(rows))
        assert np.all(change <= bound * (1 + 1e-9) + 1e-9 * np.abs(est.predict(rows)).max())
    est.set_params(clip_features=True)


def test_classifier_sensitivities_bound_logits():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(150, 3)) * [1, 10, 100]
    y = np.digitize(X[:, 0] + X[:, 1] / 10, [-0.5, 0.5])
    est = SpectralClassifier(dim=4, max_iter=10, random_state=0, device="cpu").fit(X, y)
    assert est.feature_sensitivities_.shape == (3, 3)
    delta = rng.normal(size=(40, 3)) * [1, 10, 100]
    change = np.abs(est.decision_function(X[:40] + delta) - est.decision_function(X[:40]))
    assert np.all(change <= est.sensitivity_bound(delta) + 1e-9)


def test_spectral_penalty_shrinks_sensitivities():
    X, y = make_data(2)
    params = dict(dim=4, max_iter=20, learning_rate_init=0.02, random_state=0, device="cpu")
    plain = SpectralRegressor(**params).fit(X, y)
    shrunk = SpectralRegressor(**params, spectral_penalty=0.5).fit(X, y)
    assert shrunk.feature_sensitivities_.sum() < plain.feature_sensitivities_.sum()


@pytest.mark.parametrize("device", DEVICES)
def test_a_plan_on_the_device_gives_the_same_bounds(device):
    """A fit records the bounds every epoch from its plan made once on the model's device (no copy from the
    host each epoch): the same bounds, to the bit, as the plan found from the spec."""
    spec = EncodingSpec(4, numeric=[0, 1, 3], edges=[None, [-1.0, 0.0, 2.0], [-2.0, -1.0, 0.0, 1.0, 2.0]],
                        missing=[1], categorical=[2], n_levels=[3], has_missing_level=[True])
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(2, spec.n_columns, 5, 5, generator=generator, dtype=torch.float32)
    A = (A + A.transpose(-1, -2)).to(device)
    plan = bounds_plan_on(spec, A.dtype, A.device)
    assert all(part.device == A.device for part in plan[:-1]) and plan.pruned == ()
    expected = feature_bounds(A, spec)
    assert expected.shape == (2, 4) and bool((expected > 0).all())
    assert torch.equal(feature_bounds(A, spec, plan=plan), expected)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), name=st.sampled_from(["squared_error", "poisson", "binary_log_loss", "log_loss"]),
       members=st.integers(2, 5), spread=st.sampled_from([0.1, 1.0, 10.0]))
def test_an_ensembles_output_moves_by_at_most_its_members_bounds_combined(seed, name, members, spread):
    """Members whose outputs each move by at most their bound (a class's, for a multiclass member) move the
    ensemble's combined output -- what predict or decision_function returns -- by at most
    ``ensemble_bounds`` of those bounds, by the loss's rule: the members' mean, a log link's log mean exp,
    a binary classifier's logit of the mean probability, a multiclass one's log mean probabilities. The
    moves are random and at the bounds' extremes, the members confident (spread 10) and not."""
    loss = regression_loss("poisson") if name == "poisson" else get_loss(name)
    rng = np.random.default_rng(seed)
    shape = (64, members) + ((int(rng.integers(3, 6)),) if name == "log_loss" else ())
    output = torch.as_tensor(rng.normal(size=shape) * spread)
    bounds = torch.as_tensor(rng.exponential(size=shape[1:]) * rng.choice([0.01, 1.0, 5.0]))
    extremes = torch.as_tensor(rng.choice([-1.0, 1.0], size=shape))
    moves = torch.as_tensor(rng.uniform(-1, 1, size=shape))
    combined = ensemble_bounds(bounds.unsqueeze(-1), loss.member_bounds).squeeze(-1)  # (one feature)
    for move in (moves, extremes):
        change = (loss.combine_members(output + move * bounds) - loss.combine_members(output)).abs()
        assert bool((change <= combined * (1 + 1e-9) + 1e-12).all())


def test_the_members_mean_bound_would_not_hold_for_a_classifiers_ensemble():
    """Why a binary classifier's members' bounds combine by their largest: a confident member (logit -10)
    beside an uncertain one (0) that moves by its bound 1 moves the logit of their mean probability by
    0.55, over the mean of the bounds (0.5)."""
    loss = get_loss("binary_log_loss")
    output = torch.tensor([[-10.0, 0.0]], dtype=torch.float64)
    change = (loss.combine_members(output + torch.tensor([[0.0, 1.0]], dtype=torch.float64))
              - loss.combine_members(output)).abs()
    bounds = torch.tensor([0.0, 1.0], dtype=torch.float64).unsqueeze(-1)
    assert float(ensemble_bounds(bounds, "mean")) < float(change) <= float(ensemble_bounds(bounds, loss.member_bounds))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
def test_a_multiclass_ensembles_logits_move_within_the_certified_bound(structure, device):
    """A multiclass ensemble's decision_function is the log of its members' mean class probabilities:
    a class's moves with the other classes' logits (the softmax) and with the members' weights. The
    bound of the members' mean per class was exceeded here by 1.5x (dense) and 2.1x (tridiagonal) on the CPU."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(143)
    n = 600
    X = pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n),
                      "c": pd.Categorical(rng.choice(list("abcd"), n))})
    signal = X["x0"].to_numpy() + 0.3 * rng.normal(size=n)
    y = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))
    est = SpectralClassifier(dim=2, n_bins=2, alpha=0.1, batch_size=7, max_iter=3, structure=structure,
                             random_state=0, device=device).fit(X, y)
    assert est.n_estimators_ > 1
    change = np.abs(est.decision_function(X.assign(x0=X["x0"] + 0.37)) - est.decision_function(X))
    assert np.all(change <= est.sensitivity_bound([0.37, 0.0, 0.0]) * (1 + 1e-6))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_each_epochs_record_bounds_a_classifiers_ensemble_by_the_fitted_rule(n_classes):
    """The sensitivities history_ records every epoch (on the fit's device, from the model) combine the members
    by the rule the fitted attributes use: the last epoch's (no early stopping: the parameters kept) equal
    feature_sensitivities_ to float32's rounding."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    signal = X[:, 0] + 0.3 * rng.normal(size=300)
    y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))
    est = SpectralClassifier(dim=4, max_iter=4, early_stopping=False, random_state=0, device="cpu").fit(X, y)
    assert est.n_estimators_ > 1
    np.testing.assert_allclose(est.history_[-1]["sensitivities"], est.feature_sensitivities_, rtol=1e-5)


def _every_pairs_largest_norm(levels, norms):
    """The reference: every pair's norm, the largest."""
    a, b = torch.triu_indices(levels.shape[-3], levels.shape[-3], offset=1)
    return norms(levels[..., a, :, :] - levels[..., b, :, :]).amax(dim=-1)


def _levels(kind: str, members: int, count: int, dim: int, seed: int, structure: str) -> torch.Tensor:
    """Level matrices (members, count, ...) in a structure's storage, of a kind that stresses the pruning:
    random, a large common part with a small spread (the Gram's cancellation), differences of rank one,
    full-rank differences of equal singular values (Frobenius sqrt(dim) x the spectral norm: few pairs pruned),
    levels repeated exactly, and every level equal."""
    g = torch.Generator().manual_seed(seed)
    shape = (members, count) + ((2, dim) if structure == "tridiagonal" else (dim, dim))
    random = torch.randn(shape, generator=g, dtype=torch.float64)
    if structure == "dense":
        random = random + random.mT
    if kind == "random":
        return random
    if kind == "common part, small spread":
        return 1e4 * random[:, :1] + 1e-3 * random
    if kind == "rank one":
        v = torch.randn(members, count, dim, generator=g, dtype=torch.float64)
        if structure == "tridiagonal":
            return torch.stack([v, torch.zeros_like(v)], dim=-2)
        return v[..., :, None] * v[..., None, :] * torch.randn(members, count, 1, 1, generator=g, dtype=torch.float64)
    if kind == "full rank":
        signs = torch.randint(0, 2, (members, count, 1, 1), generator=g).to(torch.float64) * 2 - 1
        eye = torch.eye(dim, dtype=torch.float64) if structure == "dense" else torch.stack(
            [torch.ones(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)])
        return signs * eye + 1e-6 * random
    if kind == "repeated":
        return random[:, torch.arange(count) % 3]
    if kind == "equal":
        return random[:, :1].expand(shape).clone()
    raise ValueError(kind)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), members=st.integers(1, 3), count=st.integers(2, 40), dim=st.integers(1, 7),
       kind=st.sampled_from(["random", "common part, small spread", "rank one", "full rank", "repeated", "equal"]),
       structure=st.sampled_from(["dense", "tridiagonal"]))
def test_the_pruned_pairs_largest_norm_is_every_pairs(seed, members, count, dim, kind, structure):
    """A categorical's bound, the largest norm of its level pairs' differences, found from the few pairs whose
    Frobenius norm could reach it is every pair's largest, to the eigensolver's rounding: in float64 through
    torch.linalg (a fitted model's sensitivities) and in float32 through a model's own solver (a CPU fit's
    record)."""
    cls = model_class(structure)
    levels = _levels(kind, members, count, dim, seed, structure)
    found = _largest_pair_norms(levels, cls.stored_matrix_norms, cls.stored_frobenius_rows)
    expected = _every_pairs_largest_norm(levels, cls.stored_matrix_norms)
    assert found.shape == (members,)
    torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-300)
    model = cls(1, max(dim, 2) if structure == "tridiagonal" else dim, 0, dtype=torch.float32)
    if model.dim == dim:
        single = levels.to(torch.float32)
        torch.testing.assert_close(_largest_pair_norms(single, model.matrix_norms, cls.stored_frobenius_rows),
                                   _every_pairs_largest_norm(single, model.matrix_norms), rtol=1e-6, atol=0)


@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
def test_a_wide_categoricals_bound_is_pruned_on_the_cpu_to_the_same_bounds(structure):
    """A categorical of more than PRUNED_PAIRS level pairs (here 30 levels and a missing one: 465) takes its
    bound from a few pairs on the CPU, the same bounds as every pair's (a fit's record, from its plan, and a
    fitted model's, from the spec); a narrow one (4 levels) every pair."""
    spec = EncodingSpec(3, numeric=[0], edges=[[-1.0, 0.0, 1.0]], missing=[], categorical=[1, 2], n_levels=[30, 4],
                        has_missing_level=[True, False])
    plan = bounds_plan_on(spec, torch.float32, "cpu")
    assert [feature for feature, _ in plan.pruned] == [1] and 31 * 30 // 2 > PRUNED_PAIRS
    cls = model_class(structure)
    g = torch.Generator().manual_seed(1)
    storage = (2, 6) if structure == "tridiagonal" else (6, 6)
    A = torch.randn((4, spec.n_columns) + storage, generator=g, dtype=torch.float64)
    A = A + A.mT if structure == "dense" else A
    every = feature_bounds(A, spec, norms=cls.stored_matrix_norms, plan=bounds_plan(spec, prune=False))
    pruned = feature_bounds(A, spec, norms=cls.stored_matrix_norms, frobenius_rows=cls.stored_frobenius_rows)
    torch.testing.assert_close(pruned, every, rtol=1e-12, atol=0)
    model = cls(1, 6, 0, dtype=torch.float32)
    single = A.to(torch.float32)
    torch.testing.assert_close(
        feature_bounds(single, spec, norms=model.matrix_norms, plan=plan, frobenius_rows=model.stored_frobenius_rows),
        feature_bounds(single, spec, norms=model.matrix_norms, plan=bounds_plan_on(spec, torch.float32, "cpu", prune=False)),
        rtol=1e-6, atol=0)


def test_a_wide_categoricals_fitted_sensitivities_and_records_are_every_pairs():
    """A fit on a categorical of 60 levels: its fitted sensitivities and its last epoch's record, both pruned,
    equal every pair's bounds (to rounding), and a change of level moves the prediction within the bound. (No early
    stopping: the last record is of the fitted parameters.)"""
    rng = np.random.default_rng(0)
    n = 3000
    codes = rng.integers(0, 60, n)
    X = pd.DataFrame({"x": rng.normal(size=n), "level": pd.Categorical(codes.astype(str))})
    y = X["x"].to_numpy() + rng.normal(size=60)[codes] + 0.1 * rng.normal(size=n)
    est = SpectralRegressor(dim=5, max_iter=3, n_estimators=2, min_level_count=10, early_stopping=False, random_state=0,
                            device="cpu").fit(X, y)
    spec = est.encoding_
    assert [feature for feature, _ in bounds_plan(spec).pruned] == [1]
    A = torch.as_tensor(est.feature_matrices_)
    every = ensemble_bounds(feature_bounds(A, spec, plan=bounds_plan(spec, prune=False)), est._member_bounds())
    expected = every.numpy() * est._output_scale() / est.x_scale_
    np.testing.assert_allclose(est.feature_sensitivities_, expected, rtol=1e-12)
    np.testing.assert_allclose(est.history_[-1]["sensitivities"], expected, rtol=1e-5)
    other = X.assign(level=pd.Categorical(np.roll(codes, 1).astype(str), categories=X["level"].cat.categories))
    change = np.abs(est.predict(other) - est.predict(X))
    assert np.all(change <= est.sensitivity_bound([0, 1]) + 1e-9)


def test_a_multiclass_ensembles_wide_categorical_bound_is_every_pairs():
    """Pruning over (members, classes) of level matrices: a three-class classifier of three members on a
    50-level categorical, its fitted bounds equal every pair's."""
    rng = np.random.default_rng(1)
    n = 4000
    codes = rng.integers(0, 50, n)
    X = pd.DataFrame({"x": rng.normal(size=n), "level": pd.Categorical(codes.astype(str))})
    y = (rng.normal(size=50)[codes] + X["x"] > 0).astype(int) + (X["x"] > 1)
    est = SpectralClassifier(dim=5, max_iter=3, n_estimators=3, min_level_count=10, random_state=0, device="cpu")
    est.fit(X, y)
    A = torch.as_tensor(est.feature_matrices_)
    assert A.shape[:2] == (3, 3) and [feature for feature, _ in bounds_plan(est.encoding_).pruned] == [1]
    every = feature_bounds(A, est.encoding_, plan=bounds_plan(est.encoding_, prune=False))
    torch.testing.assert_close(feature_bounds(A, est.encoding_), every, rtol=1e-12, atol=0)
    assert est.feature_sensitivities_.shape == (3, 2)
