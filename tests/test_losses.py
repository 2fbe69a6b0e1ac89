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
