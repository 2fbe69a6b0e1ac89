"""A CPU epoch's steps in a few compiled calls instead of one Python round trip a step.

A CPU step with any loss is one compiled call (the model's pass,
``skspectral._step_kernels.training_pass``), but around it the trainer paid ~0.3 ms of Python a
step: slicing the batch, its terms, the arrays' hand-over, the Adam update's, the step's loss
tensors -- 20-30 % of a 1-2 ms step. :class:`CompiledSteps` runs every whole batch of a block of
rows in one call (``._steps_kernel.training_steps``: the pass, then the CPU Adam's update, step by
step; or ``grouped_training_steps``, the models in groups, see ``CompiledSteps._groups``), as many at
a time as the thread choice holds (:class:`.threads.AdaptiveThreads`: a probed step is still timed
alone). During a run the weight is kept as its lower triangles (it is symmetric
to the bit): the steps update those, about half its entries, with no symmetrising pass, and give
it back whole at the run's end. The same kernels on the same arrays in the same order as the
one-step path: the same fit to the bit (tested).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..eig._numba_support import parallel_threads
from .adam import CompiledAdam


# The most bytes of terms (table rows and weights) found at once for a run's rows.
TERMS_BYTES = 16 * 2**20
# the parameters of the grouped steps' adam_slots, by the model's names, in ._steps_kernel's SLOT_ order
_SLOTS = {name: slot for slot, name in enumerate(("weight", "mu_start", "mu_increments", "shared_weight",
                                                   "member_scales"))}


@functools.cache
def _kernel(grouped: bool):
    """The steps' kernel: with the models in groups (grouped_training_steps) or not (training_steps)."""
    from ..eig._numba_support import start_threading_layer
    from ._steps_kernel import grouped_training_steps, training_steps

    start_threading_layer()  # the steps link the parallel kernels (see start_threading_layer)
    return grouped_training_steps if grouped else training_steps


class CompiledSteps:
    """Consecutive steps of ``compiled_pass`` (a :class:`skspectral._compiled_pass.CompiledDensePass`)
    with the loss ``loss_code`` (its constants ``loss_parameters``) inside its call and ``optimizer``'s
    update after each, in compiled code. ``penalty_terms``: the penalty's (Frobenius factor, shared factors'
    pull) that the pass adds (``compiled_pass.penalty_terms``; None: no penalty)."""

    def __init__(self, compiled_pass, loss_code: int, penalty_terms: tuple[float, float] | None,
                 optimizer: CompiledAdam, loss_parameters: np.ndarray):
        self.compiled_pass, self.loss_code, self.loss_parameters = compiled_pass, loss_code, loss_parameters
        self.penalty_terms, self.optimizer = penalty_terms, optimizer
        self.dtype = compiled_pass.mu.dtype
        # the parameters the steps keep as lower triangles (the weight; with shared members also the
        # shared set), and their Adam moments packed alike (see run)
        self.packed = compiled_pass.packed_parameters()
        self.packed_moments = [(torch.empty_like(values), torch.empty_like(values)) for _, values, _ in self.packed]
        self._frobenius_factor, self._factor_l1 = (float(t) for t in penalty_terms or (0.0, 0.0))
        self._batches: dict = {}  # a step's batch buffers, see _batch
        self._adam_slots = self._slots()  # (see _groups)

    @staticmethod
    def applies(compiled_pass, loss_code: int | None, optimizer, gradient_reducer, penalty_fn,
                penalty_terms) -> bool:
        """Whether every step's work is the pass's one call and the CPU Adam's update: a compiled
        pass running its loss (``loss_code``), no penalty but the terms the pass adds itself
        (``penalty_terms``), no gradient reduction between backward and the update (a distributed fit's)."""
        return (compiled_pass is not None and loss_code is not None and isinstance(optimizer, CompiledAdam)
                and gradient_reducer is None and (penalty_fn is None or penalty_terms is not None))

    @torch.no_grad()
    def run(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, batch_size: int, threads,
            losses: list) -> None:
        """Steps over consecutive batches of these rows (the last one short where batch_size does not
        divide them), as the trainer's one-step path takes them; each step's (objective, data loss),
        a (2,) tensor of the model's dtype, appended to ``losses``. ``threads``: the trainer's
        :class:`.threads.AdaptiveThreads` (None: the current thread count throughout). Rows that are
        their packed terms (the compiled pass's ``packed_terms``: a fit that found them once) go to the
        steps as they are; other rows have their terms found and packed so a chunk at a time."""
        n = X.shape[0]
        if not n:
            return
        self._pack()
        try:
            if self.compiled_pass.packed_terms:
                self._run(X, y, weight, batch_size, threads, losses)
                return
            # the rows' terms a chunk of whole batches at a time: a tall fit's block of rows would
            # otherwise hold its terms (several times its rows' bytes) all at once (no terms at all
            # where every column is constant)
            n_terms = self.compiled_pass.terms_of(X[:1])[0].shape[1]
            terms_bytes = max(1, n_terms) * (8 + X.element_size())
            chunk = max(1, TERMS_BYTES // (terms_bytes * batch_size)) * batch_size
            for first in range(0, n, chunk):
                last = first + chunk
                self._run(self._packed_terms(X[first:last]), y[first:last], weight[first:last], batch_size, threads,
                          losses)
        finally:
            self._unpack()

    def _packed_terms(self, X: torch.Tensor) -> torch.Tensor:
        """Rows' terms packed as the steps read them, (rows, 2, terms): the table rows as floats of the
        model's dtype, or float64 where that would not hold them exactly (2**24 rows and more in float32)."""
        rows, weights = self.compiled_pass.terms_of(X)
        dtype = self.dtype
        if rows.numel() and int(rows.max()) >= 2 / torch.finfo(dtype).eps:  # exact integers below 2**24 in float32
            dtype = torch.float64
        return torch.stack([rows.to(dtype), weights.to(dtype)], dim=1)

    def _pack(self) -> None:
        """The weight and Adam's moments of it as the steps keep them (and the weight's gradient as
        they write it): their lower triangles (the pass's columns are the parameters). The weight is
        symmetric to the bit (it starts so, and its gradient and Adam's update keep it so): every step
        computes the numbers of the full matrices on about half the entries, without symmetrising them.
        Members that share their matrices: the shared set likewise. The moments stay packed between
        runs (nothing else reads them during a fit): they are packed anew only where the optimizer's
        own were read since (see _unpack)."""
        self.compiled_pass.pack()
        self._substitutes = {}
        for (parameter, values, grad), packed_moments in zip(self.packed, self.packed_moments):
            if not self.optimizer.release_held_moments(parameter, self):
                moments = self.optimizer._moments(parameter)
                for full, packed in zip((moments["exp_avg"], moments["exp_avg_sq"]), packed_moments):
                    self.compiled_pass.lower_triangles(full, packed)
            self._substitutes[id(parameter)] = (values.reshape(-1).numpy(), grad.reshape(-1).numpy(),
                                                *(m.view(-1).numpy() for m in packed_moments))
        self._shared = self.compiled_pass.shared_state(self._factor_l1)

    def _unpack(self) -> None:
        """The weight and its gradient back as full symmetric matrices (the one-step path's). The
        moments stay packed for the next run: the optimizer writes them back as full matrices only if
        something reads them there (a run's two conversions of each were ~5 % of a small table's fit)."""
        self.compiled_pass.unpack()
        for (parameter, _, _), packed_moments in zip(self.packed, self.packed_moments):
            self.optimizer.hold_moments(parameter, self, functools.partial(self._moments_back, parameter,
                                                                           packed_moments))

    def _moments_back(self, parameter, packed_moments) -> None:
        moments = self.optimizer._moments(parameter)
        for full, packed in zip((moments["exp_avg"], moments["exp_avg_sq"]), packed_moments):
            self.compiled_pass.symmetric_from_lower(packed, full)

    def _run(self, terms, y, weight, batch_size: int, threads, losses: list) -> None:
        """The steps over these rows' packed ``terms`` (and y and weight), several whole batches to a call
        while the thread choice holds."""
        terms, targets, sample_weights = terms.contiguous(), y.contiguous(), weight.contiguous()
        n = terms.shape[0]
        whole = n // batch_size
        done = 0  # steps
        while done * batch_size < n:
            size = batch_size if done < whole else n - whole * batch_size
            count = whole - done if done < whole else 1
            if threads is not None:
                count = min(count, threads.steps_left())
            first, last = done * batch_size, done * batch_size + count * size
            if threads is None:
                block = self._steps(count, size, targets[first:last], sample_weights[first:last], terms[first:last])
            else:
                with threads.step(count):
                    block = self._steps(count, size, targets[first:last], sample_weights[first:last],
                                        terms[first:last])
            losses.extend(block.unbind(0))
            done += count

    def _steps(self, count: int, size: int, targets, sample_weights, terms) -> torch.Tensor:
        """``count`` steps of ``size`` rows (their packed terms) in one call; (count, 2): each step's
        objective and data loss."""
        if self.compiled_pass.gathered.compiling_ahead():
            self._compile_meanwhile(size, targets, sample_weights, terms)
        # (step_state sets the parameters' .grad, which compiled_steps reads)
        state = self.compiled_pass.step_state(size, terms.shape[2], self.loss_code, packed=True,
                                              loss_parameters=self.loss_parameters)
        adam_arrays, adam_scalars = self.optimizer.compiled_steps(count, self._substitutes)
        step_losses = np.empty((count, 2))
        self._call(self._groups(size, terms.shape[2]), count, size, targets, sample_weights, terms, state,
                   adam_arrays, adam_scalars, step_losses)
        # the one-step path's arithmetic: each float64 loss rounded to the model's dtype, the
        # penalty's added in that dtype (torch's tensor + Python float)
        data_loss = torch.from_numpy(step_losses[:, 0]).to(self.dtype)
        if self.penalty_terms is None:
            return torch.stack([data_loss, data_loss], dim=1)
        return torch.stack([data_loss + torch.from_numpy(step_losses[:, 1]).to(self.dtype), data_loss], dim=1)

    def _compile_meanwhile(self, size: int, targets, sample_weights, terms) -> None:
        """The steps' kernel compiled (or loaded) by a call that runs no step, while a helper process compiles
        the C functions it calls (eig._numba_kernels.compile_c_functions_ahead): their addresses are
        placeholders here, never called, and the arguments' types are the next call's."""
        state = self.compiled_pass.step_state(size, terms.shape[2], self.loss_code, packed=True,
                                              loss_parameters=self.loss_parameters, c_functions=(0, 0, 0))
        adam_arrays, _ = self.optimizer.compiled_steps(0, self._substitutes)
        no_scalars = np.zeros((0, 7), adam_arrays[0][0].dtype)  # (steps, 7), as compiled_steps gives them
        self._call(self._groups(size, terms.shape[2]), 0, size, targets, sample_weights, terms, state, adam_arrays,
                   no_scalars, np.empty((0, 2)))

    def _call(self, groups, count: int, size: int, targets, sample_weights, terms, state, adam_arrays, adam_scalars,
              step_losses) -> None:
        """``count`` steps in the kernel for ``groups`` (see _groups)."""
        arguments = (count, size, self.loss_code, targets.numpy(), sample_weights.numpy(), terms.numpy(),
                     self._batch(size, terms), self._frobenius_factor, state, adam_arrays, adam_scalars, step_losses,
                     self._shared)
        if groups is None:
            _kernel(False)(*arguments)
        else:
            _kernel(True)(*arguments, groups, self._adam_slots)

    def _slots(self) -> np.ndarray:
        """The grouped steps' ``adam_slots`` (``._steps_kernel.grouped_step``): for each of its parameters (the
        weight, mu's two, with sharing members the shared set and the factors) its index among the optimizer's
        and how many models lead it (``compiled_pass.models_leading``); the index -1 where the optimizer
        updates any parameter the slots do not name (no grouped steps then)."""
        parameters = self.optimizer.param_groups[0]["params"]
        names = {id(parameter): name for name, parameter in self.compiled_pass.model.named_parameters()}
        slots = np.full((2, len(_SLOTS)), -1, dtype=np.int64)
        for index, parameter in enumerate(parameters):
            slot = _SLOTS.get(names.get(id(parameter)))
            if slot is None:
                slots[0, 0] = -1
                return slots
            slots[:, slot] = index, self.compiled_pass.models_leading(parameter)
        sharing = self.compiled_pass.model.n_shared_members > 0
        if (slots[0, :3] < 0).any() or (sharing and (slots[0, 3:] < 0).any()):
            slots[0, 0] = -1
        return slots

    def _groups(self, size: int, n_terms: int) -> np.ndarray | None:
        """The bounds of the models' groups where a step runs a group a thread (``._steps_kernel.grouped_step``),
        or None (``training_steps``: the pass's kernels split the rows over the threads, or run on this thread).
        Groups where several threads run the step's kernels (the pass's thread split for this batch) and the
        models divide among them evenly; where the step runs on this thread, several models run as one group:
        a fit whose steps run in groups on several threads then runs its one-thread steps (the tuner's) in
        the same kernel, and its process compiles no other (~10 s each on an empty Numba cache). Either way the
        same numbers (every kernel but the loss works model by model, and the loss runs on one thread)."""
        n_models = self.compiled_pass.mu.shape[0]
        if self._adam_slots[0, 0] < 0 or n_models < 2:
            return None
        one_group = np.array([0, n_models], dtype=np.int64)
        if torch.get_num_threads() < 2 or not any(self.compiled_pass.step_chunks(size, n_terms)):
            return one_group
        threads = parallel_threads()  # (Numba's threads follow torch's count, at most its pool's)
        if threads < 2:
            return one_group
        if n_models % threads:
            return None
        return np.arange(0, n_models + 1, n_models // threads, dtype=np.int64)

    def _batch(self, size: int, terms) -> tuple:
        """A step's table rows and their weights (in the model's dtype, as the kernels read them) as the
        kernel unpacks them, made once per size."""
        key = (size, terms.shape[2])
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = (np.empty((size, terms.shape[2]), np.int64),
                                          np.empty((size, terms.shape[2]), self.compiled_pass.mu.numpy().dtype))
        return batch
