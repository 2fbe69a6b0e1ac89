"""Mini-batch training of a torch module with data resident on its device.

The data is moved to the device once; every epoch draws a permutation there
and slices batches from it, so the step loop never waits for the host. The
host reads the device once per epoch (loss, validation score and what the
caller asks to record), which drives the loss curve and the stopping rule.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch


@dataclass
class TrainingOptions:
    learning_rate_init: float = 1e-2
    batch_size: int = 200
    max_iter: int = 200
    shuffle: bool = True
    tol: float = 1e-4
    n_iter_no_change: int = 10
    alpha: float = 0.0
    spectral_penalty: float = 0.0
    learning_rate_schedule: str = "constant"
    verbose: bool = False
    # Replay each step from a CUDA graph (needs a capture-safe eigen backend: "kernel").
    cuda_graph: bool = False


@dataclass
class Dataset:
    """Rows on the training device: features, targets and sample weights."""

    X: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor

    def __len__(self) -> int:
        return self.X.shape[0]


@dataclass
class TrainingState:
    """What the loop learned about itself; the estimator copies it into fitted attributes."""

    n_iter: int = 0
    t: int = 0
    converged: bool = False
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_loss: float = float("inf")
    best_validation_score: float = -float("inf")
    no_improvement_count: int = 0
    best_parameters: dict | None = None


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # clamp: a batch of zero-weight rows contributes nothing instead of 0/0
    return (values * weight).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


@torch.no_grad()
def predict_in_chunks(model: torch.nn.Module, X: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """Evaluate ``model`` on X in bounded memory."""
    return torch.cat([model(X[i : i + chunk_rows]) for i in range(0, X.shape[0], chunk_rows)] or [model(X[:0])])


def _read_once(tensors: dict) -> dict:
    """Copy a dict of device tensors to Python values in one host sync."""
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors.values()]).cpu()
    out, offset = {}, 0
    for name, t in tensors.items():
        part = flat[offset : offset + t.numel()].reshape(t.shape)
        out[name] = part.tolist()
        offset += t.numel()
    return out


class Trainer:
    """Adam on mini-batches; a generator of per-epoch records.

    ``loss_fn(output, target, weight)`` is the weighted mean loss of a batch;
    ``score_fn(output, target, weight)`` scores the validation set (higher
    is better). ``record_fn()`` returns extra device tensors to read at the
    epoch's single sync (e.g. sensitivities), as a dict of name -> tensor.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        options: TrainingOptions,
        generator: torch.Generator,
        *,
        score_fn: LossFn | None = None,
        penalty_fn: Callable[[], torch.Tensor] | None = None,
        chunk_rows: int = 65536,
        state: TrainingState | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.score_fn = score_fn
        self.penalty_fn = penalty_fn
        self.options = options
        self.generator = generator
        self.chunk_rows = chunk_rows
        self.state = state or TrainingState()
        if optimizer is None:
            lr, parameter = options.learning_rate_init, next(model.parameters())
            capturable = options.cuda_graph and parameter.device.type == "cuda"
            if capturable:  # the step count and lr (a tensor the schedule fills) live on the device
                lr = torch.tensor(lr, dtype=torch.float32, device=parameter.device)  # fused Adam's lr type
            # fused: one kernel for all parameters instead of a dozen foreach kernels per step
            optimizer = torch.optim.Adam(model.parameters(), lr=lr, capturable=capturable, fused=capturable or None)
        self.optimizer = optimizer
        self._static_steps = None

    def _step(self, xb, yb, wb) -> torch.Tensor:
        data_loss = self.loss_fn(self.model(xb), yb, wb)
        loss = data_loss if self.penalty_fn is None else data_loss + self.penalty_fn()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _epoch(self, train: Dataset) -> torch.Tensor:
        n = len(train)
        if self.options.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(train.X.device)
        else:
            order = torch.arange(n, device=train.X.device)
        if self.options.cuda_graph:
            if self._static_steps is None or self._static_steps.train is not train:
                self._static_steps = StaticBatchSteps(self, train)
            return self._static_steps.epoch(order)
        total = torch.zeros((), dtype=train.X.dtype, device=train.X.device)
        batch_size = self.options.batch_size
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            wb = train.weight[rows]
            total = total + self._step(train.X[rows], train.y[rows], wb) * wb.sum()
            self.state.t += 1
        return total / train.weight.sum()

    def epochs(
        self,
        train: Dataset,
        validation: Dataset | None = None,
        record_fn: Callable[[], dict] | None = None,
    ) -> Iterator[dict]:
        """Train until converged or ``max_iter`` epochs; yield each epoch's record."""
        opts, state = self.options, self.state
        state.converged, state.no_improvement_count = False, 0
        start_time = time.perf_counter()
        for epoch in range(opts.max_iter):
            if opts.learning_rate_schedule == "cosine":
                # anneal over this call's epochs: the noise of small batches averages out at the end
                lr = opts.learning_rate_init * 0.5 * (1 + math.cos(math.pi * epoch / opts.max_iter))
                for group in self.optimizer.param_groups:
                    if isinstance(group["lr"], torch.Tensor):
                        group["lr"].fill_(lr)  # in place: a captured step reads this tensor
                    else:
                        group["lr"] = lr
            self.model.train()
            to_read = {"train_loss": self._epoch(train)}
            if validation is not None and self.score_fn is not None:
                self.model.eval()
                output = predict_in_chunks(self.model, validation.X, self.chunk_rows)
                to_read["validation_score"] = self.score_fn(output, validation.y, validation.weight)
            if record_fn is not None:
                to_read.update(record_fn())
            record = _read_once(to_read)
            state.n_iter += 1
            record = {"epoch": state.n_iter, **record, "elapsed_s": time.perf_counter() - start_time}
            loss = record["train_loss"]
            if not torch.isfinite(torch.tensor(loss)):
                raise FloatingPointError(
                    f"Training diverged: the training loss is {loss} at epoch {state.n_iter}. "
                    "Lower learning_rate_init, or check the inputs for extreme values."
                )
            state.loss_curve.append(loss)
            if opts.verbose:
                extra = f", validation score = {record['validation_score']:.8f}" if "validation_score" in record else ""
                print(f"Iteration {state.n_iter}, loss = {loss:.8f}{extra}")
            self._update_no_improvement(record)
            yield record
            # Under the cosine schedule the length of training is the plan; a
            # plateau early on (large steps) is not convergence. Validation
            # scores (early stopping) still stop it.
            plateau_stops = opts.learning_rate_schedule == "constant" or "validation_score" in record
            if plateau_stops and state.no_improvement_count > opts.n_iter_no_change:
                state.converged = True
                break
        if state.best_parameters is not None:
            self.model.load_state_dict(state.best_parameters)

    def _update_no_improvement(self, record: dict) -> None:
        """MLPRegressor's rule: stop after n_iter_no_change epochs without a tol improvement."""
        state, tol = self.state, self.options.tol
        if "validation_score" in record:
            score = record["validation_score"]
            state.validation_scores.append(score)
            state.no_improvement_count = 0 if score >= state.best_validation_score + tol else state.no_improvement_count + 1
            if score > state.best_validation_score:
                state.best_validation_score = score
                state.best_parameters = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            loss = record["train_loss"]
            state.no_improvement_count = 0 if loss <= state.best_loss - tol else state.no_improvement_count + 1
            state.best_loss = min(state.best_loss, loss)


class StaticBatchSteps:
    """An epoch of fixed-shape steps, replayed from one CUDA graph.

    Every step reads its batch inside the graph: rows ``order[offset:offset +
    batch_size]`` with ``offset`` a device counter the step advances, so a
    step needs nothing from the host and costs one ``graph.replay()`` of
    host time. The epoch's last, shorter batch is padded with zero-weight rows,
    which leaves the weighted mean loss and its gradient unchanged. The first
    steps run eagerly on a side stream (optimizer state, CuPy module loads),
    then one step is captured. Off CUDA (tests) the same steps run eagerly.
    """

    WARMUP_STEPS = 3

    def __init__(self, trainer: Trainer, train: Dataset):
        n, batch_size = len(train), trainer.options.batch_size
        device = train.X.device
        self.trainer, self.train = trainer, train
        self.n_steps = -(-n // batch_size)
        self.order = torch.zeros(self.n_steps * batch_size, dtype=torch.long, device=device)
        self.offset = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.arange(batch_size, device=device)
        self.total = torch.zeros((), dtype=train.X.dtype, device=device)
        self.capture = device.type == "cuda"
        self.graph = None
        self.eager_steps = 0

    def _step(self) -> None:
        index = self.offset + self.positions
        rows = self.order[index]
        weight = self.train.weight[rows] * (index < len(self.train)).to(self.train.weight.dtype)
        loss = self.trainer._step(self.train.X[rows], self.train.y[rows], weight)
        self.total.add_(loss * weight.sum())
        self.offset.add_(self.positions.shape[0])

    def _eager_step_on_side_stream(self) -> None:
        # torch.cuda.graphs: warm-up runs before capture go on a side stream
        current = torch.cuda.current_stream(self.train.X.device)
        side = torch.cuda.Stream(self.train.X.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self._step()
        current.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        self.trainer.optimizer.zero_grad(set_to_none=True)  # backward allocates .grad in the graph's pool
        try:
            with torch.cuda.graph(graph):
                self._step()
        except RuntimeError as exc:  # a backend that is not capture-safe: keep going eagerly
            warnings.warn(f"CUDA graph capture of the training step failed ({exc}); training continues without it.",
                          RuntimeWarning)
            self.capture = False
            return
        self.graph = graph

    def epoch(self, order: torch.Tensor) -> torch.Tensor:
        self.order[: order.shape[0]].copy_(order)
        self.offset.zero_()
        self.total.zero_()
        for _ in range(self.n_steps):
            if self.graph is None and self.capture and self.eager_steps >= self.WARMUP_STEPS:
                self._capture()
            if self.graph is not None:
                self.graph.replay()
            elif self.capture:
                self._eager_step_on_side_stream()
                self.eager_steps += 1
            else:
                self._step()
            self.trainer.state.t += 1
        return self.total / self.train.weight.sum()
