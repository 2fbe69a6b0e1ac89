"""The eigenvalue model as a torch module, usable without scikit-learn.

    f(x) = lambda_k(diag(mu) + sum_j z_j(x) A_j)

with z = x (the series' model) or the columns of a FeatureEncoder
(piecewise-linear bins, missing-value and categorical-level columns). mu is
non-decreasing (a start value plus softplus-positive increments) and each A_j
is symmetric. ``n_outputs`` models per member (e.g. one per class) and
``n_members`` ensemble members are all evaluated in one batched eigen call.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from .eig import (
    EigenBackend,
    check_eigval_index,
    kth_eigvalsh_packed_unchecked,
    kth_eigvalsh_tridiagonal_unchecked,
    kth_eigvalsh_unchecked,
    select_backend,
    smoothed_kth_eigvalsh_unchecked,
)
from . import _assembly
from ._compiled_pass import CompiledDensePass, SharedMembersPass
from .eig._api import refuse_transforms, transformed
from .eig._gathered import kth_eigvalsh_gathered, kth_eigvalsh_stacked
from .eig._smoothed import check_smoothing, select_full_backend
from .eig._tridiagonal import select_tridiagonal_backend

STRUCTURES = ("dense", "tridiagonal")


# the smallest step between consecutive diagonal entries a model starts from
MIN_MU_STEP = 1e-3


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def diagonal_through(dim: int, indices, values) -> np.ndarray:
    """The diagonal (dim,) that puts ``values[j]`` (non-decreasing) at ``indices[j]`` (ascending): linear
    between them, and the default start's step (2 / (dim - 1): the evenly spaced [-1, 1]) below the first
    and above the last. A loss whose best constant output is known starts a model there with it
    (:meth:`SpectralModel.start_diagonal`)."""
    step = 2.0 / max(dim - 1, 1)
    positions = np.arange(dim, dtype=np.float64)
    mu = np.interp(positions, np.asarray(indices, dtype=np.float64), np.asarray(values, dtype=np.float64))
    mu[: indices[0]] = values[0] - step * (indices[0] - positions[: indices[0]])
    mu[indices[-1] + 1:] = values[-1] + step * (positions[indices[-1] + 1:] - indices[-1])
    return mu


def select_model_backend(backend: str, device, dim: int, dtype: torch.dtype, *, structure: str = "dense",
                         smoothing: float | None = None) -> EigenBackend:
    """The eigen backend a model of this structure and smoothing uses on ``device``.

    The exact eigenvalue of dense matrices: :func:`skspectral.eig.select_backend`;
    of tridiagonal ones: a backend with a tridiagonal solver; smoothed: a backend
    giving every eigenpair. Raises a clear error where ``backend`` cannot do it.
    """
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}.")
    if smoothing is not None:
        check_smoothing(smoothing)
        return select_full_backend(backend, device)
    if structure == "tridiagonal":
        return select_tridiagonal_backend(backend, device)
    return select_backend(backend, device, dim, dtype)


def gathers_with(backend: EigenBackend, smoothing: float | None) -> bool:
    """Whether a model with this eigen backend and smoothing assembles its matrices by gathering
    (:attr:`SpectralModel.gathers`, unless a model turns ``gather`` off): the exact eigenvalue and
    a backend that offers it (Numba on the CPU)."""
    return smoothing is None and backend.gathered_k is not None


def check_monotonic(monotonic, n_matrices: int) -> "torch.Tensor | None":
    """Signs -1/0/+1 per encoded column as a float64 tensor, or None when nothing is constrained."""
    if monotonic is None:
        return None
    signs = torch.as_tensor(monotonic, dtype=torch.float64).reshape(-1)
    if signs.numel() != n_matrices or not bool(((signs == -1) | (signs == 0) | (signs == 1)).all()):
        raise ValueError(f"monotonic must hold -1, 0 or +1 for each of the {n_matrices} encoded columns, "
                         f"got {monotonic!r}.")
    return signs if bool(signs.any()) else None


class SpectralModel(torch.nn.Module):
    """f(x) = lambda_k(diag(mu) + sum_i x_i A_i) for a batch of feature rows.

    Parameters
    ----------
    n_features : int
    dim : int
        Size of the symmetric matrices.
    eigval_idx : int, sequence of int, or None
        k, ascending, negative counts from the top; None means ``dim // 2``.
        Several indices: one output each (a trailing axis), the eigenvalues of
        the same matrix in ascending order -- they never cross: the outputs are
        made non-decreasing along that axis exactly (a running maximum, which
        only corrects rounding and keeps every certified bound).
    n_outputs : int or None
        None: one output, ``forward`` returns shape (batch,). An int: that many
        models (e.g. one per class), ``forward`` returns (batch, n_outputs).
    n_members : int
        Ensemble members, each a full set of parameters with its own
        initialisation; with more than one, ``forward`` returns (batch,
        n_members) or (batch, n_members, n_outputs).
    encoder : torch.nn.Module or None
        Maps the input rows (batch, n_features) to the encoded columns z
        (batch, encoder.n_columns), one matrix A_j per column (see
        :class:`skspectral.encoding.FeatureEncoder`); None: z = x.
    backend : str
        Eigen backend (see :func:`skspectral.kth_eigvalsh`); checked when the
        module is built and resolved once per device and dtype it runs on.
    generator : torch.Generator or None
        CPU generator for the initial values (the same on every device).
    draw : bool
        False: nothing is drawn -- the feature matrices start at zero and the
        sharing members' factors at +1, no random number is taken from
        ``generator`` or torch's global generator -- for a caller that loads a
        state dict next (a fitted model rebuilt for prediction, a continued fit).
    monotonic : array-like of -1/0/+1 per encoded column, or None
        +1: that column's matrix is positive semidefinite (A = W W^T), so the
        output is non-decreasing in the column (Loewner order: lambda_k is
        monotone); -1: negative semidefinite, non-increasing; 0: free.
    smoothing : float or None
        None: the exact lambda_k. alpha > 0: its Moreau envelope
        (:func:`skspectral.eig.smoothed_kth_eigvalsh`), whose gradient is
        1/alpha-Lipschitz; still 1-Lipschitz in the matrix (certified bounds
        hold) and monotone in the Loewner order. Needs every eigenpair.
    n_shared_members : int
        How many of the members (the last ones) share one set of matrices:
        member m's matrix for column j is r_{m,j} A_j, with one learned A_j per
        column (and output) and a learned factor r_{m,j} per member and column,
        started at a random sign (TabM-mini's input adapter; stored as r divided
        by :attr:`shared_factor_gain`, so that it learns as fast for its size as
        the matrices do), so those members
        are different functions from the first step at the parameter cost of
        one. A monotone column's factor is |r_{m,j}|: r A stays semidefinite of
        the column's sign. Each member keeps its own diagonal. 0: every member
        owns its matrices. :meth:`feature_matrices` returns every member's
        matrices (r_{m,j} A_j for the sharing ones), so the certified bounds
        (||r A||_2 = |r| ||A||_2) read them as any other.

    Variants of the model subclass it and replace the one construction hook,
    :meth:`_init_feature_matrices`, together with :meth:`feature_matrices`
    (how the A_i are parameterised); everything else -- the diagonal, the
    eigen call, the spectral norms that certify sensitivities, penalties and
    training -- reads the A_i through :meth:`feature_matrices` only.
    """

    def __init__(
        self,
        n_features: int,
        dim: int,
        eigval_idx=None,
        *,
        n_outputs: int | None = None,
        n_members: int = 1,
        encoder: torch.nn.Module | None = None,
        backend: str = "auto",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
        monotonic=None,
        smoothing: float | None = None,
        n_shared_members: int = 0,
        draw: bool = True,
    ):
        super().__init__()
        if int(dim) < 1 or int(n_features) < 1:
            raise ValueError(f"dim and n_features must be >= 1, got dim={dim}, n_features={n_features}.")
        self.n_features, self.dim = int(n_features), int(dim)
        several = eigval_idx is not None and not isinstance(eigval_idx, numbers.Integral)
        indices = list(eigval_idx) if several else [self.dim // 2 if eigval_idx is None else eigval_idx]
        indices = sorted(check_eigval_index(k, self.dim, "eigval_idx") for k in indices)
        if several and (not indices or len(set(indices)) != len(indices)):
            raise ValueError(f"eigval_idx as a sequence needs distinct indices, got {eigval_idx!r}.")
        self.eigval_indices = tuple(indices)
        self.eigval_idx = self.eigval_indices if several else self.eigval_indices[0]
        self.n_outputs = n_outputs
        self.n_members = int(n_members)
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}.")
        self.n_models = self.n_members * (1 if n_outputs is None else int(n_outputs))
        self.n_shared_members = int(n_shared_members)
        if not 0 <= self.n_shared_members <= self.n_members:
            raise ValueError(f"n_shared_members must be between 0 and n_members={self.n_members}, "
                             f"got {n_shared_members}.")
        # the models whose matrices are their own: the first members' (members are the leading axis)
        self.n_own_models = self.n_models - self.n_shared_members * (self.n_models // self.n_members)
        self.encoder = encoder
        self.n_matrices = self.n_features if encoder is None else int(encoder.n_columns)
        factory = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.smoothing = None if smoothing is None else check_smoothing(smoothing)
        self.monotonic = check_monotonic(monotonic, self.n_matrices)
        self._resolve_backend(backend, torch.device(device or "cpu"), factory["dtype"])  # fail at construction
        self.backend = backend
        self._eigen_backends: dict = {}
        # the initial A_j entries' std, times the encoder's init_factor of each column where it has one
        init_scale = 1.0 / (math.sqrt(self.dim) * self.n_features)

        # Initial values are drawn in float64 on the CPU so that every device
        # and dtype starts from the same model.
        mu0 = torch.linspace(-1.0, 1.0, self.dim, dtype=torch.float64).expand(self.n_models, self.dim)
        self.mu_start = torch.nn.Parameter(torch.empty((self.n_models, 1), **factory))
        self.mu_increments = torch.nn.Parameter(torch.empty((self.n_models, self.dim - 1), **factory))
        self.start_diagonal(mu0)
        self._draws = bool(draw)
        self._init_feature_matrices(init_scale, generator, factory)

    @torch.no_grad()
    def start_diagonal(self, mu: torch.Tensor) -> None:
        """Set the diagonal (``mu``: (dim,) or (n_models, dim), non-decreasing) the models start from; steps
        below MIN_MU_STEP are raised to it (the increments' softplus stays finite)."""
        mu = torch.as_tensor(mu, dtype=torch.float64)
        if mu.shape not in ((self.dim,), (self.n_models, self.dim)) or not torch.isfinite(mu).all():
            raise ValueError(f"start_diagonal needs finite values of shape ({self.dim},) or ({self.n_models}, "
                             f"{self.dim}) (dim, or models x dim); got shape {tuple(mu.shape)}"
                             f"{'' if torch.isfinite(mu).all() else ' with NaN or infinite values'}.")
        mu = mu.expand(self.n_models, self.dim)
        self.mu_start.copy_(mu[:, :1])
        self.mu_increments.copy_(_softplus_inverse(mu.diff(dim=-1).clamp_min(MIN_MU_STEP)))

    # ---- the construction hook: how the feature matrices are parameterised -------------
    structure = "dense"
    # The sharing members' factors are stored as r / gain: Adam moves every parameter by about the
    # learning rate a step, and r (of size 1) would otherwise change ~30x slower for its size than the
    # matrices' entries (of size 1 / (sqrt(dim) n_features)). Chosen on the selection fold (1, 10, 30:
    # benchmarks/RESULTS.md, section 12).
    shared_factor_gain = 10.0

    def _init_feature_matrices(self, init_scale: float, generator: torch.Generator | None, factory: dict) -> None:
        """Create the parameters behind :meth:`feature_matrices` (symmetric Gaussian start;
        a monotone column's A = W W^T starts from a Gaussian W of about the same norm): ``weight``,
        the own members' matrices; with shared members also ``shared_weight`` (one set per output)
        and ``member_scales`` (their factors r, see the class)."""
        # Learned as a full matrix and symmetrised in use: eigh reads one
        # triangle, and this way every entry receives gradient.
        self.weight = torch.nn.Parameter(self._drawn_weight(self.n_own_models, init_scale, generator).to(**factory))
        if self.monotonic is not None:
            self.register_buffer("monotonic_signs", self.monotonic.to(**factory)[:, None, None])
        self._init_shared(self._drawn_weight, init_scale, generator, factory)

    def _standard_normal(self, shape: tuple, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal draws of ``shape`` (float64, on the CPU) from ``generator``; zeros where the model
        draws nothing (``draw=False``: a state dict is loaded next, and torch's global generator stays as it was)."""
        if not self._draws:
            return torch.zeros(shape, dtype=torch.float64)
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def _drawn_weight(self, n_models: int, init_scale: float, generator: torch.Generator | None) -> torch.Tensor:
        """The initial weight of ``n_models`` models' matrices (float64, on the CPU)."""
        gaussian = self._standard_normal((n_models, self.n_matrices, self.dim, self.dim), generator)
        sym = (gaussian + gaussian.transpose(-1, -2)) / math.sqrt(2.0)
        scale = init_scale * self._column_init_factors()[:, None, None]
        weight = scale * sym
        if self.monotonic is not None:
            # ||W W^T|| ~ 4 dim s_W^2 for Gaussian W; a symmetric Gaussian's norm ~ 2 sqrt(dim) s
            gram_scale = (scale / (2.0 * math.sqrt(self.dim))).sqrt()
            constrained = (self.monotonic != 0)[None, :, None, None]
            weight = torch.where(constrained, gram_scale * gaussian, weight)
        return weight

    def _init_shared(self, draw, init_scale: float, generator: torch.Generator | None, factory: dict) -> None:
        """The shared members' parameters (none without them, and nothing drawn: a model without
        shared members starts from the same numbers as before they existed). ``draw(n_models,
        init_scale, generator)``: the stored matrices' initial values, as the own members' are drawn."""
        if not self.n_shared_members:
            return
        n_outputs = self.n_models // self.n_members
        self.shared_weight = torch.nn.Parameter(draw(n_outputs, init_scale, generator).to(**factory))
        # random signs: the sharing members differ from the first step (a monotone column's factor
        # is |r|: +1 there)
        shape = (self.n_shared_members, self.n_matrices)
        signs = ((torch.randint(0, 2, shape, generator=generator) * 2 - 1).double() if self._draws
                 else torch.ones(shape, dtype=torch.float64))
        if self.monotonic is not None:
            signs = torch.where(self.monotonic != 0, 1.0, signs)
        self.member_scales = torch.nn.Parameter((signs / self.shared_factor_gain).to(**factory))

    def shared_factors(self) -> torch.Tensor:
        """The sharing members' factors r_{m,j} as they scale A_j, (n_shared_members, n_matrices):
        ``member_scales`` times :attr:`shared_factor_gain`; |r| for a monotone column."""
        factors = self.shared_factor_gain * self.member_scales
        if self.monotonic is None:
            return factors
        constrained = self.monotonic_signs.reshape(-1) != 0  # the buffer: on the model's device
        return torch.where(constrained, factors.abs(), factors)

    def _with_shared(self, own: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
        """Every model's stored matrices (n_models, n_matrices, ...) from the own models' ``own`` and
        the shared set ``shared`` (n_outputs, n_matrices, ...), scaled by :meth:`shared_factors`
        for each sharing member; ``own`` alone without shared members."""
        if not self.n_shared_members:
            return own
        factors = self.shared_factors().to(shared.dtype)
        trailing = (1,) * (shared.dim() - 2)
        scaled = factors.view(self.n_shared_members, 1, self.n_matrices, *trailing) * shared[None]
        return torch.cat([own, scaled.reshape(self.n_shared_members * shared.shape[0], *shared.shape[1:])])

    def _column_init_factors(self) -> torch.Tensor:
        """Relative initial scale of each encoded column's matrix (1 without an encoder)."""
        factors = getattr(self.encoder, "init_factor", None)
        if factors is None:
            return torch.ones(self.n_matrices, dtype=torch.float64)
        return torch.as_tensor(factors, dtype=torch.float64)

    def feature_matrices(self) -> torch.Tensor:
        """The symmetric A_j, shape (n_models, n_matrices, dim, dim) (a variant may store
        them otherwise; :meth:`matrix_norms` reads the same storage)."""
        shared = self._symmetrised(self.shared_weight) if self.n_shared_members else None
        return self._with_shared(self._symmetrised(self.weight), shared)

    def _symmetrised(self, weight: torch.Tensor) -> torch.Tensor:
        """The symmetric matrices a stored weight stands for: 0.5 (W + W^T), or a monotone column's
        +-W W^T."""
        A = 0.5 * (weight + weight.transpose(-1, -2))
        if self.monotonic is None:
            return A
        gram = weight @ weight.transpose(-1, -2)
        return torch.where(self.monotonic_signs != 0, self.monotonic_signs * gram, A)

    def dense_weight(self) -> torch.Tensor:
        """Every model's W, shape (n_models, n_matrices, dim, dim), whose 0.5 (W + W^T) are the
        matrices: ``weight``, with the sharing members' r W_shared after it (scaling commutes
        with the symmetrisation). Only without monotone columns (theirs are W W^T)."""
        return self._with_shared(self.weight, self.shared_weight if self.n_shared_members else None)

    # ---- the model ---------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.mu_start.dtype

    @property
    def device(self) -> torch.device:
        return self.mu_start.device

    def _resolve_backend(self, backend: str, device: torch.device, dtype: torch.dtype) -> EigenBackend:
        return select_model_backend(backend, device, self.dim, dtype, structure=self.structure,
                                    smoothing=self.smoothing)

    @property
    def eigen_backend(self) -> EigenBackend:
        """The eigen backend this module's calls use on its current device and dtype."""
        key = (self.device, self.dtype)
        backend = self._eigen_backends.get(key)
        if backend is None:
            backend = self._eigen_backends[key] = self._resolve_backend(self.backend, self.device, self.dtype)
        return backend

    def _resolve_norm_backend(self, device: torch.device, dtype: torch.dtype) -> EigenBackend:
        # exact extreme eigenvalues: the chosen backend unless it was chosen for smoothing
        name = self.backend if self.smoothing is None else "auto"
        return select_backend(name, device, self.dim, dtype)

    @property
    def norm_backend(self) -> EigenBackend:
        """The backend for the extreme eigenvalues behind :meth:`matrix_norms` (exact)."""
        key = ("norms", self.device, self.dtype)
        backend = self._eigen_backends.get(key)
        if backend is None:
            backend = self._eigen_backends[key] = self._resolve_norm_backend(self.device, self.dtype)
        return backend

    @property
    def capture_safe(self) -> bool:
        """A forward and backward can be captured in a CUDA graph (the eigen backend says so)."""
        return self.eigen_backend.capture_safe

    def mu(self) -> torch.Tensor:
        """The non-decreasing diagonal, shape (n_models, dim)."""
        steps = F.softplus(self.mu_increments).cumsum(dim=-1)
        return torch.cat([self.mu_start, self.mu_start + steps], dim=-1)

    def matrices(self, X: torch.Tensor, encoded: bool = False, *, plain: bool | None = None) -> torch.Tensor:
        """diag(mu) + sum_j z_j A_j for each row of X (of its encoded columns Z with ``encoded``):
        shape (batch, n_models, dim, dim). ``plain``: by torch's ops only, not skspectral._assembly's CUDA
        kernels (autograd's only); None: where X or a parameter is torch.func's or forward-mode AD's."""
        Z = X if encoded else self.encoded(X)
        if (self.assembles and _assembly.applies(Z, self.weight)
                and not (self._under_transforms(X) if plain is None else plain)):
            return _assembly.assembled_matrices(Z, self.weight, self.mu_start, self.mu_increments,
                                                shared=self._assembly_shared())
        A = self.feature_matrices().transpose(0, 1).reshape(self.n_matrices, self.n_models * self.dim * self.dim)
        M = (Z @ A).view(X.shape[0], self.n_models, self.dim, self.dim)
        return M + torch.diag_embed(self.mu())

    def _assembly_shared(self) -> tuple | None:
        """What skspectral._assembly takes of the sharing members: (the shared set, the stored factors,
        their gain), whose r S it assembles without composing W (:meth:`dense_weight`: a few small kernels
        each way a step); None without sharing members. Only where :attr:`assembles` (no monotone column:
        the factors are r, not |r|)."""
        if not self.n_shared_members:
            return None
        return self.shared_weight, self.member_scales, self.shared_factor_gain

    def encoded(self, X: torch.Tensor) -> torch.Tensor:
        """The encoded columns Z of rows X, what ``forward(Z, encoded=True)`` takes: the encoder
        has no parameters, so a fit can encode its rows once instead of at every step."""
        return X if self.encoder is None else self.encoder(X)

    # On CUDA, a plain dense model's matrices come from skspectral._assembly's kernels (False: torch's
    # ops always, the reference they are tested against)
    assemble = True

    @property
    def assembles(self) -> bool:
        """Whether :meth:`matrices` may take skspectral._assembly's CUDA kernels: matrices that are
        0.5 (W + W^T) and mu as :meth:`mu` makes it (no monotone column, no variant's own storage)."""
        return (self.assemble and self.monotonic is None and type(self).mu is SpectralModel.mu
                and type(self).feature_matrices is SpectralModel.feature_matrices)

    # Assemble matrices by gathering where the backend offers it (False: the dense product always,
    # the reference the gather path is tested against).
    gather = True

    @property
    def gathers(self) -> bool:
        """Whether the forward assembles each matrix from a few gathered ones next to the eigensolver
        (its backend offers it: Numba on the CPU) instead of multiplying every encoded column."""
        return self.gather and gathers_with(self.eigen_backend, self.smoothing)

    def gathered_terms(self, X: torch.Tensor, encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's (rows, weights) of the gathered matrices (see skspectral.encoding); rows
        already encoded weigh every column's matrix (zero weights cost nothing)."""
        if self.encoder is not None and not encoded:
            return self.encoder.terms(X)
        return torch.arange(self.n_matrices, device=X.device).expand(X.shape[0], -1), X

    def gather_tables(self, encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The matrices rows gather from, (n_models, rows, elements of a stored matrix): the
        encoded columns' and (for rows not yet encoded) the encoder's prefix sums of them; a dense
        model's own symmetric matrices as packed lower triangles (see skspectral.eig._gathered)."""
        if not encoded and self._symmetric_tables:
            # feature_matrices' symmetrisation made with the prefix sums (one pass on the CPU)
            return self.encoder.symmetric_tables(self.dense_weight())
        matrices = self.feature_matrices()
        columns = matrices.reshape(self.n_models, self.n_matrices, math.prod(matrices.shape[2:]))
        if self.encoder is None or encoded:
            return columns, columns.new_zeros(self.n_models, 0, columns.shape[2])
        return columns, self.encoder.prefix_sums(columns)

    def kth_eigenvalues(self, X: torch.Tensor, encoded: bool = False, plain: bool = False) -> torch.Tensor:
        """lambda_k (or its smoothed value) of every model's matrix, shape (batch, n_models), with a
        trailing axis for several indices; ``encoded``: X holds the rows' encoded columns. ``plain``:
        the matrices by torch's ops and the dense op (what torch.func's transforms and forward-mode AD
        take), not gathered or assembled next to the solver (whose ops are autograd's only)."""
        if self.smoothing is not None:
            M = self.matrices(X, encoded, plain=plain)
            return _ordered(_stacked([smoothed_kth_eigvalsh_unchecked(M, k, self.smoothing, self.eigen_backend)
                                      for k in self.eigval_indices]), self._several)
        # several indices go to the solver together: one assembly and reduction per matrix
        if self.gathers and not plain:
            return self._gathered_eigenvalues(*self.gathered_terms(X, encoded), encoded)
        if self.assembles and self.eigen_backend.packed_k is not None and not plain:
            Z = X if encoded else self.encoded(X)
            if _assembly.applies(Z, self.weight):  # the matrices' lower triangles only: half the product
                packed = _assembly.assembled_packed(Z, self.weight, self.mu_start, self.mu_increments,
                                                    shared=self._assembly_shared())
                return _ordered(kth_eigvalsh_packed_unchecked(packed, self.dim, self._indices(), self.eigen_backend),
                                self._several)
            X, encoded = Z, True
        return _ordered(kth_eigvalsh_unchecked(self.matrices(X, encoded, plain=plain), self._indices(),
                                               self.eigen_backend), self._several)

    def _gathered_eigenvalues(self, rows: torch.Tensor, weights: torch.Tensor, encoded: bool = False) -> torch.Tensor:
        """kth_eigenvalues on the gather path, from each row's terms (:meth:`gathered_terms`)."""
        return _ordered(kth_eigvalsh_gathered(*self.gather_tables(encoded), self.mu(), rows, weights, self._indices(),
                                              self.eigen_backend, dense=self.structure == "dense"), self._several)

    @property
    def _symmetric_tables(self) -> bool:
        """Whether the gather tables come from the encoder's symmetric_tables pass over the weight: an
        encoder, and matrices that are 0.5 (W + W^T) (no monotone column, no variant's own storage)."""
        return (self.encoder is not None and self.monotonic is None
                and type(self).feature_matrices is SpectralModel.feature_matrices)

    def compiled_pass(self, terms_of=None) -> "CompiledDensePass | None":
        """The training pass that calls the CPU kernels without autograd's engine
        (:class:`skspectral._compiled_pass.CompiledDensePass`; the same values and gradients), for
        a dense model whose matrices are 0.5 (W + W^T) where its kernels run; else None.
        ``terms_of(batch)``: a batch's gathered terms (default: :meth:`gathered_terms` of rows)."""
        if not (self._symmetric_tables and CompiledDensePass.applies(self)):
            return None
        kind = SharedMembersPass if self.n_shared_members else CompiledDensePass
        return kind(self, terms_of or self.gathered_terms)

    def output_of_values(self, values: torch.Tensor) -> torch.Tensor:
        """forward's output from the gathered eigenvalues (B, n_models, K) of every index (the
        compiled pass's; differentiable)."""
        return self._shaped(_ordered(values if self._several else values[..., 0], self._several))

    def forward_terms(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """f(x) of rows given by their terms (:meth:`gathered_terms` of the rows, not encoded), on the
        gather path (:attr:`gathers`): what a fit steps on when it finds its rows' terms once."""
        return self._shaped(self._gathered_eigenvalues(rows, weights))

    @property
    def _several(self) -> bool:
        return len(self.eigval_indices) > 1

    def _indices(self):
        """The solvers' k: an int, or the tuple of several indices."""
        return self.eigval_indices if self._several else self.eigval_indices[0]

    def forward(self, X: torch.Tensor, encoded: bool = False) -> torch.Tensor:
        """f(x) of each row of X (with ``encoded``: of each row of encoded columns, see
        :meth:`encoded`). Under torch.func's transforms (``functional_call`` with ``grad``, ``vmap``,
        ``jacrev``, ``jvp``, ...: per-sample gradients, a row's Jacobian in x) and forward-mode AD, the
        same function through torch's ops and :func:`skspectral.kth_eigvalsh`'s transformable op: the
        matrices M(x) built whole (O(columns * dim^2) a row, where a fit gathers O(features * dim^2)),
        the same values to rounding and their first derivatives, also in x (a fit's gathered solve
        takes none in x: the rows are data). Not with ``smoothing`` (a clear error)."""
        if self._under_transforms(X):
            if self.smoothing is not None:
                refuse_transforms(f"{type(self).__name__} with smoothing", X, *self.parameters())
            return self._shaped(self.kth_eigenvalues(X, encoded, plain=True))
        return self._shaped(self.kth_eigenvalues(X, encoded))

    def _under_transforms(self, X: torch.Tensor) -> bool:
        """Whether X or any parameter is a tensor of torch.func's transforms or forward-mode AD (e.g. a
        vmap over some parameters only), which only torch's ops and kth_eigvalsh's op take."""
        return any(transformed(tensor) for tensor in (X, *self.parameters()))

    def _shaped(self, values: torch.Tensor) -> torch.Tensor:
        """kth_eigenvalues' (batch, n_models[, K]) as forward returns them."""
        shape = (values.shape[0],) + ((self.n_members,) if self.n_members > 1 else ()) + (
            (self.n_outputs,) if self.n_outputs is not None else ()) + (
            (len(self.eigval_indices),) if not isinstance(self.eigval_idx, int) else ())
        return values.reshape(shape)

    @staticmethod
    def stored_matrix_norms(matrices: torch.Tensor) -> torch.Tensor:
        """||.||_2 of matrices as :meth:`feature_matrices` stores them (e.g. a fitted
        estimator's ``feature_matrices_``), without a module: torch.linalg, any device."""
        return torch.linalg.eigvalsh(matrices).abs().amax(dim=-1)

    @staticmethod
    def stored_frobenius_rows(matrices: torch.Tensor) -> torch.Tensor:
        """Rows (..., entries) of matrices as :meth:`feature_matrices` stores them whose Euclidean
        distances are the Frobenius norms of the matrices' differences (every entry)."""
        return matrices.flatten(-2)

    @classmethod
    def elements_per_matrix(cls, dim: int, smoothing: float | None = None) -> int:
        """Numbers a forward pass builds per matrix (one row, one output): memory planning."""
        return dim * dim

    def spectral_norms(self) -> torch.Tensor:
        """||A_j||_2 for each model and matrix, shape (n_models, n_matrices), differentiable."""
        return self.matrix_norms(self.feature_matrices())

    def matrix_norms(self, matrices: torch.Tensor) -> torch.Tensor:
        """||.||_2 of a (..., dim, dim) stack of symmetric matrices, with this module's eigen backend
        (both extreme eigenvalues from one call: one reduction of each matrix, not two; through its
        gathered kernel where it has one, the kernel a fit compiles anyway)."""
        backend = self.norm_backend
        solve = kth_eigvalsh_stacked if backend.gathered_k is not None else kth_eigvalsh_unchecked
        if self.dim == 1:
            return solve(matrices, 0, backend).abs()
        extremes = solve(matrices, (0, self.dim - 1), backend)
        return torch.maximum(extremes[..., 1], -extremes[..., 0])

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, dim={self.dim}, eigval_idx={self.eigval_idx}, "
                f"n_outputs={self.n_outputs}, n_members={self.n_members}, n_shared_members={self.n_shared_members}, "
                f"n_matrices={self.n_matrices}, "
                f"structure={self.structure!r}, smoothing={self.smoothing}")


class TridiagonalSpectralModel(SpectralModel):
    """f(x) = lambda_k(diag(mu) + sum_j z_j A_j) with symmetric tridiagonal A_j.

    Each A_j has a diagonal (dim) and an off-diagonal (dim - 1): O(dim)
    parameters per column instead of O(dim^2), and the k-th eigenvalue by
    Sturm-count multisection without a Householder step
    (:func:`skspectral.eig.kth_eigvalsh_tridiagonal`), so dim can be in the
    hundreds. A monotone column is A = +-L L^T with L lower bidiagonal (a
    tridiagonal PSD matrix). :meth:`feature_matrices` returns the band storage
    (n_models, n_matrices, 2, dim): row 0 the diagonal, row 1 the off-diagonal
    (last entry 0); :func:`band_to_dense` makes the full matrices.
    """

    structure = "tridiagonal"

    def _init_feature_matrices(self, init_scale: float, generator: torch.Generator | None, factory: dict) -> None:
        self.band_weight = torch.nn.Parameter(self._drawn_band(self.n_own_models, init_scale, generator).to(**factory))
        if self.monotonic is not None:
            self.register_buffer("monotonic_signs", self.monotonic.to(**factory)[:, None])
        self._init_shared(self._drawn_band, init_scale, generator, factory)  # shared_weight: band storage too

    def _drawn_band(self, n_models: int, init_scale: float, generator: torch.Generator | None) -> torch.Tensor:
        """The initial band storage of ``n_models`` models' matrices (float64, on the CPU)."""
        gaussian = self._standard_normal((n_models, self.n_matrices, 2, self.dim), generator)
        # a tridiagonal Gaussian's norm is O(1) in dim where a dense one's is O(sqrt(dim)):
        # entries sqrt(dim) times larger start at about the dense model's norms
        scale = init_scale * math.sqrt(self.dim) * self._column_init_factors()[:, None, None]
        band = scale * gaussian
        if self.monotonic is not None:
            # (L L^T)'s entries are products of two of L's: the square root of the scale
            constrained = (self.monotonic != 0)[None, :, None, None]
            band = torch.where(constrained, scale.sqrt() * gaussian, band)
        band[..., 1, -1] = 0.0
        return band

    def _bands(self, band_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(diagonals (models, n_matrices, dim), off-diagonals (..., dim - 1)) of stored bands."""
        diagonal, off = band_weight[..., 0, :], band_weight[..., 1, :-1]
        if self.monotonic is None:
            return diagonal, off
        # L lower bidiagonal, L_jj = a_j, L_{j+1,j} = b_j: (L L^T)_jj = a_j^2 + b_{j-1}^2,
        # (L L^T)_{j+1,j} = a_j b_j
        a, b = diagonal, off
        gram_diagonal = a.square() + F.pad(b.square(), (1, 0))
        gram_off = a[..., :-1] * b
        constrained = self.monotonic_signs != 0
        return (torch.where(constrained, self.monotonic_signs * gram_diagonal, diagonal),
                torch.where(constrained, self.monotonic_signs * gram_off, off))

    def _stored_bands(self, band_weight: torch.Tensor) -> torch.Tensor:
        diagonal, off = self._bands(band_weight)
        return torch.stack([diagonal, F.pad(off, (0, 1))], dim=-2)

    def feature_matrices(self) -> torch.Tensor:
        """Band storage of the A_j: (n_models, n_matrices, 2, dim), off-diagonal in row 1."""
        shared = self._stored_bands(self.shared_weight) if self.n_shared_members else None
        return self._with_shared(self._stored_bands(self.band_weight), shared)

    def _combined_bands(self, X: torch.Tensor, encoded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Diagonal (batch, n_models, dim) and off-diagonal (..., dim - 1) of each row's matrix."""
        Z = X if encoded else self.encoded(X)
        bands = self.feature_matrices()
        diagonal, off = bands[..., 0, :], bands[..., 1, :-1]
        models = self.n_models
        D = (Z @ diagonal.transpose(0, 1).reshape(self.n_matrices, models * self.dim)).view(X.shape[0], models, self.dim)
        E = (Z @ off.transpose(0, 1).reshape(self.n_matrices, models * (self.dim - 1))).view(
            X.shape[0], models, self.dim - 1)
        return D + self.mu(), E

    def matrices(self, X: torch.Tensor, encoded: bool = False, *, plain: bool | None = None) -> torch.Tensor:
        D, E = self._combined_bands(X, encoded)  # torch's ops: plain whatever ``plain`` says
        return torch.diag_embed(D) + torch.diag_embed(E, offset=-1) + torch.diag_embed(E, offset=1)

    def kth_eigenvalues(self, X: torch.Tensor, encoded: bool = False, plain: bool = False) -> torch.Tensor:
        if self.gathers and not plain:
            return super().kth_eigenvalues(X, encoded)
        D, E = self._combined_bands(X, encoded)
        if self.smoothing is not None:  # every eigenpair: the dense matrix (lower triangle read)
            M = torch.diag_embed(D) + torch.diag_embed(E, offset=-1)
            return _ordered(_stacked([smoothed_kth_eigvalsh_unchecked(M, k, self.smoothing, self.eigen_backend)
                                      for k in self.eigval_indices]), self._several)
        # no reduction to share on a tridiagonal matrix: one Sturm-count solve per index
        return _ordered(_stacked([kth_eigvalsh_tridiagonal_unchecked(D, E, k, self.eigen_backend)
                                  for k in self.eigval_indices]), self._several)

    def _resolve_norm_backend(self, device: torch.device, dtype: torch.dtype) -> EigenBackend:
        return select_tridiagonal_backend(self.backend if self.smoothing is None else "auto", device)

    @staticmethod
    def stored_matrix_norms(matrices: torch.Tensor) -> torch.Tensor:
        """||.||_2 of band storage (..., 2, dim), without a module."""
        return band_norms(matrices)

    @staticmethod
    def stored_frobenius_rows(matrices: torch.Tensor) -> torch.Tensor:
        """Band storage (..., 2, dim) as rows whose Euclidean distances are the Frobenius norms of the
        tridiagonal matrices' differences: the off-diagonal counts twice (above and below)."""
        return torch.cat([matrices[..., 0, :], matrices[..., 1, :] * math.sqrt(2.0)], dim=-1)

    @classmethod
    def elements_per_matrix(cls, dim: int, smoothing: float | None = None) -> int:
        # the two bands (and the solver's work) unless smoothing, which builds the dense matrices
        return 4 * dim if smoothing is None else dim * dim

    def matrix_norms(self, matrices: torch.Tensor) -> torch.Tensor:
        """||.||_2 of a (..., 2, dim) stack of tridiagonal matrices in band storage."""
        return band_norms(matrices, self.norm_backend)


class _OnPreparedRows(torch.nn.Module):
    """``model`` on rows a fit prepared once for its whole length (the encoder has no parameters);
    subclasses say how the prepared rows reach the model. Same parameters."""

    def __init__(self, model: SpectralModel):
        super().__init__()
        self.model = model

    @property
    def capture_safe(self) -> bool:
        return self.model.capture_safe


class OnGatheredTerms(_OnPreparedRows):
    """``model`` on its rows' gathered terms (:meth:`SpectralModel.gathered_terms`) packed in one
    tensor (rows, 2, terms) -- the table rows, as floats, then their weights -- instead of the rows:
    what a CPU fit on the gather path trains when it finds its rows' terms once, not at every step
    (the encoder's pass and its dozen arrays' hand-over, ~10 % of a step). Same parameters."""

    @staticmethod
    def packs(model: SpectralModel) -> bool:
        """Whether ``model``'s table rows are exact in its dtype (below 2**24 in float32)."""
        bound = model.n_matrices + model.encoder.prefix_rows.numel()  # more than any table row's index
        return bound <= 1 / torch.finfo(model.dtype).eps * 2  # every integer up to 2**24 (float32) is exact

    @staticmethod
    @torch.no_grad()
    def pack(model: SpectralModel, X: torch.Tensor) -> torch.Tensor:
        """The packed terms of rows X (see the class)."""
        rows, weights = model.gathered_terms(X)
        return torch.stack([rows.to(weights.dtype), weights], dim=1)

    def forward(self, terms: torch.Tensor) -> torch.Tensor:
        return self.model.forward_terms(*self.unpack(terms))

    @staticmethod
    def unpack(terms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed terms -> (rows, weights)."""
        return terms[:, 0].long(), terms[:, 1]

    def compiled_pass(self):
        compiled = self.model.compiled_pass(self.unpack)
        if compiled is not None:
            compiled.packed_terms = True  # compiled steps take the packed terms as they are
        return compiled


class OnEncodedRows(_OnPreparedRows):
    """``model`` on its rows' encoded columns (:meth:`SpectralModel.encoded`) instead of the rows:
    what a fit trains when it encodes its rows once, not at every step. Same parameters."""

    def forward(self, Z: torch.Tensor) -> torch.Tensor:
        return self.model(Z, encoded=True)


def _stacked(values: list) -> torch.Tensor:
    """One index's values as they are; several on a last axis."""
    return values[0] if len(values) == 1 else torch.stack(values, dim=-1)


def _ordered(values: torch.Tensor, several: bool) -> torch.Tensor:
    """Several indices' values (last axis) made non-decreasing along it exactly; one index's as
    they are. lambda_k1 <= lambda_k2 for k1 < k2 holds for every symmetric matrix, so the running
    maximum moves a value only by the solvers' rounding; it is 1-Lipschitz in the largest change
    of its inputs, so each output keeps the certified bound of every eigenvalue. The scan runs
    over a leading axis: torch's scan along a short last axis takes a CUDA block per row (54 us
    for flights' 5,240 rows of 3 levels against a 385 us step), along the first a thread per
    column; the values and gradients are the same."""
    return values.movedim(-1, 0).cummax(dim=0).values.movedim(0, -1) if several else values


def band_to_dense(bands: torch.Tensor) -> torch.Tensor:
    """Full symmetric matrices (..., dim, dim) from band storage (..., 2, dim)."""
    off = bands[..., 1, :-1]
    return torch.diag_embed(bands[..., 0, :]) + torch.diag_embed(off, offset=-1) + torch.diag_embed(off, offset=1)


def band_norms(bands: torch.Tensor, backend: EigenBackend | None = None) -> torch.Tensor:
    """||.||_2 of symmetric tridiagonal matrices in band storage (..., 2, dim)."""
    if backend is None:
        backend = select_tridiagonal_backend("auto", bands.device)
    diagonal, off = bands[..., 0, :], bands[..., 1, :-1]
    top = kth_eigvalsh_tridiagonal_unchecked(diagonal, off, bands.shape[-1] - 1, backend)
    bottom = kth_eigvalsh_tridiagonal_unchecked(diagonal, off, 0, backend)
    return torch.maximum(top, -bottom)


def model_class(structure: str) -> type[SpectralModel]:
    """The model class for a ``structure`` ("dense" or "tridiagonal")."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}.")
    return TridiagonalSpectralModel if structure == "tridiagonal" else SpectralModel
