"""A dense model's training pass on the CPU without autograd's engine: its kernels called directly.

A CPU step of the gathered model (the default CPU fit) is ~1 ms of compiled kernels -- the
symmetric tables, the gathered eigenpairs, their gradient and the tables' backward -- and took
as long again in autograd's engine, torch's small ops and the Python between them
(benchmarks/RESULTS.md, section 9). :class:`CompiledDensePass` runs the same kernels on buffers
it keeps from step to step; the trainer sends only the loss (a few ops on the batch's
eigenvalues; a loss's own gradient without it) and hands the gradient of the eigenvalues
back, and the pass writes every parameter's ``.grad``. With any loss (its compiled value and
gradient) the whole pass is one compiled call, :meth:`CompiledDensePass.step`: ~0.1-0.2 ms of Python
and dispatch fewer in a 1-2 ms step (benchmarks/RESULTS.md, section 9), the same arithmetic. The
kernels are the autograd path's; the diagonal mu and its gradient are one compiled call each instead of ten torch ops (float64 sums:
equal to torch's to rounding), so the values and gradients are the autograd path's to rounding
(tested).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .eig._numba_support import parallel_chunks, parallel_threads, start_threading_layer
from .encoding import SymmetricTablesPasses, compiles


@functools.cache
def _kernels():
    from . import _step_kernels

    start_threading_layer()  # training_pass links the parallel kernels (see start_threading_layer)
    return _step_kernels


@functools.cache
def _encoding_kernels():
    from . import _encoding_kernels

    return _encoding_kernels

# what the pass writes gradients for: a model with any other parameter takes the autograd path
_PARAMETERS = {"mu_start", "mu_increments", "weight"}
# and with shared members (SharedMembersPass)
_SHARED_PARAMETERS = _PARAMETERS | {"shared_weight", "member_scales"}
# a loss kernel's constants where it has none
_NO_PARAMETERS = np.zeros(0)


class CompiledDensePass:
    """Forward and backward of ``model`` (a dense :class:`skspectral.model.SpectralModel` on the
    gather path, see :meth:`~skspectral.model.SpectralModel.compiled_pass`) for training steps.

    ``values(batch)``: the raw eigenvalues (B, n_models, K) of a batch as the trainer's module takes
    it (``terms_of(batch)``: its gathered terms (rows, weights)), in a tensor the next call
    overwrites; ``output(values)``: the model's forward output from them (torch ops,
    differentiable); ``backward(grad_values, frobenius_factor)``: every parameter's ``.grad`` from the
    gradient of the values (the batch of the last ``values`` call), a Frobenius penalty's added.
    ``weight``: the tensor of every model's W the kernels read (default: the model's ``weight``).
    ``packed_terms``: whether a batch is its rows' gathered terms packed in one tensor (rows, 2, terms) --
    the table rows as floats, exact, then their weights (:class:`skspectral.model.OnGatheredTerms`) --
    which compiled steps (skspectral._training.compiled_steps) then take as they are, unpacking each batch."""

    packed_terms = False

    def __init__(self, model, terms_of, weight: torch.Tensor | None = None):
        self.model, self.terms_of = model, terms_of
        encoder = model.encoder
        self.bin_columns, self.other_columns = encoder.bin_columns, encoder.other_columns
        self.weight = weight = model.weight if weight is None else weight
        models, n_columns, n = weight.shape[0], weight.shape[1], weight.shape[2]
        packed = n * (n + 1) // 2
        like = dict(dtype=weight.dtype)
        self.columns = torch.empty((models, n_columns, packed), **like)
        self.prefix = torch.empty((models, self.bin_columns.numel(), packed), **like)
        self.grads = (torch.empty_like(self.columns), torch.empty_like(self.prefix), torch.empty((models, n), **like))
        self.grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format)
        self.grad_packed = torch.empty_like(self.columns)  # the packed parameters' gradient (see pack)
        self.mu = torch.empty((models, n), **like)
        self.grad_start, self.grad_increments = torch.empty_like(model.mu_start), torch.empty_like(model.mu_increments)
        self._rounded = np.empty(2, dtype=self.mu.numpy().dtype)  # add_factor_pull's rounding in the dtype
        self.indices = tuple(model.eigval_indices)  # a tuple: outputs keep their index axis
        # one index: the output is the values reshaped (several are ordered by a running maximum)
        self.output_is_view = len(self.indices) == 1
        self._outputs: dict = {}  # batch size -> (values, vectors)
        self._step_buffers: dict = {}  # (batch size, loss) -> step()'s arrays
        self._chunks: dict = {}  # (batch size, terms, threads) -> step()'s kernels' thread split
        self._batch = None
        # the kernels' arrays of the tensors kept from step to step, found once (a step then converts
        # only its batch's): a dozen conversions and checks were ~0.1 ms of a ~2 ms step
        self._storage = self._parameter_storage()
        grad_columns, grad_prefix, grad_mu = self.grads
        self.tables = SymmetricTablesPasses(weight.detach(), self.bin_columns, self.other_columns, self.columns,
                                            self.prefix, grad_columns, grad_prefix, self.grad_weight)
        self.gathered = model.eigen_backend.gathered_steps(self.columns, self.prefix, self.mu, self.indices,
                                                           grad_columns, grad_prefix, grad_mu)
        self.arrays = dict(mu_start=model.mu_start.detach().numpy(), mu_increments=model.mu_increments.detach().numpy(),
                           mu=self.mu.numpy(), grad_mu=grad_mu.numpy(), grad_start=self.grad_start.numpy(),
                           grad_increments=self.grad_increments.numpy(), columns=self.columns.numpy(),
                           grad_columns=grad_columns.numpy(), grad_packed=self.grad_packed.numpy())

    @staticmethod
    def applies(model) -> bool:
        """Whether ``model`` (its gather tables from the encoder's symmetric_tables: the caller checks)
        has the parameters this pass differentiates and its kernels run: the gather path on a backend
        with ``gathered_steps`` (the CPU's Numba backend, no smoothing) and an encoder that compiles the
        tables for its weight."""
        parameters = _SHARED_PARAMETERS if model.n_shared_members else _PARAMETERS
        return (model.gathers and getattr(model.eigen_backend, "gathered_steps", None) is not None
                and {name for name, _ in model.named_parameters()} == parameters
                and model.weight.is_contiguous() and compiles(model.weight))

    def _parameter_storage(self) -> tuple:
        model = self.model
        return model.weight.data_ptr(), model.mu_start.data_ptr(), model.mu_increments.data_ptr()

    def _check_storage(self) -> None:
        if self._parameter_storage() != self._storage:
            raise RuntimeError("The model's parameters moved to new storage: make a new compiled pass.")

    def _before_pass(self) -> None:
        """What the kernels' weight needs before a pass reads it (nothing here: it is the model's)."""

    def values(self, batch: torch.Tensor) -> torch.Tensor:
        self._check_storage()
        self._before_pass()
        rows, weights = self.terms_of(batch)
        arrays = self.arrays
        self.tables.forward()
        _kernels().diagonal(arrays["mu_start"], arrays["mu_increments"], arrays["mu"])
        rows, weights = rows.contiguous(), weights.contiguous()
        values, vectors = self._value_buffers(rows.shape[0])
        self.gathered.values(rows, weights, values, vectors)
        self._batch = (rows, weights, vectors)
        return values

    @torch.no_grad()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's output on a batch as the trainer's module takes it, without the eigenvectors
        (scoring the early-stopping rows at an epoch's end): the kernels the model's own forward
        calls, on the pass's buffers, with the model's mu -- the same numbers, without ~1 ms of
        Python and torch's small ops. A new tensor."""
        self._check_storage()
        self._before_pass()
        rows, weights = self.terms_of(batch)
        rows, weights = rows.contiguous(), weights.contiguous()
        self.tables.forward()
        self.mu.copy_(self.model.mu())  # the model's mu (torch's sums): its forward's values to the bit
        values, vectors = self._value_buffers(rows.shape[0])
        self.gathered.values(rows, weights, values, vectors, want_vector=False)
        return self.output(values).clone()

    def _value_buffers(self, B: int) -> tuple:
        """The values (B, n_models, K) and vectors (B, n_models, K, n) tensors a batch of B rows writes."""
        out = self._outputs.get(B)
        if out is None:
            n_models, n, K = self.mu.shape[0], self.mu.shape[1], len(self.indices)
            out = self._outputs[B] = (torch.empty((B, n_models, K), dtype=self.mu.dtype),
                                      torch.empty((B, n_models, K, n), dtype=self.mu.dtype))
        return out

    def output(self, values: torch.Tensor) -> torch.Tensor:
        return self.model.output_of_values(values)

    def penalty_terms(self, penalty) -> tuple[float, float] | None:
        """(frobenius_factor, factor_l1) of ``penalty`` (a :class:`skspectral._losses.Penalty` of this
        pass's model) where its terms are ones :meth:`backward` and :meth:`step` add themselves: the
        Frobenius term and the shared factors' pull (:attr:`~skspectral._losses.Penalty.pass_terms`); else
        None (autograd adds the penalty)."""
        if getattr(penalty, "model", None) is not self.model:
            return None
        terms = getattr(penalty, "pass_terms", None)
        if terms is None or (terms[1] and not self.model.n_shared_members):
            return None
        return terms

    @torch.no_grad()
    def backward(self, grad_values: torch.Tensor, frobenius_factor: float = 0.0, factor_l1: float = 0.0,
                 data_loss: float = 0.0) -> float:
        """Every parameter's ``.grad``; with ``frobenius_factor`` the gradient of 0.5 factor sum
        ||A_i||_F^2 added (the matrices' own, the tables' columns), with ``factor_l1`` the shared
        factors' pull relative to ``data_loss`` (:meth:`penalty_terms`); returns their value."""
        rows, weights, vectors = self._batch
        self.gathered.grad(grad_values.contiguous(), vectors, rows, weights)
        arrays = self.arrays
        penalty = 0.0
        if frobenius_factor:  # the columns still hold this step's matrices
            penalty = _kernels().add_frobenius_penalty(arrays["columns"], arrays["grad_columns"], frobenius_factor)
        self.tables.backward()
        _kernels().diagonal_grad(arrays["grad_mu"], arrays["mu_increments"], arrays["grad_start"],
                                 arrays["grad_increments"])
        return penalty + self._finish_grads(factor_l1, data_loss)

    def _finish_grads(self, factor_l1: float, data_loss: float) -> float:
        """After a pass's kernels: the parameters' gradients by the chain rule, the shared factors' pull
        (``factor_l1`` relative to ``data_loss``) added to them, each parameter's ``.grad`` set; returns
        the pull's value (0 without it)."""
        self._chain_rule()
        pull = self._add_pull(factor_l1, data_loss) if factor_l1 else 0.0
        self._set_grads()
        return pull

    def _add_pull(self, factor_l1: float, data_loss: float) -> float:
        """The shared factors' pull's gradient added, its value returned (a model with sharing members)."""
        raise ValueError("The shared factors' pull needs members that share their matrices (SharedMembersPass).")

    def _chain_rule(self) -> None:
        """The parameters' gradients from the kernels' (nothing to do here: the kernels write them)."""

    def _gradients(self) -> tuple:
        """(parameter, the buffer its gradient is written to) for every parameter of the model."""
        model = self.model
        return ((self.weight, self.grad_weight), (model.mu_start, self.grad_start),
                (model.mu_increments, self.grad_increments))

    def _set_grads(self) -> None:
        for parameter, grad in self._gradients():
            # set once; the buffers are rewritten at every step (a buffer may be a view made anew)
            if parameter.grad is None or parameter.grad.data_ptr() != grad.data_ptr():
                parameter.grad = grad

    def loss_code(self, loss_and_gradient) -> int | None:
        """Where :meth:`step` can run ``loss_and_gradient`` (a loss's compiled value and gradient,
        see ``skspectral._losses``) inside its one call: the loss's index among the pass's losses;
        else None (the caller takes values, the loss and backward apart). Several indices (quantiles)
        only for the pinball loss, whose kernel orders them as the model's output does."""
        name = getattr(loss_and_gradient, "kernel_name", None)
        kernels = _kernels()
        if name not in kernels.TRAINING_LOSSES:
            return None
        code = kernels.TRAINING_LOSSES.index(name)
        return code if self.output_is_view or code == kernels.PINBALL_LOSS else None

    @staticmethod
    def loss_parameters(loss_and_gradient) -> np.ndarray:
        """The constants the loss's kernel takes (huber's threshold, the quantile levels; float64)."""
        return np.asarray(getattr(loss_and_gradient, "kernel_parameters", ()), dtype=np.float64).reshape(-1)

    @torch.no_grad()
    def step(self, batch: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, loss_code: int,
             frobenius_factor: float = 0.0, loss_parameters: np.ndarray = _NO_PARAMETERS,
             factor_l1: float = 0.0) -> tuple:
        """:meth:`values`, the loss of :meth:`loss_code` and :meth:`backward` in one compiled call
        (``skspectral._step_kernels.training_pass``): the same kernels on the same arrays, so the same
        gradients, without ~0.15 ms of Python and dispatch between them. ``loss_parameters``: the loss's
        constants (:meth:`loss_parameters`); ``factor_l1``: the shared factors' pull (:meth:`backward`).
        Returns (the data loss as a 0-d tensor of the model's dtype, the penalty's value)."""
        self._check_storage()
        self._before_pass()
        rows, weights = self.terms_of(batch)
        rows, weights = rows.contiguous(), weights.contiguous()
        state = self.step_state(*rows.shape, loss_code, loss_parameters=loss_parameters)
        data_loss, penalty = _kernels().training_pass(loss_code, target.contiguous().numpy(),
                                                      weight.contiguous().numpy(), rows.numpy(), weights.numpy(),
                                                      float(frobenius_factor), state)
        penalty += self._finish_grads(factor_l1, data_loss)
        return torch.tensor(data_loss, dtype=self.mu.dtype), penalty

    def step_state(self, B: int, K: int, loss_code: int, packed: bool = False,
                   loss_parameters: np.ndarray = _NO_PARAMETERS, c_functions: tuple | None = None) -> tuple:
        """``training_pass``'s ``state`` for batches of B rows of K terms with the loss ``loss_code``:
        the arrays that stay from step to step and the kernels' thread split for the current thread
        count (Numba's threads set to follow it). The parameters' ``.grad`` are the pass's buffers
        from here on: a caller that steps in compiled code (skspectral._training) updates them there.
        ``packed``: the steps read and update the packed parameters (:meth:`pack`); ``loss_parameters``:
        the loss's constants (:meth:`loss_parameters`); ``c_functions``: other addresses of the C functions than
        the gathered kernels' (placeholders for a call that runs no step)."""
        self._check_storage()
        buffers = self._step_buffers.get((B, loss_code))
        if buffers is None:
            buffers = self._step_buffers[(B, loss_code)] = self._new_step_buffers(B, loss_code)
        values, vectors, grad_values, output, grad_output = buffers
        chunks = self.step_chunks(B, K)
        if any(chunks):
            parallel_threads()  # Numba's threads follow torch's count (it may have changed)
        self._set_grads()
        arrays = self.arrays
        return (output, grad_output, self.tables.forward_args, chunks[0], arrays["mu_start"], arrays["mu_increments"],
                arrays["mu"], self.gathered.ks, c_functions or self.gathered.c_functions, values, vectors, chunks[1],
                grad_values, self.gathered.grads, chunks[2], self.tables.backward_args, chunks[3], arrays["grad_start"],
                arrays["grad_increments"], bool(packed), arrays["grad_packed"], loss_parameters)

    def step_chunks(self, B: int, K: int) -> tuple:
        """The chunks a step's kernels (the tables' forward, the eigenpairs, their gradient, the tables'
        backward) split over Numba's threads at torch's thread count, for batches of B rows of K terms: 0 where
        a kernel runs on the calling thread."""
        threads = torch.get_num_threads()
        chunks = self._chunks.get((B, K, threads))
        if chunks is None:
            chunks = self._chunks[(B, K, threads)] = (parallel_chunks(*self.tables.forward_size),
                                                      *self.gathered.chunks(B, K),
                                                      parallel_chunks(*self.tables.backward_size))
        return chunks

    # ---- packed parameters: the weight's lower triangles as the parameters of compiled steps -----
    # The weight W starts symmetric (SpectralModel._init_feature_matrices), its gradient is symmetric
    # and Adam's update is elementwise, so W stays symmetric to the bit and 0.5 (W + W^T) = W: steps
    # may keep only the lower triangles (the gathered columns) and update those, about half the
    # entries, with no symmetrisation pass; every number is the one the full W would get.
    def pack(self) -> torch.Tensor:
        """The weight's symmetric parts, packed, into the columns (the steps' parameters from here on):
        returns the columns. A W that is not symmetric (not from this model's own steps) is packed
        as 0.5 (W + W^T), the matrices the model uses."""
        self._check_storage()
        self._before_pass()
        self.tables.forward()
        return self.columns

    @torch.no_grad()
    def unpack(self) -> None:
        """The packed parameters and their gradient back into the weight and its ``.grad``: the
        symmetric matrices whose lower triangles they are (what the full steps leave)."""
        self.symmetric_from_lower(self.columns, self.weight.detach())
        self.symmetric_from_lower(self.grad_packed, self.grad_weight)

    def packed_parameters(self) -> list:
        """(parameter, its packed values, their gradient) for each parameter the compiled steps keep as
        lower triangles (see :meth:`pack`; the steps' Adam moments of it are packed alike)."""
        return [(self.weight, self.columns, self.grad_packed)]

    def models_leading(self, parameter) -> int:
        """How many of the pass's models lead ``parameter`` (its entries model by model, the pass's first
        models): a group of models updates its own entries of it (skspectral._training._steps_kernel's
        grouped_step); 0 where its entries are not a model's (updated after the groups)."""
        model = self.model
        if parameter is model.mu_start or parameter is model.mu_increments:
            return self.mu.shape[0]
        return model.weight.shape[0] if parameter is model.weight else 0  # (the own models, with sharing members)

    def shared_state(self, factor_l1: float = 0.0) -> tuple:
        """The compiled steps' arguments for members that share their matrices (SharedMembersPass):
        none here (zero sharing members, empty arrays of the kernels' types, no pull)."""
        empty3 = self.columns[:0]
        return (0, 0, self.grad_packed.numpy(), self.columns.numpy(), empty3.numpy(), empty3.numpy(),
                self.mu[:0].numpy(), 1.0, self.mu[:0].numpy(), self.mu[0, :0].numpy(), 0.0, self._rounded)

    @staticmethod
    def lower_triangles(full: torch.Tensor, packed: torch.Tensor) -> None:
        """packed (..., n(n+1)/2) = the lower triangles of full (..., n, n), both contiguous."""
        _encoding_kernels().lower_triangles(full.view(-1, *full.shape[-2:]).numpy(),
                                            packed.view(-1, packed.shape[-1]).numpy())

    @staticmethod
    def symmetric_from_lower(packed: torch.Tensor, full: torch.Tensor) -> None:
        """full (..., n, n) = the symmetric matrices with the lower triangles of packed."""
        _encoding_kernels().symmetric_from_lower(packed.view(-1, packed.shape[-1]).numpy(),
                                                 full.view(-1, *full.shape[-2:]).numpy())

    def _new_step_buffers(self, B: int, loss_code: int) -> tuple:
        """step()'s arrays for B rows: values (B, n_models, K) and their vectors (:meth:`values`'
        buffers), the values' gradient, and the loss's views of values and of their gradient: (B,
        members, classes) for the multiclass loss (the model's output's last axis), (B, members, K) for
        the pinball loss (its quantiles), else (B, members, 1)."""
        values, vectors = self._value_buffers(B)
        grad_values = torch.empty_like(values)
        kernels = _kernels()
        last = (self.output(values).shape[-1] if loss_code == kernels.MULTICLASS_LOSS
                else len(self.indices) if loss_code == kernels.PINBALL_LOSS else 1)
        shape = (B, -1, last)
        return (values.numpy(), vectors.numpy(), grad_values.numpy(), values.view(shape).numpy(),
                grad_values.view(shape).numpy())


class SharedMembersPass(CompiledDensePass):
    """:class:`CompiledDensePass` for a model with members that share their matrices
    (``n_shared_members``): the kernels run on every model's W
    (:meth:`~skspectral.model.SpectralModel.dense_weight`, composed into a buffer before each pass), and
    their gradient reaches the parameters by the chain rule: a sharing member's W is r_m S, so
    dL/dS = sum_m r_m dL/dW_m and dL/dr_{m,j} = <S_j, dL/dW_{m,j}> (r = gain times the stored
    ``member_scales``, whose gradient is gain dL/dr); the own members' W are ``weight``'s.
    Both are compiled calls (``skspectral._step_kernels``: compose_shared, shared_grads). The compiled
    steps (skspectral._training.compiled_steps) keep the own members' W and S as lower triangles and
    run the same two kernels on them inside their call (:meth:`shared_state`). The factors' L1 pull
    (``shared_factor_l1``, :meth:`penalty_terms`) is added to their gradient after the chain rule, in
    the dtype's arithmetic autograd's penalty uses (``add_factor_pull``)."""

    def __init__(self, model, terms_of):
        self._n_own = model.n_own_models
        self._gain = float(model.shared_factor_gain)
        dense = torch.empty((model.n_models, *model.weight.shape[1:]), dtype=model.weight.dtype)
        super().__init__(model, terms_of, weight=dense)
        n = self.mu.shape[1]
        self.grad_shared = torch.empty_like(model.shared_weight)
        self.grad_scales = torch.empty_like(model.member_scales)
        self.shared_columns = torch.empty((model.shared_weight.shape[0], *self.columns.shape[1:]),
                                          dtype=self.columns.dtype)
        self.grad_shared_packed = torch.empty_like(self.shared_columns)
        lower = torch.tril_indices(n, n)
        # an entry's weight in an inner product of symmetric matrices: full W 1 each; packed 2 off the diagonal
        self._full_entries = torch.ones(n * n, dtype=self.columns.dtype)
        self._packed_entries = torch.where(lower[0] == lower[1], 1.0, 2.0).to(self.columns.dtype)

    def _full(self, t: torch.Tensor) -> np.ndarray:
        """(models, columns, n, n) as the kernels' (models, columns, n n) array."""
        return t.detach().reshape(*t.shape[:2], t.shape[2] * t.shape[3]).numpy()

    def _before_pass(self) -> None:
        """Every model's W composed into the kernels' buffer: the own W, then gain r S."""
        model = self.model
        self.weight[:self._n_own].copy_(model.weight.detach())
        _kernels().compose_shared(self._full(self.weight), self._full(model.shared_weight),
                                  model.member_scales.detach().numpy(), self._gain, self._n_own)

    def _parameter_storage(self) -> tuple:
        model = self.model
        return super()._parameter_storage() + (model.shared_weight.data_ptr(), model.member_scales.data_ptr())

    def _chain_rule(self) -> None:
        model = self.model
        _kernels().shared_grads(self._full(self.grad_weight), self._full(model.shared_weight),
                                model.member_scales.detach().numpy(), self._gain, self._full_entries.numpy(),
                                self._n_own, self._full(self.grad_shared), self.grad_scales.numpy())

    def _gradients(self) -> tuple:
        model = self.model
        return ((model.weight, self.grad_weight[:self._n_own]), (model.shared_weight, self.grad_shared),
                (model.member_scales, self.grad_scales), (model.mu_start, self.grad_start),
                (model.mu_increments, self.grad_increments))

    # ---- packed parameters (the compiled steps') ----------------------------------------------------
    def pack(self) -> torch.Tensor:
        columns = super().pack()
        self.lower_triangles(self.model.shared_weight.detach(), self.shared_columns)
        return columns

    @torch.no_grad()
    def unpack(self) -> None:
        model, own = self.model, self._n_own
        self.symmetric_from_lower(self.columns[:own], model.weight.detach())
        self.symmetric_from_lower(self.grad_packed[:own], self.grad_weight[:own])
        self.symmetric_from_lower(self.shared_columns, model.shared_weight.detach())
        self.symmetric_from_lower(self.grad_shared_packed, self.grad_shared)

    def packed_parameters(self) -> list:
        own = self._n_own
        return [(self.model.weight, self.columns[:own], self.grad_packed[:own]),
                (self.model.shared_weight, self.shared_columns, self.grad_shared_packed)]

    def shared_state(self, factor_l1: float = 0.0) -> tuple:
        """(sharing members, own models, the packed gradient and columns of every model, the shared set's
        packed values and gradient, the stored factors, their gain and gradient, the packed entries'
        weights, the pull ``factor_l1`` and its rounding buffer): after each step's pass the compiled steps
        run shared_grads on them and add the pull (add_factor_pull), after Adam compose_shared."""
        model = self.model
        return (model.n_shared_members, self._n_own, self.grad_packed.numpy(), self.columns.numpy(),
                self.shared_columns.numpy(), self.grad_shared_packed.numpy(), model.member_scales.detach().numpy(),
                self._gain, self.grad_scales.numpy(), self._packed_entries.numpy(), float(factor_l1), self._rounded)

    def _add_pull(self, factor_l1: float, data_loss: float) -> float:
        return _kernels().add_factor_pull(self.model.member_scales.detach().numpy(), self.grad_scales.numpy(),
                                          self._rounded, float(factor_l1), float(data_loss))
