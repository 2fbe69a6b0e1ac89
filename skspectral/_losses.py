"""Losses and metrics, looked up by name (as scikit-learn's MLP does).

A loss works on the model's output and the training target as the estimator
feeds them (standardised y for regression, class indices for classification,
y over its weighted mean for the log-link losses), with sample weights; it also names the metric
its running mean is reported as (``train_<metric>`` in ``history_``) and gives
the loss of the best constant prediction, the floor a fit that learned anything
must beat. Metrics carry whether they are in the target's units (RMSE:
multiplied by the target scale) and which way is better.

Regression losses (HistGradientBoosting's names): "squared_error",
"absolute_error", "huber", "quantile" (one or several quantiles: one output per
quantile, the model's eigenvalues k_1 < k_2 < ... of one matrix), and, with a log
link (the model's output is the log of y over its mean), "poisson" and "gamma" (their mean unit
deviances).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import _cuda_losses


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # clamp: a batch of zero-weight rows contributes nothing instead of 0/0
    return (values * weight).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


# ---- losses ------------------------------------------------------------------------------
def squared_error(output, target, weight):
    return weighted_mean((output - target).square(), weight)


def binary_log_loss(output, target, weight):
    """Log-loss of logits ``output`` (batch,) against 0/1 targets."""
    return weighted_mean(F.binary_cross_entropy_with_logits(output, target, reduction="none"), weight)


# A loss's value and its gradient with respect to the output without autograd's engine, for the CPU's
# compiled training step: one compiled call (the members' mean over output (batch[, members]); float64
# sums: autograd's to rounding) where a dozen torch ops of ~10 us each took ~0.15 ms of a ~1.7 ms
# California step; torch's ops elsewhere.
@functools.cache
def _step_kernels():
    from .eig._numba_support import numba_module

    if numba_module() is None:
        return None
    from . import _step_kernels as kernels

    return kernels


def _own_gradient(kernel_name: str, fn, last_axis: bool = False, parameters=()):
    """(output (batch[, members]), target, weight) -> (the members' mean loss, its gradient): the
    compiled kernel on CPU tensors, the CUDA kernel (skspectral._cuda_losses) on CUDA tensors, else
    autograd's gradient of fn on the members side by side.
    ``last_axis``: output (batch[, members], classes or quantiles), a row's values on a last axis.
    The multiclass and pinball kernels take (batch, members, that axis or 1), the others (batch, members).
    ``parameters``: the kernel's constants (huber's threshold, the quantile levels)."""
    constants = np.asarray(parameters, dtype=np.float64).reshape(-1)

    def value_and_gradient(output, target, weight):
        if output.is_cuda and _cuda_losses.applies(output, target, weight):
            return _cuda_losses.loss_and_gradient(kernel_name, output, target, weight, tuple(constants), last_axis)
        kernels = _step_kernels()
        if kernels is not None and output.device.type == "cpu" and output.dtype in (torch.float32, torch.float64):
            by_member = kernels.TRAINING_LOSSES.index(kernel_name) in kernels.LAST_AXIS_LOSSES
            shape = ((output.shape[0], -1, output.shape[-1] if last_axis else 1) if by_member
                     else (output.shape[0], -1))
            by_row = output.detach().reshape(shape).contiguous()
            gradient = torch.empty_like(by_row)
            value = getattr(kernels, kernel_name)(by_row.numpy(), target.contiguous().numpy(),
                                                  weight.contiguous().numpy(), constants, gradient.numpy())
            return torch.tensor(value, dtype=output.dtype), gradient.view(output.shape)
        with torch.enable_grad():
            leaf = output.detach().requires_grad_()
            members = 1 if leaf.dim() == (2 if last_axis else 1) else leaf.shape[1]
            flat = leaf.reshape((-1, leaf.shape[-1]) if last_axis else (-1,))
            value = fn(flat, target.repeat_interleave(members), weight.repeat_interleave(members))
            (gradient,) = torch.autograd.grad(value, leaf)
        return value.detach(), gradient

    def runs_kernel_on(device: torch.device) -> bool:
        """Whether a kernel (not autograd) computes it on ``device``: CUDA with CuPy, the CPU with Numba."""
        device = torch.device(device)
        return _cuda_losses.is_available() if device.type == "cuda" else (
            device.type == "cpu" and _step_kernels() is not None)

    # a compiled training pass may run the kernel itself, with these constants
    value_and_gradient.kernel_name, value_and_gradient.kernel_parameters = kernel_name, constants
    value_and_gradient.kernel_last_axis = last_axis
    value_and_gradient.runs_kernel_on = runs_kernel_on
    return value_and_gradient


def multiclass_log_loss(output, target, weight):
    """Softmax cross-entropy of logits ``output`` (batch, n_classes) against class indices."""
    return weighted_mean(F.cross_entropy(output, target.long(), reduction="none"), weight)


def _mean_squared_error_floor(target: np.ndarray, weight: np.ndarray) -> float:
    mean = np.average(target, weights=weight)
    return float(np.average((target - mean) ** 2, weights=weight))


def _mean_of_members(output):
    return output.mean(dim=1)


def _logsumexp_in_order(values: torch.Tensor, dim: int) -> torch.Tensor:
    """log sum exp over ``dim``, each entry's terms added in index order, from elementwise ops only: a
    row's value is the same whatever the rows beside it. (torch's reductions and softplus take other
    vectorised paths for other shapes: a float32 row rounded differently alone than in a batch.)"""
    values = values.movedim(dim, 0)
    top = values.amax(dim=0)  # exact in any order
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # (all -inf: log 0 = -inf below)
    total = torch.zeros_like(top)
    for value in values:
        total = total + torch.exp(value - top)
    return top + torch.log(total)


def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """log(1 / (1 + exp(-x))) without overflow, from elementwise ops (see _logsumexp_in_order)."""
    return -(torch.clamp(-x, min=0) + torch.log1p(torch.exp(-x.abs())))


def _logit_of_mean_probability(output):
    """Binary members (batch, K) -> the logit of their mean probability, computed stably: log of the
    mean p over log of the mean (1 - p) (the 1 / K cancels)."""
    return _logsumexp_in_order(_log_sigmoid(output), 1) - _logsumexp_in_order(_log_sigmoid(-output), 1)


def _log_of_mean_probabilities(output):
    """Multiclass members (batch, K, C) -> log of their mean class probabilities (as logits)."""
    log_probabilities = output - _logsumexp_in_order(output, -1).unsqueeze(-1)
    return _logsumexp_in_order(log_probabilities, 1) - math.log(output.shape[1])


def _log_loss_floor(target: np.ndarray, weight: np.ndarray) -> float:
    prior = np.bincount(target.astype(int), weights=weight) / weight.sum()
    prior = prior[prior > 0]
    return float(-(prior * np.log(prior)).sum())


@dataclass(frozen=True)
class Loss:
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    metric: str  # the metric the running mean of this loss is reported as
    # mean loss (tensor), output scale -> that metric
    to_metric: Callable[[torch.Tensor, float], torch.Tensor]
    # (target, weight) -> the loss of the best constant output
    constant_floor: Callable[[np.ndarray, np.ndarray], float]
    # ensemble members' outputs (batch, K, ...) -> the ensemble's output (batch, ...)
    combine_members: Callable[[torch.Tensor], torch.Tensor]
    # "identity", or "log": the output is a log (of y over its mean), members combined in y's space
    link: str = "identity"
    # how the members' certified bounds give the ensemble output's (skspectral._sensitivity.ensemble_bounds):
    # "mean" where that output is the members' mean; "max" where it is a monotone mixing of their outputs
    # whose weights sum to at most 1 (the log of their mean exp, the logit of their mean probability);
    # "softmax" for the log of their mean class probabilities
    member_bounds: str = "mean"
    # (output (batch[, members]), target, weight) -> (the mean of fn over the members, its gradient
    # with respect to output), or None: autograd's
    fn_and_gradient: Callable | None = None

    def score(self, output_scale: float) -> "Metric":
        """The early-stopping score of this loss: its negative, in the reported metric's units."""
        return Metric(lambda output, target, weight: -self.to_metric(self.fn(output, target, weight), output_scale),
                      in_target_units=False, greater_is_better=True)

    def as_metric(self, output_scale: float) -> "Metric":
        """This loss as an eval-set metric, in the reported metric's units."""
        return Metric(lambda output, target, weight: self.to_metric(self.fn(output, target, weight), output_scale),
                      in_target_units=False, greater_is_better=False)

    def members_fn(self, n_members: int):
        """The loss of K members trained jointly: the mean of each member's own loss."""
        if n_members == 1:
            return self.fn

        def mean_member_loss(output, target, weight):
            # members' outputs side by side: each row's target and weight repeated K times
            flat = output.reshape((-1,) + output.shape[2:])
            return self.fn(flat, target.repeat_interleave(n_members, dim=0), weight.repeat_interleave(n_members))

        return mean_member_loss

    def ensemble_fn(self, fn, n_members: int):
        """``fn(output, target, weight)`` applied to the ensemble's combined output."""
        if n_members == 1:
            return fn
        return lambda output, target, weight: fn(self.combine_members(output), target, weight)


def weighted_quantiles(values: np.ndarray, weight: np.ndarray, levels) -> np.ndarray:
    """For each level, the first of the sorted values whose cumulative weight reaches that level of the
    total: the constant the pinball loss of that level likes best on these rows (one sort for them all)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weight[order])
    found = np.searchsorted(cumulative, np.asarray(levels, dtype=np.float64) * cumulative[-1])
    return values[order[np.minimum(found, len(order) - 1)]]


@functools.lru_cache(maxsize=64)
def _levels_on(levels: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The quantile levels as a tensor, made once per device and dtype: a training step's
    copy to the GPU would be a host transfer inside a captured CUDA graph."""
    return torch.tensor(levels, dtype=dtype, device=device)


def _pinball(output, target, weight, quantiles: tuple):
    """Mean pinball loss over the quantiles (a tuple of levels): output (batch, Q) or (batch,) for one."""
    if output.dim() == target.dim():
        output = output.unsqueeze(-1)
    residual = target.unsqueeze(-1) - output
    q = _levels_on(quantiles, output.device, output.dtype)
    return weighted_mean(torch.maximum(q * residual, (q - 1.0) * residual).mean(dim=-1), weight)


def _huber(output, target, weight, delta: float):
    r = (output - target).abs()
    return weighted_mean(torch.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)), weight)


def _poisson_deviance(output, target, weight):
    """Mean unit deviance 2 (y log(y / mu) - y + mu) with mu = exp(output)."""
    return weighted_mean(2.0 * (torch.xlogy(target, target) - target * output - target + torch.exp(output)), weight)


def _gamma_deviance(output, target, weight):
    """Mean unit deviance 2 (log(mu / y) + y / mu - 1) with mu = exp(output) (y > 0)."""
    return weighted_mean(2.0 * (output - torch.log(target) + target * torch.exp(-output) - 1.0), weight)


def _log_mean_exp_of_members(output):
    """Log-link members (batch, K) -> the log of their mean prediction (mean in the target's space)."""
    return _logsumexp_in_order(output, 1) - math.log(output.shape[1])


def regression_loss(name: str, *, quantiles=None, delta: float = 1.0, target_mean: float = 1.0) -> "Loss":
    """The regression loss ``name`` in the estimator's model space: identity-link losses on the
    standardised target (``delta``: huber's threshold there; ``quantiles``: an array of levels),
    log-link losses on y / ``target_mean`` (the model's output is its log). The
    metric is in y's units: a Poisson deviance scales with y (``target_mean`` times the
    model-space one), a gamma deviance does not."""
    floor_of = lambda loss: (lambda target, weight: float(loss(torch.as_tensor(  # noqa: E731
        np.full_like(target, 0.0)), torch.as_tensor(target), torch.as_tensor(weight))))
    if name == "squared_error":
        return LOSSES["squared_error"]
    if name == "absolute_error":
        def mae(output, target, weight):
            return weighted_mean((output - target).abs(), weight)
        return Loss(mae, "mae", lambda loss, scale: scale * loss,
                    lambda t, w: float(np.average(np.abs(t - weighted_quantiles(t, w, [0.5])[0]), weights=w)),
                    _mean_of_members, fn_and_gradient=_own_gradient("absolute_error_and_gradient", mae))
    if name == "huber":
        fn = functools.partial(_huber, delta=float(delta))
        return Loss(fn, "huber", lambda loss, scale: scale * scale * loss,
                    lambda t, w: float(fn(torch.full((len(t),), float(weighted_quantiles(t, w, [0.5])[0]),
                                                     dtype=torch.float64), torch.as_tensor(t), torch.as_tensor(w))),
                    _mean_of_members, fn_and_gradient=_own_gradient("huber_and_gradient", fn, parameters=(delta,)))
    if name == "quantile":
        levels = tuple(float(q) for q in np.atleast_1d(np.asarray(quantiles, dtype=np.float64)))
        fn = functools.partial(_pinball, quantiles=levels)
        floor = lambda t, w: float(fn(  # noqa: E731
            torch.as_tensor(np.tile(weighted_quantiles(t, w, levels), (len(t), 1)), dtype=torch.float64),
            torch.as_tensor(t), torch.as_tensor(w)))
        return Loss(fn, "pinball_loss", lambda loss, scale: scale * loss, floor, _mean_of_members,
                    fn_and_gradient=_own_gradient("pinball_and_gradient", fn, last_axis=len(levels) > 1,
                                                  parameters=levels))
    if name in ("poisson", "gamma"):
        fn = _poisson_deviance if name == "poisson" else _gamma_deviance
        # the best constant prediction is the weighted mean: y / target_mean's is 1, output 0
        unit = float(target_mean) if name == "poisson" else 1.0
        to_metric = lambda loss, scale: unit * loss  # noqa: E731 -- a log link's output has no scale
        return Loss(fn, f"{name}_deviance", to_metric, floor_of(fn), _log_mean_exp_of_members, link="log",
                    member_bounds="max", fn_and_gradient=_own_gradient(f"{name}_and_gradient", fn))
    raise ValueError(f"Unknown regression loss {name!r}; the losses are {sorted(REGRESSION_LOSSES)}.")


REGRESSION_LOSSES = ("squared_error", "absolute_error", "huber", "quantile", "poisson", "gamma")


LOSSES = {
    "squared_error": Loss(squared_error, "rmse", lambda loss, scale: scale * loss.sqrt(), _mean_squared_error_floor,
                          _mean_of_members,
                          fn_and_gradient=_own_gradient("squared_error_and_gradient", squared_error)),
    "binary_log_loss": Loss(binary_log_loss, "log_loss", lambda loss, scale: loss, _log_loss_floor,
                            _logit_of_mean_probability, member_bounds="max",
                            fn_and_gradient=_own_gradient("binary_log_loss_and_gradient", binary_log_loss)),
    "log_loss": Loss(multiclass_log_loss, "log_loss", lambda loss, scale: loss, _log_loss_floor,
                     _log_of_mean_probabilities, member_bounds="softmax",
                     fn_and_gradient=_own_gradient("multiclass_log_loss_and_gradient", multiclass_log_loss,
                                                   last_axis=True)),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"Unknown loss {name!r}; the losses are {sorted(LOSSES)}.") from None


# ---- metrics -----------------------------------------------------------------------------
def _rmse(output, target, weight):
    return squared_error(output, target, weight).sqrt()


def _r2(output, target, weight):
    mean = weighted_mean(target, weight)
    residual = weighted_mean((output - target).square(), weight)
    total = weighted_mean((target - mean).square(), weight)
    return 1.0 - residual / total.clamp_min(torch.finfo(total.dtype).tiny)


def _log_loss(output, target, weight):
    return (binary_log_loss if output.dim() == 1 else multiclass_log_loss)(output, target, weight)


def _negative_log_loss(output, target, weight):
    return -_log_loss(output, target, weight)


def _accuracy(output, target, weight):
    predicted = (output > 0).to(target.dtype) if output.dim() == 1 else output.argmax(dim=1).to(target.dtype)
    return weighted_mean((predicted == target).to(weight.dtype), weight)


@dataclass(frozen=True)
class Metric:
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    in_target_units: bool  # scales with the target (multiply by its standard deviation)
    greater_is_better: bool


METRICS = {
    "rmse": Metric(_rmse, in_target_units=True, greater_is_better=False),
    "r2": Metric(_r2, in_target_units=False, greater_is_better=True),
    "log_loss": Metric(_log_loss, in_target_units=False, greater_is_better=False),
    "neg_log_loss": Metric(_negative_log_loss, in_target_units=False, greater_is_better=True),
    "accuracy": Metric(_accuracy, in_target_units=False, greater_is_better=True),
}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"Unknown metric {name!r}; the metrics are {sorted(METRICS)}.") from None


# ---- penalties ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Penalty:
    """The regulariser added to each batch's loss: ``penalty()`` its value (differentiable; with the
    pull, ``penalty(data_loss)``), alpha/2 * sum ||A_i||_F^2 / total_weight + spectral_penalty * sum
    ||A_i||_2 + shared_factor_l1 * data_loss * sum |r_{m,j}|, the last over the sharing members'
    factors (stored r / gain) with the batch's data loss detached: the pull that lets a member switch
    a column off is relative to how well the batch is fitted, so a clean target's small squared error
    is not outweighed by it. Its terms are named so that the CPU's compiled steps can add the Frobenius
    term's and the pull's gradients themselves (:attr:`pass_terms`)."""

    model: torch.nn.Module
    alpha: float
    spectral_penalty: float
    total_weight: float
    shared_factor_l1: float = 0.0

    @property
    def frobenius_factor(self) -> float:
        """alpha / total_weight: the Frobenius term is half of it times sum ||A_i||_F^2."""
        return self.alpha / self.total_weight

    @property
    def reads_data_loss(self) -> bool:
        """Whether a term is relative to the batch's data loss (the trainer then passes it)."""
        return self.shared_factor_l1 != 0.0

    @property
    def pass_terms(self) -> tuple[float, float] | None:
        """(alpha / total_weight, shared_factor_l1): the factors of the terms the CPU's compiled steps add
        themselves (skspectral._compiled_pass); None where another term needs autograd (spectral_penalty)."""
        if self.spectral_penalty:
            return None
        return self.frobenius_factor, self.shared_factor_l1

    def pulls_apart_on(self, device: torch.device) -> bool:
        """Whether the pull runs apart from autograd on ``device`` (:meth:`add_pull`: CUDA with CuPy)."""
        return bool(self.shared_factor_l1) and device.type == "cuda" and _cuda_losses.is_available()

    def add_pull(self, data_loss: torch.Tensor) -> torch.Tensor:
        """The pull's value, its gradient added to the factors' ``.grad`` after the step's backward by one
        CUDA kernel (skspectral._cuda_losses.add_factor_pull: the gradient autograd's term gives, in one
        launch where autograd ran ~8 small kernels); with ``__call__(data_loss, pull=False)`` for the rest."""
        return _cuda_losses.add_factor_pull(self.model.member_scales, data_loss, self.shared_factor_l1)

    def __call__(self, data_loss: torch.Tensor | None = None, *, pull: bool = True):
        """The penalty's value (0.0 where no term is in it); ``pull=False``: without the pull, which
        :meth:`add_pull` then adds."""
        value = 0.0
        if self.alpha:
            value = value + 0.5 * self.alpha * self.model.feature_matrices().square().sum() / self.total_weight
        if self.spectral_penalty:
            value = value + self.spectral_penalty * self.model.spectral_norms().sum()
        if self.shared_factor_l1 and pull:
            if data_loss is None:
                raise ValueError("The shared factors' pull is relative to the batch's data loss: pass it.")
            strength = self.shared_factor_l1 * data_loss.detach().to(self.model.member_scales.dtype)
            value = value + strength * self.model.member_scales.abs().sum()
        return value


def make_penalty(model, *, alpha: float, spectral_penalty: float, total_weight: float,
                 shared_factor_l1: float = 0.0) -> Penalty | None:
    """The regulariser added to each batch's loss, or None when there is none.

    alpha: MLP's convention, alpha/2 * sum ||A_i||_F^2, as one sample's worth per unit
    of total sample weight. spectral_penalty * sum ||A_i||_2: shrinks the certified
    sensitivities directly. shared_factor_l1 * data_loss * sum |r|: an L1 pull on the sharing
    members' factors (a model without sharing members has none to pull).
    """
    alpha, spectral_penalty = float(alpha), float(spectral_penalty)
    shared_factor_l1 = float(shared_factor_l1) if getattr(model, "n_shared_members", 0) else 0.0
    if alpha == 0 and spectral_penalty == 0 and shared_factor_l1 == 0:
        return None
    return Penalty(model, alpha, spectral_penalty, float(total_weight), shared_factor_l1)
