"""Host rows to the training device, standardised, in bounded host memory.

A fit on tall data must not hold several n x p copies of X on the host: the rows
travel a chunk at a time. On CUDA each chunk of raw rows (float32 stays float32)
is copied into one of two pinned staging buffers and sent asynchronously, so the
host fills the next chunk while the last one is in flight; the standardisation
(float64, then the training dtype) runs on the GPU. On the CPU each chunk is
standardised on the host straight into the output tensor. Both give the same
values as standardising all of X in float64 first (IEEE subtraction and
division are exact-rounded on either device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Host memory a transfer holds beyond X: about two chunks of this many bytes.
CHUNK_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Standardisation:
    """The arithmetic that turns raw float rows into the model's input, per column:
    ``(clip(x, low, high) - mean) / scale`` in float64, then a missing entry becomes ``fill``
    (standardised units; NaN in it, or None: the entry stays missing); ``low``/``high`` (both
    or neither) clip. A fitted :class:`skspectral._columns.ColumnMapper` makes these."""

    mean: np.ndarray
    scale: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    fill: np.ndarray | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        """In place on a float64 array of rows; returns it."""
        if self.low is not None:
            np.clip(values, self.low, self.high, out=values)
        values -= self.mean
        values /= self.scale
        if self.fill is not None:
            np.copyto(values, self.fill, where=np.isnan(values))
        return values

    def on(self, device: torch.device) -> "Standardisation":
        """The same arithmetic with float64 tensors on ``device`` (for :meth:`apply_tensor`)."""
        return Standardisation(*(None if a is None else torch.as_tensor(a, dtype=torch.float64, device=device)
                                 for a in (self.mean, self.scale, self.low, self.high, self.fill)))

    def apply_tensor(self, raw: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Of raw rows on a device (this standardisation's tensors there, from :meth:`on`), in
        float64: the one arithmetic of rows standardised on a device, uploaded or streamed, so
        that both give the same bits (and the host's, :meth:`apply`). ``out``: a float64 tensor
        of raw's shape to work in (no temporary: a block a step would otherwise allocate)."""
        # one float64 temporary, worked on in place (a streamed 64 MiB float32 block made three)
        values = raw.to(torch.float64, copy=True) if out is None else out.copy_(raw)
        if self.low is not None:
            values.clamp_(self.low, self.high)  # NaN stays NaN, as with np.clip
        values.sub_(self.mean).div_(self.scale)
        if self.fill is not None:
            torch.where(values.isnan(), self.fill, values, out=values)
        return values


def standardised_rows(X: np.ndarray, standardisation: Standardisation, device: torch.device,
                      dtype: torch.dtype, *, rows: np.ndarray | None = None,
                      n_rows: int | None = None) -> torch.Tensor:
    """``standardisation`` of ``X[rows]`` as an (n_rows, p) tensor of ``dtype`` on ``device``;
    rows beyond ``len(rows)`` (up to ``n_rows``) are zeros. ``rows=None`` takes every row in
    order. Missing values (NaN) stay NaN unless the standardisation fills them.
    """
    n = X.shape[0] if rows is None else len(rows)
    n_rows = n if n_rows is None else n_rows
    p = X.shape[1]
    out = torch.empty((n_rows, p), dtype=dtype, device=device)
    if n_rows > n:
        out[n:].zero_()
    if n == 0:
        return out
    chunk = max(1, CHUNK_BYTES // (8 * max(p, 1)))
    if device.type == "cuda":
        _upload_in_chunks(X, rows, n, chunk, out, standardisation)
    else:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            values = _take(X, rows, start, stop).astype(np.float64)  # a fresh chunk: standardise in place
            out[start:stop].copy_(torch.from_numpy(standardisation.apply(values)))
    return out


def _take(X, rows, start, stop, out=None):
    if rows is None:
        if out is None:
            return X[start:stop]
        out[...] = X[start:stop]
        return out
    # mode="clip" (the rows are valid anyway): numpy buffers `out` under the default mode
    return np.take(X, rows[start:stop], axis=0, out=out, mode="clip" if out is not None else "raise")


def raw_floats(X):
    """X (a numpy or dask array) as the raw rows a device receives: float32 stays float32 (half
    the bytes to move), anything else becomes float64. Uploaded and streamed rows share it, so
    that both are standardised from the same values."""
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


def _upload_in_chunks(X, rows, n, chunk, out, standardisation: Standardisation) -> None:
    device = out.device
    X = raw_floats(X)
    on_device = standardisation.on(device)
    staging = StagedRows(min(chunk, n), X.shape[1], X.dtype, device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        host = staging.next_buffer(stop - start)
        _take(X, rows, start, stop, out=host.numpy())
        out[start:stop] = on_device.apply_tensor(staging.send(host)).to(out.dtype)
    torch.cuda.current_stream(device).synchronize()  # the staging buffers are freed on return


class StagedRows:
    """Raw rows to a device through two pinned host buffers that take turns: the host fills
    one while the other's copy is in flight. On the CPU one host buffer, which is the
    device's (the steps that read it end before it is refilled).

    ``host = staging.next_buffer(n)`` (waits until that buffer's last copy has left the host), fill
    ``host``, then ``staging.send(host)``: the rows on the device, in one device buffer that
    the next ``send`` overwrites (the copy queued on the device's current stream, after the
    work that read the last ones).
    """

    def __init__(self, rows: int, p: int, dtype: np.dtype, device: torch.device):
        self.device = device
        cuda = device.type == "cuda"
        dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype  # the raw rows' dtype, as given
        self.host = [torch.empty((rows, p), dtype=dtype, pin_memory=cuda) for _ in range(2 if cuda else 1)]
        self.on_device = torch.empty((rows, p), dtype=dtype, device=device) if cuda else None
        self.sent = [None, None]  # per host buffer: the event after which it may be refilled
        self.turn = 0

    def next_buffer(self, n: int) -> torch.Tensor:
        self.turn = (self.turn + 1) % len(self.host)
        if self.sent[self.turn] is not None:
            self.sent[self.turn].synchronize()
        return self.host[self.turn][:n]

    def send(self, host: torch.Tensor) -> torch.Tensor:
        if self.on_device is None:
            return host
        rows = self.on_device[: host.shape[0]]
        rows.copy_(host, non_blocking=True)
        self.sent[self.turn] = torch.cuda.Event()
        self.sent[self.turn].record(torch.cuda.current_stream(self.device))
        return rows
