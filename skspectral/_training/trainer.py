"""Mini-batch training of a torch module with data resident on its device.

The data is moved to the device once; every epoch draws a permutation there
and slices batches from it, so the step loop never waits for the host. The
host reads the device once per epoch (loss, validation score and what the
caller asks to record), which drives the loss curve and the stopping rule.
Where the model says its forward and backward are capture-safe, each step on
CUDA is one replay of a CUDA graph (:mod:`.cuda_graph`).
"""

from __future__ import annotations

import ctypes
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from . import history
from .adam import adam
from .compiled_steps import CompiledSteps
from .cuda_graph import StaticBatchSteps
from .streaming import HostRowBlocks, HostRows
from .threads import AdaptiveThreads


# A last batch of fewer rows than this share of a batch is left out of its epoch (its rows, drawn anew
# each epoch, are in the next epochs' batches): one step on a handful of rows, at the step size of
# whole batches, threw the parameters off just before each epoch's validation. Flights (CPU, fold 1,
# 196,408 rows, batch_size=1964, an 8-row last batch): RMSE 13.69 / 13.58 (seeds 0 / 7), stopped at 20 /
# 24 epochs; batch_size=1960 (a 408-row last batch) 12.10 / 12.08 in 65 / 73 epochs, 1963 (108 rows)
# 12.15 (benchmarks/RESULTS.md, section 9).
SHORT_LAST_BATCH = 0.1


def rows_per_epoch(n_rows: int, batch_size: int) -> int:
    """How many of ``n_rows`` (shuffled) rows an epoch takes: all, but a last batch under
    SHORT_LAST_BATCH of ``batch_size`` rows where there are whole batches before it."""
    short = n_rows % batch_size
    return n_rows - short if n_rows > batch_size and short < SHORT_LAST_BATCH * batch_size else n_rows


def taken_weight(train: Dataset, order: torch.Tensor) -> torch.Tensor:
    """The weight of the rows an epoch took (``order``, see rows_per_epoch): every row's, summed as
    it always was, unless a last batch was left out."""
    return train.weight.sum() if order.shape[0] == len(train) else train.weight[order].sum()


@dataclass
class TrainingOptions:
    learning_rate_init: float = 1e-2
    batch_size: int = 200
    max_iter: int = 200
    shuffle: bool = True
    tol: float = 1e-4
    # The validation score's size of one unit of the training loss: tol applies in the loss's
    # units, so the same fit stops at the same epoch whatever the units of the score (y's).
    score_scale: float = 1.0
    n_iter_no_change: int = 10
    # With a validation set: its score, and the parameters kept, are those of a running average of
    # the epochs' last parameters (this decay per epoch; 0: the last parameters themselves).
    average_decay: float = 0.0
    learning_rate_schedule: str = "constant"
    verbose: bool = False
    # None: replay each step from a CUDA graph where the model is on CUDA and says it
    # is capture-safe; True: the static-step path always (eagerly off CUDA); False: never.
    cuda_graph: bool | None = None
    # The thread count CPU steps are tuned from (the caller's; None: torch's when the trainer starts), and
    # the machine's idle cores read since the fit's set-up began (threads.IdleCores; None: from the first step)
    threads: int | None = None
    idle_cores: object | None = None


@dataclass
class Dataset:
    """Rows for training: features, targets and sample weights, on the training device;
    with ``stream_rows`` the features stay in host memory and each epoch streams them
    to the device (:mod:`.streaming`)."""

    X: torch.Tensor | HostRows  # HostRows where stream_rows
    y: torch.Tensor
    weight: torch.Tensor
    stream_rows: bool = False

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


# The eager epoch gathers its shuffled rows this many bytes at a time.
GATHER_BYTES = 32 * 2**20


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere. Thousands of small steps free their temporaries
    into a heap that glibc stops returning to the system once a large block has raised its
    thresholds: a 2M-row CPU fit held 4x its live memory. Distributed's workers trim the same way."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Give the host heap's freed memory back to the system (a no-op without glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _EpochAverage:
    """A running average of parameters over epochs, a = decay a + (1 - decay) p at each epoch's end
    (decay 0: the parameters themselves), swapped into the parameters in place for scoring (a
    captured CUDA graph keeps reading the same tensors) and the last parameters swapped back.
    Late in a fit at a high step size the last parameters jitter from epoch to epoch; their average
    scores better and more steadily, so early stopping sees a real plateau sooner. Averaging the
    parameters keeps every guarantee their parameterisation gives (ordered mu, monotone
    matrices): the average is a parameter vector of the same model."""

    def __init__(self, parameters: list, decay: float):
        self.parameters, self.decay = parameters, decay
        self.averages = self.last = None

    @torch.no_grad()
    def update(self) -> None:
        """Take the epoch's last parameters into the average."""
        if self.averages is None:
            self.averages = [p.detach().clone() for p in self.parameters]
        else:
            for a, p in zip(self.averages, self.parameters):
                a.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def swap_in(self) -> None:
        if not self.decay:
            return
        self.update()
        if self.last is None:
            self.last = [torch.empty_like(p) for p in self.parameters]
        for a, p, kept in zip(self.averages, self.parameters, self.last):
            kept.copy_(p)
            p.copy_(a)

    @torch.no_grad()
    def swap_out(self) -> None:
        if not self.decay:
            return
        for p, kept in zip(self.parameters, self.last):
            p.copy_(kept)


def schedule_share(schedule: str, epoch: int, max_iter: int) -> float:
    """The share of the initial step size that ``schedule`` gives the epoch of index ``epoch`` (from 0) of
    ``max_iter``: a cosine from 1 down to 0, or 1 throughout ("constant")."""
    return 0.5 * (1 + math.cos(math.pi * epoch / max_iter)) if schedule == "cosine" else 1.0


@torch.no_grad()
def predict_in_chunks(model: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """Evaluate ``model`` (a module, or any function of a batch of rows) on X in bounded memory."""
    return torch.cat([model(X[i : i + chunk_rows]) for i in range(0, X.shape[0], chunk_rows)] or [model(X[:0])])


class _PendingRead:
    """A dict of device tensors on its way to the host in one copy: queued when made (on CUDA into pinned
    memory behind an event, so the host can queue more work before it waits), read by :meth:`values`
    (the one synchronisation)."""

    def __init__(self, tensors: dict):
        self.shapes = {name: t.shape for name, t in tensors.items()}
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors.values()])
        self.done = None
        if flat.device.type == "cuda":
            self.host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
            self.host.copy_(flat, non_blocking=True)
            self.done = torch.cuda.Event()
            self.done.record()
        else:
            self.host = flat.cpu()

    def values(self) -> dict:
        """The tensors' values as Python numbers and lists."""
        if self.done is not None:
            self.done.synchronize()
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            n = math.prod(shape)
            out[name] = self.host[offset : offset + n].reshape(shape).tolist()
            offset += n
        return out


class _LookAhead:
    """The next epoch queued before the host reads this one's record (see Trainer.epochs' ``look_ahead``):
    what the loop needs to take it back where the fit ends at this epoch -- the parameters as this epoch
    left them (copied on the device, in stream order before the next epoch's steps) and the step count."""

    def __init__(self, parameters: list):
        self.parameters = parameters
        self.kept = [torch.empty_like(p) for p in parameters]
        self.t = None
        self.queued = None  # the queued epoch's (objective, data loss, rows' weight), not yet read

    @torch.no_grad()
    def keep(self, t: int) -> None:
        torch._foreach_copy_(self.kept, [p.detach() for p in self.parameters])
        self.t = t

    @torch.no_grad()
    def take_back(self, state: "TrainingState") -> None:
        """Undo the queued epoch: the parameters and the step count as the last read epoch left them."""
        if self.queued is None:
            return
        torch._foreach_copy_([p.detach() for p in self.parameters], self.kept)
        state.t, self.queued = self.t, None
        device = self.parameters[0].device
        if device.type == "cuda":
            # the queued epoch's graph replays may still run: the fit's graph (and its memory pool, which
            # another thread's fit could be given) is released only after they end
            torch.cuda.current_stream(device).synchronize()


class Trainer:
    """Adam on mini-batches; a generator of per-epoch records (see :mod:`.history`).

    ``loss_fn(output, target, weight)`` is the weighted mean loss of a batch (``loss_and_gradient``,
    where given: its value and gradient with respect to the output, which the CPU's compiled step
    and a CUDA step take instead of autograd's);
    ``penalty_fn()`` a regulariser added to it (one whose ``reads_data_loss`` is true is called with the
    batch's data loss, a term relative to it); ``score_fn(output, target,
    weight)`` scores the validation set (higher is better). ``train_metric``
    is ``(name, fn)``: ``fn`` turns the epoch's mean data loss (a tensor) into
    the training metric recorded as ``train_<name>``. ``record_fn()`` returns
    extra device tensors to read at the epoch's single sync (e.g.
    sensitivities), as a dict of name -> tensor.

    Data-parallel training: ``distributed`` (a :class:`.distributed.DistributedContext`)
    averages the gradients over the ranks after each backward (inside the captured
    step too), averages the epoch's losses and validation score so that every rank
    takes the same stopping decision, and makes the ranks agree on replaying steps
    from CUDA graphs (all of them, or none).
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
        train_metric: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        chunk_rows: int = 65536,
        state: TrainingState | None = None,
        distributed=None,
        loss_and_gradient: Callable | None = None,
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.score_fn = score_fn
        self.penalty_fn = penalty_fn
        self.train_metric = train_metric
        self.options = options
        self.generator = generator
        self.chunk_rows = chunk_rows
        self.state = state or TrainingState()
        self.distributed = distributed
        self.loss_and_gradient = loss_and_gradient
        self.gradient_reducer = None if distributed is None else distributed.gradient_reducer(model.parameters())
        parameter = next(model.parameters())
        self.device = parameter.device
        on_cuda = parameter.device.type == "cuda"
        if options.cuda_graph is None:
            self.static_steps = on_cuda and bool(getattr(model, "capture_safe", False))
        else:
            self.static_steps = bool(options.cuda_graph)
        lr = options.learning_rate_init
        capturable = self.static_steps and on_cuda
        if capturable:  # the step count and lr (a tensor the schedule fills) live on the device
            lr = torch.tensor(lr, dtype=torch.float32, device=parameter.device)  # fused Adam's lr type
        self.optimizer = adam(model.parameters(), lr, capturable)
        self._graphed = None
        self._blocks = self._block_targets = None  # a streamed training set's HostRowBlocks, its y and weight
        # CPU steps run on as many threads as time best (a busy machine: often one)
        self._threads = (AdaptiveThreads(start_threads=options.threads, idle_cores=options.idle_cores)
                         if not on_cuda else None)
        # a model that offers one steps through its compiled pass (the CPU's kernels called directly,
        # only the loss through autograd): the same values and gradients as autograd's, a step's
        # Python and small ops not repeated around every kernel
        compiled_pass = getattr(model, "compiled_pass", None)
        self.compiled_pass = compiled_pass() if compiled_pass is not None and not on_cuda else None
        # the penalty's terms whose gradients the pass adds itself, (Frobenius factor, the shared factors'
        # pull) (None: no penalty, or autograd adds it)
        self._pass_penalty = (None if self.compiled_pass is None or penalty_fn is None
                              else self.compiled_pass.penalty_terms(penalty_fn))
        # the loss's index where the pass runs it inside its one call (every loss has one), else None
        self._pass_loss = (None if self.compiled_pass is None or loss_and_gradient is None
                           else self.compiled_pass.loss_code(loss_and_gradient))
        self._pass_loss_parameters = (None if self._pass_loss is None
                                      else self.compiled_pass.loss_parameters(loss_and_gradient))
        # whole batches in a few compiled calls (pass and Adam), not a Python round trip each
        self._compiled_steps = (CompiledSteps(self.compiled_pass, self._pass_loss, self._pass_penalty, self.optimizer,
                                              self._pass_loss_parameters)
                                if CompiledSteps.applies(self.compiled_pass, self._pass_loss, self.optimizer,
                                                         self.gradient_reducer, penalty_fn, self._pass_penalty)
                                else None)
        # on CUDA the loss's value and gradient come from its kernel (one launch where autograd ran ~20
        # small kernels); the CPU's steps without a compiled pass (the variants) keep autograd's, as fitted
        runs_kernel_on = getattr(loss_and_gradient, "runs_kernel_on", None)
        self._loss_kernel = on_cuda and runs_kernel_on is not None and runs_kernel_on(parameter.device)
        # and the shared factors' pull is added after the backward by one kernel, not ~8 of autograd's
        pulls_apart_on = getattr(penalty_fn, "pulls_apart_on", None)
        self._pull_apart = (self.compiled_pass is None and pulls_apart_on is not None
                            and pulls_apart_on(parameter.device))

    def _penalty(self, data_loss: torch.Tensor):
        """The penalty's value for this batch (a term relative to the batch's loss reads it): a tensor
        where a term goes through autograd, else 0.0 (none, or on CUDA only the shared factors' pull,
        which :meth:`_step` adds after the backward in one kernel)."""
        if self.penalty_fn is None:
            return 0.0
        if self._pull_apart:
            return self.penalty_fn(data_loss, pull=False)
        if getattr(self.penalty_fn, "reads_data_loss", False):
            return self.penalty_fn(data_loss)
        return self.penalty_fn()

    def _step(self, xb, yb, wb) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step; returns (objective, data loss) of the batch, detached."""
        if self.compiled_pass is not None:
            return self._compiled_step(xb, yb, wb)
        self.optimizer.zero_grad(set_to_none=True)
        if self._loss_kernel:
            output = self.model(xb)
            data_loss, grad_output = self.loss_and_gradient(output, yb, wb)
            penalty = self._penalty(data_loss)
            if isinstance(penalty, torch.Tensor):
                torch.autograd.backward((output, penalty), (grad_output, None))
            else:
                output.backward(grad_output)
        else:
            data_loss = self.loss_fn(self.model(xb), yb, wb)
            penalty = self._penalty(data_loss)
            (data_loss + penalty if isinstance(penalty, torch.Tensor) else data_loss).backward()
        if self._pull_apart:
            pulled = self.penalty_fn.add_pull(data_loss)
            penalty = penalty.detach() + pulled if isinstance(penalty, torch.Tensor) else pulled
        loss = data_loss + penalty.detach() if isinstance(penalty, torch.Tensor) else data_loss
        if self.gradient_reducer is not None:
            self.gradient_reducer(wb.sum())
        self.optimizer.step()
        return loss.detach(), data_loss.detach()

    def _compiled_step(self, xb, yb, wb) -> tuple[torch.Tensor, torch.Tensor]:
        """_step through the model's compiled pass: the batch's eigenvalues from its kernels, the loss
        and its gradient with respect to them (the loss's own gradient where it has one, else
        autograd's), every parameter's gradient from the pass (a Frobenius penalty's and the shared factors'
        pull's too; any other penalty's added by autograd), then the same Adam step. Every loss runs inside the
        pass's one compiled call (several quantiles too: their kernel orders the values)."""
        step = self.compiled_pass
        frobenius_factor, factor_l1 = self._pass_penalty or (0.0, 0.0)
        if self._pass_loss is not None:
            data_loss, penalty = step.step(xb, yb, wb, self._pass_loss, frobenius_factor, self._pass_loss_parameters,
                                           factor_l1)
        else:
            values = step.values(xb)
            if self.loss_and_gradient is not None and step.output_is_view:
                output = step.output(values)  # the values reshaped: the output's gradient is theirs
                data_loss, grad_output = self.loss_and_gradient(output, yb, wb)
                grad_values = grad_output.reshape(values.shape)
            else:
                values = values.detach().requires_grad_()  # a leaf over the pass's buffer
                data_loss = self.loss_fn(step.output(values), yb, wb)
                (grad_values,) = torch.autograd.grad(data_loss, values)
            # the penalty's terms the pass adds (a pull reads the data loss: on the CPU, no device sync)
            # (detached: autograd's loss above is still attached to its graph)
            penalty = step.backward(grad_values, frobenius_factor, factor_l1,
                                    float(data_loss.detach()) if factor_l1 else 0.0)
        if self._pass_penalty is not None:
            loss = data_loss + penalty
        elif self.penalty_fn is not None:
            penalty = self._penalty(data_loss)
            penalty.backward()  # onto the gradients the pass wrote
            loss = data_loss + penalty
        else:
            loss = data_loss
        if self.gradient_reducer is not None:
            self.gradient_reducer(wb.sum())
        self.optimizer.step()
        return loss.detach(), data_loss.detach()

    def _epoch(self, train: Dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over ``train`` (a last batch under SHORT_LAST_BATCH of a batch left out); the
        weighted means of the objective and the data loss over the rows it took, and those rows'
        weight (what a data-parallel fit weights this rank's means by)."""
        n = len(train)
        if self.options.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device)
        else:
            order = torch.arange(n, device=self.generator.device)
        order = order[: rows_per_epoch(n, self.options.batch_size)]
        if train.stream_rows:
            return self._streamed_epoch(train, order)
        order = order.to(train.X.device)
        batch_size = self.options.batch_size
        if self.static_steps:
            steps = self._static_steps(train.X, train.y, train.weight)
            n_steps = -(-order.shape[0] // batch_size)
            steps.epoch(order, n_steps=n_steps)
            taken = taken_weight(train, order)
            means = steps.totals / taken
            self.state.t += n_steps
            return means[0], means[1], taken
        # One gather per block of whole batches (not per step): every batch is then a view,
        # and the shuffled copy of the data is a block, not the whole epoch; the per-step
        # losses are weighted and summed once, at the end of the epoch. (index_select copies
        # whole rows: on the CPU 3-10x faster than indexing X[rows], the same rows.)
        row_bytes = max(1, train.X[:1].nbytes)
        block = max(1, GATHER_BYTES // (row_bytes * batch_size)) * batch_size
        losses = []
        for first in range(0, n, block):
            rows = order[first : first + block]
            self._eager_steps(train.X.index_select(0, rows), train.y.index_select(0, rows),
                              train.weight.index_select(0, rows), losses)
            if n > block:  # (a walk over the heap: ~1 ms, which a table of one block never needs)
                release_freed_memory()
        return self._eager_means(losses, train, order)

    def _streamed_epoch(self, train: Dataset, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The epoch's batches (as a resident epoch takes them) from rows in host memory,
        a block of whole batches at a time (:class:`.streaming.HostRowBlocks`)."""
        batch_size = self.options.batch_size
        if self._blocks is None or self._blocks.X is not train.X:
            self._blocks = HostRowBlocks(train.X, batch_size, self.device)
            # a block's targets and weights beside its rows: the buffers graph-replayed steps read
            self._block_targets = (
                torch.zeros((self._blocks.block_rows,) + train.y.shape[1:], dtype=train.y.dtype, device=self.device),
                torch.zeros(self._blocks.block_rows, dtype=train.weight.dtype, device=self.device),
            )
        blocks = self._blocks
        # the host gathers the rows; a short wait: the last epoch's read left only the permutation queued
        host_order = order.cpu()
        order = order.to(self.device)
        if self.static_steps:
            block_y, block_weight = self._block_targets
            steps = self._static_steps(blocks.device_rows, block_y, block_weight)
            every_row = torch.arange(blocks.block_rows, device=self.device)
            sums = torch.zeros_like(steps.totals)
            for start, n_rows in blocks.blocks(host_order):
                rows = order[start : start + n_rows]
                block_y[:n_rows] = train.y[rows]
                block_weight[:n_rows] = train.weight[rows]
                block_weight[n_rows:] = 0  # a short last block: the rest are padding
                n_steps = -(-n_rows // batch_size)
                steps.epoch(every_row, n_steps=n_steps)
                sums += steps.totals
                self.state.t += n_steps
            taken = taken_weight(train, order)
            means = sums / taken
            return means[0], means[1], taken
        losses = []
        for start, n_rows in blocks.blocks(host_order):
            rows = order[start : start + n_rows]
            self._eager_steps(blocks.device_rows[:n_rows], train.y[rows], train.weight[rows], losses)
            release_freed_memory()
        return self._eager_means(losses, train, order)

    def _static_steps(self, X, y, weight) -> StaticBatchSteps:
        """The graph-replayed steps over these row buffers (made once per training set)."""
        if self._graphed is None or self._graphed.X is not X:
            # backward allocates .grad inside the graph's memory pool
            self._graphed = StaticBatchSteps(
                self._step, X, y, weight, self.options.batch_size, n_values=2,
                before_capture=lambda: self.optimizer.zero_grad(set_to_none=True),
                agree=None if self.distributed is None else self.distributed.all_agree,
            )
        return self._graphed

    def _eager_steps(self, X, y, weight, losses: list) -> None:
        """Steps over consecutive batches of these rows; each step's (objective, data loss) to ``losses``."""
        batch_size = self.options.batch_size
        if self._compiled_steps is not None:
            self._compiled_steps.run(X, y, weight, batch_size, self._threads, losses)
            return
        for start in range(0, X.shape[0], batch_size):
            stop = start + batch_size
            if self._threads is None:
                losses.append(torch.stack(self._step(X[start:stop], y[start:stop], weight[start:stop])))
                continue
            with self._threads.step():
                losses.append(torch.stack(self._step(X[start:stop], y[start:stop], weight[start:stop])))

    def _eager_means(self, losses: list, train: Dataset,
                     order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The epoch's weighted means from its per-step losses (each batch weighted by its weight), and
        the weight of the rows it took."""
        batch_size = self.options.batch_size
        self.state.t += len(losses)
        weight = train.weight[order]
        padded = torch.nn.functional.pad(weight, (0, len(losses) * batch_size - weight.shape[0]))  # zero weight
        batch_weights = padded.view(len(losses), batch_size).sum(1)
        taken = weight.sum()
        means = (torch.stack(losses) * batch_weights[:, None]).sum(0) / taken
        return means[0], means[1], taken

    def epochs(
        self,
        train: Dataset,
        validation: Dataset | None = None,
        record_fn: Callable[[], dict] | None = None,
        on_epoch_begin: Callable[[], None] | None = None,
        look_ahead: bool = False,
    ) -> Iterator[dict]:
        """Train until converged or ``max_iter`` epochs; yield each epoch's record.

        ``on_epoch_begin()`` is called before each epoch runs. With a validation set, the parameters of the best-scoring epoch are
        restored when the generator ends, also when its consumer stops early.

        ``look_ahead``: the caller reads nothing of the model between the epochs (no callback asking for
        the fitted copy, no ``fit_iter`` consumer), so where the steps are graph-replayed on resident rows (not in a
        data-parallel fit) each next epoch is queued before the host reads this one's record: the host's
        turn between the epochs (the read, the stopping rule, the consumer, the next epoch's launch)
        overlaps the device's work instead of leaving it idle (~1-2 ms an epoch on a GPU,
        benchmarks/RESULTS.md section 9). The records, the parameters and the stopping are the same: the
        parameters a record keeps are copied before the next epoch runs, no epoch is queued where the
        record may stop the fit (the end of a wait without improvement), and where the consumer ends it
        or it raises the queued epoch is taken back (the parameters and step count as the last read epoch
        left them); ``on_epoch_begin`` then runs after its epoch is queued.
        """
        opts, state = self.options, self.state
        state.converged, state.no_improvement_count = False, 0
        if validation is None or self.score_fn is None:
            # Nothing is scored in this call, so what it trains is kept: a resumed state's best epoch
            # (an earlier call's early stopping) restored at the end would undo it (partial_fit, a warm
            # start without early stopping; MLP's rule too).
            state.best_parameters = None
        average = _EpochAverage(list(self.model.parameters()), opts.average_decay)
        ahead = (_LookAhead(list(self.model.parameters()))
                 if look_ahead and self.static_steps and self.distributed is None and not train.stream_rows else None)
        start_time = time.perf_counter()
        try:
            for epoch in range(opts.max_iter):
                if on_epoch_begin is not None:
                    on_epoch_begin()
                if ahead is not None and ahead.queued is not None:
                    (loss, data_loss, taken), ahead.queued = ahead.queued, None
                else:
                    loss, data_loss, taken = self._run_epoch(train, epoch)
                if self.distributed is not None:  # each rank's means over the rows it took, weighted so
                    loss, data_loss = self.distributed.weighted_average([loss, data_loss], taken)
                to_read = {history.TRAIN_LOSS: loss}
                if self.train_metric is not None:
                    name, to_metric = self.train_metric
                    to_read[history.train_key(name)] = to_metric(data_loss)
                validating = validation is not None and self.score_fn is not None
                if validating:
                    self.model.eval()
                    average.swap_in()  # the averaged parameters are scored (and kept)
                    output = self._predict(validation.X)
                    score = self.score_fn(output, validation.y, validation.weight)
                    if self.distributed is not None:
                        (score,) = self.distributed.weighted_average([score], validation.weight.sum())
                    to_read[history.VALIDATION_SCORE] = score
                if record_fn is not None:
                    to_read.update(record_fn())
                read = _PendingRead(to_read)
                scored = None
                if validating and ahead is not None:
                    # what early stopping keeps if this epoch scores best, copied before the next epoch runs
                    scored = self._parameters_copy()
                    average.swap_out()  # training goes on from the last parameters
                # (not where this epoch's record may stop the fit: a queued epoch would be taken back unused)
                if ahead is not None and epoch + 1 < opts.max_iter and not self._may_stop(validating):
                    ahead.keep(state.t)
                    ahead.queued = self._run_epoch(train, epoch + 1)
                record = read.values()
                state.n_iter += 1
                record = {history.EPOCH: state.n_iter, **record, history.ELAPSED: time.perf_counter() - start_time}
                self._check_finite(record[history.TRAIN_LOSS])
                state.loss_curve.append(record[history.TRAIN_LOSS])
                if opts.verbose:
                    self._print(record)
                self._update_no_improvement(record, scored)
                if validating and ahead is None:
                    average.swap_out()
                yield record
                # Under the cosine schedule the length of training is the plan; a
                # plateau early on (large steps) is not convergence. Validation
                # scores (early stopping) still stop it.
                if self._plateau_stops(history.VALIDATION_SCORE in record) and \
                        state.no_improvement_count > opts.n_iter_no_change:
                    state.converged = True
                    break
        finally:
            if ahead is not None:  # where the fit ends with an epoch queued beyond the last one read
                ahead.take_back(state)
            # the graph goes with the fit: one holding an NCCL collective keeps its communicator
            # busy, and destroying the process group would wait for it
            self._graphed = self._blocks = self._block_targets = None
            if self._threads is not None:
                self._threads.close()
            if state.best_parameters is not None:
                self.model.load_state_dict(state.best_parameters)

    def _plateau_stops(self, scored: bool) -> bool:
        """Whether a plateau stops the fit (of the validation score where epochs are ``scored``)."""
        return self.options.learning_rate_schedule == "constant" or scored

    def _may_stop(self, scored: bool) -> bool:
        """Whether the epoch whose record is not yet read may stop the fit: the epochs before it ended a
        wait of n_iter_no_change epochs without improvement (its record improves, or the fit stops)."""
        return self._plateau_stops(scored) and self.state.no_improvement_count >= self.options.n_iter_no_change

    def _run_epoch(self, train: Dataset, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The epoch of index ``epoch`` (of this call) at its step size, in training mode: _epoch's means."""
        self._set_learning_rate(epoch)
        self.model.train()
        return self._epoch(train)

    def _parameters_copy(self) -> dict:
        """The model's state as it stands, copied (what early stopping keeps)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _predict(self, X: torch.Tensor) -> torch.Tensor:
        """The module's output on X in bounded memory; through the compiled pass where there is one
        (its kernels without the module's Python: the same numbers)."""
        return predict_in_chunks(self.model if self.compiled_pass is None else self.compiled_pass.forward, X,
                                 self.chunk_rows)

    def _set_learning_rate(self, epoch: int) -> None:
        opts = self.options
        if opts.learning_rate_schedule != "cosine":
            return
        # anneal over this call's epochs: the noise of small batches averages out at the end
        lr = opts.learning_rate_init * schedule_share(opts.learning_rate_schedule, epoch, opts.max_iter)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # in place: a captured step reads this tensor
            else:
                group["lr"] = lr

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"Training diverged: the training loss is {loss} at epoch {self.state.n_iter}. "
                "Lower learning_rate_init, or check the inputs for extreme values."
            )

    @staticmethod
    def _print(record: dict) -> None:
        score = record.get(history.VALIDATION_SCORE)
        extra = f", validation score = {score:.8f}" if score is not None else ""
        print(f"Iteration {record[history.EPOCH]}, loss = {record[history.TRAIN_LOSS]:.8f}{extra}")

    def _update_no_improvement(self, record: dict, scored: dict | None = None) -> None:
        """MLPRegressor's rule: stop after n_iter_no_change epochs without a tol improvement. ``scored``:
        the scored parameters, copied before the next epoch ran (None: the model's, as they stand)."""
        state, tol = self.state, self.options.tol
        if history.VALIDATION_SCORE in record:
            score = record[history.VALIDATION_SCORE]
            state.validation_scores.append(score)
            step = tol * self.options.score_scale
            state.no_improvement_count = 0 if score >= state.best_validation_score + step else state.no_improvement_count + 1
            if score > state.best_validation_score:
                state.best_validation_score = score
                state.best_parameters = scored if scored is not None else self._parameters_copy()
        else:
            loss = record[history.TRAIN_LOSS]
            state.no_improvement_count = 0 if loss <= state.best_loss - tol else state.no_improvement_count + 1
            state.best_loss = min(state.best_loss, loss)
