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


# torch hands out the streams of a fixed pool (32 a device), round robin: two threads that each make a stream
# may get the same one. A fit's stream must be its own -- work another thread queues on it while the fit captures
# its step would become part of that graph -- so fits lease distinct ones.
POOL_STREAMS = 32


class StreamLeases:
    """Streams of torch's pool (``new_stream(device)``, torch.cuda.Stream) leased to one holder at a time,
    pairwise distinct (by their CUDA handle): a lease takes a stream given back first; only where there is
    none does it draw from the pool, skipping the held ones; where the pool has none left to give (more
    holders than its streams), it waits for a stream to come back."""

    def __init__(self, new_stream=None, pool_size: int = POOL_STREAMS):
        self._new_stream = new_stream or (lambda device: torch.cuda.Stream(device))
        self._pool_size = pool_size
        self._changed = threading.Condition()
        self._held: dict = {}  # device -> set of the held streams' handles
        self._returned: dict = {}  # device -> streams given back, free to lease again

    def lease(self, device: torch.device):
        with self._changed:
            held, returned = self._held.setdefault(device, set()), self._returned.setdefault(device, [])
            while True:
                if returned:
                    stream = returned.pop()
                    break
                # (none given back: a draw is distinct from them all once it is from the held ones)
                stream = next((s for s in (self._new_stream(device) for _ in range(self._pool_size))
                               if s.cuda_stream not in held), None)
                if stream is not None:
                    break
                self._changed.wait()  # every stream of the pool is held: wait for one to come back
            held.add(stream.cuda_stream)
            return stream

    def give_back(self, device: torch.device, stream) -> None:
        with self._changed:
            self._held[device].discard(stream.cuda_stream)
            self._returned[device].append(stream)
            self._changed.notify_all()


_LEASES = StreamLeases()
_THREADS_OWN = threading.local()  # each thread's fallback side streams by device, and its leased fit streams


def leased_stream(device: torch.device):
    """The stream a fit on this thread holds on ``device`` (:func:`own_stream`), or None."""
    held = getattr(_THREADS_OWN, "leased", None)
    return held[-1][1] if held and held[-1][0] == device else None


def thread_stream(device: torch.device) -> torch.cuda.Stream:
    """A side stream of the calling thread's on ``device`` from torch's pool, made once a thread: where no
    fit holds a stream of its own (a Trainer's steps used directly), its CUDA graph captures there."""
    streams = getattr(_THREADS_OWN, "streams", None)
    if streams is None:
        streams = _THREADS_OWN.streams = {}
    stream = streams.get(device)
    if stream is None:
        stream = streams[device] = torch.cuda.Stream(device)
    return stream


@contextlib.contextmanager
def stream_lease(device: torch.device):
    """A CUDA stream on ``device`` that the block alone holds (leased: no other thread's fit queues there, see
    :class:`StreamLeases`), forked from the caller's current stream (its work starts after the work queued
    there), joined to the current stream at the end (which then waits for it: the caller's next work, a
    predict on the fitted module, runs after the fit's) and given back; None off CUDA. Holding it changes
    nothing else the calling thread sees: :func:`own_stream` runs work there."""
    if device.type != "cuda":
        yield None
        return
    stream = _LEASES.lease(device)
    try:
        stream.wait_stream(torch.cuda.current_stream(device))
        yield stream
    finally:
        try:
            torch.cuda.current_stream(device).wait_stream(stream)
        finally:
            _LEASES.give_back(device, stream)


@contextlib.contextmanager
def own_stream(device: torch.device, stream):
    """The work queued in the block goes to ``stream`` (a :func:`stream_lease`'s, which forks and joins it),
    and :func:`leased_stream` names it inside. Fits on several threads -- a search on joblib's threads, one
    GPU -- then run side by side on the GPU instead of one after another on its default stream, every
    thread's current stream, and each captures its step in a CUDA graph on its own stream. A fit enters it
    around each of its resumptions (:func:`skspectral._resumed.resumed_within`), so a ``fit_iter``
    consumer's own work between the epochs stays on its own stream; no wait between the two streams there
    (a fork and a join an epoch would tie every threaded fit's epochs to the others' through the default
    stream, each thread's current one). Nothing changes off CUDA (``stream`` None)."""
    if stream is None:
        yield
        return
    held = getattr(_THREADS_OWN, "leased", None)
    if held is None:
        held = _THREADS_OWN.leased = []
    held.append((device, stream))
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        held.pop()
