"""Data-parallel training over a torch.distributed process group (gloo on CPUs, NCCL on GPUs).

Every rank holds a shard of the rows and the same model. After each backward the
gradients are averaged over the ranks, weighted by each rank's batch weight, in one
all-reduce of a flat buffer (inside the CUDA graph where the step is captured):

    g = sum_r W_r g_r / sum_r W_r,

where g_r is the gradient of rank r's weighted-mean batch loss and W_r its batch
weight: exactly the gradient of the weighted mean over the global batch. A penalty
(the same on every rank) passes through unchanged. The epoch's losses and the
validation score are averaged the same way, so every rank takes the same stopping
decision; shards are padded with zero-weight rows to the same length, so every rank
takes the same number of steps.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


_RULES = {"max": lambda column: column.max(), "sum": lambda column: column.sum(), "first": lambda column: column[0]}


@dataclass
class DistributedContext:
    """What a rank of a data-parallel fit knows: its rank and the group's size (the default
    process group); ``device`` is where its collectives' tensors live (NCCL needs CUDA)."""

    rank: int
    world_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # The latest collectives' tensors, held until the group is destroyed (while this context lives). A
    # gloo group destroyed with Python's lock held (torch 2.1 and 2.4 do) joins its threads, and one of them
    # may still be letting go of a finished collective's tensor: holding its last reference, it takes that
    # lock to free it, and both wait for ever (each rank's data-parallel fit hung at its end). A tensor
    # referenced here is never freed by a group's thread.
    _recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2), repr=False, compare=False)

    def _held(self, *tensors: torch.Tensor) -> None:
        """Keep the tensors of this call's collectives (and of the call before it) referenced (gloo's:
        NCCL's tensors on a GPU, some made in a CUDA graph's capture, are left as they were)."""
        if self.device.type != "cuda":
            self._recent.append(tensors)

    def agree(self, proposals: dict) -> dict:
        """Every rank's proposals in one collective: ``{name: (value, rule)}`` with rule "max",
        "sum" or "first" (rank 0's value) -> ``{name: agreed value}`` as floats (exact for
        integers below 2**53), the same on every rank."""
        names = list(proposals)
        mine = torch.tensor([float(proposals[name][0]) for name in names], dtype=torch.float64, device=self.device)
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        self._held(mine, *gathered)
        dist.all_gather(gathered, mine)
        table = torch.stack(gathered).cpu()  # (ranks, values), in rank order
        return {name: float(_RULES[proposals[name][1]](table[:, i])) for i, name in enumerate(names)}

    def all_agree(self, flag: bool) -> bool:
        """True where ``flag`` is true on every rank."""
        t = torch.tensor([int(bool(flag))], dtype=torch.int64, device=self.device)
        self._held(t)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def same_on_every_rank(self, tensors) -> bool:
        """True where every rank holds the same bits in ``tensors`` (elementwise max == min over
        the ranks). The ranks apply the same averaged gradients to the same start, so a
        difference means a step went unreduced."""
        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64) for t in tensors]).nan_to_num(0.0)
        low = flat.clone()
        self._held(flat, low)
        dist.all_reduce(flat, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        return bool(torch.equal(flat, low))

    def weighted_average(self, tensors: list[torch.Tensor], weight: torch.Tensor) -> list[torch.Tensor]:
        """sum_r w_r t_r / sum_r w_r for scalar tensors, in one all-reduce."""
        flat = torch.stack([t.reshape(()).to(weight.dtype) * weight for t in tensors] + [weight.reshape(())])
        self._held(flat)
        dist.all_reduce(flat)
        total = flat[-1].clamp_min(torch.finfo(flat.dtype).tiny)
        return [(flat[i] / total).to(t.dtype) for i, t in enumerate(tensors)]

    def gradient_reducer(self, parameters):
        """A function of the batch weight that averages the parameters' gradients over the ranks."""
        parameters = [p for p in parameters if p.requires_grad]
        sizes = [p.numel() for p in parameters]

        def reduce(batch_weight: torch.Tensor) -> None:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
            weight = batch_weight.reshape(1).to(grads[0].dtype)
            flat = torch.cat([g.reshape(-1) for g in grads] + [torch.ones_like(weight)]) * weight
            self._held(flat)
            dist.all_reduce(flat)
            total = flat[-1:].clamp_min(torch.finfo(flat.dtype).tiny)
            averaged = (flat[:-1] / total).split(sizes)
            for p, g in zip(parameters, averaged):
                if p.grad is None:
                    p.grad = g.view_as(p).clone()
                else:
                    p.grad.copy_(g.view_as(p))

        return reduce
