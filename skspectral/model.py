"""The eigenvalue model as a torch module, usable without scikit-learn.

    f(x) = lambda_k(diag(mu) + sum_i x_i A_i)

mu is non-decreasing (a start value plus softplus-positive increments) and
each A_i is symmetric. With ``n_outputs`` set, the module holds that many
independent models and evaluates all of them in one batched eigen call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .eig import check_eigval_index, kth_eigvalsh


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
        None: one model, ``forward`` returns shape (batch,). An int: that many
        models, ``forward`` returns (batch, n_outputs).
    backend : str
        Eigen backend passed to :func:`skspectral.kth_eigvalsh`.
    init_scale : float or None
        Std of the initial A_i entries; None means 1 / (sqrt(dim) * n_features).
    generator : torch.Generator or None
        CPU generator for the initial values (the same on every device).
    """

    def __init__(
        self,
        n_features: int,
        dim: int,
        eigval_idx: int | None = None,
        *,
        n_outputs: int | None = None,
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
        self.backend = backend
        n_models = 1 if n_outputs is None else int(n_outputs)
        if init_scale is None:
            init_scale = 1.0 / (math.sqrt(self.dim) * self.n_features)

        # Initial values are drawn in float64 on the CPU so that every device
        # and dtype starts from the same model.
        mu0 = torch.linspace(-1.0, 1.0, self.dim, dtype=torch.float64).expand(n_models, self.dim)
        gaussian = torch.randn(n_models, self.n_features, self.dim, self.dim, generator=generator, dtype=torch.float64)
        sym = (gaussian + gaussian.transpose(-1, -2)) / math.sqrt(2.0)
        factory = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        self.mu_start = torch.nn.Parameter(mu0[:, :1].clone().to(**factory))
        self.mu_increments = torch.nn.Parameter(_softplus_inverse(mu0.diff(dim=-1).clamp_min(1e-3)).to(**factory))
        # Learned as a full matrix and symmetrised in use: eigh reads one
        # triangle, and this way every entry receives gradient.
        self.weight = torch.nn.Parameter((init_scale * sym).to(**factory))

    def mu(self) -> torch.Tensor:
        """The non-decreasing diagonal, shape (n_models, dim)."""
        steps = F.softplus(self.mu_increments).cumsum(dim=-1)
        return torch.cat([self.mu_start, self.mu_start + steps], dim=-1)

    def feature_matrices(self) -> torch.Tensor:
        """The symmetric A_i, shape (n_models, n_features, dim, dim)."""
        return 0.5 * (self.weight + self.weight.transpose(-1, -2))

    def matrices(self, X: torch.Tensor) -> torch.Tensor:
        """diag(mu) + sum_i x_i A_i for each row of X: shape (batch, n_models, dim, dim)."""
        n_models = self.weight.shape[0]
        A = self.feature_matrices().transpose(0, 1).reshape(self.n_features, -1)  # (F, models*dim*dim)
        M = (X @ A).view(X.shape[0], n_models, self.dim, self.dim)
        return M + torch.diag_embed(self.mu())

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        values = kth_eigvalsh(self.matrices(X), self.eigval_idx, backend=self.backend)
        return values[:, 0] if self.n_outputs is None else values

    def spectral_norms(self) -> torch.Tensor:
        """||A_i||_2 for each model and feature, shape (n_models, n_features), differentiable."""
        A = self.feature_matrices()
        top = kth_eigvalsh(A, -1, backend=self.backend)
        bottom = kth_eigvalsh(A, 0, backend=self.backend)
        return torch.maximum(top, -bottom)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, dim={self.dim}, eigval_idx={self.eigval_idx}, n_outputs={self.n_outputs}"
