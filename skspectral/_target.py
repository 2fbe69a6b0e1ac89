"""The target: summarised block by block and merged, then fitted once, as the columns are
(:mod:`skspectral._columns`).

Regression: the weighted mean and standard deviation of y (:class:`TargetScaler`; the model
learns ``(y - mean) / scale``). Classification: the classes and each class's row count
(:class:`LabelCoder`; the model learns class indices, and ``class_weight="balanced"``
weighs by the counts of all the rows, also when they are spread over workers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._columns.summary import _moments, checked_scale, is_constant


# A constant target (the columns' rule, summary.is_constant) is learnt on the scale _CONSTANT_TARGET_SCALE times
# max(1, |mean|), so that its predictions are the constant to ~1e-10 of that size; under a log link the model's
# output is multiplied by _CONSTANT_TARGET_SCALE (what the fit leaves in it, a few hundredths, was a few percent
# of the prediction: a constant count predicted 2-5 % off)
_CONSTANT_TARGET_SCALE = 1e-9


@dataclass
class TargetSummary:
    """Weighted moments and the smallest value of a regression target (mergeable as
    :class:`~._columns.ColumnSummary`'s)."""

    weight: float
    mean: float
    var: float
    largest: float
    smallest: float = np.inf  # the smallest y of positive weight

    @classmethod
    def of_block(cls, y: np.ndarray, weight: np.ndarray) -> "TargetSummary":
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity: every target must be a finite number.")
        if not len(y):
            return cls(0.0, 0.0, 0.0, 0.0)
        weight = np.ascontiguousarray(weight, dtype=np.float64)
        total, mean, var = _moments(y[:, None], weight)[:3]
        positive = y[weight > 0]
        return cls(float(total[0]), float(mean[0]), float(var[0]), float(np.abs(y).max()),
                   float(positive.min()) if len(positive) else np.inf)

    def merge(self, other: "TargetSummary") -> "TargetSummary":
        if self.weight == 0 or other.weight == 0:
            return other if self.weight == 0 else self
        total = self.weight + other.weight
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.weight / total)
        var = (self.var * self.weight + other.var * other.weight + delta * delta * (self.weight * other.weight / total)) / total
        return TargetSummary(total, mean, var, max(self.largest, other.largest), min(self.smallest, other.smallest))

    def finalize(self, link: str = "identity", loss: str = "squared_error") -> "TargetScaler":
        """The scaler: standardisation (identity link), or y over its weighted mean (log link:
        the model's output 0 is the best constant, and a deviance's steps do not depend on
        y's units), after checking y suits the loss (poisson: y >= 0 with a positive mean;
        gamma: y > 0)."""
        spread = float(np.sqrt(self.var))
        constant = bool(is_constant(self.mean, spread))  # the columns' rule (a finite variance: checked below)
        if link == "log":
            if loss == "gamma" and not self.smallest > 0:
                raise ValueError(f'loss="gamma" needs every target y > 0 (a gamma deviance is undefined at 0); '
                                 f"the smallest y is {self.smallest:g}.")
            if not self.smallest >= 0:
                raise ValueError(f'loss="{loss}" needs targets y >= 0 (counts, amounts); the smallest y is '
                                 f"{self.smallest:g}.")
            if not self.mean > 0:
                raise ValueError(f'loss="{loss}" needs a positive weighted mean of y (its log is the prediction '
                                 "before any feature moves it); every y of positive weight is 0.")
            factor = _CONSTANT_TARGET_SCALE if constant else 1.0
            return TargetScaler(float(np.log(self.mean)), float(self.mean), link="log", output_factor=factor)
        scale = float(checked_scale(np.array([self.mean]), np.array([self.var]), ["target y"], lambda i: self.largest)[0])
        if constant:  # (a finite variance: checked_scale raised otherwise)
            # y is constant (to rounding): whatever the fit leaves in the model's output (its start's matrices,
            # trained down but not to zero: ~0.02) is then scaled down to nothing, where a scale of 1 left it
            # in y's units (y = 1e-3 predicted as -0.02 to 0.02). A spread of its own, however small beside
            # |mean|, is the scale instead where it is smaller: 1e12 + N(0, 1) is within the columns' rule of
            # constant, and the floor's 1,000 made that output +-20 in y's units (R^2 -240)
            floor = _CONSTANT_TARGET_SCALE * max(1.0, abs(self.mean))
            scale = min(floor, spread) if spread > 0 else floor
        return TargetScaler(self.mean, scale)


@dataclass(frozen=True)
class TargetScaler:
    """y as the model learns it: ``(y - mean) / scale`` (identity link), or ``y / scale`` with
    ``scale`` y's weighted mean and ``mean`` its log (log link: prediction
    exp(mean + output_factor * output); ``output_factor`` 1, or tiny for a constant y)."""

    mean: float
    scale: float
    link: str = "identity"
    output_factor: float = 1.0  # (a scaler pickled before it has the class's 1.0)

    def transform(self, y: np.ndarray) -> np.ndarray:
        return y / self.scale if self.link == "log" else (y - self.mean) / self.scale

    def inverse_transform(self, output: np.ndarray) -> np.ndarray:
        if self.link == "log":
            return np.exp(self.mean + self.output_factor * output)
        return self.mean + self.scale * output


@dataclass
class LabelSummary:
    """The labels of a classification target and each one's row count (mergeable)."""

    labels: np.ndarray
    counts: np.ndarray

    @classmethod
    def of_block(cls, y: np.ndarray) -> "LabelSummary":
        labels, counts = np.unique(np.asarray(y), return_counts=True)
        return cls(labels, counts.astype(np.int64))

    def merge(self, other: "LabelSummary") -> "LabelSummary":
        labels = np.union1d(self.labels, other.labels)
        counts = np.zeros(len(labels), dtype=np.int64)
        counts[np.searchsorted(labels, self.labels)] += self.counts
        counts[np.searchsorted(labels, other.labels)] += other.counts
        return LabelSummary(labels, counts)

    def finalize(self, classes=None) -> "LabelCoder":
        """The coder of these labels; ``classes`` (partial_fit's) lists every label instead."""
        labels = self.labels if classes is None else np.unique(np.asarray(classes))
        counts = np.zeros(len(labels), dtype=np.int64)
        known = np.isin(self.labels, labels)
        counts[np.searchsorted(labels, self.labels[known])] = self.counts[known]
        return LabelCoder(labels, counts)


@dataclass(frozen=True)
class LabelCoder:
    """Labels as class indices (``classes`` sorted), with the row count of each class in fit."""

    classes: np.ndarray
    counts: np.ndarray

    def transform(self, y: np.ndarray) -> np.ndarray:
        """Class indices of labels y, as float64; labels outside ``classes`` are an error."""
        unknown = np.setdiff1d(np.unique(y), self.classes)
        if unknown.size:
            raise ValueError(f"y holds labels {unknown.tolist()} not among classes_ {self.classes.tolist()}.")
        return np.searchsorted(self.classes, y).astype(np.float64)

    def class_weights(self, class_weight) -> np.ndarray | None:
        """One weight per class for ``class_weight`` (None, "balanced" or a dict of labels),
        or None. "balanced" is scikit-learn's n_rows / (n_classes * rows of the class), over the
        classes seen in fit."""
        if class_weight is None:
            return None
        if isinstance(class_weight, str):  # "balanced": the counts of every row, wherever it lies
            seen = self.counts > 0
            weights = np.ones(len(self.classes))
            weights[seen] = self.counts.sum() / (seen.sum() * self.counts[seen].astype(np.float64))
            return weights
        from sklearn.utils.class_weight import compute_class_weight

        return compute_class_weight(class_weight, classes=self.classes, y=self.classes)  # its checks of the keys
