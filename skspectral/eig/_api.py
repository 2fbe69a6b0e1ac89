"""Public k-th eigenvalue op: validation, backend choice and autograd."""

from __future__ import annotations

import operator

import numpy as np

import torch

from . import _cupy_backend, _kernel_backend, _numba_backend, _torch_backend
from ._backend import EigenBackend

# Every backend, in the order "auto" considers them: the first available one
# that supports the device and n and whose measured rule prefers it wins
# (benchmarks/RESULTS.md): on CUDA our fused kernel (n <= 64), then CuPy's
# batched cuSOLVER call, which beats torch.linalg (torch loops over matrices
# for n > 32 and synchronises to check errors) except for a single large
# matrix; on the CPU our Numba kernel (n <= 64); torch.linalg everywhere else.
REGISTRY: dict[str, EigenBackend] = {
    backend.name: backend
    for backend in (_kernel_backend.BACKEND, _cupy_backend.BACKEND, _numba_backend.BACKEND, _torch_backend.BACKEND)
}
BACKENDS = ("auto", *REGISTRY)


_DEVICE_NAMES = {"cuda": "CUDA", "cpu": "CPU"}


def _auto(device_type: str, n: int, dtype: torch.dtype, batch_size: int | None) -> EigenBackend:
    for backend in REGISTRY.values():
        if backend.supports(device_type, n) and backend.is_available() and backend.preferred_for(n, dtype, batch_size):
            return backend
    raise ValueError(f"no eigen backend runs {n}x{n} matrices on device type {device_type!r}.")


def select_backend(
    backend: str, device, n: int, dtype: torch.dtype = torch.float32, batch_size: int | None = None
) -> EigenBackend:
    """Validate a backend name for ``n x n`` matrices on ``device``; resolve "auto".

    Raises a clear error for an unknown name, a device the backend does not run
    on, an n above its limit, or a missing dependency (CuPy).
    """
    if not isinstance(backend, str) or (backend != "auto" and backend not in REGISTRY):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    device_type = torch.device(device).type
    if backend == "auto":
        return _auto(device_type, n, dtype, batch_size)
    chosen = REGISTRY[backend]
    if device_type not in chosen.device_types:
        wanted = " or ".join(_DEVICE_NAMES.get(t, t) for t in sorted(chosen.device_types))
        hint = "move it with .cuda() or " if "cuda" in chosen.device_types else ""
        raise ValueError(
            f"backend={backend!r} needs {wanted} tensors, got a tensor on {device}; "
            f"{hint}use backend='torch' (or 'auto')."
        )
    chosen.require()
    if chosen.max_n is not None and n > chosen.max_n:
        raise ValueError(f"backend={backend!r} handles n <= {chosen.max_n}, got n={n}; use another backend or 'auto'.")
    return chosen


def select_backend_offering(backend: str, device, capability: str, what: str) -> EigenBackend:
    """Validate a backend name for an op that needs ``capability`` (an optional EigenBackend
    field, e.g. "tridiagonal_k") on ``device``; "auto": the first available one offering it."""
    if not isinstance(backend, str) or (backend != "auto" and backend not in REGISTRY):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    device_type = torch.device(device).type
    offered = [b for b in REGISTRY.values() if getattr(b, capability) is not None and device_type in b.device_types]
    if backend == "auto":
        for candidate in offered:
            if candidate.is_available():
                return candidate
        raise ValueError(f"no eigen backend can {what} on device type {device_type!r}.")
    chosen = REGISTRY[backend]
    if chosen not in offered:
        names = ", ".join(repr(b.name) for b in offered)
        raise ValueError(f"backend={backend!r} cannot {what} on {device_type!r} tensors; "
                         f"use one of {names} or 'auto'.")
    chosen.require()
    return chosen


def resolve_backend(device, n: int, dtype: torch.dtype = torch.float32, batch_size: int | None = None) -> str:
    """Name of the backend "auto" picks for ``n x n`` matrices of ``dtype`` on ``device``.

    On CPU: "numba" (our CPU kernel) for n <= 64 where Numba imports, else
    "torch". On CUDA where CuPy is importable: "kernel" for n <= 64, else
    "cupy" (except a single large matrix, ``batch_size == 1``, where torch
    wins). On CUDA without CuPy: "torch".
    """
    return select_backend("auto", device, n, dtype, batch_size).name


def check_eigval_index(k, n: int, name: str = "k") -> int:
    """Validate a Python-style eigenvalue index for ``n x n`` matrices; return it in [0, n)."""
    # an integer as Python indexes with one (operator.index: NumPy's integers, a 0-d integer tensor), never a bool
    index = None
    if not (isinstance(k, (bool, np.bool_)) or (isinstance(k, torch.Tensor) and k.dtype == torch.bool)):
        try:
            index = operator.index(k)
        except TypeError:
            pass
    if index is None:
        raise TypeError(f"{name} must be an integer, got {k!r} of type {type(k).__name__}.")
    k = index
    if not -n <= k < n:
        raise ValueError(
            f"{name}={k} is out of range for {n}x{n} matrices: it must lie in [{-n}, {n - 1}] "
            "(ascending order; negative values count from the largest)."
        )
    return k % n


def _check_matrices(A) -> int:
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"A must be a torch.Tensor, got {type(A).__name__}; convert it with torch.as_tensor(A).")
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"A must be a square matrix or a batch of them, shape (..., n, n); got shape {tuple(A.shape)}."
        )
    if A.dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"A must be float32 or float64, got {A.dtype}; convert it with A.float() or A.double() "
            "(complex Hermitian matrices are not supported)."
        )
    return A.shape[-1]


class _KthEigvalsh(torch.autograd.Function):
    """lambda_k of a (B, n, n) batch; backward g * q_k q_k^T (symmetric, as torch.linalg). A tuple
    of indices (a backend with several_k): values (B, K), backward sum_j g_j q_j q_j^T."""

    @staticmethod
    def forward(ctx, A, k, lower, backend):
        value, vector = backend.eigh_k(A.detach(), k, lower)
        ctx.save_for_backward(vector)
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError(
                "kth_eigvalsh is differentiable once: double backward (create_graph=True, Hessians) "
                "would need the other eigenpairs and is not implemented."
            )
        (vector,) = ctx.saved_tensors
        # several indices: (B, n, K) @ (B, K, n); one: (g q) first on B x n, then the outer product
        return _eigenpair_gradient(vector, grad_value), None, None, None


_ONCE = ("kth_eigvalsh is differentiable once: a second derivative (create_graph=True twice, Hessians, "
         "jacrev or jacfwd of jacrev or jacfwd) would need the other eigenpairs and is not implemented.")


def _eigenpair_gradient(vector: torch.Tensor, grad_value: torch.Tensor) -> torch.Tensor:
    """sum_j g_j q_j q_j^T of each matrix: one index's vectors (B, n) and g (B,), or several's (B, K, n), (B, K)."""
    if vector.dim() == 3:
        return (vector * grad_value.unsqueeze(-1)).mT @ vector
    return (vector * grad_value.unsqueeze(-1)).unsqueeze(-1) * vector.unsqueeze(-2)


def _eigenpair_tangent(vector: torch.Tensor, A_tangent: torch.Tensor) -> torch.Tensor:
    """q_j^T dA q_j of each matrix (B,), or (B, K) for several indices' vectors (B, K, n)."""
    if vector.dim() == 3:
        return (vector * (vector @ A_tangent.mT)).sum(-1)
    return (vector * (A_tangent @ vector.unsqueeze(-1)).squeeze(-1)).sum(-1)


class _FirstOrderOnly(torch.autograd.Function):
    """A first derivative's formula in q_k (torch ops, so vmap's rule is generated). q_k depends on A
    through the other eigenpairs, which the op does not have: differentiating it again, in either mode,
    is refused rather than computed without dq/dA."""

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_ONCE)

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError(_ONCE)


class _EigenpairGradient(_FirstOrderOnly):
    @staticmethod
    def forward(vector, grad_value):
        return _eigenpair_gradient(vector, grad_value)


class _EigenpairTangent(_FirstOrderOnly):
    @staticmethod
    def forward(vector, A_tangent):
        return _eigenpair_tangent(vector, A_tangent)


class _KthEigvalshTransformable(torch.autograd.Function):
    """:class:`_KthEigvalsh` for torch.func's transforms (vmap, grad, jvp, jacrev, jacfwd, and vmap over
    grad: per-sample gradients), which need a forward without ctx. It returns (values, vectors); the
    vectors are an output autograd follows only to refuse a second derivative (their own backward and
    tangent through _FirstOrderOnly). Its vmap rule solves the vmapped matrices as one batch. Taken only
    for a transform's tensors: the model's steps (and their CUDA graphs) keep _KthEigvalsh."""

    @staticmethod
    def forward(A, k, lower, backend):
        return backend.eigh_k(A.detach(), k, lower)

    @staticmethod
    def setup_context(ctx, inputs, output):
        vector = output[1]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(vector)
        ctx.save_for_forward(vector)

    @staticmethod
    def backward(ctx, grad_value, grad_vector):
        if grad_vector is not None:  # a derivative of the vectors: a second derivative of the values
            raise RuntimeError(_ONCE)
        (vector,) = ctx.saved_tensors
        return _EigenpairGradient.apply(vector, grad_value), None, None, None

    @staticmethod
    def jvp(ctx, A_tangent, k_tangent, lower_tangent, backend_tangent):
        (vector,) = ctx.saved_tensors
        # the vectors' tangent is not known: zeros that only _FirstOrderOnly reads (and refuses)
        return _EigenpairTangent.apply(vector, A_tangent), torch.zeros_like(vector)

    @staticmethod
    def vmap(info, in_dims, A, k, lower, backend):
        # (V, B, n, n) -> one (V B, n, n) batch: the solvers are batched already
        A = A.movedim(in_dims[0], 0)
        value, vector = _KthEigvalshTransformable.apply(A.reshape(-1, *A.shape[2:]), k, lower, backend)
        V, B = A.shape[:2]
        return (value.reshape(V, B, *value.shape[1:]), vector.reshape(V, B, *vector.shape[1:])), (0, 0)


def transformed(X: torch.Tensor) -> bool:
    """Whether X is a tensor of torch.func's transforms (vmap's batched tensor, grad's tracking one) or
    a forward-mode dual tensor (torch.autograd.forward_ad), which the detached solve would give no
    tangent (a derivative of zero, silently)."""
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is not None and functorch.is_functorch_wrapped_tensor(X):
        return True
    return torch.autograd.forward_ad.unpack_dual(X).tangent is not None


def refuse_transforms(name: str, *tensors: torch.Tensor) -> None:
    """A clear error for an op without torch.func or forward-mode support, where it would raise torch's
    own puzzling error or drop a dual tensor's tangent without a word."""
    if any(transformed(t) for t in tensors):
        raise NotImplementedError(f"{name} does not support torch.func's transforms (vmap, grad, jvp, ...) or "
                                  "forward-mode AD; kth_eigvalsh does, on the dense matrices; or use "
                                  "torch.autograd (backward) on a batch.")


def kth_eigvalsh_unchecked(A: torch.Tensor, k, backend: EigenBackend, lower: bool = True) -> torch.Tensor:
    """:func:`kth_eigvalsh` for callers that have validated once already (the model's forward).

    ``A`` (..., n, n) float32/float64 on a device ``backend`` supports, k in [0, n), or a tuple of
    ascending such indices: values (..., K), from one reduction per matrix where the backend
    offers it (``several_k``), else one call per index.
    """
    if isinstance(k, tuple) and not backend.several_k:
        return torch.stack([kth_eigvalsh_unchecked(A, kj, backend, lower) for kj in k], dim=-1)
    if transformed(A):  # under vmap, grad, jvp, jacrev, ...: through the transformable op, never detached
        def transformable(batch):
            return _KthEigvalshTransformable.apply(batch, k, lower, backend)[0]

        return by_batch(A, 2, _index_axis(k), transformable, None, recorded=True)
    return by_batch(A, 2, _index_axis(k), lambda batch: _KthEigvalsh.apply(batch, k, lower, backend),
                    lambda batch: backend.eigvalsh_k(batch, k, lower))


def _index_axis(k) -> tuple:
    """The values' last axis for a tuple of indices, none for one index."""
    return (len(k),) if isinstance(k, tuple) else ()


def by_batch(X: torch.Tensor, item_dims: int, value_shape: tuple, solve_recorded, solve,
             recorded: bool | None = None) -> torch.Tensor:
    """Values (*batch, *value_shape) of the items -- X's last ``item_dims`` dimensions -- of X (*batch,
    *item), solved as one contiguous (B, *item) batch: ``solve_recorded(batch)`` where autograd records
    X (or ``recorded``), else ``solve(batch)`` on it detached (DLPack refuses tensors that require grad).
    An empty batch keeps the graph."""
    split = X.dim() - item_dims
    batch_shape = X.shape[:split] + value_shape
    batch = X.reshape(-1, *X.shape[split:])
    if batch.shape[0] == 0:
        return X.new_empty(batch_shape) + 0 * X.sum()  # keeps the graph for empty batches
    batch = batch.contiguous()
    if recorded is None:
        recorded = torch.is_grad_enabled() and X.requires_grad
    values = solve_recorded(batch) if recorded else solve(batch.detach())
    return values.reshape(batch_shape)


class _KthEigvalshPacked(torch.autograd.Function):
    """lambda_k of (B, n (n + 1) / 2) packed lower triangles; backward the backend's packed_grad."""

    @staticmethod
    def forward(ctx, P, n, k, backend):
        value, vector = backend.packed_k(P.detach(), n, k, True)
        ctx.save_for_backward(vector)
        ctx.backend = backend
        return value

    @staticmethod
    def backward(ctx, grad_value):
        if torch.is_grad_enabled():
            raise RuntimeError("kth_eigvalsh is differentiable once: double backward is not implemented.")
        (vector,) = ctx.saved_tensors
        return ctx.backend.packed_grad(vector, grad_value), None, None, None


def kth_eigvalsh_packed_unchecked(P: torch.Tensor, n: int, k, backend: EigenBackend) -> torch.Tensor:
    """:func:`kth_eigvalsh_unchecked` of symmetric n x n matrices given as their lower triangles row
    by row, ``P`` (..., n (n + 1) / 2), on a backend that offers ``packed_k``: values (...[, K])."""
    return by_batch(P, 1, _index_axis(k), lambda batch: _KthEigvalshPacked.apply(batch, n, k, backend),
                    lambda batch: backend.packed_k(batch, n, k, False)[0])


def kth_eigvalsh(A: torch.Tensor, k, *, lower: bool = True, backend: str = "auto") -> torch.Tensor:
    """The k-th smallest eigenvalue of each symmetric matrix in ``A``.

    Parameters
    ----------
    A : Tensor of shape (..., n, n), float32 or float64, on any device.
        Symmetric matrices, read from the lower (``lower=True``) or upper
        triangle only, as ``torch.linalg.eigvalsh(UPLO=...)``.
    k : int, or a list or tuple of int
        Index in ascending order; negative values count from the largest
        (``k=-1`` is the largest eigenvalue). A sequence of distinct indices
        gives one value per index (a last axis, in the order given), from one
        reduction per matrix where the backend offers it ("kernel", "numba",
        "torch"): several eigenvalues for little more than the price of one.
    lower : bool, default True
        Which triangle to read.
    backend : {"auto", "torch", "cupy", "kernel", "numba"}, default "auto"
        "torch" uses torch.linalg; "cupy" uses CuPy's batched cuSOLVER solver
        on CUDA tensors (zero-copy, on torch's current stream); "kernel" our
        fused kernel for the k-th pair alone (CUDA via CuPy, n <= 64;
        Householder, Sturm multisection, inverse iteration; capture-safe in
        CUDA graphs); "numba" the same algorithm on the CPU, compiled with
        Numba, the batch spread over cores; "auto" picks the fastest for the
        device, n and dtype (see :func:`resolve_backend`).

    Returns
    -------
    Tensor of shape (...,), or (..., len(k)) for a sequence, same dtype and
    device as ``A``.

    Differentiable once: the gradient is ``g * q_k q_k^T`` for the unit
    eigenvector ``q_k`` (at a repeated eigenvalue, a valid Clarke
    subgradient), the tangent ``q_k^T dA q_k``; under torch.func's transforms
    (``vmap``, ``grad``, ``jacrev``, ``jacfwd``, ``jvp`` and their compositions of
    one derivative, e.g. per-sample gradients) and forward-mode AD too. A second
    derivative is an error. Without grad only eigenvalues are computed. A matrix
    with NaN or inf in the triangle that is read gives NaN.
    """
    n = _check_matrices(A)
    if not isinstance(lower, bool):
        raise TypeError(f"lower must be a bool, got {lower!r}.")
    batch_size = A.reshape(-1, n, n).shape[0]
    chosen = select_backend(backend, A.device, n, A.dtype, batch_size)
    if not isinstance(k, (list, tuple)):  # one index (check_eigval_index says what else is wrong)
        return kth_eigvalsh_unchecked(A, check_eigval_index(k, n), chosen, lower)
    indices = [check_eigval_index(kj, n) for kj in k]
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"k as a sequence needs distinct indices (after counting negative ones from the top), got {k!r}.")
    ascending = tuple(sorted(indices))
    values = kth_eigvalsh_unchecked(A, ascending, chosen, lower)
    if list(ascending) == indices:
        return values
    return values[..., [ascending.index(kj) for kj in indices]]
