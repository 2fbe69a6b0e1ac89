"""Gated columns: a numeric column's copy that acts only where a categorical column holds one level.

The model reads a numeric column j as sum_t z_t(x_j) A_{j,t} whatever a row's levels are, so a
level can change how j acts only through the eigenvector's turn. Trees split on the level and then
on j: churn's international-plan customers leave when they make few international calls, the
others do not care (benchmarks/RESULTS.md, section 12). A gated copy of j for level l of column c
is j's piecewise-linear path on j's own bins, z_t(x_j) B_t, where c holds l and 0 elsewhere (the
host rows carry x_j there and j's training minimum, below every bin, elsewhere).

Which copies a fit makes is read from its target before any training, one test per (level,
numeric column): within j's bins, does the level change the target by more than its own shift
does? The F statistic of the two-way table's interaction (the cells' weighted mean targets
against the additive bins-plus-level fit of them; rows of positive weight in the bin subsample).
Its sums are additive over blocks of rows, so a Dask fit merges its partitions' as the column
summaries merge. Copies whose F exceeds GATE_F, the largest first, at most ``gated_columns``
("auto": AUTO_GATES).

Candidates: the frequent levels of a categorical column of 2 to MAX_GATE_LEVELS of them (a binary
column's second level only: its first's copy is the same model less the level's own shift), each
with every piecewise-linear numeric column that had no missing value in fit, where at least
MIN_GATE_ROWS rows hold the level and as many do not; none in fits of MAX_GATE_ROWS rows or more.

Weyl's bound still holds, per input column: moving x_j moves j's path and, where the level is
held, the copy's (j's bound plus the copy's); changing c's level switches the copy's path on or
off, by at most sum_t ||B_t||_2 (added to c's bound).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Chosen on the quality suite's selection fold (2-core CPU, benchmarks/RESULTS.md, section 12): F above
# 12 picked churn's international plan with its international calls and minutes (log-loss 4-6 % lower)
# and nothing on credit, nmes1988 or cps1988, where F above 3 picked pairs that cost up to 1.5 %.
GATE_F = 12.0
AUTO_GATES = 4
# From this many fit rows a fit makes no copy: flights (218,000 rows, its 3-level origin) made four, each on
# 32 bins, for 0.6 % lower RMSE at 1.6x the 2-core CPU's epoch, past its fit-cost goal (10x HGB's time).
MAX_GATE_ROWS = 100_000
MAX_GATE_LEVELS = 4
MIN_GATE_ROWS = 30


class Gate(NamedTuple):
    """A gated copy of numeric input column ``source``, active where categorical input column
    ``categorical`` holds the level coded ``level``."""

    source: int
    categorical: int
    level: int


def gate_limit(gated_columns) -> int:
    """How many gated copies a fit may make: ``gated_columns`` itself or AUTO_GATES for "auto"."""
    return AUTO_GATES if isinstance(gated_columns, str) and gated_columns == "auto" else int(gated_columns)


def gate_candidates(mapper) -> list[Gate]:
    """The (level, numeric column) pairs a fit tests, from a fitted mapper without gates."""
    spec, codes = mapper.spec, mapper.codes
    if codes is None or not spec.categorical:
        return []
    missing = set(spec.missing)
    sources = [int(j) for j, edges in zip(spec.numeric, spec.edges) if edges is not None and j not in missing]
    n_frequent = dict(zip(mapper.kinds.categorical_index.tolist(), codes.n_seen))
    candidates = []
    for c in spec.categorical:
        n = n_frequent[int(c)]
        if 2 <= n <= MAX_GATE_LEVELS:
            candidates += [Gate(j, int(c), level) for level in ([1] if n == 2 else range(n)) for j in sources]
    return candidates


def source_bins(mapper, rows: np.ndarray, source: int) -> np.ndarray:
    """Each row's bin of numeric column ``source`` (its encoding's bins; -1 where missing)."""
    edges = mapper.spec.edges[mapper.spec.numeric.index(source)]
    x = (rows[:, source] - mapper.mean[source]) / mapper.scale[source]
    bins = np.searchsorted(np.asarray(edges)[1:-1], x, side="right")
    return np.where(np.isnan(x), -1, bins)


def interaction_sums(mapper, candidates: list[Gate], rows: np.ndarray, target: np.ndarray,
                     weight: np.ndarray) -> np.ndarray:
    """Per candidate and cell (bin, level held or not): rows, weight, the weighted target sums and the
    weighted sum of squares over the target's columns -- shape (candidates, cells, 3 + targets), cells
    2 x the most bins of any source. ``rows``: coded rows; ``target``: (n, targets) floats (a
    regressor's y, a classifier's class indicators); rows of zero weight count for nothing."""
    target = np.asarray(target, dtype=np.float64).reshape(len(rows), -1)
    weight = np.asarray(weight, dtype=np.float64)
    n_cells = 2 * max((len(e) - 1 for e in mapper.spec.edges if e is not None), default=1)
    out = np.zeros((len(candidates), n_cells, 3 + target.shape[1]))
    if not len(candidates) or not len(rows):
        return out
    keep = weight > 0
    values = [np.ones(len(rows)), weight] + [weight * t for t in target.T] + [weight * (target ** 2).sum(axis=1)]
    values = [v[keep] for v in values]
    bins_of, held_of = {}, {}  # each source's bins and each level's rows, found once
    for i, gate in enumerate(candidates):
        if gate.source not in bins_of:
            bins_of[gate.source] = source_bins(mapper, rows, gate.source)[keep]
        if gate[1:] not in held_of:
            held_of[gate[1:]] = rows[keep, gate.categorical] == gate.level
        bins = bins_of[gate.source]
        # a missing value's row to a last cell, dropped: no copy of the values per candidate
        cell = np.where(bins >= 0, 2 * bins + held_of[gate[1:]], n_cells)
        for k, v in enumerate(values):
            out[i, :, k] = np.bincount(cell, v, minlength=n_cells + 1)[:n_cells]
    return out


def interaction_f(sums: np.ndarray) -> float:
    """The interaction's F statistic from one candidate's cell sums (see :func:`interaction_sums`);
    0 where the level or its absence has fewer than MIN_GATE_ROWS rows, or nothing varies."""
    rows, weight, squares = sums[:, 0], sums[:, 1], sums[:, -1]
    totals = sums[:, 2:-1]
    held = np.arange(len(rows)) % 2 == 1
    if rows[held].sum() < MIN_GATE_ROWS or rows[~held].sum() < MIN_GATE_ROWS:
        return 0.0
    used = weight > 0
    means = totals[used] / weight[used, None]
    within = float(squares[used].sum() - (weight[used, None] * means ** 2).sum())
    bins = np.arange(len(rows))[used] // 2
    levels = held[used].astype(np.int64)
    # the additive fit of the cells' means: bin effects plus the level's shift, weighted least squares
    _, bin_index = np.unique(bins, return_inverse=True)
    design = np.zeros((used.sum(), bin_index.max() + 2))
    design[np.arange(len(bins)), bin_index] = 1.0
    design[:, -1] = levels
    root = np.sqrt(weight[used])[:, None]
    coefficients = np.linalg.lstsq(design * root, means * root, rcond=None)[0]
    interaction = float((weight[used, None] * (means - design @ coefficients) ** 2).sum())
    df_interaction = int(used.sum()) - (bin_index.max() + 1) - 1
    df_within = int(rows.sum()) - int(used.sum())
    if df_interaction < 1 or df_within < 1 or within <= 0:
        return 0.0
    return (interaction / df_interaction) / (within / df_within)


def with_chosen_gates(mapper, gated_columns, n_rows: int, sums_of):
    """``mapper`` (fitted, without gates) with the gated copies its fit's target asks for:
    ``sums_of(candidates)`` gives the candidates' :func:`interaction_sums` over the fit's rows (one
    block's, or a Dask fit's partitions' added up). The mapper as it is where ``gated_columns`` is 0,
    the fit has MAX_GATE_ROWS rows or more (``n_rows``), or there is no candidate."""
    limit = gate_limit(gated_columns) if n_rows < MAX_GATE_ROWS else 0
    candidates = gate_candidates(mapper) if limit else []
    if not candidates:
        return mapper
    return mapper.with_gates(chosen_gates(candidates, sums_of(candidates), limit))


def chosen_gates(candidates: list[Gate], sums: np.ndarray, limit: int, threshold: float = GATE_F) -> tuple:
    """The gates to make: candidates whose interaction F exceeds ``threshold``, the largest first
    (ties in candidate order), at most ``limit``."""
    scores = [interaction_f(s) for s in sums]
    order = sorted(range(len(candidates)), key=lambda i: -scores[i])
    return tuple(candidates[i] for i in order if scores[i] > threshold)[:limit]
