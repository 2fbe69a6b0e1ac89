"""Numba threads shared by the CPU eigen kernel and the column statistics.

A parallel Numba kernel runs on as many threads as torch's intra-op pool
(``torch.set_num_threads``, ``OMP_NUM_THREADS``, the one-thread limit of a Dask
or joblib worker), so a process has one thread knob, not two.

Starting Numba's OpenMP threading layer sets the calling thread's OpenMP
thread count to Numba's pool size, and torch reads its own count from that
same OpenMP runtime: without a guard, the first parallel kernel would raise a
worker's torch from 1 thread to every core and oversubscribe the machine.

Compiled code calls compiled callees with constants written ``bool(True)`` or
``int(0)``, not ``True`` or ``0``: Numba types a literal argument as a type of
its own (``Literal[bool](True)``) and compiles the callee once more for it,
while Python callers pass plain bools and ints. One compilation per callee
keeps a first fit's compile time down (the whole call tree is optimised and
code-generated again for each compilation).
"""

from __future__ import annotations

import functools
import sys
import threading

import torch

_launch_lock = threading.Lock()
# Below this much work (e.g. batch * n**3 of an eigen batch) a kernel runs on the calling thread:
# waking Numba's worker threads costs more than it saves.
PARALLEL_MIN_WORK = 32 * 15**3
# The same for a kernel whose work is one add or copy an element (the symmetric tables and their prefix
# sums, counted in elements): from ~6 us of serial work (California's 92,000 elements of a step's tables
# took 19 us on one thread, 7-10 us on two; benchmarks/RESULTS.md, section 9)
ELEMENTWISE_MIN_WORK = 32_000
import_error: Exception | None = None  # why numba did not import, for the callers' warnings


@functools.cache
def numba_module():
    """The numba module, or None when it is missing or does not import."""
    try:
        import numba
    except Exception as exc:  # ImportError, or a numba built against another numpy
        global import_error
        import_error = exc
        return None
    from .._kernel_cache import keep_kernel_cache_fresh

    keep_kernel_cache_fresh()  # the callers define cached kernels with it (see _kernel_cache)
    return numba


@functools.cache
def _pool_size() -> int:
    """Start Numba's threading layer once, keeping torch's thread count; Numba's pool size."""
    numba = numba_module()
    with _launch_lock:
        torch_threads = torch.get_num_threads()
        numba.get_num_threads()  # starts the threading layer
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    return numba.config.NUMBA_NUM_THREADS


def start_threading_layer() -> None:
    """Start Numba's threading layer (once, keeping torch's thread count) before calling a compiled
    function that links parallel kernels, also where it will run their serial twins: a fresh Dask worker
    whose first step called the training pass (its parallel kernels beside the serial ones) with the
    layer not started crashed there (SIGSEGV) in about half the runs of tests/test_dask.py."""
    _pool_size()


def numba_follows_torch() -> None:
    """Where Numba's threading layer runs, the calling thread's Numba count set to follow torch's again (as
    :func:`parallel_threads` sets it before a parallel kernel): a fit ends so, after its kernels set it to
    the count of its own code (one thread) -- which had left the caller's own Numba code after a fit on one
    thread while torch ran on two."""
    if _threading_layer_started():  # (never without Numba imported: its module, or this package's pool size)
        parallel_threads()


def _threading_layer_started() -> bool:
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    # (Numba's own flag; where a Numba lacks it, whether this package started the layer)
    return bool(getattr(parallel, "_is_initialized", _pool_size.cache_info().currsize))


def parallel_threads() -> int:
    """Size Numba's threads for the next parallel kernel called from this thread to
    torch's thread count (at most Numba's pool); returns that count."""
    threads = max(1, min(torch.get_num_threads(), _pool_size()))
    numba_module().set_num_threads(threads)
    return threads


def parallel_chunks(batch: int, work: int, elementwise: bool = False) -> int:
    """The chunks a kernel over ``batch`` independent items (``work`` in all) splits into on Numba's
    threads (sized here to torch's), or 0: it runs on the calling thread (one thread, or too little
    work to pay for waking them: PARALLEL_MIN_WORK, or ELEMENTWISE_MIN_WORK where ``elementwise``)."""
    floor = ELEMENTWISE_MIN_WORK if elementwise else PARALLEL_MIN_WORK
    if torch.get_num_threads() > 1 and batch > 1 and work >= floor:
        return min(batch, parallel_threads())
    return 0


def run_kernel(serial, parallel, args: tuple, batch: int, work: int, elementwise: bool = False) -> None:
    """One kernel call over a batch of independent items: ``serial(*args)`` on the calling
    thread, or ``parallel(*args, chunks)`` over Numba's threads (as many as torch uses) when
    the work pays for waking them."""
    chunks = parallel_chunks(batch, work, elementwise)
    if chunks:
        parallel(*args, chunks)
    else:
        serial(*args)
