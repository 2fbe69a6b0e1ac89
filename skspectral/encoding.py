"""Feature encodings on the device: each input column becomes one or more encoded
columns z_j, and the model is M(x) = diag(mu) + sum_j z_j(x) A_j.

- numeric, linear: z = x (the series' model; x standardised);
- numeric, piecewise linear: bins b_0 < ... < b_T, z_t = clip((x - b_t) / (b_{t+1} - b_t), 0, 1),
  so sum_t z_t A_t is a continuous piecewise-linear path of matrices in x;
- numeric, missing: a feature with missing values in training gets one more column,
  1 where x is NaN (its numeric columns are then 0);
- categorical: one column per level (one-hot), codes from the host side; code -1
  (unseen or rare) goes to the feature's "other" level, code -2 (missing) to its
  "missing" level where one was seen in training, else to "other".

Usable without scikit-learn: build an :class:`EncodingSpec` by hand or let the
estimators fit one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# column kinds
LINEAR, PIECEWISE, MISSING, LEVEL = 0, 1, 2, 3


@dataclass
class EncodingSpec:
    """How each input column is encoded (numpy only: it pickles with the estimator).

    n_features: input columns. numeric: indices of numeric features. edges: for
    piecewise-linear encoding, a list (per numeric feature) of increasing bin edges
    in the feature's standardised units, or None for the linear encoding of that
    feature. missing: numeric feature indices that get a missing-value column.
    categorical: indices of categorical features; n_levels: their number of levels
    (every level seen in training, plus "other", plus "missing" where seen).
    has_missing_level: per categorical feature, whether its last level is "missing".
    """

    n_features: int
    numeric: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    categorical: list = field(default_factory=list)
    n_levels: list = field(default_factory=list)
    has_missing_level: list = field(default_factory=list)

    @classmethod
    def linear(cls, n_features: int) -> "EncodingSpec":
        return cls(n_features, numeric=list(range(n_features)), edges=[None] * n_features)

    @property
    def is_plain_linear(self) -> bool:
        """Every feature numeric, linear, without a missing column: z = x."""
        return (not self.categorical and not self.missing and all(e is None for e in self.edges)
                and list(self.numeric) == list(range(self.n_features)))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(feature, kind, width) of every encoded column, in the encoder's output order.

        width: a piecewise-linear column's bin width (standardised units), else 1.
        """
        feature, kind, width = [], [], []
        for i, edges in zip(self.numeric, self.edges):  # linear features first, as FeatureEncoder
            if edges is None:
                feature.append(i), kind.append(LINEAR), width.append(1.0)
        for i, edges in zip(self.numeric, self.edges):
            if edges is not None:
                widths = np.diff(np.asarray(edges, dtype=np.float64))
                feature += [i] * len(widths)
                kind += [PIECEWISE] * len(widths)
                width += widths.tolist()
        for i in self.missing:
            feature.append(i), kind.append(MISSING), width.append(1.0)
        for i, levels in zip(self.categorical, self.n_levels):
            feature += [i] * levels
            kind += [LEVEL] * levels
            width += [1.0] * levels
        return np.asarray(feature, dtype=np.int64), np.asarray(kind, dtype=np.int64), np.asarray(width)

    @property
    def n_columns(self) -> int:
        return len(self.columns()[0])


class FeatureEncoder(torch.nn.Module):
    """Maps input rows (B, n_features) to encoded columns (B, n_columns) per an EncodingSpec.

    Input: numeric features standardised (NaN for missing), categorical features as
    integer codes (level index, -1 unseen or rare, -2 missing). No learned parameters:
    the bin edges are buffers, so the encoder moves with the model.
    """

    def __init__(self, spec: EncodingSpec, dtype=None, device=None):
        super().__init__()
        self.spec = spec
        factory = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        linear = [i for i, e in zip(spec.numeric, spec.edges) if e is None]
        piecewise = [(i, np.asarray(e, dtype=np.float64)) for i, e in zip(spec.numeric, spec.edges) if e is not None]
        self.register_buffer("linear_index", torch.tensor(linear, dtype=torch.long, device=device))
        self.register_buffer("piecewise_index", torch.tensor([i for i, _ in piecewise], dtype=torch.long, device=device))
        # Bins of every piecewise feature in one (F, T) table; shorter rows are padded with
        # bins of infinite width, whose columns are dropped.
        n_bins = max((len(e) - 1 for _, e in piecewise), default=0)
        left = np.zeros((len(piecewise), n_bins))
        width = np.full((len(piecewise), n_bins), np.inf)
        for row, (_, edges) in enumerate(piecewise):
            left[row, : len(edges) - 1] = edges[:-1]
            width[row, : len(edges) - 1] = np.diff(edges)
        self.register_buffer("bin_left", torch.tensor(left, **factory))
        self.register_buffer("bin_width", torch.tensor(width, **factory))
        # the real bins' positions in the flattened table: an index, not a boolean mask, so the
        # selection has a fixed shape and needs no host sync (a CUDA graph can capture it)
        self.register_buffer("piecewise_columns", torch.tensor(np.flatnonzero(np.isfinite(width).ravel()),
                                                               dtype=torch.long, device=device))
        self.register_buffer("missing_index", torch.tensor(list(spec.missing), dtype=torch.long, device=device))
        self.register_buffer("categorical_index", torch.tensor(list(spec.categorical), dtype=torch.long, device=device))
        offsets = np.concatenate([[0], np.cumsum(spec.n_levels)])[:-1].astype(np.int64)
        n_levels = np.asarray(spec.n_levels, dtype=np.int64)
        has_missing = np.asarray(spec.has_missing_level, dtype=bool)
        # code -1 -> "other" (the level after the seen ones); -2 -> "missing" where seen, else "other"
        other = n_levels - 1 - has_missing
        missing = np.where(has_missing, n_levels - 1, other)
        self.register_buffer("level_offset", torch.tensor(offsets, dtype=torch.long, device=device))
        self.register_buffer("level_other", torch.tensor(other, dtype=torch.long, device=device))
        self.register_buffer("level_missing", torch.tensor(missing, dtype=torch.long, device=device))
        self.n_levels_total = int(n_levels.sum())
        self.n_columns = spec.n_columns
        # Relative initial scale per column (SpectralModel reads it): a piecewise feature's
        # T columns are about half active at once, so each starts 1/sqrt(T) as large as a
        # linear column; a categorical feature has one active level, like one linear column.
        feature, kind, _ = spec.columns()
        bins_of = {i: len(e) - 1 for i, e in zip(spec.numeric, spec.edges) if e is not None}
        self.init_factor = np.where(kind == PIECEWISE, 1.0 / np.sqrt([bins_of.get(i, 1) for i in feature]), 1.0)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        parts = []
        if len(self.linear_index):
            parts.append(torch.nan_to_num(X[:, self.linear_index], nan=0.0))
        if len(self.piecewise_index):
            x = X[:, self.piecewise_index, None]  # (B, F, 1)
            z = ((x - self.bin_left) / self.bin_width).clamp(0.0, 1.0)  # NaN stays NaN
            parts.append(torch.nan_to_num(z.flatten(1).index_select(1, self.piecewise_columns), nan=0.0))
        if len(self.missing_index):
            parts.append(torch.isnan(X[:, self.missing_index]).to(X.dtype))
        if len(self.categorical_index):
            codes = X[:, self.categorical_index].long()
            codes = torch.where(codes == -1, self.level_other, torch.where(codes == -2, self.level_missing, codes))
            one_hot = X.new_zeros(X.shape[0], self.n_levels_total)
            one_hot.scatter_(1, codes + self.level_offset, 1.0)
            parts.append(one_hot)
        return torch.cat(parts, dim=1) if parts else X.new_zeros((X.shape[0], 0))  # no column carries anything
