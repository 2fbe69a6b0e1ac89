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


def _upload_in_chunks(X, rows, n, chunk, out, mean, scale, low, high) -> None:
    device = out.device
    raw_dtype = torch.float32 if X.dtype == np.float32 else torch.float64
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    mean_t, scale_t, low_t, high_t = float64_on(device, mean, scale, low, high)
    staging = [torch.empty((min(chunk, n), X.shape[1]), dtype=raw_dtype, pin_memory=True) for _ in range(2)]
    sent = [None, None]  # the event after which each staging buffer may be refilled
    stream = torch.cuda.current_stream(device)
    for k, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        slot = k % 2
        if sent[slot] is not None:
            sent[slot].synchronize()  # its previous chunk has left the host
        host = staging[slot][: stop - start]
        _take(X, rows, start, stop, out=host.numpy())
        raw = host.to(device, non_blocking=True)
        sent[slot] = torch.cuda.Event()
        sent[slot].record(stream)
        out[start:stop] = standardised(raw, mean_t, scale_t, low_t, high_t).to(out.dtype)
    stream.synchronize()  # the staging buffers are reused by the caching allocator afterwards


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
