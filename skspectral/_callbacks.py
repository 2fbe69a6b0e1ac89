"""scikit-learn's callbacks (>= 1.9) around a fit: the fit is the root task, each epoch a
subtask. Older scikit-learn: the estimators work as before, without callbacks."""

from __future__ import annotations

import contextlib
import inspect

try:
    from sklearn.callback import CallbackSupportMixin
    from sklearn.callback._callback_support import callback_management_context
except ImportError:

    class CallbackSupportMixin:  # type: ignore[no-redef]
        pass

    callback_management_context = None


def _reads_fitted_estimator(callback) -> bool:
    """Whether ``callback``'s end-of-task hook asks for the fitted copy (or may: ``**kwargs``, no signature)."""
    hook = getattr(callback, "on_fit_task_end", None)
    if hook is None:
        return False
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume it reads the model
        return True
    return any(p.name == "fitted_estimator" or p.kind == p.VAR_KEYWORD for p in parameters)


def tearing_down_callbacks(estimator, records):
    """``records`` inside the callbacks' management context (fit gets it from
    ``@_fit_context``; fit_iter's generator outlives the call)."""
    managed = callback_management_context(estimator) if callback_management_context else contextlib.nullcontext()
    with managed:
        yield from records


class EpochTasks:
    """The callbacks of one fit.

    A callback whose ``on_fit_task_end`` returns True stops the fit after that
    epoch; the estimator is fitted as of that epoch.
    """

    def __init__(self, estimator, max_iter: int, data: dict):
        self.estimator, self.data = estimator, data
        self.root = None
        self.epoch = None
        if hasattr(estimator, "_init_callback_context"):
            self.root = estimator._init_callback_context(max_subtasks=max_iter)
            self.root.call_on_fit_task_begin(estimator=estimator, **self.data)

    @property
    def watching(self) -> bool:
        """Whether a callback reads the model between the epochs: one whose ``on_fit_task_end`` asks for
        ``fitted_estimator`` (scikit-learn builds it from the model as it stands, and passes each hook only
        the keyword arguments it names). A progress bar, which counts epochs, does not. The callbacks are
        those the context calls (the estimator's own and those a meta-estimator propagated to it); a
        scikit-learn whose context keeps them elsewhere is taken to have one that reads the model."""
        if self.root is None:
            return False
        callbacks = getattr(self.root, "_callbacks", None)
        if callbacks is None:
            return True
        return any(_reads_fitted_estimator(c) for c in callbacks)

    def begin(self) -> None:
        if self.root is not None:
            self.epoch = self.root.subcontext(task_name="epoch")
            self.epoch.call_on_fit_task_begin(estimator=self.estimator, **self.data)

    def end(self, fitted_attributes) -> bool:
        """End the epoch's task; True when a callback asks to stop."""
        if self.epoch is None:
            return False
        epoch, self.epoch = self.epoch, None
        return epoch.call_on_fit_task_end(
            estimator=self.estimator, **self.data,
            # a copy of the estimator as fitted so far, built only if a callback asks for it
            reconstruction_attributes=lambda: {**fitted_attributes(), "_module": None},
        )

    def close(self) -> None:
        if self.root is None:
            return
        if self.epoch is not None:  # begun, but training ended before the epoch ran
            self.epoch.call_on_fit_task_end(estimator=self.estimator)
            self.epoch = None
        self.root.call_on_fit_task_end(estimator=self.estimator, **self.data, reconstruction_attributes={})
        self.root = None
