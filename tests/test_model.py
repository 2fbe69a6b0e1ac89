"""SpectralModel, the torch module: usable without scikit-learn, one construction hook."""

import dataclasses

import numpy as np
import pytest
import torch

from skspectral import SpectralModel, kth_eigvalsh


def test_model_module_without_sklearn():
    model = SpectralModel(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64)
    out = model(x)
    assert out.shape == (7,)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    multi = SpectralModel(3, 5, n_outputs=4, dtype=torch.float64)
    assert multi(x).shape == (7, 4)
    assert multi.spectral_norms().shape == (4, 3)
    assert model.dtype == torch.float64 and model.device == torch.device("cpu")


@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
@pytest.mark.parametrize("eigval_idx", [2, [1, 3]])
@pytest.mark.parametrize("device,variant", [("cpu", "plain"), ("cpu", "monotone and shared members"),
                                            pytest.param("cuda", "plain", marks=pytest.mark.cuda),
                                            pytest.param("cuda", "monotone and shared members", marks=pytest.mark.cuda)])
def test_the_module_under_torch_func_and_forward_mode_gives_f_and_its_first_derivatives(structure, eigval_idx,
                                                                                        device, variant):
    """functional_call with vmap of grad (per-sample gradients), vmap, jacrev and jvp in x, and dual tensors
    give forward's values (the gathered solve's, to rounding) and autograd's first derivatives: in the
    parameters, autograd's row by row; in x, autograd's on the matrices built whole (gather=False: the
    gathered solve takes none in x, the rows are data). Encoded columns of every kind (piecewise, missing,
    levels). A second derivative is refused. (Before, each raised a clear NotImplementedError; before that,
    "Cannot access data pointer of Tensor that doesn't have storage", or a dual input's tangent was dropped.)"""
    from torch.autograd import forward_ad
    from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap

    from skspectral.encoding import EncodingSpec, FeatureEncoder
    from skspectral.model import model_class

    spec = EncodingSpec(4, numeric=[0, 1, 3], edges=[None, [-1.0, 0.0, 2.0], [-2.0, -1.0, 0.0, 1.0, 2.0]],
                        missing=[1], categorical=[2], n_levels=[4], has_missing_level=[True])
    # increasing in feature 0 (its linear column), decreasing in feature 3 (its four piecewise columns)
    signs = [1, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0, 0]
    extra = dict(monotonic=signs, n_members=3, n_shared_members=1) if variant != "plain" else {}
    encoder = FeatureEncoder(spec, dtype=torch.float64, device=device)
    model = model_class(structure)(4, 5, eigval_idx, n_outputs=2, encoder=encoder, device=device,
                                   generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                                   **({"n_members": 2} | extra))
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, dtype=torch.float64, generator=rng)
    x[:, 2] = torch.tensor([0, 1, 2, 3, -1, -2, 0, 1, 2], dtype=torch.float64)  # levels, "other", "missing"
    x[1, 1] = float("nan")
    y = torch.randn(9, dtype=torch.float64, generator=rng)
    x, y = x.to(device), y.to(device)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, row, target):
        return ((functional_call(model, p, (row[None],)) - target) ** 2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for b in range(x.shape[0]):
        model.zero_grad()
        ((model(x[b : b + 1]) - y[b]) ** 2).sum().backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][b], p.grad, rtol=1e-9, atol=1e-12)
    values = model(x).detach()
    torch.testing.assert_close(vmap(lambda row: model(row[None])[0])(x), values, rtol=1e-12, atol=1e-12)

    model.gather = False  # autograd in x: the matrices built whole
    reference = torch.autograd.functional.jacobian(lambda rows: model(rows), x)  # (9, outputs..., 9, 4)
    jacobian = vmap(jacrev(lambda row: model(row[None])[0]))(x)  # (9, outputs..., 4)
    outputs = values.shape[1:]
    rows = torch.arange(9, device=device)
    diagonal = reference.reshape(9, -1, 9, 4)[rows, :, rows].reshape(9, *outputs, 4)
    torch.testing.assert_close(jacobian, diagonal, rtol=1e-9, atol=1e-12)
    model.gather = True
    tangent = torch.randn(x.shape, dtype=torch.float64, generator=rng).to(device)
    tangent[:, 2] = 0.0  # the level codes are data
    expected_tangent = torch.einsum("bobf,bf->bo", reference.reshape(9, -1, 9, 4), tangent).reshape(values.shape)
    out, out_tangent = jvp(model, (x,), (tangent,))
    torch.testing.assert_close(out, values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_tangent, expected_tangent, rtol=1e-9, atol=1e-12)
    with forward_ad.dual_level():
        dual = forward_ad.unpack_dual(model(forward_ad.make_dual(x, tangent)))
    torch.testing.assert_close(dual.tangent, expected_tangent, rtol=1e-9, atol=1e-12)
    with pytest.raises(RuntimeError, match="differentiable once|second derivative"):
        hessian(lambda row: model(row[None]).sum())(x[0])


def test_under_torch_func_the_model_hands_no_tensor_to_the_cuda_assembly(monkeypatch):
    """The CUDA assembly's kernels are autograd's only: under a transform of any tensor they would read --
    here a vmap over ``mu_start`` alone, rows and weight plain -- forward and ``matrices`` build the matrices
    with torch's ops (the kernels' gate stood in for by one that always applies, so this runs on the CPU)."""
    from torch.func import functional_call, vmap

    from skspectral import _assembly

    def refused(*args, **kwargs):
        raise AssertionError("the CUDA assembly was handed a tensor of torch.func's transforms")

    monkeypatch.setattr(_assembly, "applies", lambda Z, weight: True)
    monkeypatch.setattr(_assembly, "assembled_matrices", refused)
    monkeypatch.setattr(_assembly, "assembled_packed", refused)
    model = SpectralModel(3, 5, n_members=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64)
    params = {name: p.detach() for name, p in model.named_parameters()}
    starts = torch.stack([params["mu_start"], params["mu_start"] + 0.5])

    values = vmap(lambda start: functional_call(model, params | {"mu_start": start}, (x,)))(starts)
    torch.testing.assert_close(values[1] - values[0], torch.full_like(values[0], 0.5), rtol=0, atol=1e-12)
    wrapper = _Matrices(model)  # functional_call runs a module's forward: here its matrices
    named = {f"model.{name}": p for name, p in params.items()}
    matrices = vmap(lambda start: functional_call(wrapper, named | {"model.mu_start": start}, (x,)))(starts)
    torch.testing.assert_close(matrices[1] - matrices[0], 0.5 * torch.eye(5, dtype=torch.float64).expand_as(
        matrices[0]), rtol=0, atol=1e-12)


class _Matrices(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.matrices(x)


def test_a_smoothed_module_under_torch_func_is_a_clear_error():
    """The smoothed op has no transform rule: the module says so (vmap had raised "Cannot access data
    pointer of Tensor that doesn't have storage")."""
    from torch.autograd import forward_ad
    from torch.func import functional_call, grad, vmap

    model = SpectralModel(3, 5, smoothing=0.1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64)
    params = {name: p.detach() for name, p in model.named_parameters()}
    with pytest.raises(NotImplementedError, match="SpectralModel with smoothing does not support torch.func"):
        vmap(lambda row: model(row[None]))(x)
    with pytest.raises(NotImplementedError, match="with smoothing does not support torch.func"):
        grad(lambda p: functional_call(model, p, (x,)).sum())(params)
    with forward_ad.dual_level(), pytest.raises(NotImplementedError, match="forward-mode AD"):
        model(forward_ad.make_dual(x, torch.ones_like(x)))
    assert model(x).shape == (7,)  # and plainly as before


@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
def test_a_model_built_to_load_a_state_draws_nothing_and_loads_it(structure):
    """draw=False: zero matrices and unit factors, no number taken from the generator given or torch's
    global one; the state dict of a drawn model of the same shape makes it that model."""
    from skspectral.model import model_class

    make = model_class(structure)
    options = dict(n_members=3, n_shared_members=1, monotonic=[1, 0, 0, -1], dtype=torch.float64)
    drawn = make(4, 5, generator=torch.Generator().manual_seed(3), **options)
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(11)
    global_state, generator_state = torch.get_rng_state(), generator.get_state()
    empty = make(4, 5, generator=generator, draw=False, **options)
    assert torch.equal(torch.get_rng_state(), global_state) and torch.equal(generator.get_state(), generator_state)
    assert not empty.feature_matrices().any() and torch.equal(empty.member_scales.abs() * empty.shared_factor_gain,
                                                              torch.ones_like(empty.member_scales))
    empty.load_state_dict(drawn.state_dict())
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(empty(x), drawn(x), rtol=0, atol=0)


def test_forward_is_the_kth_eigenvalue_of_the_affine_matrix():
    model = SpectralModel(4, 6, eigval_idx=-2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mu = model.mu().detach()[0]
    assert torch.all(mu.diff() > 0)  # non-decreasing by construction
    A = model.feature_matrices().detach()[0]
    M = torch.diag(mu) + torch.einsum("bf,fij->bij", x, A)
    expected = torch.linalg.eigvalsh(M)[:, 4]
    torch.testing.assert_close(model(x).detach(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.matrices(x).detach()[:, 0], M, rtol=1e-12, atol=1e-12)
    norms = np.abs(np.linalg.eigvalsh(A.numpy())).max(axis=-1)
    np.testing.assert_allclose(model.spectral_norms().detach().numpy()[0], norms, rtol=1e-12)


def test_same_seed_same_start_on_every_dtype():
    a = SpectralModel(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    b = SpectralModel(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    torch.testing.assert_close(b.feature_matrices().double(), a.feature_matrices(), rtol=1e-6, atol=1e-7)


def test_backend_is_checked_when_the_module_is_built():
    with pytest.raises(ValueError, match="CUDA tensors"):
        SpectralModel(3, 4, backend="kernel")
    with pytest.raises(ValueError, match="backend must be one of"):
        SpectralModel(3, 4, backend="lapack")
    with pytest.raises(ValueError, match="out of range"):
        SpectralModel(3, 4, eigval_idx=4)


class PositiveSemidefiniteModel(SpectralModel):
    """A variant through the construction hook: A_i = L_i L_i^T, so f is non-decreasing in every x_i."""

    def _init_feature_matrices(self, init_scale, generator, factory):
        start = torch.randn(self.n_models, self.n_features, self.dim, self.dim, generator=generator,
                            dtype=torch.float64)
        self.factor = torch.nn.Parameter((init_scale * start).to(**factory))

    def feature_matrices(self):
        return self.factor @ self.factor.transpose(-1, -2)


def test_a_variant_plugs_in_through_the_construction_hook():
    model = PositiveSemidefiniteModel(3, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert {name for name, _ in model.named_parameters()} == {"mu_start", "mu_increments", "factor"}
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    step = torch.zeros(3, dtype=torch.float64)
    step[1] = 0.3
    assert torch.all(model(x + step) >= model(x) - 1e-12)  # Loewner order: PSD A_1 never lowers lambda_k
    # everything else reads the variant's matrices: spectral norms (sensitivities, penalties)
    A = model.feature_matrices().detach()
    torch.testing.assert_close(model.spectral_norms().detach(), kth_eigvalsh(A, -1))
    model(x).sum().backward()
    assert model.factor.grad is not None and model.factor.grad.abs().sum() > 0


@pytest.mark.parametrize("smoothing", [None, 0.2])
def test_tridiagonal_model_is_the_kth_eigenvalue_of_its_tridiagonal_matrices(smoothing):
    from skspectral.eig import smoothed_kth_eigvalsh
    from skspectral.model import TridiagonalSpectralModel, band_to_dense

    model = TridiagonalSpectralModel(4, 30, n_members=2, generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64, smoothing=smoothing)
    assert {name for name, _ in model.named_parameters()} == {"mu_start", "mu_increments", "band_weight"}
    x = torch.randn(11, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bands = model.feature_matrices().detach()
    assert bands.shape == (2, 4, 2, 30) and bool((bands[..., 1, -1] == 0).all())
    A = band_to_dense(bands)
    M = torch.diag_embed(model.mu().detach())[None] + torch.einsum("bf,mfij->bmij", x, A)
    assert bool((M.triu(2) == 0).all())
    expected = (torch.linalg.eigvalsh(M)[..., 15] if smoothing is None
                else smoothed_kth_eigvalsh(M, 15, smoothing))
    torch.testing.assert_close(model(x).detach(), expected, rtol=1e-11, atol=1e-11)
    norms = torch.linalg.eigvalsh(A).abs().amax(-1)
    torch.testing.assert_close(model.spectral_norms().detach(), norms, rtol=1e-11, atol=1e-12)
    model(x).sum().backward()
    grad = model.band_weight.grad
    assert grad.abs().sum() > 0 and bool((grad[..., 1, -1] == 0).all())  # the padding gets no gradient


@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
def test_monotone_columns_are_semidefinite_and_free_ones_are_not_touched(structure):
    from skspectral.model import band_to_dense, model_class

    cls = model_class(structure)
    model = cls(3, 8, n_members=2, monotonic=[1, 0, -1], generator=torch.Generator().manual_seed(2),
                dtype=torch.float64)
    A = model.feature_matrices().detach()
    A = band_to_dense(A) if structure == "tridiagonal" else A
    eigenvalues = torch.linalg.eigvalsh(A)
    assert (eigenvalues[:, 0] >= -1e-12).all() and (eigenvalues[:, 2] <= 1e-12).all()
    assert (eigenvalues[:, 1, 0] < 0).all() and (eigenvalues[:, 1, -1] > 0).all()  # free: indefinite
    free = cls(3, 8, n_members=2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    A_free = free.feature_matrices().detach()
    A_free = band_to_dense(A_free) if structure == "tridiagonal" else A_free
    torch.testing.assert_close(A[:, 1], A_free[:, 1])  # the same start where unconstrained
    x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for column, sign in ((0, 1), (2, -1)):
        step = torch.zeros(3, dtype=torch.float64)
        step[column] = 0.25
        assert (sign * (model(x + step) - model(x)) >= -1e-12).all()
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        cls(3, 8, monotonic=[1, 0])


def test_structure_and_smoothing_choose_a_backend_that_can_do_them():
    from skspectral.model import select_model_backend

    assert select_model_backend("auto", "cpu", 300, torch.float64, structure="tridiagonal").tridiagonal_k is not None
    assert select_model_backend("auto", "cpu", 15, torch.float64, smoothing=0.1).eigh_all is not None
    with pytest.raises(ValueError, match="every eigenpair"):
        select_model_backend("numba", "cpu", 15, torch.float64, smoothing=0.1)
    with pytest.raises(ValueError, match="structure must be one of"):
        select_model_backend("auto", "cpu", 15, torch.float64, structure="banded")


def _assembly_pair(dim, n_columns, members, dtype, seed, shared=0):
    """The same dense model twice on CUDA: CUDA kernels (skspectral._assembly) and torch's ops;
    ``shared`` of its members share their matrices."""
    fused, reference = (SpectralModel(n_columns, dim, n_members=members, generator=torch.Generator().manual_seed(seed),
                                      dtype=dtype, device="cuda", n_shared_members=shared) for _ in range(2))
    reference.assemble = False
    with torch.no_grad():  # spread mu: some increments far above softplus' threshold, some far below 0
        for model in (fused, reference):
            model.mu_increments.copy_(torch.linspace(-8.0, 25.0, dim - 1).expand_as(model.mu_increments))
    return fused, reference


@pytest.mark.cuda
@pytest.mark.parametrize("dim, n_columns, members", [(1, 3, 1), (2, 1, 1), (7, 5, 4), (15, 340, 4), (45, 12, 2)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sharing", ["none", "one", "all"])
def test_cuda_assembly_kernels_give_the_matrices_and_gradients_of_torch_ops(dim, n_columns, members, dtype, sharing):
    """skspectral._assembly on CUDA: diag(mu) + sum_j z_j 0.5 (W_j + W_j^T) and every parameter's (and
    the rows') gradient as the model's torch ops give them (float64 to rounding; float32 to its sums);
    with members that share their matrices (r A: the kernels take the shared set and the factors)."""
    from skspectral import _assembly

    shared = dict(none=0, one=1, all=members)[sharing]
    fused, reference = _assembly_pair(dim, n_columns, members, dtype, seed=dim + n_columns, shared=shared)
    generator = torch.Generator().manual_seed(3)
    Z = torch.rand(33, n_columns, dtype=torch.float64, generator=generator).to("cuda", dtype)
    upstream = torch.randn(33, members, dim, dim, dtype=torch.float64, generator=generator).to("cuda", dtype)
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    outputs = []
    assert fused.assembles and _assembly.applies(Z, fused.weight) and not reference.assembles
    for model in (fused, reference):
        rows = Z.clone().requires_grad_()
        M = model.matrices(rows, encoded=True)
        (M * upstream).sum().backward()
        outputs.append([M.detach(), rows.grad] + [p.grad for p in model.parameters()])
    for got, expected in zip(*outputs):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, **tolerance)
    assert torch.equal(outputs[0][0], outputs[0][0].transpose(-1, -2))  # symmetric to the bit


def _lower_packed(M: torch.Tensor) -> torch.Tensor:
    """The lower triangles of (..., n, n), row by row: (..., n (n + 1) / 2)."""
    n = M.shape[-1]
    rows, columns = torch.tril_indices(n, n, device=M.device)
    return M[..., rows, columns]


@pytest.mark.cuda
@pytest.mark.parametrize("dim, n_columns, members", [(1, 3, 1), (2, 1, 1), (7, 5, 4), (15, 340, 4), (45, 12, 2)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_packed_assembly_is_the_lower_triangles_with_their_gradients(dim, n_columns, members, dtype):
    """assembled_packed: the lower triangles of assembled_matrices, row by row, and the gradients of a
    loss of the packed entries are those of the same loss of the symmetric matrices (an off-diagonal
    entry's gradient split between (i, j) and (j, i))."""
    from skspectral import _assembly

    model, _ = _assembly_pair(dim, n_columns, members, dtype, seed=dim + 2 * n_columns)
    generator = torch.Generator().manual_seed(4)
    Z = torch.rand(33, n_columns, dtype=torch.float64, generator=generator).to("cuda", dtype)
    upstream = torch.randn(33, members, dim * (dim + 1) // 2, dtype=torch.float64, generator=generator)
    upstream = upstream.to("cuda", dtype)
    parameters = (model.weight, model.mu_start, model.mu_increments)
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    rows = Z.clone().requires_grad_()
    packed = _assembly.assembled_packed(rows, *parameters)
    grads = torch.autograd.grad((packed * upstream).sum(), (rows,) + parameters)
    rows = Z.clone().requires_grad_()
    full = _assembly.assembled_matrices(rows, *parameters)
    torch.testing.assert_close(packed.detach(), _lower_packed(full.detach()), **tolerance)
    expected = torch.autograd.grad((_lower_packed(full) * upstream).sum(), (rows,) + parameters)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, **tolerance)


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 2, 5, 15, 16, 17, 45])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", ["one", "several"])
def test_the_kernel_on_packed_lower_triangles_is_the_kernel_on_matrices(n, dtype, k):
    """backend 'kernel' on packed lower triangles: the values and vectors of the same matrices whole
    (the same kernel after its load: the same bits), repeated eigenvalues and a non-finite entry
    included; the packed gradient is the whole matrix's g q q^T, read as a packed matrix."""
    from skspectral.eig import REGISTRY, kth_eigvalsh_packed_unchecked, kth_eigvalsh_unchecked

    backend = REGISTRY["kernel"]
    if not backend.is_available():
        pytest.skip("needs CuPy")
    generator = torch.Generator().manual_seed(n)
    A = torch.randn(300, n, n, dtype=torch.float64, generator=generator)
    A = (A + A.mT) / 2
    A[::7] = torch.diag_embed(torch.tensor([1.0] * (n // 2) + [2.0] * (n - n // 2), dtype=torch.float64))
    A[5, n - 1, 0] = float("nan")
    A = A.to("cuda", dtype)
    index = (0, n // 2, n - 1) if k == "several" and n > 2 else n // 2
    P = _lower_packed(A).contiguous()
    values, vectors = backend.packed_k(P, n, index, True)
    expected_values, expected_vectors = backend.eigh_k(A.contiguous(), index, True)
    assert torch.equal(values.isnan(), expected_values.isnan())
    torch.testing.assert_close(values, expected_values, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(vectors, expected_vectors, rtol=0, atol=0, equal_nan=True)
    finite = ~A.isnan().flatten(1).any(dim=1)
    leaf_packed = P[finite].clone().requires_grad_()
    leaf_full = A[finite].clone().requires_grad_()
    upstream = torch.randn(values[finite].shape, dtype=torch.float64, generator=generator).to("cuda", dtype)
    (kth_eigvalsh_packed_unchecked(leaf_packed, n, index, backend) * upstream).sum().backward()
    (kth_eigvalsh_unchecked(leaf_full, index, backend) * upstream).sum().backward()
    symmetric = leaf_full.grad + leaf_full.grad.mT - torch.diag_embed(leaf_full.grad.diagonal(dim1=-2, dim2=-1))
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf_packed.grad, _lower_packed(symmetric), **tolerance)


@pytest.mark.cuda
def test_packed_eigenvalues_pass_gradcheck():
    from skspectral.eig import REGISTRY, kth_eigvalsh_packed_unchecked

    backend = REGISTRY["kernel"]
    if not backend.is_available():
        pytest.skip("needs CuPy")
    A = torch.randn(6, 5, 5, dtype=torch.float64, device="cuda")
    P = _lower_packed(A + A.mT).contiguous().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: kth_eigvalsh_packed_unchecked(p, 5, 2, backend), (P,))
    assert torch.autograd.gradcheck(lambda p: kth_eigvalsh_packed_unchecked(p, 5, (1, 2, 3), backend), (P,))


@pytest.mark.cuda
@pytest.mark.parametrize("indices", [7, (5, 7, 9)])
def test_a_cuda_model_solves_its_packed_matrices_as_its_whole_ones(indices):
    """The model on CUDA (kernel backend) assembles packed lower triangles: its output and every
    gradient are those of the whole matrices' path (float64, to rounding)."""
    from skspectral.eig import REGISTRY

    if not REGISTRY["kernel"].is_available():
        pytest.skip("needs CuPy")
    model = SpectralModel(40, 15, n_members=4, eigval_idx=indices, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64, device="cuda", backend="kernel")
    Z = torch.rand(64, 40, dtype=torch.float64, device="cuda")
    results = []
    for packed in (True, False):
        if not packed:  # the same backend without its packed entry point
            key = (model.device, model.dtype)
            model._eigen_backends[key] = dataclasses.replace(model.eigen_backend, packed_k=None)
        model.zero_grad()
        out = model(Z, encoded=True)
        out.square().sum().backward()
        results.append([out.detach()] + [p.grad.clone() for p in model.parameters()])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.cuda
def test_cuda_assembly_passes_gradcheck_and_leaves_variants_to_torch_ops():
    from skspectral import _assembly

    model = SpectralModel(3, 4, n_members=2, generator=torch.Generator().manual_seed(0), dtype=torch.float64,
                          device="cuda")
    Z = torch.rand(5, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z, w, s, i: _assembly.assembled_matrices(z, w, s, i),
        (Z, model.weight, model.mu_start, model.mu_increments))
    monotone = SpectralModel(3, 4, monotonic=[1, 0, 0], dtype=torch.float64, device="cuda")
    assert not monotone.assembles  # A = W W^T for a monotone column: torch's ops
