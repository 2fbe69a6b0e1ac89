"""Feature encodings on the device: each input column becomes one or more encoded
columns z_j, and the model is M(x) = diag(mu) + sum_j z_j(x) A_j.

- numeric, linear: z = x (the series' model; x standardised);
- numeric, piecewise linear: bins b_0 < ... < b_T, z_t = clip((x - b_t) / (b_{t+1} - b_t), 0, 1),
  so sum_t z_t A_t is a continuous piecewise-linear path of matrices in x;
- numeric, missing: a feature with missing values in training gets one more column,
  1 where x is NaN (its numeric columns are then 0);
- categorical: one column per level (one-hot), codes from the host side; code -1
  (unseen or rare) goes to the feature's "other" level, code -2 (missing) to its
  "missing" level where one was seen in training, else to "other".

A row's encoded columns are mostly 0 or 1: a piecewise-linear feature's bins are 1 up to
the row's bin, a fraction there and 0 beyond, and a categorical feature has one level. So
sum_j z_j A_j is also a sum of a few gathered matrices (``terms`` and ``prefix_sums``): per
piecewise feature the prefix sum of its matrices up to the row's bin plus the fraction of
that bin's matrix, per level its matrix -- O(features) matrices per row instead of
O(columns) (equal to rounding).

Usable without scikit-learn: build an :class:`EncodingSpec` by hand or let the
estimators fit one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from .eig._numba_support import numba_module, run_kernel

# column kinds
LINEAR, PIECEWISE, MISSING, LEVEL = 0, 1, 2, 3


@dataclass
class EncodingSpec:
    """How each input column is encoded (numpy only: it pickles with the estimator).

    n_features: input columns. numeric: indices of numeric features. edges: for
    piecewise-linear encoding, a list (per numeric feature) of increasing bin edges
    in the feature's standardised units, or None for the linear encoding of that
    feature. missing: numeric feature indices that get a missing-value column.
    categorical: indices of categorical features; n_levels: their number of levels
    (every level seen in training, plus "other", plus "missing" where seen).
    has_missing_level: per categorical feature, whether its last level is "missing".
    gated: per gated copy, (its source numeric feature, its categorical feature): the last
    len(gated) features are numeric copies of their sources, active where the categorical
    feature holds one level (``skspectral._columns.gates``; the host rows carry them), whose
    sensitivities count towards those two input columns.
    """

    n_features: int
    numeric: list = field(default_factory=list)
    edges: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    categorical: list = field(default_factory=list)
    n_levels: list = field(default_factory=list)
    has_missing_level: list = field(default_factory=list)
    gated: tuple = ()

    @classmethod
    def linear(cls, n_features: int) -> "EncodingSpec":
        return cls(n_features, numeric=list(range(n_features)), edges=[None] * n_features)

    @property
    def n_inputs(self) -> int:
        """The input columns: the features less the gated copies."""
        return self.n_features - len(self.gated)

    @property
    def is_plain_linear(self) -> bool:
        """Every feature numeric, linear, without a missing column: z = x."""
        return (not self.categorical and not self.missing and all(e is None for e in self.edges)
                and list(self.numeric) == list(range(self.n_features)))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(feature, kind, width) of every encoded column, in the encoder's output order.

        width: a piecewise-linear column's bin width (standardised units), else 1.
        """
        feature, kind, width = [], [], []
        for i, edges in zip(self.numeric, self.edges):  # linear features first, as FeatureEncoder
            if edges is None:
                feature.append(i), kind.append(LINEAR), width.append(1.0)
        for i, edges in zip(self.numeric, self.edges):
            if edges is not None:
                widths = np.diff(np.asarray(edges, dtype=np.float64))
                feature += [i] * len(widths)
                kind += [PIECEWISE] * len(widths)
                width += widths.tolist()
        for i in self.missing:
            feature.append(i), kind.append(MISSING), width.append(1.0)
        for i, levels in zip(self.categorical, self.n_levels):
            feature += [i] * levels
            kind += [LEVEL] * levels
            width += [1.0] * levels
        return np.asarray(feature, dtype=np.int64), np.asarray(kind, dtype=np.int64), np.asarray(width)

    @property
    def n_columns(self) -> int:
        return len(self.columns()[0])


class FeatureEncoder(torch.nn.Module):
    """Maps input rows (B, n_features) to encoded columns (B, n_columns) per an EncodingSpec.

    Input: numeric features standardised (NaN for missing), categorical features as
    integer codes (level index, -1 unseen or rare, -2 missing). No learned parameters:
    the bin edges are buffers, so the encoder moves with the model.
    """

    def __init__(self, spec: EncodingSpec, dtype=None, device=None):
        super().__init__()
        self.spec = spec
        factory = {"dtype": dtype or torch.get_default_dtype(), "device": device}
        linear = [i for i, e in zip(spec.numeric, spec.edges) if e is None]
        piecewise = [(i, np.asarray(e, dtype=np.float64)) for i, e in zip(spec.numeric, spec.edges) if e is not None]
        self.register_buffer("linear_index", torch.tensor(linear, dtype=torch.long, device=device))
        self.register_buffer("piecewise_index", torch.tensor([i for i, _ in piecewise], dtype=torch.long, device=device))
        # Bins of every piecewise feature in one (F, T) table; shorter rows are padded with
        # bins of infinite width, whose columns are dropped.
        n_bins = max((len(e) - 1 for _, e in piecewise), default=0)
        left = np.zeros((len(piecewise), n_bins))
        width = np.full((len(piecewise), n_bins), np.inf)
        for row, (_, edges) in enumerate(piecewise):
            left[row, : len(edges) - 1] = edges[:-1]
            width[row, : len(edges) - 1] = np.diff(edges)
        self.register_buffer("bin_left", torch.tensor(left, **factory))
        self.register_buffer("bin_width", torch.tensor(width, **factory))
        # the real bins' positions in the flattened table: an index, not a boolean mask, so the
        # selection has a fixed shape and needs no host sync (a CUDA graph can capture it)
        self.register_buffer("piecewise_columns", torch.tensor(np.flatnonzero(np.isfinite(width).ravel()),
                                                               dtype=torch.long, device=device))
        self.register_buffer("missing_index", torch.tensor(list(spec.missing), dtype=torch.long, device=device))
        self.register_buffer("categorical_index", torch.tensor(list(spec.categorical), dtype=torch.long, device=device))
        offsets = np.concatenate([[0], np.cumsum(spec.n_levels)])[:-1].astype(np.int64)
        n_levels = np.asarray(spec.n_levels, dtype=np.int64)
        has_missing = np.asarray(spec.has_missing_level, dtype=bool)
        # code -1 -> "other" (the level after the seen ones); -2 -> "missing" where seen, else "other"
        other = n_levels - 1 - has_missing
        missing = np.where(has_missing, n_levels - 1, other)
        self.register_buffer("level_offset", torch.tensor(offsets, dtype=torch.long, device=device))
        self.register_buffer("level_other", torch.tensor(other, dtype=torch.long, device=device))
        self.register_buffer("level_missing", torch.tensor(missing, dtype=torch.long, device=device))
        self.n_levels_total = int(n_levels.sum())
        self.n_columns = spec.n_columns
        # Relative initial scale per column (SpectralModel reads it): a piecewise feature's
        # T columns are about half active at once, so each starts 1/sqrt(T) as large as a
        # linear column; a categorical feature has one active level, like one linear column.
        feature, kind, _ = spec.columns()
        bins_of = {i: len(e) - 1 for i, e in zip(spec.numeric, spec.edges) if e is not None}
        self.init_factor = np.where(kind == PIECEWISE, 1.0 / np.sqrt([bins_of.get(i, 1) for i in feature]), 1.0)
        self._register_gather_plan(kind, len(linear), [len(e) - 1 for _, e in piecewise], n_bins, offsets, device)

    def _register_gather_plan(self, kind, n_linear, bins, n_bins, level_offsets, device) -> None:
        """Where each term of a row lives for :meth:`terms`: rows 0..n_columns-1 are the encoded
        columns' matrices (in output order), then :meth:`prefix_sums`' rows: per piecewise feature
        the prefix sums P_1..P_T of its bins' matrices (P_0, nothing, is row -1)."""
        n_columns = len(kind)
        starts = n_linear + np.concatenate([[0], np.cumsum(bins)])[:-1].astype(np.int64)
        grid = np.full((len(bins), n_bins), n_columns, dtype=np.int64)  # bin t's column (padding: a zero row)
        prefix = np.full((len(bins), n_bins + 1), -1, dtype=np.int64)  # P_b's row (b = 0: nothing)
        last_bin = np.full((len(bins), n_bins + 1), -1, dtype=np.int64)  # bin b's column (b = T: nothing)
        for f, (start, t) in enumerate(zip(starts, bins)):
            grid[f, :t] = start + np.arange(t)
            prefix[f, 1 : t + 1] = n_columns + f * n_bins + np.arange(t)
            last_bin[f, :t] = start + np.arange(t)
        long = dict(dtype=torch.long, device=device)
        self.register_buffer("linear_columns", torch.arange(n_linear, **long))
        self.register_buffer("bin_columns", torch.tensor(grid, **long))
        # the columns in no feature's bins (linear, missing-value and level columns)
        self.register_buffer("other_columns", torch.tensor(np.setdiff1d(np.arange(n_columns), grid), **long))
        self.register_buffer("prefix_rows", torch.tensor(prefix, **long))
        self.register_buffer("bin_rows", torch.tensor(last_bin, **long))
        self.register_buffer("n_bins_of", torch.tensor(bins, **long))
        first_missing = n_linear + int(np.sum(bins))
        self.register_buffer("missing_columns", torch.arange(first_missing, first_missing + len(self.spec.missing),
                                                             **long))
        self.register_buffer("level_columns", torch.tensor(first_missing + len(self.spec.missing) + level_offsets,
                                                           **long))

    def prefix_sums(self, columns: torch.Tensor) -> torch.Tensor:
        """Each piecewise feature's prefix sums P_1..P_T of its bins' matrices, from the encoded
        columns' matrices (models, n_columns, L): (models, features * max bins, L), padded."""
        F, T = self.bin_columns.shape
        if not F:
            return columns.new_zeros(columns.shape[0], 0, columns.shape[2])
        if _compiled_for(columns) is not None:
            return _CompiledPrefixSums.apply(columns, self.bin_columns)
        padded = torch.cat([columns, columns.new_zeros(columns.shape[0], 1, columns.shape[2])], dim=1)
        bins = padded.index_select(1, self.bin_columns.reshape(-1)).view(columns.shape[0], F, T, -1)
        return bins.cumsum(dim=2).reshape(columns.shape[0], F * T, -1)

    def symmetric_tables(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the symmetric parts A = 0.5 (W + W^T) of the columns' square matrices W (models,
        n_columns, n, n), their lower triangles packed row by row: (models, n_columns, n(n+1)/2);
        :meth:`prefix_sums` of them): what a dense model gathers from (skspectral.eig._gathered's
        packed rows: half the bytes of full matrices to gather, scatter and sum). On the CPU one
        compiled pass each way (the same bits as the torch ops, which it replaces)."""
        if _compiled_for(weight) is not None:
            return _CompiledSymmetricTables.apply(weight, self.bin_columns, self.other_columns)
        n = weight.shape[-1]
        lower = torch.tril_indices(n, n, device=weight.device)  # row by row, as packed
        symmetric = 0.5 * (weight + weight.transpose(-1, -2))
        columns = symmetric[..., lower[0], lower[1]]
        return columns, self.prefix_sums(columns)

    def terms(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's (rows (B, T), weights (B, T)) of the columns' matrices followed by
        :meth:`prefix_sums` (-1: nothing): sum_t weights * those rows is sum_j z_j A_j. On the
        CPU one compiled pass (Numba; no per-bin temporaries), else torch ops; the same values."""
        compiled = _compiled_for(X)
        if compiled is not None:
            return self._compiled_terms(compiled.terms, X)
        return self._torch_terms(X)

    def _compiled_terms(self, kernel, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_terms = (len(self.linear_index) + 2 * len(self.piecewise_index) + len(self.missing_index)
                   + len(self.categorical_index))
        rows = torch.empty((X.shape[0], n_terms), dtype=torch.long)
        weights = torch.empty((X.shape[0], n_terms), dtype=X.dtype)
        arrays = (self.linear_index, self.linear_columns, self.piecewise_index, self.bin_left, self.bin_width,
                  self.n_bins_of, self.prefix_rows, self.bin_rows, self.missing_index, self.missing_columns,
                  self.categorical_index, self.level_other, self.level_missing, self.level_columns)
        kernel(X.contiguous().numpy(), *(a.numpy() for a in arrays), rows.numpy(), weights.numpy())
        return rows, weights

    def _torch_terms(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, weights = [], []
        B = X.shape[0]
        if len(self.linear_index):
            rows.append(self.linear_columns.expand(B, -1))
            weights.append(torch.nan_to_num(X[:, self.linear_index], nan=0.0))
        if len(self.piecewise_index):
            x = X[:, self.piecewise_index, None]
            z = ((x - self.bin_left) / self.bin_width).clamp(0.0, 1.0)  # the dense columns; NaN stays NaN
            passed = (z >= 1.0).sum(dim=2, keepdim=True)  # whole bins below x (0 for NaN)
            fraction = torch.nan_to_num(z, nan=0.0).gather(2, passed.clamp_max(z.shape[2] - 1)).squeeze(2)
            fraction = fraction * (passed.squeeze(2) < self.n_bins_of)  # past the last bin: none
            rows.append(self.prefix_rows.expand(B, -1, -1).gather(2, passed).squeeze(2))
            weights.append(torch.ones_like(fraction))
            rows.append(self.bin_rows.expand(B, -1, -1).gather(2, passed).squeeze(2))  # -1 past the last bin
            weights.append(fraction)
        if len(self.missing_index):
            rows.append(self.missing_columns.expand(B, -1))
            weights.append(torch.isnan(X[:, self.missing_index]).to(X.dtype))
        if len(self.categorical_index):
            codes = X[:, self.categorical_index].long()
            codes = torch.where(codes == -1, self.level_other, torch.where(codes == -2, self.level_missing, codes))
            rows.append(codes + self.level_columns)
            weights.append(torch.ones(B, codes.shape[1], dtype=X.dtype, device=X.device))
        if not rows:
            return X.new_zeros((B, 0), dtype=torch.long), X.new_zeros((B, 0))
        return torch.cat(rows, dim=1), torch.cat(weights, dim=1)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        parts = []
        if len(self.linear_index):
            parts.append(torch.nan_to_num(X[:, self.linear_index], nan=0.0))
        if len(self.piecewise_index):
            x = X[:, self.piecewise_index, None]  # (B, F, 1)
            z = ((x - self.bin_left) / self.bin_width).clamp(0.0, 1.0)  # NaN stays NaN
            parts.append(torch.nan_to_num(z.flatten(1).index_select(1, self.piecewise_columns), nan=0.0))
        if len(self.missing_index):
            parts.append(torch.isnan(X[:, self.missing_index]).to(X.dtype))
        if len(self.categorical_index):
            codes = X[:, self.categorical_index].long()
            codes = torch.where(codes == -1, self.level_other, torch.where(codes == -2, self.level_missing, codes))
            # out of place: torch.func's vmap has a batching rule for scatter, none for scatter_ (a slow fallback)
            parts.append(X.new_zeros(X.shape[0], self.n_levels_total).scatter(1, codes + self.level_offset, 1.0))
        return torch.cat(parts, dim=1) if parts else X.new_zeros((X.shape[0], 0))  # no column carries anything


@functools.cache
def _compiled():
    """The encoder's compiled passes (:mod:`skspectral._encoding_kernels`), or None without Numba."""
    if numba_module() is None:
        return None
    from . import _encoding_kernels

    return _encoding_kernels


def compiles(tensor: torch.Tensor) -> bool:
    """Whether the encoder's passes on ``tensor`` run compiled (a CPU float tensor, Numba imports)."""
    return _compiled_for(tensor) is not None


def _compiled_for(tensor: torch.Tensor):
    """The compiled passes where they take ``tensor`` (a CPU float32 or float64 one), else None."""
    if tensor.device.type != "cpu" or tensor.dtype not in (torch.float32, torch.float64):
        return None
    return _compiled()


class _CompiledPrefixSums(torch.autograd.Function):
    """:meth:`FeatureEncoder.prefix_sums` on the CPU in one compiled pass each way: torch's
    cat, index_select and cumsum (and their backward: flips, a cumsum, an index_add into zeros)
    cost more than the gathered eigenproblems they serve. The same sums in the same order."""

    @staticmethod
    def forward(ctx, columns, bin_columns):
        F, T = bin_columns.shape
        out = torch.empty((columns.shape[0], F * T, columns.shape[2]), dtype=columns.dtype)
        kernels = _compiled()
        _run_pairs(kernels.prefix_forward_serial, kernels.prefix_forward_parallel,
                   (columns.detach().contiguous().numpy(), bin_columns.numpy(), out.numpy()), out.shape)
        ctx.save_for_backward(bin_columns)
        ctx.n_columns = columns.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError("prefix_sums is differentiable once (no double backward).")
        (bin_columns,) = ctx.saved_tensors
        grad = torch.zeros((grad_out.shape[0], ctx.n_columns, grad_out.shape[2]), dtype=grad_out.dtype)
        kernels = _compiled()
        _run_pairs(kernels.prefix_backward_serial, kernels.prefix_backward_parallel,
                   (grad_out.contiguous().numpy(), bin_columns.numpy(), grad.numpy()), grad_out.shape)
        return grad, None


class _CompiledSymmetricTables(torch.autograd.Function):
    """:meth:`FeatureEncoder.symmetric_tables` on the CPU: the symmetric parts and their prefix
    sums in one compiled pass; backward, W's gradient from both outputs' in one pass."""

    @staticmethod
    def forward(ctx, weight, bin_columns, other_columns):
        models, n_columns, n = weight.shape[0], weight.shape[1], weight.shape[2]
        packed = n * (n + 1) // 2
        columns = torch.empty((models, n_columns, packed), dtype=weight.dtype)
        out = torch.empty((models, bin_columns.numel(), packed), dtype=weight.dtype)
        symmetric_tables_into(weight.detach().contiguous(), bin_columns, other_columns, columns, out)
        ctx.save_for_backward(bin_columns, other_columns)
        ctx.shapes = (columns.shape, out.shape)
        ctx.n = n
        return columns, out

    @staticmethod
    def backward(ctx, grad_columns, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError("symmetric_tables is differentiable once (no double backward).")
        bin_columns, other_columns = ctx.saved_tensors
        (models, n_columns, L), out_shape = ctx.shapes
        dtype = (grad_columns if grad_columns is not None else grad_out).dtype
        grad_columns = torch.zeros(ctx.shapes[0], dtype=dtype) if grad_columns is None else grad_columns.contiguous()
        grad_out = torch.zeros(out_shape, dtype=dtype) if grad_out is None else grad_out.contiguous()
        grad = torch.empty((models, n_columns, ctx.n, ctx.n), dtype=dtype)
        symmetric_tables_grad_into(grad_columns, grad_out, bin_columns, other_columns, grad)
        return grad, None, None


def symmetric_tables_into(weight: torch.Tensor, bin_columns: torch.Tensor, other_columns: torch.Tensor,
                          columns: torch.Tensor, out: torch.Tensor) -> None:
    """:meth:`FeatureEncoder.symmetric_tables`' two outputs written into ``columns`` and ``out``
    (contiguous CPU tensors of their shapes) by the compiled pass, from a contiguous weight; no
    autograd (the compiled training step binds the same call to its buffers: SymmetricTablesPasses)."""
    args, size = _symmetric_forward_args(weight, bin_columns, other_columns, columns, out)
    run_kernel(_compiled().symmetric_forward_serial, _compiled().symmetric_forward_parallel, args, *size)


def symmetric_tables_grad_into(grad_columns: torch.Tensor, grad_out: torch.Tensor, bin_columns: torch.Tensor,
                               other_columns: torch.Tensor, grad: torch.Tensor) -> None:
    """W's gradient (into ``grad``, every element written) from the gradients of
    :func:`symmetric_tables_into`'s two outputs (contiguous)."""
    args, size = _symmetric_backward_args(grad_columns, grad_out, bin_columns, other_columns, grad)
    run_kernel(_compiled().symmetric_backward_serial, _compiled().symmetric_backward_parallel, args, *size)


class SymmetricTablesPasses:
    """:func:`symmetric_tables_into` and :func:`symmetric_tables_grad_into` on tensors a training
    step keeps: their arrays found once (a step then pays the kernel and its thread choice, not a
    dozen conversions). ``forward()`` writes ``columns`` and ``out`` from ``weight``; ``backward()``
    writes ``grad`` from ``grad_columns`` and ``grad_out``. The tensors must keep their storage.
    ``forward_args`` and ``forward_size`` (items, work, elementwise: see ``run_kernel``), and the
    backward's, are what a compiled caller passes the kernels itself."""

    def __init__(self, weight, bin_columns, other_columns, columns, out, grad_columns, grad_out, grad):
        self.forward_args, self.forward_size = _symmetric_forward_args(weight, bin_columns, other_columns,
                                                                       columns, out)
        self.backward_args, self.backward_size = _symmetric_backward_args(grad_columns, grad_out, bin_columns,
                                                                          other_columns, grad)

    def forward(self) -> None:
        run_kernel(_compiled().symmetric_forward_serial, _compiled().symmetric_forward_parallel, self.forward_args,
                   *self.forward_size)

    def backward(self) -> None:
        run_kernel(_compiled().symmetric_backward_serial, _compiled().symmetric_backward_parallel,
                   self.backward_args, *self.backward_size)


def _symmetric_forward_args(weight, bin_columns, other_columns, columns, out) -> tuple:
    """(the forward kernel's arrays, (its items, its work, elementwise: see ``run_kernel``))."""
    models, F = weight.shape[0], bin_columns.shape[0]
    return ((weight.detach().numpy(), bin_columns.numpy(), other_columns.numpy(), columns.numpy(), out.numpy(),
             _half(weight.dtype)),
            (models * (F + other_columns.shape[0]), models * (weight.shape[1] + out.shape[1]) * columns.shape[2],
             True))


def _symmetric_backward_args(grad_columns, grad_out, bin_columns, other_columns, grad) -> tuple:
    """(the backward kernel's arrays, (its items, its work, elementwise: see ``run_kernel``))."""
    models, n_columns, L = grad_columns.shape
    # W's gradient (models, n_columns, n, n) as the kernel writes it: each matrix flattened
    return ((grad_columns.numpy(), grad_out.numpy(), bin_columns.numpy(), other_columns.numpy(),
             grad.view(models, n_columns, grad.shape[-2] * grad.shape[-1]).numpy(), _half(grad.dtype)),
            (models * (bin_columns.shape[0] + other_columns.shape[0]), models * (n_columns + grad_out.shape[1]) * L,
             True))


def _half(dtype: torch.dtype):
    """0.5 as a numpy scalar of ``dtype``: a compiled kernel's float32 arithmetic stays float32."""
    return np.float32(0.5) if dtype == torch.float32 else np.float64(0.5)


def _run_pairs(serial, parallel, args: tuple, prefix_shape: tuple) -> None:
    """A prefix-sum kernel over its (model, feature) pairs, on torch's threads where they pay."""
    n_models, n_rows, L = prefix_shape
    pairs = n_models * args[1].shape[0]
    run_kernel(serial, parallel, args, pairs, n_models * n_rows * L, elementwise=True)
