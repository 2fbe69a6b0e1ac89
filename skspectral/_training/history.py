"""The per-epoch record: the one place that knows its keys.

``history_`` is a list of these dicts, one per epoch (``pandas.DataFrame(est.history_)``
gives a table). Keys:

- ``epoch``: 1-based epoch number, counted over warm starts and partial_fit calls;
- ``train_loss``: the optimised objective (standardised loss + penalties), a running
  mean over the epoch's mini-batches, as ``loss_curve_``;
- ``train_<metric>``: the training metric in the same units as the eval metrics
  (``train_rmse`` in y's units for regression, ``train_log_loss`` for
  classification), from the same running mean, without penalties;
- ``validation_score``: with early stopping, the held-out score that stops the fit;
- ``eval_<i>_<metric>``: each metric of the i-th eval_set pair, at the end of the epoch;
- ``sensitivities``: the certified sensitivity bounds (``feature_sensitivities_``) at
  the end of the epoch;
- ``elapsed_s``: seconds since the fit call started.
"""

from __future__ import annotations

EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VALIDATION_SCORE = "validation_score"
SENSITIVITIES = "sensitivities"
ELAPSED = "elapsed_s"


def train_key(metric: str) -> str:
    """Key of the training metric ``metric`` (e.g. "rmse")."""
    return f"train_{metric}"


def eval_key(index: int, metric: str) -> str:
    """Key of ``metric`` on the ``index``-th eval_set pair."""
    return f"eval_{index}_{metric}"


def metric_series(record: dict, metric: str) -> list[str]:
    """The keys of ``record`` that hold ``metric`` (training first, then each eval set)."""
    keys = [train_key(metric)] if train_key(metric) in record else []
    index = 0
    while eval_key(index, metric) in record:
        keys.append(eval_key(index, metric))
        index += 1
    return keys
