"""Epochs over rows held in host memory, for training data larger than the device's.

The rows (standardised, in the training dtype) stay on the host. Each epoch
takes them in its shuffled order a block of whole batches at a time: the host
gathers a block into one of two pinned buffers while the device trains on the
previous block, then the block is copied into the one device buffer the steps
read. The batches are the ones a resident epoch would take, in the same order,
so a streamed fit equals a resident one.
"""

from __future__ import annotations

from typing import Iterator

import torch

# Bytes of rows a block holds (rounded to whole batches); the host holds two, the device one.
STREAM_BYTES = 64 * 2**20


class HostRowBlocks:
    """Blocks of the rows of a host tensor, gathered in a given order into a device buffer."""

    def __init__(self, X: torch.Tensor, batch_size: int, device: torch.device):
        self.X = X
        row_bytes = max(1, X[:1].nbytes)
        self.block_rows = min(max(1, STREAM_BYTES // (row_bytes * batch_size)) * batch_size,
                              -(-X.shape[0] // batch_size) * batch_size)
        shape = (self.block_rows,) + tuple(X.shape[1:])
        # zeros: the rows past a short last block are read (with weight 0) and must be finite
        self.device_rows = torch.zeros(shape, dtype=X.dtype, device=device)
        cuda = device.type == "cuda"
        self.staging = [torch.empty(shape, dtype=X.dtype, pin_memory=cuda) for _ in range(2)]
        self.sent = [None, None]  # per staging buffer: the event after which it may be refilled

    def blocks(self, order: torch.Tensor) -> Iterator[tuple[int, int]]:
        """For each block of ``order`` (a host tensor of row indices): ``(start, rows)`` once its
        rows are in ``device_rows[:rows]`` (queued on the current stream, after the work
        queued for the previous block)."""
        cuda = self.device_rows.device.type == "cuda"
        for k, start in enumerate(range(0, order.shape[0], self.block_rows)):
            rows = order[start : start + self.block_rows]
            slot = k % 2
            if self.sent[slot] is not None:
                self.sent[slot].synchronize()  # its last block has left the host
            staged = self.staging[slot][: rows.shape[0]]
            torch.index_select(self.X, 0, rows, out=staged)  # on the host, while the device trains
            self.device_rows[: rows.shape[0]].copy_(staged, non_blocking=cuda)
            if cuda:
                self.sent[slot] = torch.cuda.Event()
                self.sent[slot].record()
            yield start, rows.shape[0]
