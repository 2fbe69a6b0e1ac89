"""Device choice, in one place."""

from __future__ import annotations

import contextlib
import threading

import torch


def resolve_device(device="auto") -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:N" or a torch.device into a usable torch.device.

    "auto" is CUDA when available, else CPU. Asking for CUDA where there is
    none is an error, not a silent fallback.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}.") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'."
        )
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return torch.device("cuda", index)


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str, device: torch.device, *, cpu_kernels: bool = True) -> torch.dtype:
    """"auto" is float32 on CUDA (several times faster there) and on the CPU where the fit runs the
    compiled kernels (``cpu_kernels``: Numba, no smoothing): they solve 8 float32 matrices per SIMD
    vector against 4 float64 and move half the bytes (a fit 1.5-2x faster) at the suite's accuracy
    (benchmarks/RESULTS.md), each row's result independent of the batch it comes in. Elsewhere on
    the CPU (torch.linalg, smoothing) float64: BLAS products round differently with the batch, which
    float32 would show in a prediction's 7th digit. Else the named dtype."""
    if dtype == "auto":
        return torch.float32 if device.type == "cuda" or cpu_kernels else torch.float64
    return DTYPES[dtype]


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can take on ``device``: the GPU's free memory, or the host's
    available memory (Linux's MemAvailable); None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(n_bytes: int, device: torch.device, what: str) -> None:
    """A clear error, before anything is allocated, where a model of ``what`` needs more memory
    (``n_bytes``, a lower bound) than ``device`` has available."""
    available = available_memory(device)
    if available is not None and n_bytes > available:
        raise ValueError(f"A model of {what} needs at least {n_bytes / 2**30:.3g} GiB on {device} (its matrices, "
                         f"their gradients, Adam's moments and one batch), more than the {available / 2**30:.3g} GiB "
                         "available there. Lower dim (cost and memory grow like dim**2 per matrix), n_estimators or "
                         "n_bins, or use structure='tridiagonal' (O(dim) per matrix).")


_THREADS_OWN = threading.local()  # each thread's CUDA streams, by (device, purpose)


def thread_stream(device: torch.device, purpose: str) -> torch.cuda.Stream:
    """The calling thread's own CUDA stream on ``device`` for ``purpose`` (a fit's work, its graph
    capture), made once a thread: a stream made per use would cost a creation each, and one stream for
    the process would take work queued from several threads -- fits side by side on joblib's threads --
    one after another, or into another thread's graph capture."""
    streams = getattr(_THREADS_OWN, "streams", None)
    if streams is None:
        streams = _THREADS_OWN.streams = {}
    stream = streams.get((device, purpose))
    if stream is None:
        stream = streams[(device, purpose)] = torch.cuda.Stream(device)
    return stream


@contextlib.contextmanager
def own_stream(device: torch.device):
    """The work queued in the block goes to the calling thread's own CUDA stream on ``device``
    (:func:`thread_stream`), forked from the caller's current stream (it starts after the work queued
    there) and joined to it at the end (the caller's stream waits for it). Fits on several threads -- a
    search on joblib's threads, one GPU -- then run side by side on the GPU instead of one after another
    on its default stream, every thread's current stream. Nothing changes off CUDA."""
    if device.type != "cuda":
        yield
        return
    stream = thread_stream(device, "fit")
    caller = torch.cuda.current_stream(device)
    stream.wait_stream(caller)
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        caller.wait_stream(stream)
