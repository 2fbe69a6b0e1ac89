"""One rank of test_training's data-parallel check (run as a spawned process)."""

import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from skspectral import SpectralModel
from skspectral._losses import squared_error
from skspectral._training import Dataset, Trainer, TrainingOptions
from skspectral._training.distributed import DistributedContext


def main(rank: int, world_size: int, init_method: str, data_path: str, out_path: str) -> None:
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        data = torch.load(data_path)
        X, y, w = (t[rank::world_size] for t in (data["X"], data["y"], data["w"]))  # this rank's shard
        model = SpectralModel(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        options = TrainingOptions(learning_rate_init=0.01, batch_size=data["batch_size"] // world_size, max_iter=2,
                                  shuffle=False, cuda_graph=False)
        trainer = Trainer(model, squared_error, options, torch.Generator().manual_seed(0),
                          penalty_fn=lambda: 1e-3 * model.weight.square().sum(),
                          distributed=DistributedContext(rank, world_size))
        context = trainer.distributed
        records = list(trainer.epochs(Dataset(X, y, w)))
        same = context.same_on_every_rank(list(model.parameters()))
        one_rank_off = context.same_on_every_rank([model.weight.detach() + (rank == 1) * 1e-12])
        torch.save({"weight": model.weight.detach(), "losses": [r["train_loss"] for r in records],
                    "same": same, "one_rank_off": one_rank_off}, f"{out_path}.{rank}")
        # both ranks done before either tears down: without it one rank in ~20 runs aborted at interpreter
        # exit, after destroy_process_group had returned ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
