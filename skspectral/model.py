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

import torch
import torch.nn.functional as F

from .eig import EigenBackend, check_eigval_index, kth_eigvalsh_unchecked, select_backend


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class SpectralModel(torch.nn.Module):
    """f(x) = lambda_k(diag(mu) + sum_i x_i A_i) for a batch of feature rows.

    Parameters
    ----------
    n_features : int
    dim : int
        Size of the symmetric matrices.
    eigval_idx : int or None
        k, ascending, negative counts from the top; None means ``dim // 2``.
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
    init_scale : float or None
        Std of the initial A_j entries; None means 1 / (sqrt(dim) * n_features),
        times the encoder's ``init_factor`` of each column where it has one.
    generator : torch.Generator or None
        CPU generator for the initial values (the same on every device).

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
        eigval_idx: int | None = None,
        *,
        n_outputs: int | None = None,
        n_members: int = 1,
        encoder: torch.nn.Module | None = None,
        backend: str = "auto",
        init_scale: float | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ):
        super().__init__()
        if int(dim) < 1 or int(n_features) < 1:
            raise ValueError(f"dim and n_features must be >= 1, got dim={dim}, n_features={n_features}.")
        self.n_features, self.dim = int(n_features), int(dim)
        self.eigval_idx = self.dim // 2 if eigval_idx is None else check_eigval_index(eigval_idx, self.dim, "eigval_idx")
        self.n_outputs = n_outputs
        self.n_members = int(n_members)
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}.")
        self.n_models = self.n_members * (1 if n_outputs is None else int(n_outputs))
        self.encoder = encoder
        self.n_matrices = self.n_features if encoder is None else int(encoder.n_columns)
        factory = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        select_backend(backend, torch.device(device or "cpu"), self.dim, factory["dtype"])  # fail at construction
        self.backend = backend
        self._eigen_backends: dict = {}
        if init_scale is None:
            init_scale = 1.0 / (math.sqrt(self.dim) * self.n_features)

        # Initial values are drawn in float64 on the CPU so that every device
        # and dtype starts from the same model.
        mu0 = torch.linspace(-1.0, 1.0, self.dim, dtype=torch.float64).expand(self.n_models, self.dim)
        self.mu_start = torch.nn.Parameter(mu0[:, :1].clone().to(**factory))
        self.mu_increments = torch.nn.Parameter(_softplus_inverse(mu0.diff(dim=-1).clamp_min(1e-3)).to(**factory))
        self._init_feature_matrices(init_scale, generator, factory)

    # ---- the construction hook: how the feature matrices are parameterised -------------
    def _init_feature_matrices(self, init_scale: float, generator: torch.Generator | None, factory: dict) -> None:
        """Create the parameters behind :meth:`feature_matrices` (symmetric Gaussian start)."""
        gaussian = torch.randn(
            self.n_models, self.n_matrices, self.dim, self.dim, generator=generator, dtype=torch.float64
        )
        sym = (gaussian + gaussian.transpose(-1, -2)) / math.sqrt(2.0)
        scale = init_scale * self._column_init_factors()[:, None, None]
        # Learned as a full matrix and symmetrised in use: eigh reads one
        # triangle, and this way every entry receives gradient.
        self.weight = torch.nn.Parameter((scale * sym).to(**factory))

    def _column_init_factors(self) -> torch.Tensor:
        """Relative initial scale of each encoded column's matrix (1 without an encoder)."""
        factors = getattr(self.encoder, "init_factor", None)
        if factors is None:
            return torch.ones(self.n_matrices, dtype=torch.float64)
        return torch.as_tensor(factors, dtype=torch.float64)

    def feature_matrices(self) -> torch.Tensor:
        """The symmetric A_j, shape (n_models, n_matrices, dim, dim)."""
        return 0.5 * (self.weight + self.weight.transpose(-1, -2))

    # ---- the model ---------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.mu_start.dtype

    @property
    def device(self) -> torch.device:
        return self.mu_start.device

    @property
    def eigen_backend(self) -> EigenBackend:
        """The eigen backend this module's calls use on its current device and dtype."""
        key = (self.device, self.dtype)
        backend = self._eigen_backends.get(key)
        if backend is None:
            backend = self._eigen_backends[key] = select_backend(self.backend, self.device, self.dim, self.dtype)
        return backend

    @property
    def capture_safe(self) -> bool:
        """A forward and backward can be captured in a CUDA graph (the eigen backend says so)."""
        return self.eigen_backend.capture_safe

    def mu(self) -> torch.Tensor:
        """The non-decreasing diagonal, shape (n_models, dim)."""
        steps = F.softplus(self.mu_increments).cumsum(dim=-1)
        return torch.cat([self.mu_start, self.mu_start + steps], dim=-1)

    def matrices(self, X: torch.Tensor) -> torch.Tensor:
        """diag(mu) + sum_j z_j A_j for each row of X: shape (batch, n_models, dim, dim)."""
        Z = X if self.encoder is None else self.encoder(X)
        A = self.feature_matrices().transpose(0, 1).reshape(self.n_matrices, -1)  # (columns, models*dim*dim)
        M = (Z @ A).view(X.shape[0], self.n_models, self.dim, self.dim)
        return M + torch.diag_embed(self.mu())

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        values = kth_eigvalsh_unchecked(self.matrices(X), self.eigval_idx, self.eigen_backend)
        shape = (X.shape[0],) + ((self.n_members,) if self.n_members > 1 else ()) + (
            (self.n_outputs,) if self.n_outputs is not None else ())
        return values.reshape(shape)

    def spectral_norms(self) -> torch.Tensor:
        """||A_j||_2 for each model and matrix, shape (n_models, n_matrices), differentiable."""
        return self.matrix_norms(self.feature_matrices())

    def matrix_norms(self, matrices: torch.Tensor) -> torch.Tensor:
        """||.||_2 of a (..., dim, dim) stack of symmetric matrices, with this module's eigen backend."""
        top = kth_eigvalsh_unchecked(matrices, self.dim - 1, self.eigen_backend)
        bottom = kth_eigvalsh_unchecked(matrices, 0, self.eigen_backend)
        return torch.maximum(top, -bottom)

    def extra_repr(self) -> str:
        return (f"n_features={self.n_features}, dim={self.dim}, eigval_idx={self.eigval_idx}, "
                f"n_outputs={self.n_outputs}, n_members={self.n_members}, n_matrices={self.n_matrices}")
