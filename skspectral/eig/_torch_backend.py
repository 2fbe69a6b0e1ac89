"""The torch.linalg backend: any device.

On CPU, LAPACK's divide-and-conquer eigensolver spawns nested OpenMP threads
for every small matrix (n > 25), which on a 2-core machine makes a batch of
45x45 matrices several times slower than one thread would be. We instead run
LAPACK single-threaded and spread the *batch* over a small private thread
pool; each worker limits its own OpenMP threads (a per-thread setting), so the
caller's torch/numpy threading is left untouched.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from ._backend import EigenBackend

# Below this much work (batch * n**3) a hand-off to the pool costs more than
# it saves (about 0.1 ms), so the call runs in the caller's thread.
_PARALLEL_MIN_WORK = 4 * 24**3


_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()


def _limit_worker_to_one_thread() -> None:
    from threadpoolctl import threadpool_limits

    # omp_set_num_threads acts on the calling thread only.
    threadpool_limits(limits=1, user_api="openmp")


def _cpu_pool() -> tuple[ThreadPoolExecutor, int]:
    global _pool, _pool_workers
    workers = max(1, torch.get_num_threads())
    with _pool_lock:
        if _pool is None or _pool_workers != workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix="skspectral-eig",
                initializer=_limit_worker_to_one_thread,
            )
            _pool_workers = workers
        return _pool, _pool_workers


def _uplo(lower: bool) -> str:
    return "L" if lower else "U"


def _values_k(A: torch.Tensor, k, lower: bool) -> torch.Tensor:
    values = torch.linalg.eigvalsh(A, UPLO=_uplo(lower))
    return values[:, list(k)].contiguous() if isinstance(k, tuple) else values[:, k].contiguous()


def _pair_k(A: torch.Tensor, k, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(A, UPLO=_uplo(lower))
    if isinstance(k, tuple):  # several indices from one decomposition: (B, K), (B, K, n)
        return values[:, list(k)].contiguous(), vectors[:, :, list(k)].mT.contiguous()
    return values[:, k].contiguous(), vectors[:, :, k].contiguous()


def _map_batch(fn, A: torch.Tensor, k: int, lower: bool):
    """Apply ``fn`` to chunks of the batch ``A`` (B, n, n), in parallel on CPU."""
    batch, n = A.shape[0], A.shape[-1]
    if A.device.type != "cpu" or batch * n**3 < _PARALLEL_MIN_WORK:
        return fn(A, k, lower)
    pool, workers = _cpu_pool()
    chunks = A.tensor_split(min(workers, batch))
    parts = [f.result() for f in [pool.submit(fn, c, k, lower) for c in chunks]]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


def _replace_nonfinite(A: torch.Tensor, lower: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero the matrices with NaN/inf in the triangle that is read (torch.linalg
    raises on them); returns the batch and the mask, None when all is finite.
    On CUDA the mask stays on the device: no host synchronisation here."""
    if A.device.type == "cpu" and bool(torch.isfinite(A).all()):
        return A, None
    nonfinite = torch.isfinite(A).logical_not_()
    nonfinite = nonfinite.tril_() if lower else nonfinite.triu_()
    bad = nonfinite.flatten(1).any(dim=1)
    return A.masked_fill(bad[:, None, None], 0.0), bad


def _restore_nan(values: torch.Tensor, bad: torch.Tensor | None) -> torch.Tensor:
    if bad is None:
        return values
    return values.masked_fill(bad.view(bad.shape + (1,) * (values.dim() - 1)), float("nan"))


def eigvalsh_k(A: torch.Tensor, k: int, lower: bool) -> torch.Tensor:
    """k-th eigenvalue of each matrix of a contiguous (B, n, n) batch; NaN where A is not finite."""
    A, bad = _replace_nonfinite(A, lower)
    return _restore_nan(_map_batch(_values_k, A, k, lower), bad)


def eigh_k(A: torch.Tensor, k: int, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """k-th eigenvalue (B,) and unit eigenvector (B, n) of a contiguous batch; NaN where A is not finite."""
    A, bad = _replace_nonfinite(A, lower)
    value, vector = _map_batch(_pair_k, A, k, lower)
    return _restore_nan(value, bad), _restore_nan(vector, bad)


def _all_pairs(A: torch.Tensor, k: int, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.linalg.eigh(A, UPLO=_uplo(lower))


def eigh_all(A: torch.Tensor, lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Every eigenpair of a contiguous (B, n, n) batch (ascending); NaN where A is not finite."""
    A, bad = _replace_nonfinite(A, lower)
    values, vectors = _map_batch(_all_pairs, A, 0, lower)
    return _restore_nan(values, bad), _restore_nan(vectors, bad)


def tridiagonal_k(diagonal: torch.Tensor, off: torch.Tensor, k: int, want_vector: bool):
    """The k-th pair of symmetric tridiagonal matrices through a dense eigh (the reference)."""
    T = torch.diag_embed(diagonal) + torch.diag_embed(off, offset=-1)
    if want_vector:
        return eigh_k(T.contiguous(), k, True)
    return eigvalsh_k(T.contiguous(), k, True), None


BACKEND = EigenBackend(
    name="torch",
    eigvalsh_k=eigvalsh_k,
    eigh_k=eigh_k,
    device_types=frozenset({"cpu", "cuda"}),
    # torch.linalg.eigh on CUDA checks cuSOLVER's status on the host: it synchronises
    capture_safe=False,
    several_k=True,
    tridiagonal_k=tridiagonal_k,
    eigh_all=eigh_all,
)
