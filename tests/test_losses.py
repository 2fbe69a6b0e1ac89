"""Losses and metrics by name, their constant-prediction floors, the penalty."""

import numpy as np
import pytest
import torch

from skspectral import SpectralModel
from skspectral._losses import LOSSES, METRICS, get_loss, get_metric, make_penalty


def test_losses_by_name_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(40, dtype=torch.float64, generator=g)
    w = torch.rand(40, dtype=torch.float64, generator=g)
    y = torch.randn(40, dtype=torch.float64, generator=g)
    np.testing.assert_allclose(get_loss("squared_error").fn(out, y, w), ((out - y) ** 2 * w).sum() / w.sum())
    labels = (y > 0).double()
    p = torch.sigmoid(out)
    expected = -(w * (labels * p.log() + (1 - labels) * (1 - p).log())).sum() / w.sum()
    np.testing.assert_allclose(get_loss("binary_log_loss").fn(out, labels, w), expected, rtol=1e-12)
    logits = torch.randn(40, 3, dtype=torch.float64, generator=g)
    classes = torch.randint(0, 3, (40,), generator=g).double()
    expected = -(w * logits.log_softmax(1)[torch.arange(40), classes.long()]).sum() / w.sum()
    np.testing.assert_allclose(get_loss("log_loss").fn(logits, classes, w), expected, rtol=1e-12)
    assert {LOSSES[name].metric for name in LOSSES} == {"rmse", "log_loss"}
    with pytest.raises(ValueError, match="Unknown loss 'hinge'"):
        get_loss("hinge")


def test_constant_floors_are_the_best_constant_predictions_loss():
    y = np.array([1.0, 2.0, 4.0, 7.0])
    w = np.array([1.0, 1.0, 2.0, 0.5])
    floor = get_loss("squared_error").constant_floor(y, w)
    constants = np.linspace(0, 8, 8001)
    np.testing.assert_allclose(floor, min(np.average((y - c) ** 2, weights=w) for c in constants), rtol=1e-6)
    labels = np.array([0.0, 1.0, 1.0, 2.0])
    prior = np.array([1.0, 3.0, 0.5]) / 4.5
    np.testing.assert_allclose(get_loss("log_loss").constant_floor(labels, w), -(prior * np.log(prior)).sum())


def test_metrics_declare_units_and_direction():
    assert METRICS["rmse"].in_target_units and not METRICS["rmse"].greater_is_better
    assert METRICS["accuracy"].greater_is_better and METRICS["r2"].greater_is_better
    out = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    ones = torch.ones(3, dtype=torch.float64)
    np.testing.assert_allclose(get_metric("accuracy").fn(out, target, ones), 2 / 3)
    np.testing.assert_allclose(get_metric("r2").fn(target, target, ones), 1.0)
    with pytest.raises(ValueError, match="Unknown metric"):
        get_metric("auc")


def test_penalty_reads_the_models_feature_matrices():
    model = SpectralModel(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert make_penalty(model, alpha=0, spectral_penalty=0, total_weight=10.0) is None
    A = model.feature_matrices().detach()
    value = make_penalty(model, alpha=2.0, spectral_penalty=0.1, total_weight=10.0)()
    expected = 0.5 * 2.0 * A.square().sum() / 10.0 + 0.1 * torch.linalg.matrix_norm(A, ord=2).sum()
    np.testing.assert_allclose(value.detach(), expected, rtol=1e-10)


# ---- regression losses beyond the squared error (issue 23) -------------------------------------
def test_regression_losses_are_scikit_learns_metrics():
    """In the estimator's model space: identity-link losses on standardised targets (times the
    scale in y's units), log-link losses on y (over its mean) with the output a log; the values are
    scikit-learn's (mean absolute error, pinball, Poisson and gamma deviances, huber by hand)."""
    from sklearn.metrics import mean_absolute_error, mean_gamma_deviance, mean_pinball_loss, mean_poisson_deviance

    from skspectral._losses import regression_loss

    rng = np.random.default_rng(0)
    out, t, w = rng.normal(size=60), rng.normal(size=60), rng.uniform(0.2, 2, 60)
    T = lambda a: torch.as_tensor(a)  # noqa: E731
    mae = regression_loss("absolute_error")
    np.testing.assert_allclose(mae.fn(T(out), T(t), T(w)), mean_absolute_error(t, out, sample_weight=w))
    levels = [0.1, 0.5, 0.8]
    pinball = regression_loss("quantile", quantiles=levels)
    many = np.column_stack([out + i for i in range(3)])
    expected = np.mean([mean_pinball_loss(t, many[:, i], alpha=q, sample_weight=w) for i, q in enumerate(levels)])
    np.testing.assert_allclose(pinball.fn(T(many), T(t), T(w)), expected, rtol=1e-12)
    delta = 0.7
    r = np.abs(out - t)
    huber = np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta))
    np.testing.assert_allclose(regression_loss("huber", delta=delta).fn(T(out), T(t), T(w)), np.average(huber, weights=w))
    counts = rng.poisson(2.0, 60).astype(float)
    log_mu = out + 0.4
    np.testing.assert_allclose(regression_loss("poisson").fn(T(log_mu), T(counts), T(w)),
                               mean_poisson_deviance(counts, np.exp(log_mu), sample_weight=w), rtol=1e-12)
    positive = counts + 0.5
    np.testing.assert_allclose(regression_loss("gamma").fn(T(log_mu), T(positive), T(w)),
                               mean_gamma_deviance(positive, np.exp(log_mu), sample_weight=w), rtol=1e-12)
    # log-link members are averaged in the target's space
    members = T(rng.normal(size=(5, 4)))
    np.testing.assert_allclose(regression_loss("poisson").combine_members(members).exp(),
                               members.exp().mean(dim=1), rtol=1e-12)
    with pytest.raises(ValueError, match="Unknown regression loss 'tweedie'"):
        regression_loss("tweedie")


@pytest.mark.parametrize("name", ["absolute_error", "huber", "quantile"])
def test_identity_link_floors_are_a_constants_loss(name):
    from skspectral._losses import regression_loss

    rng = np.random.default_rng(1)
    t, w = rng.standard_cauchy(200), rng.uniform(0.5, 1.5, 200)
    loss = regression_loss(name, quantiles=[0.2, 0.9], delta=1.0)
    floor = loss.constant_floor(t, w)
    for c in np.linspace(-3, 3, 25):  # no constant does better (to the resolution of the grid)
        out = torch.full((200, 2) if name == "quantile" else (200,), float(c), dtype=torch.float64)
        assert float(loss.fn(out, torch.as_tensor(t), torch.as_tensor(w))) >= floor - 1e-9


@pytest.mark.parametrize("name", ["squared_error", "poisson", "binary_log_loss", "log_loss"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_members_combination_is_the_ensembles_definition_and_the_same_for_a_row_in_any_batch(name, dtype):
    """How members combine -- their mean, the log of their mean exp (a log link), the logit of their mean
    probability, the log of their mean class probabilities -- against the definitions in float64, and a
    row's combined output is the same to the bit alone as among 300 rows: a prediction does not depend on
    its batch. (torch's softplus rounded a float32 row differently alone: the binary logit moved by 1e-7.)"""
    from skspectral._losses import regression_loss

    loss = regression_loss("poisson") if name == "poisson" else get_loss(name)
    g = torch.Generator().manual_seed(0)
    shape = (300, 4) + ((5,) if name == "log_loss" else ())
    output = (torch.randn(shape, dtype=torch.float64, generator=g) * 8).to(dtype)
    x = output.double()
    expected = {
        "squared_error": lambda: x.mean(1),
        "poisson": lambda: x.exp().mean(1).log(),
        "binary_log_loss": lambda: torch.logit(torch.sigmoid(x).mean(1)),
        "log_loss": lambda: x.softmax(-1).mean(1).log(),
    }[name]()
    combined = loss.combine_members(output)
    assert combined.dtype == dtype
    close = torch.isfinite(expected) & (expected.abs() < 30)  # (the logit of a mean probability near 0 or 1)
    np.testing.assert_allclose(combined.double()[close], expected[close], rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)
    alone = torch.cat([loss.combine_members(output[i : i + 1]) for i in range(output.shape[0])])
    assert torch.equal(alone, combined)
