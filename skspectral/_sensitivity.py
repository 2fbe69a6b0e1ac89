"""Certified sensitivities: Weyl's inequality turned into per-feature bounds.

For M(x) = diag(mu) + sum_j z_j(x) A_j, |lambda_k(M(x')) - lambda_k(M(x))| <=
||sum_j (z_j(x') - z_j(x)) A_j||_2 <= sum_j |z_j(x') - z_j(x)| ||A_j||_2. Per input
feature i that gives, in standardised units:

- linear: ||A_i||_2 per unit of x_i;
- piecewise linear with bins of widths w_t: max_t ||A_{i,t}||_2 / w_t per unit of
  x_i (moving x_i by delta moves the bin columns by sum_t w_t |dz_t| = |delta|);
- categorical: max over level pairs (a, b) of ||A_a - A_b||_2 for any change of
  level (unseen, rare and missing levels included);
- a gated copy of numeric feature i active at a level of categorical feature c
  (``skspectral._columns.gates``): its piecewise bound adds to i's, and the sum of its
  columns' norms to c's (a change of level can switch its whole path on or off);
- an ensemble: what its combination of the members' outputs allows (:func:`ensemble_bounds`): the
  mean of their bounds where the prediction is their mean; the largest where it is a monotone
  mixing whose weights sum to at most 1 (the log of the mean exp of a log link's members; the logit
  of a binary classifier's mean probability, by Chebyshev's sum inequality); for a multiclass
  classifier's log mean probabilities, the largest over the members of a class's bound plus the
  largest other class's (a member's log-softmax moves by at most so much).

The same holds for the structure and smoothing variants: a tridiagonal A_j is a
symmetric matrix (its norm from the tridiagonal solver), and the smoothed
eigenvalue is 1-Lipschitz in the spectral norm (``skspectral.eig._smoothed``).
Monotone constraints only restrict the A_j (PSD/NSD) and change no bound.

Moves between a missing and an observed numeric value are not covered. The model
sees standardised features (x_i - mean_i) / scale_i and outputs standardised targets
(regression: y = mean + scale * output), so in the user's units the numeric bound
is the above times output_scale / scale_i, and the categorical one times output_scale.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from .encoding import LEVEL, LINEAR, PIECEWISE, EncodingSpec
from .model import SpectralModel, model_class


spectral_norms = SpectralModel.stored_matrix_norms  # ||A||_2 of a (..., n, n) stack of symmetric matrices


# A categorical feature with more level pairs than this has, on the CPU, its bound found from the few
# pairs whose Frobenius norm could reach the largest spectral norm (``_largest_pair_norms``), not from every
# pair's: 255 levels are 32,385 pairs, whose every norm took a CPU fit's record of the bounds 1.6x its epoch's
# steps, and feature_sensitivities_ 9 s (three such columns, eight members: benchmarks/RESULTS.md, section 9). A GPU's
# record takes every pair: there one batched call costs less (0.6-7 ms an epoch at 100-255 levels, H200) than the
# pruning, which reads how many pairs survive -- a synchronisation that waits for the epoch's queued steps.
PRUNED_PAIRS = 256


class BoundsPlan(NamedTuple):
    """What :func:`feature_bounds` reads, found once per encoding (:func:`bounds_plan`)."""

    numeric: np.ndarray | torch.Tensor  # the numeric (linear and piecewise) columns
    numeric_feature: np.ndarray | torch.Tensor  # their features
    width: np.ndarray | torch.Tensor  # their widths
    first: np.ndarray | torch.Tensor  # the categorical features' level pairs taken one by one: first columns,
    second: np.ndarray | torch.Tensor  # second columns,
    pair_feature: np.ndarray | torch.Tensor  # and features
    pruned: tuple = ()  # (feature, its level columns) for the features whose pairs are pruned


def bounds_plan(spec: EncodingSpec, prune: bool = True) -> BoundsPlan:
    """What :func:`feature_bounds` reads, found once per encoding: the numeric (linear and
    piecewise) columns, their features and widths; the categorical features' level pairs (their
    two columns) and features -- with ``prune``, those of a feature of more than PRUNED_PAIRS pairs
    in ``pruned`` instead, as the feature and its level columns. A feature with numeric columns
    takes its bound from them."""
    feature, kind, width = spec.columns()
    numeric = np.flatnonzero((kind == LINEAR) | (kind == PIECEWISE))
    firsts, seconds, pair_features, pruned = [], [], [], []
    for i in np.setdiff1d(np.arange(spec.n_features), feature[numeric]):
        levels = np.flatnonzero((feature == i) & (kind == LEVEL))
        if prune and len(levels) * (len(levels) - 1) // 2 > PRUNED_PAIRS:
            pruned.append((int(i), levels))
            continue
        a, b = np.triu_indices(len(levels), k=1)
        firsts.append(levels[a])
        seconds.append(levels[b])
        pair_features.append(np.full(len(a), i))
    joined = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return BoundsPlan(numeric, feature[numeric], width[numeric], joined(firsts), joined(seconds),
                      joined(pair_features), tuple(pruned))


def bounds_plan_on(spec: EncodingSpec, dtype: torch.dtype, device, prune: bool | None = None) -> BoundsPlan:
    """:func:`bounds_plan` as tensors on ``device`` (the widths in ``dtype``): what a fit's record of the
    bounds every epoch reads without copying the plan from the host again (on a GPU a copy from
    pageable host memory would wait for the epoch's queued steps: a second synchronisation an epoch).
    ``prune`` None: pairs are pruned on the CPU only (PRUNED_PAIRS)."""
    plan = bounds_plan(spec, prune=torch.device(device).type == "cpu" if prune is None else prune)
    on = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
    return BoundsPlan(on(plan.numeric), on(plan.numeric_feature), torch.as_tensor(plan.width, dtype=dtype, device=device),
                      on(plan.first), on(plan.second), on(plan.pair_feature),
                      tuple((i, on(levels)) for i, levels in plan.pruned))


def feature_bounds(matrices: torch.Tensor, spec: EncodingSpec | None, norms=spectral_norms,
                   plan: BoundsPlan | None = None, frobenius_rows=SpectralModel.stored_frobenius_rows) -> torch.Tensor:
    """Per-feature bounds (standardised units) from the encoded columns' matrices.

    matrices: (..., n_columns, d, d); returns (..., input features: n_features less the gated copies,
    which count towards their source and categorical columns). ``norms`` computes
    ||.||_2 of a stack of symmetric matrices (e.g. a model's own eigen backend), ``frobenius_rows`` rows
    whose distances are Frobenius norms of their differences (the storage's, e.g. a model class's
    ``stored_frobenius_rows``); ``plan``: :func:`bounds_plan` of ``spec`` (made here if not given, pruning
    on the CPU; a fit records bounds every epoch, from :func:`bounds_plan_on` its device).
    The numeric columns' and the level pairs' norms from one call each, reduced per feature; a pruned
    feature's largest pair norm from :func:`_largest_pair_norms` (the same value).
    """
    if spec is None or spec.is_plain_linear:
        return norms(matrices)
    if plan is None:
        plan = bounds_plan(spec, prune=matrices.device.type == "cpu")
    bounds = matrices.new_zeros(matrices.shape[:-3] + (spec.n_features,))
    device = matrices.device
    if len(plan.numeric):
        numeric = torch.as_tensor(plan.numeric, dtype=torch.long, device=device)
        # only the numeric columns' norms (a wide categorical's level columns are most of them)
        of_numeric = matrices if len(numeric) == matrices.shape[-3] else matrices[..., numeric, :, :]
        column_norms = norms(of_numeric)
        scaled = column_norms / torch.as_tensor(plan.width, dtype=matrices.dtype, device=device)
        index = torch.as_tensor(plan.numeric_feature, dtype=torch.long, device=device).expand(scaled.shape)
        bounds = bounds.scatter_reduce(-1, index, scaled, "amax")  # norms are >= 0: the zeros change nothing
        if spec.gated:  # a gated copy's whole path, sum_t ||B_t||: what switching its level on or off can move
            switched = torch.zeros_like(bounds).scatter_add(-1, index, column_norms)
    if len(plan.first):
        first = torch.as_tensor(plan.first, dtype=torch.long, device=device)
        second = torch.as_tensor(plan.second, dtype=torch.long, device=device)
        pair_norms = norms(matrices[..., first, :, :] - matrices[..., second, :, :])
        index = torch.as_tensor(plan.pair_feature, dtype=torch.long, device=device).expand(pair_norms.shape)
        bounds = bounds.scatter_reduce(-1, index, pair_norms, "amax")
    for feature, levels in plan.pruned:
        levels = torch.as_tensor(levels, dtype=torch.long, device=device)
        bounds[..., feature] = _largest_pair_norms(matrices[..., levels, :, :], norms, frobenius_rows)
    if spec.gated:
        bounds = _gates_folded(bounds, switched, spec)
    return bounds


def _gates_folded(bounds: torch.Tensor, switched: torch.Tensor, spec: EncodingSpec) -> torch.Tensor:
    """Per input column from per feature, the gated copies (``skspectral._columns.gates``) counted
    where they act: moving the source moves its path and its copy's (the two bounds add); changing
    the categorical column's level can switch the copy's whole path on or off (``switched``: its
    columns' norms summed)."""
    inputs = spec.n_inputs
    folded = bounds[..., :inputs].clone()
    for i, (source, categorical) in enumerate(spec.gated):
        folded[..., source] += bounds[..., inputs + i]
        folded[..., categorical] += switched[..., inputs + i]
    return folded


# How far a pair's computed spectral norm may exceed its Frobenius norm found from the Gram matrix (relative):
# the norm's own rounding (its eigensolver's, in the matrices' dtype) and the difference's, far below this
_PRUNING_SLACK = 1e-3


def _largest_pair_norms(levels: torch.Tensor, norms, frobenius_rows, first_exact: int = 8) -> torch.Tensor:
    """max over a < b of ``norms``(levels[..., a, :, :] - levels[..., b, :, :]), shape levels.shape[:-3]:
    the largest of every pair's norms (no pair left out could reach it; a batched eigensolver may round a
    matrix's last bits by its batch), from a few pairs' norms. ||D||_2 <= ||D||_F, and the pairs' Frobenius
    norms come from one Gram matrix of the levels' rows: the ``first_exact`` pairs of the largest Frobenius
    norms are normed first; then only the pairs whose Frobenius norm (widened by its rounding and
    _PRUNING_SLACK) exceeds the largest norm so far can exceed it. A trained categorical's extreme level
    differences are nearly of rank one (Frobenius 1.05-1.2x the spectral norm), so a handful of its
    thousands of pairs are normed. Reads how many remain (a synchronisation on a GPU)."""
    lead = levels.shape[:-3]
    levels = levels.reshape((-1,) + levels.shape[-3:])
    count = levels.shape[1]
    # in the levels' dtype (a float32 fit's record: its Gram half a float64 one's cost), its rounding bounded below
    rows = frobenius_rows(levels)
    eps = torch.finfo(rows.dtype).eps
    mean = rows.mean(dim=1, keepdim=True)
    # centred, the Gram's cancellation scales with the levels' spread, not with a part they share; the
    # centring's own rounding moves a distance by at most eps (|r_a| + |r_b| + 2 |mean|)
    centring = eps * (rows.norm(dim=-1) + mean.norm(dim=-1))
    rows = rows - mean
    squares = (rows * rows).sum(dim=-1)
    both = squares[:, :, None] + squares[:, None, :]
    # every (a, b) at once, (members, count, count): elementwise, no gather of the pairs (slow on the CPU)
    frobenius_squared = both - 2 * (rows @ rows.mT)
    # the Gram's rounding, bounded by its terms' size (~entries x eps of them)
    rounding = 4 * rows.shape[-1] * eps * both
    ceiling = ((frobenius_squared + rounding).clamp_min(0).sqrt() + 2 * (centring[:, :, None] + centring[:, None, :])) * (
        1 + _PRUNING_SLACK)
    # each pair once (a < b); 0 elsewhere, which no pair's norm is below
    ceiling = ceiling.triu(diagonal=1).flatten(1)

    def pair_norms(member, pair):
        return norms(levels[member, pair // count] - levels[member, pair % count]).to(ceiling.dtype)

    members = torch.arange(levels.shape[0], device=levels.device)
    top = ceiling.topk(min(first_exact, count * (count - 1) // 2), dim=1).indices
    largest = pair_norms(members[:, None].expand_as(top), top).amax(dim=1)
    member, pair = (ceiling > largest[:, None]).nonzero(as_tuple=True)
    if len(pair):
        largest = largest.scatter_reduce(0, member, pair_norms(member, pair), "amax")
    return largest.to(levels.dtype).reshape(lead)


def ensemble_bounds(bounds: torch.Tensor, rule: str) -> torch.Tensor:
    """The bounds of an ensemble's output from its members' ``bounds`` (members, ..., features), by
    ``rule``, how the ensemble combines its members' outputs (``Loss.member_bounds``):

    - "mean": the members' mean moves by at most the mean of their moves;
    - "max": a mixing g(f_1, ..., f_K) with dg/df_m >= 0 and sum_m dg/df_m <= 1 moves by at most the
      largest member's move. The log of the mean exp has weights summing to 1. The logit of the mean
      probability has sum_m s_m t_m (1 / S + 1 / T) = K sum_m s_m t_m / (S T) <= 1, for s_m the
      members' probabilities, t_m = 1 - s_m, S and T their sums: s and t are oppositely ordered, so
      by Chebyshev's sum inequality K sum_m s_m t_m <= S T;
    - "softmax" (bounds (members, classes, features)): the log of the members' mean class
      probabilities. Member m's log-softmax of class c, f_c - logsumexp_j f_j, moves by at most
      max_j |df_c - df_j| <= b_c + max over the other classes of b_j, and then as "max".
    """
    if rule == "mean":
        return bounds.mean(dim=0)
    if rule == "max":
        return bounds.amax(dim=0)
    if rule == "softmax":
        top = bounds.topk(2, dim=1).values  # each member's and feature's two largest class bounds
        largest_other = torch.where(bounds == top[:, :1], top[:, 1:2], top[:, :1])
        return (bounds + largest_other).amax(dim=0)
    raise ValueError(f"Unknown rule {rule!r} for the members' bounds; one of 'mean', 'max', 'softmax'.")


def to_user_units(bounds, output_scale: float, x_scale):
    """Bounds per unit of each feature, from bounds on standardised data (numpy or torch).

    x_scale is 1 for categorical features, whose bounds are per change of level.
    """
    return bounds * output_scale / x_scale


def diverged_fit_error(estimator, what: str) -> ValueError:
    """The error for a fitted ``estimator`` whose state a diverged fit left not finite (``what`` of it)."""
    return ValueError(
        f"This {type(estimator).__name__}'s fitted {what}: the fit that made them diverged (it raised "
        "FloatingPointError). Fit it again with a lower learning_rate_init, or check X and y for extreme values.")


class CertifiedSensitivityMixin:
    """feature_sensitivities_, sensitivity_bound and feature_importances_ for a
    fitted spectral estimator (needs ``feature_matrices_``, ``x_scale_``,
    ``encoding_``, ``is_categorical_``, ``structure``, ``n_estimators_`` and
    ``_output_scale()``)."""

    def _feature_bounds(self) -> np.ndarray:
        """Bounds in standardised units of the ensemble's output, shape (..., n_features)."""
        check_is_fitted(self, "_module_state_")
        if not np.isfinite(self.feature_matrices_).all():  # (torch's eigh failed on them with LinAlgError)
            # (finite parameters can still give overflowing matrices: the estimator's check of them is not enough)
            raise diverged_fit_error(self, "matrices are not finite, so neither are its sensitivities")
        # the fitted matrices in the model's own storage (tridiagonal: bands), normed by its rule
        model_cls = model_class(self.structure)
        bounds = feature_bounds(torch.as_tensor(self.feature_matrices_), self.encoding_,
                                norms=model_cls.stored_matrix_norms, frobenius_rows=model_cls.stored_frobenius_rows)
        if self.n_estimators_ > 1:  # members first
            bounds = ensemble_bounds(bounds, self._member_bounds())
        return bounds.numpy()

    @property
    def feature_sensitivities_(self) -> np.ndarray:
        """Certified bound on how much each feature can move the prediction.

        Numeric features: a bound on |d prediction / d x_i| in the user's units
        (prediction units per unit of x_i). Categorical features: a bound on the
        change of the prediction when the level changes (any two levels,
        unseen and missing included). By Weyl's inequality (see
        ``skspectral._sensitivity``). Shape (n_features,), or (n_classes,
        n_features) for a multiclass classifier (bounds on each class's logit;
        binary: on the logit). For an ensemble, bounds on its combined output, the one
        ``predict`` or ``decision_function`` returns (the members' mean's: the mean of their
        bounds; a classifier's or a log link's: see ``skspectral._sensitivity``).
        """
        return to_user_units(self._feature_bounds(), self._output_scale(), self.x_scale_)

    def sensitivity_bound(self, delta) -> np.ndarray:
        """Largest possible change of the prediction when the features move by ``delta``.

        The bound is on the prediction for regression (on log(prediction), a relative
        change, where the loss has a log link: poisson, gamma) and on the logit(s) for
        classification; it holds for any x, also with clip_features (clipping
        never increases |delta_i|), for moves between observed (non-missing)
        numeric values.

        Parameters
        ----------
        delta : array-like of shape (n_features,) or (n_rows, n_features)
            Moves of the features, in the features' units; for a categorical
            feature any non-zero entry means "its level changes".

        Returns
        -------
        bound : ndarray of shape () or (n_rows,)
            With a trailing n_classes axis for a multiclass classifier.
        """
        sensitivities = self.feature_sensitivities_
        delta = np.asarray(delta, dtype=np.float64)
        if delta.ndim not in (1, 2) or delta.shape[-1] != self.n_features_in_:
            raise ValueError(
                f"delta must have shape (n_features,) or (n_rows, n_features) with n_features="
                f"{self.n_features_in_}; got {delta.shape}."
            )
        moves = np.abs(delta)
        categorical = self.is_categorical_
        if categorical is not None:
            moves[..., categorical] = delta[..., categorical] != 0
        return moves @ sensitivities.T

    @property
    def feature_importances_(self) -> np.ndarray:
        """Share of the certified sensitivity per feature, for a one-standard-deviation
        move of a numeric feature or a change of level of a categorical one.

        Normalised to sum to 1 (summed over classes for multiclass). Unlike
        permutation importance, this is a property of the model alone (no data,
        no randomness) and a worst case: a feature whose matrix is large but
        rarely aligned with the k-th eigenvector ranks high here and lower under
        permutation.
        """
        per_std = self._feature_bounds().reshape(-1, self.n_features_in_).sum(axis=0)
        total = per_std.sum()
        return per_std / total if total > 0 else np.full(self.n_features_in_, 1.0 / self.n_features_in_)
