"""Gated copies of numeric columns (skspectral/_columns/gates.py): the interaction test that picks
them, the rows that carry them, and the fits, bounds and constraints that hold with them."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral import SpectralClassifier, SpectralRegressor
from skspectral._columns.gates import (GATE_F, MIN_GATE_ROWS, Gate, chosen_gates, gate_candidates, interaction_f,
                                       interaction_sums)
from skspectral.encoding import FeatureEncoder

from .conftest import DEVICES

pd = pytest.importorskip("pandas")

FAST = dict(device="cpu", max_iter=30, n_estimators=2, random_state=0)


def plan_frame(n=2000, seed=0, interaction=True):
    """A binary plan, a 3-level region and three numeric columns; the target (a regression's) is
    the calls' effect only on the plan's rows (``interaction``) or added to the plan's shift."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "calls": rng.normal(size=n),
        "plan": pd.Categorical(rng.choice(["no", "yes"], size=n, p=[0.7, 0.3])),
        "minutes": rng.uniform(0, 10, size=n),
        "region": pd.Categorical(rng.choice(["east", "north", "west"], size=n)),
        "noise": rng.normal(size=n),
    })
    held = (X["plan"] == "yes").to_numpy()
    effect = 2.0 * np.tanh(2 * X["calls"].to_numpy())
    y = (np.where(held, effect, 0.0) if interaction else effect + held) + 0.3 * rng.normal(size=n)
    return X, y


def _mapper(X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SpectralRegressor(**{**FAST, "max_iter": 1, "gated_columns": 0, **params}).fit(X, y).column_mapper_


def _reference_f(bins, held, target):
    """The interaction F from the rows themselves: the cells' means against the additive least-squares
    fit of the rows (bin and level dummies), as a two-way ANOVA reads it."""
    cells = 2 * bins + held
    used = np.unique(cells)
    cell_mean = {c: target[cells == c].mean(axis=0) for c in used}
    fitted_cells = np.stack([cell_mean[c] for c in cells])
    within = ((target - fitted_cells) ** 2).sum()
    bin_values = np.unique(bins)
    design = np.column_stack([(bins == b).astype(float) for b in bin_values] + [held.astype(float)])
    additive = design @ np.linalg.lstsq(design, target, rcond=None)[0]
    interaction = ((fitted_cells - additive) ** 2).sum()
    df_interaction = len(used) - len(bin_values) - 1
    return (interaction / df_interaction) / (within / (len(target) - len(used)))


# ---- the test ---------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_bins=st.integers(2, 6), targets=st.integers(1, 3))
def test_interaction_f_from_the_cell_sums_equals_the_rows_two_way_anova(seed, n_bins, targets):
    rng = np.random.default_rng(seed)
    n = 400
    bins = rng.integers(0, n_bins, size=n)
    held = (rng.random(n) < 0.4).astype(np.int64)
    target = rng.normal(size=(n, targets)) + 0.5 * (bins == 1)[:, None] * held[:, None]
    sums = np.zeros((2 * n_bins, 3 + targets))
    cells = 2 * bins + held
    sums[:, 0] = np.bincount(cells, minlength=2 * n_bins)
    sums[:, 1] = sums[:, 0]
    for k in range(targets):
        sums[:, 2 + k] = np.bincount(cells, target[:, k], minlength=2 * n_bins)
    sums[:, -1] = np.bincount(cells, (target ** 2).sum(axis=1), minlength=2 * n_bins)
    np.testing.assert_allclose(interaction_f(sums), _reference_f(bins, held, target), rtol=1e-8)


def test_too_few_rows_at_the_level_or_without_it_score_zero():
    sums = np.zeros((4, 4))
    sums[:, 0] = sums[:, 1] = [100, MIN_GATE_ROWS - 1, 100, 0]  # cells (bin, held): 29 rows hold the level
    sums[:, 2], sums[:, 3] = [5.0, 30.0, -5.0, 0.0], [50.0, 60.0, 50.0, 0.0]
    assert interaction_f(sums) == 0.0


def test_the_sums_add_over_blocks_of_rows():
    X, y = plan_frame()
    mapper = _mapper(X, y)
    candidates = gate_candidates(mapper)
    rows = mapper.rows(X)
    weight = np.random.default_rng(1).uniform(0.5, 2, size=len(y))
    whole = interaction_sums(mapper, candidates, rows, y, weight)
    parts = sum(interaction_sums(mapper, candidates, rows[s], y[s], weight[s])
                for s in (slice(0, 700), slice(700, 1500), slice(1500, None)))
    np.testing.assert_allclose(parts, whole, rtol=1e-12)


def test_candidates_are_the_few_level_columns_frequent_levels_with_every_binned_numeric_column():
    X, y = plan_frame()
    X["calls"] = X["calls"].where(np.arange(len(X)) % 50 != 0)  # missing values: no copy of calls
    X["many"] = pd.Categorical(np.arange(len(X)) % 5)  # five levels: not a gate
    candidates = gate_candidates(_mapper(X, y))
    sources = {X.columns.get_loc(c) for c in ("minutes", "noise")}
    plan, region = X.columns.get_loc("plan"), X.columns.get_loc("region")
    assert set(candidates) == ({Gate(j, plan, 1) for j in sources}  # a binary column's second level only
                               | {Gate(j, region, level) for j in sources for level in range(3)})
    assert gate_candidates(_mapper(X, y, feature_encoding="linear")) == []


def test_a_planted_interaction_is_chosen_and_an_additive_level_is_not():
    X, y = plan_frame(interaction=True)
    mapper = _mapper(X, y)
    candidates = gate_candidates(mapper)
    chosen = chosen_gates(candidates, interaction_sums(mapper, candidates, mapper.rows(X), y, np.ones(len(y))), 4)
    assert chosen[0] == Gate(X.columns.get_loc("calls"), X.columns.get_loc("plan"), 1)
    assert all(gate.source == X.columns.get_loc("calls") for gate in chosen)
    X, y = plan_frame(interaction=False)
    mapper = _mapper(X, y)
    assert chosen_gates(candidates, interaction_sums(mapper, candidates, mapper.rows(X), y, np.ones(len(y))), 4) == ()
    scores = [interaction_f(s) for s in interaction_sums(mapper, candidates, mapper.rows(X), y, np.ones(len(y)))]
    assert max(scores) < GATE_F


# ---- the rows and the fit ---------------------------------------------------------------------------
def test_a_copy_is_its_source_at_the_level_and_encodes_to_zero_elsewhere():
    X, y = plan_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpectralRegressor(**FAST).fit(X, y)
    mapper = model.column_mapper_
    assert mapper.gates and mapper.gates[0].source == 0
    rows = mapper.rows(X)
    p = X.shape[1]
    assert rows.shape == (len(X), p + len(mapper.gates))
    held = (X["plan"] == "yes").to_numpy()
    np.testing.assert_array_equal(rows[held, p], X["calls"].to_numpy()[held])
    np.testing.assert_array_equal(rows[~held, p], X["calls"].min())
    standardised = torch.as_tensor(mapper.standardisation(clip=True).apply(rows.copy()))
    columns = FeatureEncoder(mapper.spec, dtype=torch.float64)(standardised)
    feature, _, _ = mapper.spec.columns()
    copy = torch.as_tensor(feature == p)
    assert (columns[torch.as_tensor(~held)][:, copy] == 0).all()
    assert (columns[torch.as_tensor(held)][:, copy] != 0).any()
    np.testing.assert_array_equal(model.x_scale_.shape, (p,))
    assert model.feature_sensitivities_.shape == (p,)


def test_an_additive_model_learns_the_interaction_through_the_copy():
    # dim=1: lambda(M(x)) = mu + sum_j z_j(x) a_j, additive in the encoded columns: without the copy it
    # cannot tell the plan's calls from the others'; with it the target's form is exactly its form
    X, y = plan_frame(n=3000)
    Xt, yt = plan_frame(n=2000, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        errors = {g: np.mean((SpectralRegressor(**{**FAST, "dim": 1, "max_iter": 60, "gated_columns": g}).fit(X, y)
                              .predict(Xt) - yt) ** 2) for g in ("auto", 0)}
    assert errors["auto"] < 1.2 * 0.3 ** 2 < errors[0] / 4  # the noise's variance, 0.09


def test_a_fit_of_max_gate_rows_or_more_makes_no_copy(monkeypatch):
    import skspectral._columns.gates as gates

    X, y = plan_frame(n=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(gates, "MAX_GATE_ROWS", 2001)
        assert SpectralRegressor(**{**FAST, "max_iter": 1}).fit(X, y).column_mapper_.gates
        monkeypatch.setattr(gates, "MAX_GATE_ROWS", 2000)
        assert SpectralRegressor(**{**FAST, "max_iter": 1}).fit(X, y).column_mapper_.gates == ()


def test_no_copy_is_the_fit_without_them_to_the_bit():
    X, y = plan_frame(interaction=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = SpectralRegressor(**FAST).fit(X, y)
        b = SpectralRegressor(**FAST, gated_columns=0).fit(X, y)
    assert a.column_mapper_.gates == ()
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_a_fit_with_copies_pickles_predicts_its_rows_alone_and_continues():
    X, y = plan_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpectralRegressor(**FAST, warm_start=True).fit(X, y)
        expected = model.predict(X)
        loaded = pickle.loads(pickle.dumps(model))
        np.testing.assert_array_equal(loaded.predict(X), expected)
        np.testing.assert_allclose(np.concatenate([model.predict(X.iloc[[i]]) for i in range(5)]), expected[:5],
                                   rtol=1e-6)
        gates = model.column_mapper_.gates
        model.set_params(max_iter=2).fit(X, y)  # a warm start keeps the columns
    assert model.column_mapper_.gates == gates


@pytest.mark.parametrize("device", DEVICES)
def test_the_certified_bound_covers_moves_of_the_source_and_changes_of_the_level(device):
    X, y = plan_frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpectralRegressor(**{**FAST, "max_iter": 40, "device": device}).fit(X, y)
    assert model.column_mapper_.gates
    rng = np.random.default_rng(3)
    base = X.iloc[rng.choice(len(X), 300)].reset_index(drop=True)
    moved = base.copy()
    moved["calls"] = base["calls"] + rng.normal(size=len(base))
    moved["plan"] = pd.Categorical(np.where(rng.random(len(base)) < 0.5, "yes", "no"), categories=["no", "yes"])
    delta = np.zeros((len(base), X.shape[1]))
    delta[:, 0] = moved["calls"] - base["calls"]
    delta[:, 1] = (moved["plan"] != base["plan"]).to_numpy()
    change = np.abs(model.predict(moved) - model.predict(base))
    bound = model.sensitivity_bound(delta)
    # (float32 on both devices by default: the predictions' rounding, ~1e-6 of the target's scale)
    assert (change <= bound * (1 + 1e-5) + 1e-6).all()


def test_a_monotone_source_stays_monotone_at_every_level():
    X, y = plan_frame()
    y = y + 0.5 * X["calls"].to_numpy()  # increasing in calls at both levels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpectralRegressor(**{**FAST, "max_iter": 40}, monotonic_cst=[1, 0, 0, 0, 0]).fit(X, y)
    assert model.column_mapper_.gates and model.column_mapper_.gates[0].source == 0
    grid = np.linspace(-3, 3, 61)
    for plan in ("no", "yes"):
        rows = X.iloc[[0] * len(grid)].reset_index(drop=True)
        rows["calls"] = grid
        rows["plan"] = pd.Categorical([plan] * len(grid), categories=["no", "yes"])
        assert (np.diff(model.predict(rows)) >= -1e-6).all()


def test_a_classifier_reads_its_class_indicators():
    X, y = plan_frame()
    binary = np.where(y > 0.5, "high", "low")
    multiclass = np.digitize(y, [-0.5, 0.5]).astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for labels in (binary, multiclass):
            model = SpectralClassifier(**FAST).fit(X, labels)
            assert model.column_mapper_.gates[0] == Gate(0, 1, 1)
            assert np.isfinite(model.predict_proba(X)).all()
