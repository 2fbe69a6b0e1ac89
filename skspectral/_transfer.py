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

import numpy as np
import torch

# Host memory a transfer holds beyond X: about two chunks of this many bytes.
CHUNK_BYTES = 32 * 2**20


def standardised_rows(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, device: torch.device,
                      dtype: torch.dtype, *, rows: np.ndarray | None = None, n_rows: int | None = None,
                      low: np.ndarray | None = None, high: np.ndarray | None = None) -> torch.Tensor:
    """``(clip(X[rows], low, high) - mean) / scale`` as an (n_rows, p) tensor of ``dtype`` on
    ``device``; rows beyond ``len(rows)`` (up to ``n_rows``) are zeros.

    ``rows=None`` takes every row in order; ``low``/``high`` (both or neither) clip each
    column first. Missing values (NaN) stay NaN.
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
        _upload_in_chunks(X, rows, n, chunk, out, mean, scale, low, high)
    else:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            values = _take(X, rows, start, stop).astype(np.float64)  # a fresh chunk: standardise in place
            if low is not None:
                np.clip(values, low, high, out=values)
            values -= mean
            values /= scale
            out[start:stop].copy_(torch.from_numpy(values))
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


def _upload_in_chunks(X, rows, n, chunk, out, mean, scale, low, high) -> None:
    device = out.device
    X = raw_floats(X)
    mean_t, scale_t, low_t, high_t = float64_on(device, mean, scale, low, high)
    staging = StagedRows(min(chunk, n), X.shape[1], X.dtype, device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        host = staging.free(stop - start)
        _take(X, rows, start, stop, out=host.numpy())
        out[start:stop] = standardised(staging.send(host), mean_t, scale_t, low_t, high_t).to(out.dtype)
    torch.cuda.current_stream(device).synchronize()  # the staging buffers are freed on return


class StagedRows:
    """Raw rows to a device through two pinned host buffers that take turns: the host fills
    one while the other's copy is in flight. On the CPU the host buffer is the device's.

    ``host = staging.free(n)`` (waits until that buffer's last copy has left the host), fill
    ``host``, then ``staging.send(host)``: the rows on the device, in one device buffer that
    the next ``send`` overwrites (the copy queued on the device's current stream, after the
    work that read the last ones).
    """

    def __init__(self, rows: int, p: int, dtype: np.dtype, device: torch.device):
        self.device = device
        cuda = device.type == "cuda"
        dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype  # the raw rows' dtype, as given
        self.host = [torch.empty((rows, p), dtype=dtype, pin_memory=cuda) for _ in range(2)]
        self.on_device = torch.empty((rows, p), dtype=dtype, device=device) if cuda else None
        self.sent = [None, None]  # per host buffer: the event after which it may be refilled
        self.turn = 0

    def free(self, n: int) -> torch.Tensor:
        self.turn ^= 1
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


def float64_on(device: torch.device, *arrays) -> tuple:
    """Each array (None stays None) as a float64 tensor on ``device``: statistics for :func:`standardised`."""
    return tuple(None if a is None else torch.as_tensor(a, dtype=torch.float64, device=device) for a in arrays)


def standardised(raw: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, low: torch.Tensor | None = None,
                 high: torch.Tensor | None = None) -> torch.Tensor:
    """``(clip(raw, low, high) - mean) / scale`` in float64, on raw's device: the one arithmetic of
    rows standardised on a device, uploaded or streamed, so that both give the same bits."""
    # one float64 temporary, worked on in place (a streamed 64 MiB float32 block made three)
    values = raw.to(torch.float64, copy=True)
    if low is not None:
        values.clamp_(low, high)  # NaN stays NaN, as with np.clip
    return values.sub_(mean).div_(scale)
