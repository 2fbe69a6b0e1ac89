"""Epochs of fixed-shape training steps, each step replayed from one CUDA graph."""

from __future__ import annotations

import warnings
from typing import Callable

import torch

# step(X_batch, y_batch, weight_batch) -> scalar tensors whose weighted means the epoch reports
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple]


class StaticBatchSteps:
    """An epoch of fixed-shape steps of any step function, replayed from one CUDA graph.

    Every step reads its batch inside the graph: rows ``order[offset:offset +
    batch_size]`` with ``offset`` a device counter the step advances, so a
    step needs nothing from the host and costs one ``graph.replay()`` of
    host time. The epoch's last, shorter batch is padded with zero-weight rows,
    which leaves a weighted mean loss and its gradient unchanged. The first
    steps run eagerly on a side stream (optimizer state, module loads), then
    one step is captured. Off CUDA (tests) the same steps run eagerly.

    ``step`` must be capture-safe on CUDA (no host synchronisation, no
    allocation whose address changes between calls); a capture that fails
    warns once and the epoch continues eagerly. ``agree(captured) -> bool``
    (data-parallel fits) makes the ranks agree after their captures: a step
    holding a collective replays from a graph on every rank or on none.
    """

    WARMUP_STEPS = 3

    def __init__(self, step: StepFn, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, batch_size: int,
                 n_values: int, before_capture: Callable[[], None] | None = None,
                 agree: Callable[[bool], bool] | None = None):
        n, device = X.shape[0], X.device
        self.step, self.X, self.y, self.weight = step, X, y, weight
        self.n_steps = -(-n // batch_size)
        self.order = torch.zeros(self.n_steps * batch_size, dtype=torch.long, device=device)
        self.offset = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.arange(batch_size, device=device)
        self.totals = torch.zeros(n_values, dtype=X.dtype, device=device)
        self.before_capture = before_capture
        self.agree = agree
        self.capture = device.type == "cuda"
        self.graph = None
        self.eager_steps = 0

    def _step(self) -> None:
        index = self.offset + self.positions
        rows = self.order[index]
        weight = self.weight[rows] * (index < self.X.shape[0]).to(self.weight.dtype)
        values = self.step(self.X[rows], self.y[rows], weight)
        self.totals.add_(torch.stack(values) * weight.sum())
        self.offset.add_(self.positions.shape[0])

    def _eager_step_on_side_stream(self) -> None:
        # torch.cuda.graphs: warm-up runs before capture go on a side stream
        current = torch.cuda.current_stream(self.X.device)
        side = torch.cuda.Stream(self.X.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self._step()
        current.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        if self.before_capture is not None:
            self.before_capture()
        try:
            # thread_local: another thread calling CUDA meanwhile (NCCL's watchdog in a data-parallel
            # fit) does not invalidate this capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._step()
        except RuntimeError as exc:  # a step that is not capture-safe after all: keep going eagerly
            warnings.warn(f"CUDA graph capture of the training step failed ({exc}); training continues without it.",
                          RuntimeWarning)
            graph = None
        if self.agree is not None and not self.agree(graph is not None):
            graph = None  # another rank's capture failed: nothing captured has run, so drop it
        self.capture = graph is not None
        self.graph = graph

    def epoch(self, order: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        """Run one epoch over the rows in ``order`` (its first ``n_steps`` batches; None: all);
        the weighted mean of each step value (``totals``: the weighted sums)."""
        self.order[: order.shape[0]].copy_(order)
        self.offset.zero_()
        self.totals.zero_()
        for _ in range(self.n_steps if n_steps is None else n_steps):
            if self.graph is None and self.capture and self.eager_steps >= self.WARMUP_STEPS:
                self._capture()
            if self.graph is not None:
                self.graph.replay()
            elif self.capture:
                self._eager_step_on_side_stream()
                self.eager_steps += 1
            else:
                self._step()
        return self.totals / self.weight.sum()
