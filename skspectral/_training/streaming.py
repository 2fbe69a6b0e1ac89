"""Epochs over rows held in host memory, for training data larger than the device's.

The rows stay on the host as the caller gave them (:class:`HostRows`: no copy). Each
epoch takes them in its shuffled order a block of whole batches at a time: the host
gathers a block's raw rows into one of two pinned buffers while the device trains on
the previous block; the block is copied to the device and standardised there, into the
one device buffer the steps read. The batches are the ones a resident epoch would take,
in the same order and standardised by the same arithmetic, so a streamed fit equals a
resident one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .._transfer import StagedRows, Standardisation, raw_floats

# Bytes of training rows a block holds (rounded to whole batches); the host stages two blocks
# of raw rows, the device holds one raw and one standardised. On the CPU (no transfer to
# overlap) smaller blocks: less memory, and the heap is trimmed after each.
STREAM_BYTES = 64 * 2**20
CPU_STREAM_BYTES = 16 * 2**20


@dataclass
class HostRows:
    """Training rows in host memory, standardised on their way to the device: row i is
    ``standardisation`` of ``X[rows[i]]`` in ``dtype`` (``rows=None``: every row in order).
    Rows from ``len(rows)`` up to ``n_rows`` are padding, read with weight 0 (standardised
    zeros: finite)."""

    X: np.ndarray
    standardisation: Standardisation
    dtype: torch.dtype
    rows: np.ndarray | None = None
    n_rows: int | None = None

    def __post_init__(self):
        self.X = raw_floats(self.X)
        self.n_given = self.X.shape[0] if self.rows is None else len(self.rows)
        if self.n_rows is None:
            self.n_rows = self.n_given

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, self.X.shape[1]

    @property
    def row_bytes(self) -> int:
        """Bytes of one row on the device, in the training dtype."""
        return max(1, self.X.shape[1] * torch.empty((), dtype=self.dtype).element_size())

    def gather(self, order: np.ndarray, out: np.ndarray) -> None:
        """The raw rows at positions ``order`` into ``out`` (padding positions: zeros)."""
        padding = order >= self.n_given
        source = order if self.rows is None else self.rows[np.minimum(order, self.n_given - 1)]
        # mode="clip": the rows are valid (padding points at the last one); numpy buffers `out` otherwise
        np.take(self.X, source, axis=0, out=out, mode="clip")
        if padding.any():
            out[padding] = 0


class HostRowBlocks:
    """Blocks of :class:`HostRows`, gathered in a given order into a device buffer."""

    def __init__(self, X: HostRows, batch_size: int, device: torch.device):
        self.X = X
        n_rows, p = X.shape
        block_bytes = STREAM_BYTES if device.type == "cuda" else CPU_STREAM_BYTES
        self.block_rows = min(max(1, block_bytes // (X.row_bytes * batch_size)) * batch_size,
                              -(-n_rows // batch_size) * batch_size)
        # zeros: the rows past a short last block are read (with weight 0) and must be finite
        self.device_rows = torch.zeros((self.block_rows, p), dtype=X.dtype, device=device)
        self.staging = StagedRows(self.block_rows, p, X.X.dtype, device)
        self.standardisation = X.standardisation.on(device)

    def blocks(self, order: torch.Tensor) -> Iterator[tuple[int, int]]:
        """For each block of ``order`` (a host tensor of row indices): ``(start, rows)`` once its
        standardised rows are in ``device_rows[:rows]`` (queued on the current stream, after the
        work queued for the previous block)."""
        order = order.numpy()
        for start in range(0, order.shape[0], self.block_rows):
            rows = order[start : start + self.block_rows]
            n = rows.shape[0]
            host = self.staging.next_buffer(n)
            self.X.gather(rows, host.numpy())  # on the host, while the device trains
            # the arithmetic of resident rows uploaded to a device
            raw = self.staging.send(host)
            if self.device_rows.dtype == torch.float64:  # standardised where the steps read them
                self.standardisation.apply_tensor(raw, out=self.device_rows[:n])
            else:
                self.device_rows[:n] = self.standardisation.apply_tensor(raw).to(self.device_rows.dtype)
            yield start, n
