"""The target's summaries and fitted coders (skspectral/_target.py)."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.class_weight import compute_sample_weight

from skspectral._target import LabelSummary, TargetSummary


def _split(rng, n, n_blocks):
    bounds = np.r_[0, np.sort(rng.integers(0, n + 1, n_blocks - 1)), n]
    return list(zip(bounds[:-1], bounds[1:]))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), n_blocks=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_target_moments_of_any_split_merge_into_the_whole(n, n_blocks, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n) * 1e3 + 5e4
    weight = rng.uniform(0, 2, n)
    weight[0] = 1.0
    whole = TargetSummary.of_block(y, weight)
    merged = None
    for a, b in _split(rng, n, n_blocks):
        part = TargetSummary.of_block(y[a:b], weight[a:b])
        merged = part if merged is None else merged.merge(part)
    np.testing.assert_allclose(merged.weight, whole.weight, rtol=1e-13)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(merged.var, whole.var, rtol=1e-8, atol=1e-9 * whole.mean ** 2 * 1e-6)
    scaler = whole.finalize()
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(y)), y, rtol=1e-12)


def test_target_errors():
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        TargetSummary.of_block(np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(ValueError, match="target y has values too large"):
        TargetSummary.of_block(np.array([1e300, -1e300, 5e299]), np.ones(3)).finalize()
    # a constant y is learnt on a scale of 1e-9 of its size (not 1: the model's output would stay in y's units)
    assert TargetSummary.of_block(np.full(4, 3.0), np.ones(4)).finalize().scale == pytest.approx(3e-9)
    assert TargetSummary.of_block(np.full(4, 1e-3), np.ones(4)).finalize().scale == pytest.approx(1e-9)
    # under a log link its output is scaled down instead (y over its mean is 1 there, whatever the size)
    constant_counts = TargetSummary.of_block(np.full(4, 3.0), np.ones(4)).finalize(link="log", loss="poisson")
    assert constant_counts.output_factor == pytest.approx(1e-9) and constant_counts.scale == 3.0
    np.testing.assert_allclose(constant_counts.inverse_transform(np.array([-0.05, 0.0, 0.05])), 3.0, rtol=1e-9)
    counts = TargetSummary.of_block(np.array([0.0, 1.0, 4.0]), np.ones(3)).finalize(link="log", loss="poisson")
    assert counts.output_factor == 1.0
    np.testing.assert_allclose(counts.inverse_transform(np.array([0.5])), [5 / 3 * np.exp(0.5)])
    # a scaler pickled before the factor existed loads with the plain output
    old = pickle.loads(pickle.dumps(counts))
    del old.__dict__["output_factor"]
    assert old.output_factor == 1.0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 400), n_classes=st.integers(2, 6), n_blocks=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_labels_of_any_split_merge_and_balance_as_scikit_learn_does_on_all_rows(n, n_classes, n_blocks, seed):
    rng = np.random.default_rng(seed)
    labels = np.array([f"class {i}" for i in range(n_classes)])[rng.integers(0, n_classes, n) ** 2 % n_classes]
    whole = LabelSummary.of_block(labels)
    merged = None
    for a, b in _split(rng, n, n_blocks):
        part = LabelSummary.of_block(labels[a:b])
        merged = part if merged is None else merged.merge(part)
    np.testing.assert_array_equal(merged.labels, whole.labels)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    coder = merged.finalize()
    encoded = coder.transform(labels)
    np.testing.assert_array_equal(coder.classes[encoded.astype(int)], labels)
    # "balanced": scikit-learn's weights of every row, whichever rows a worker holds
    weights = coder.class_weights("balanced")[encoded.astype(int)]
    np.testing.assert_array_equal(weights, compute_sample_weight("balanced", labels))
    chosen = {str(coder.classes[0]): 3.0}
    np.testing.assert_array_equal(coder.class_weights(chosen)[encoded.astype(int)],
                                  compute_sample_weight(chosen, labels))


def test_classes_given_up_front_and_unknown_labels():
    coder = LabelSummary.of_block(np.array([2, 0, 2])).finalize(classes=[0, 1, 2])
    np.testing.assert_array_equal(coder.classes, [0, 1, 2])
    np.testing.assert_array_equal(coder.counts, [1, 0, 2])
    np.testing.assert_array_equal(coder.class_weights("balanced"), [1.5, 1.0, 0.75])  # over the classes seen
    with pytest.raises(ValueError, match=r"y holds labels \[7\] not among classes_"):
        coder.transform(np.array([0, 7]))
