"""Displays in scikit-learn's style: training curves (live or static) and
feature sensitivities. matplotlib is optional and imported only here."""

from __future__ import annotations

import numpy as np

from ._losses import METRICS
from ._training import history

# the metrics drawn on the loss panel (lower is better, one unit per panel)
_LOSS_LIKE = [name for name, metric in METRICS.items() if not metric.greater_is_better]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("Plotting needs matplotlib: pip install 'skspectral[plot]'.") from exc
    return plt


def _in_jupyter() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"
    except ImportError:
        return False


def _feature_names(estimator, feature_names=None) -> list[str]:
    names = feature_names if feature_names is not None else getattr(estimator, "feature_names_in_", None)
    return [str(n) for n in names] if names is not None else [f"x{i}" for i in range(estimator.n_features_in_)]


class TrainingCurveDisplay:
    """Loss and eval-set curves per epoch (left) and each feature's certified
    sensitivity per epoch (right): the two panels of a training run.

    Build it with :meth:`from_estimator` after a fit, or empty with
    ``TrainingCurveDisplay([], feature_names)`` and feed it records from
    ``fit_iter`` through :meth:`update` for a live plot (updated in place in
    Jupyter; in scripts the figure is simply current when you save it).

    Attributes after plot: ``figure_``, ``ax_`` (two Axes), ``loss_lines_``
    (name -> Line2D), ``sensitivity_lines_`` (feature -> Line2D).
    """

    def __init__(self, history: list[dict], feature_names: list[str] | None = None):
        self.history = list(history)
        self.feature_names = feature_names
        self._handle = None

    @classmethod
    def from_estimator(cls, estimator, *, feature_names=None, ax=None):
        """feature_names: defaults to the estimator's feature_names_in_, else x0, x1, ..."""
        return cls(estimator.history_, _feature_names(estimator, feature_names)).plot(ax=ax)

    def _series(self) -> tuple[str, dict[str, list]]:
        """(metric, {key: values}): the training metric and every eval set's, in the same units
        (an empty history, before a live display's first record: none yet)."""
        first = self.history[0] if self.history else {}
        for metric in _LOSS_LIKE:
            keys = history.metric_series(first, metric)
            if keys:
                return metric, {key: [r[key] for r in self.history] for key in keys}
        return "loss", {}

    def _sensitivities(self) -> np.ndarray:
        if not self.history:
            return np.zeros((0, len(self.feature_names or [])))
        values = np.asarray([r[history.SENSITIVITIES] for r in self.history], dtype=float)
        return values if values.ndim == 2 else values.max(axis=1)  # multiclass: the largest over classes

    def plot(self, ax=None):
        plt = _pyplot()
        if ax is None:
            self.figure_, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        else:
            self.figure_ = np.ravel(ax)[0].figure
        self.ax_ = np.ravel(ax)
        loss_ax, sens_ax = self.ax_
        loss_ax.set_xlabel("epoch")
        loss_ax.set_title(f"{self._series()[0]}: training and eval sets")
        loss_ax.set_yscale("log")
        sens_ax.set_xlabel("epoch")
        sens_ax.set_title("certified sensitivity |∂f/∂x_i| bound")
        sens_ax.set_yscale("log")
        self.loss_lines_, self.sensitivity_lines_ = {}, {}
        self._draw()
        if _in_jupyter():
            from IPython.display import display

            self._handle = display(self.figure_, display_id=True)
            plt.close(self.figure_)
        return self

    def _draw(self) -> None:
        epochs = [r[history.EPOCH] for r in self.history]
        loss_ax, sens_ax = self.ax_
        for name, values in self._series()[1].items():
            if name not in self.loss_lines_:
                (self.loss_lines_[name],) = loss_ax.plot([], [], label=name.replace("_", " "))
            self.loss_lines_[name].set_data(epochs, values)
        sensitivities = self._sensitivities()
        names = self.feature_names or [f"x{i}" for i in range(sensitivities.shape[1])]
        for i, name in enumerate(names):
            if name not in self.sensitivity_lines_:
                (self.sensitivity_lines_[name],) = sens_ax.plot([], [], label=name)
            self.sensitivity_lines_[name].set_data(epochs, sensitivities[:, i] if len(epochs) else [])
        for axis in self.ax_:
            axis.relim()
            axis.autoscale_view()
            if axis.lines and axis.get_legend() is None:
                axis.legend(fontsize="small")

    def update(self, record: dict):
        """Add one epoch's record (from fit_iter) and redraw."""
        self.history.append(record)
        if not hasattr(self, "figure_"):
            return self.plot()
        self._draw()
        if self._handle is not None:
            self._handle.update(self.figure_)
        return self


class SensitivityDisplay:
    """Horizontal bar chart of each feature's certified sensitivity.

    kind="sensitivity": the bound on |∂prediction/∂x_i| in the user's units
    (``feature_sensitivities_``; the largest over classes for multiclass);
    kind="importance": ``feature_importances_`` (per standard deviation,
    summing to 1), comparable across features of different units.
    Attributes after plot: ``figure_``, ``ax_``, ``bars_``, ``values_``, ``names_``.
    """

    def __init__(self, values, names, kind: str):
        self.values_ = np.asarray(values, dtype=float)
        self.names_ = list(names)
        self.kind = kind

    @classmethod
    def from_estimator(cls, estimator, *, kind: str = "importance", feature_names=None, ax=None):
        if kind == "importance":
            values = estimator.feature_importances_
        elif kind == "sensitivity":
            values = estimator.feature_sensitivities_
            values = values if values.ndim == 1 else values.max(axis=0)
        else:
            raise ValueError(f"kind must be 'importance' or 'sensitivity', got {kind!r}.")
        return cls(values, _feature_names(estimator, feature_names), kind).plot(ax=ax)

    def plot(self, ax=None):
        plt = _pyplot()
        if ax is None:
            self.figure_, ax = plt.subplots(figsize=(6, 0.35 * len(self.names_) + 1.5))
        else:
            self.figure_ = ax.figure
        self.ax_ = ax
        order = np.argsort(self.values_)
        self.bars_ = ax.barh([self.names_[i] for i in order], self.values_[order])
        ax.set_xlabel(
            "share of certified sensitivity per standard deviation"
            if self.kind == "importance"
            else "bound on |∂prediction/∂x_i| (target units per feature unit)"
        )
        ax.set_title("feature " + self.kind)
        self.figure_.tight_layout()
        return self
