"""Certified sensitivities: units, importances, and the Weyl bound as a property test."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._sensitivity import bounds_plan_on, feature_bounds, spectral_norms
from skspectral.encoding import EncodingSpec

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
    assert all(part.device == A.device for part in plan)
    expected = feature_bounds(A, spec)
    assert expected.shape == (2, 4) and bool((expected > 0).all())
    assert torch.equal(feature_bounds(A, spec, plan=plan), expected)
