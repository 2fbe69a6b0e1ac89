"""The CUDA kernels' logic where there is no GPU (CI): their sources compiled with g++ against a warp
emulator (tests/emulated_cuda: fibers stand for a block's threads, and a collective that some lanes skip
is caught) and run on the CPU -- the fused k-th eigenpair kernel, the tridiagonal one, the packed
gradient, the CuPy backend's gather, the losses', the matrices' assembly, Adam's, a graphed epoch's
batch and totals. Values against LAPACK and torch's ops, unit eigenvectors with small residuals, NaN and
zero matrices, two matrices a warp beside one a block, several indices, packed input, odd batches, every
loss's value and gradient, the assembly's gradients (gradcheck where small), torch.optim.Adam's steps,
torch's batches and totals. The GPU's arithmetic differs in the last bits (FMA, fast division):
tolerances, not bits, against the references; the tests marked ``cuda`` run the kernels themselves."""

import numpy as np
import pytest
import torch

from tests import emulated_cuda, test_cuda_losses, test_eig_tridiagonal

pytestmark = pytest.mark.skipif(not emulated_cuda.available(), reason="needs g++ and glibc (Linux)")

TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emulated_cuda")


def _mixed_batch(batch: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random symmetric matrices with, where the batch is long enough, the zero matrix (2), NaN in a
    lower triangle (5), a diagonal one (6: every reflector zero) and repeated spectra (8 to 15)."""
    G = rng.normal(size=(batch, n, n))
    A = (G + G.transpose(0, 2, 1)) / 2
    if batch > 15:
        A[2] = 0.0
        A[5, n - 1, 0] = np.nan
        A[6] = np.diag(np.arange(n, dtype=np.float64))
        Q = np.linalg.qr(rng.normal(size=(8, n, n)))[0]
        spectrum = np.where(np.arange(n) < n // 2, 2.0, -0.5)
        A[8:16] = (Q * spectrum[None, None, :]) @ Q.transpose(0, 2, 1)
    return A


def _check(A, ks, values, vectors, dtype, want_vector=True):
    n = A.shape[-1]
    ks = [ks] if isinstance(ks, int) else list(ks)
    finite = np.isfinite(A).all(axis=(1, 2))
    assert np.isnan(values[~finite]).all() and (not want_vector or np.isnan(vectors[~finite]).all())
    M = A[finite]
    zero = ~M.any(axis=(1, 2))
    scale = np.maximum(np.abs(np.linalg.eigvalsh(M)).max(axis=1), 1.0)
    reference = np.linalg.eigvalsh(M)[:, ks]
    got = values[finite].astype(np.float64)
    assert (got[zero] == 0).all()
    assert (np.abs(got - reference) / scale[:, None]).max() <= TOL[dtype] * n ** 0.5
    if not want_vector:
        assert (vectors == 7.0).all()  # never written
        return
    q = vectors[finite].astype(np.float64)
    assert (q[zero] == np.eye(n)[ks][None]).all()
    assert np.abs(np.linalg.norm(q, axis=-1) - 1).max() <= 100 * TOL[dtype]
    residual = np.linalg.norm(np.einsum("bij,bkj->bki", M, q) - got[..., None] * q, axis=-1) / scale[:, None]
    assert residual.max() <= 10 * TOL[dtype] * n ** 0.5


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("several", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_the_default_model_size_on_mixed_batches(build_dir, paired, several, packed):
    """15 x 15 float32 (the default model's): an odd batch of random, zero, NaN, diagonal and
    repeated-spectrum matrices, one index or three (a quantile model's), with and without vectors."""
    n, dtype = 15, torch.float32
    A = _mixed_batch(37, n, np.random.default_rng(1))
    kernel = emulated_cuda.EmulatedEigenKernel(n, dtype, build_dir, several=several, packed=packed, paired=paired)
    rows, cols = np.tril_indices(n)
    inputs = A[:, rows, cols] if packed else A
    ks = (5, 7, 9) if several else 7
    for want_vector in (True, False):
        divergent, values, vectors = kernel(inputs, ks, want_vector)
        assert not divergent
        _check(A, ks, values, vectors, dtype, want_vector)


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("paired", [False, True])
def test_small_and_largest_paired_sizes(build_dir, n, paired):
    A = _mixed_batch(33 if n > 2 else 7, n, np.random.default_rng(n))
    kernel = emulated_cuda.EmulatedEigenKernel(n, torch.float32, build_dir, paired=paired)
    for k in {0, n // 2, n - 1}:
        divergent, values, vectors = kernel(A, k)
        assert not divergent
        _check(A, k, values, vectors, torch.float32)


@pytest.mark.parametrize("n,dtype,packed", [(17, torch.float32, False), (33, torch.float32, True),
                                             (45, torch.float64, False), (64, torch.float32, False)])
def test_one_and_two_warp_blocks_above_the_paired_sizes(build_dir, n, dtype, packed):
    """One matrix a block of one warp (n <= 32) or two (n <= 64: block-wide sums and barriers, and the
    second warp leaving before warp 0's multisection)."""
    A = _mixed_batch(17, n, np.random.default_rng(n))
    kernel = emulated_cuda.EmulatedEigenKernel(n, dtype, build_dir, packed=packed)
    rows, cols = np.tril_indices(n)
    for k in (0, n // 2, n - 1):
        divergent, values, vectors = kernel(A[:, rows, cols] if packed else A, k)
        assert not divergent
        _check(A, k, values, vectors, dtype)


def test_float64_and_two_matrices_a_warp_agree_with_one_a_block(build_dir):
    n, dtype = 15, torch.float64
    A = _mixed_batch(37, n, np.random.default_rng(2))
    rows, cols = np.tril_indices(n)
    ks = (5, 7, 9)
    results = []
    for paired in (False, True):
        kernel = emulated_cuda.EmulatedEigenKernel(n, dtype, build_dir, several=True, packed=True, paired=paired)
        divergent, values, vectors = kernel(A[:, rows, cols], ks)
        assert not divergent
        _check(A, ks, values, vectors, dtype)
        results.append((values, vectors))
    (one_values, one_vectors), (paired_values, paired_vectors) = results
    np.testing.assert_allclose(paired_values, one_values, rtol=0, atol=1e-12)
    # the same vectors up to sign where the eigenvalue is simple; at a repeated one any unit vector of its
    # eigenspace is right (_check holds each to its residual), and the two layouts' sums round apart
    finite = np.isfinite(one_vectors).all(axis=(1, 2))
    spectra = np.linalg.eigvalsh(np.where(np.isfinite(A), A, 0.0))
    gaps = np.abs(spectra[:, ks, None] - spectra[:, None, :])
    gaps[:, range(len(ks)), ks] = np.inf  # each value's distance to itself
    simple = finite[:, None] & (gaps.min(axis=-1) > 1e-6)
    assert simple.sum() > 50
    overlap = np.abs((paired_vectors * one_vectors).sum(-1))[simple]
    assert np.abs(overlap - 1).max() <= 1e-9


def test_a_collective_that_one_half_warp_skips_is_caught(build_dir):
    """The emulator's own check, on a bug the paired kernel once had: its back-transform skipped a
    zero reflector's shuffles in one half-warp only (repeated spectra make such zeros in float32)."""
    fixed = "if (PAIRED ? !__any_sync(FULL, tau != 0) : tau == 0) continue;"
    assert emulated_cuda.KERNEL_SOURCE.count(fixed) == 1
    broken = emulated_cuda.KERNEL_SOURCE.replace(fixed, "if (tau == 0) continue;")
    kernel = emulated_cuda.EmulatedEigenKernel(4, torch.float32, build_dir, paired=True, source=broken)
    rng = np.random.default_rng(4)
    Q = np.linalg.qr(rng.normal(size=(64, 4, 4)))[0]
    A = (Q * np.array([-0.5, -0.5, 2.0, 2.0])[None, None, :]) @ Q.transpose(0, 2, 1)
    divergent, _, _ = kernel(A, 2)
    assert divergent
    divergent, values, vectors = emulated_cuda.EmulatedEigenKernel(4, torch.float32, build_dir, paired=True)(A, 2)
    assert not divergent
    _check(A, 2, values, vectors, torch.float32)


# ---- the tridiagonal kernel (structure="tridiagonal" on CUDA): a warp a matrix, any n -------------
def _tridiagonal_batch(batch: int, n: int, rng: np.random.Generator):
    """Random diagonals and off-diagonals; with batch > 5: the zero matrix (1), NaN (2), a split one with
    a repeated eigenvalue (3: a zero off-diagonal between equal blocks), a diagonal one (4)."""
    diagonal, off = rng.normal(size=(batch, n)), rng.normal(size=(batch, n - 1))
    if batch > 5 and n >= 4:
        diagonal[1], off[1] = 0.0, 0.0
        diagonal[2, n // 2] = np.nan
        half = n // 2
        diagonal[3, half:2 * half], off[3, half:2 * half - 1] = diagonal[3, :half], off[3, :half - 1]
        off[3, half - 1] = 0.0
        off[4] = 0.0
    return diagonal, off


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 5, 40, 100])
def test_tridiagonal_kernel(build_dir, dtype, n):
    diagonal, off = _tridiagonal_batch(9, n, np.random.default_rng(n))
    A = test_eig_tridiagonal.dense(torch.as_tensor(diagonal), torch.as_tensor(off)).numpy()
    kernel = emulated_cuda.EmulatedTridiagonalKernel(dtype, build_dir)
    for k in sorted({0, n // 2, n - 1}):
        for want_vector in (True, False):
            divergent, values, vectors = kernel(diagonal, off, k, want_vector)
            assert not divergent
            _check(A, k, values[:, None], vectors[:, None], dtype, want_vector)


def test_tridiagonal_kernel_divergence_is_caught(build_dir):
    """The emulator's check on the tridiagonal source: lane 0 alone taking a shuffle is reported."""
    source = emulated_cuda.TRIDIAGONAL_SOURCE
    vote = "bad = __any_sync(FULL_MASK, bad);"
    assert source.count(vote) == 1
    kernel = emulated_cuda.EmulatedTridiagonalKernel(torch.float32, build_dir,
                                                     source=source.replace(vote, "if (lane == 0) " + vote))
    diagonal, off = _tridiagonal_batch(3, 6, np.random.default_rng(0))
    assert kernel(diagonal, off, 2)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("count", [1, 3])
def test_packed_gradient_kernel(monkeypatch, build_dir, dtype, count):
    """_kernel_backend.packed_grad (the eigenvalues' gradient with respect to packed lower triangles)
    with its kernel emulated: sum_j g_j q_j q_j^T's lower triangle, off-diagonal entries twice."""
    from skspectral.eig import _kernel_backend

    kernels = emulated_cuda.EmulatedRawKernels(_kernel_backend._PACKED_GRAD_SOURCE, build_dir)
    monkeypatch.setattr(_kernel_backend, "_PACKED_GRAD", kernels)
    g = torch.Generator().manual_seed(count)
    n, batch = 15, 37
    vectors = torch.randn((batch, count, n) if count > 1 else (batch, n), generator=g, dtype=dtype)
    weights = torch.randn((batch, count) if count > 1 else (batch,), generator=g, dtype=dtype)
    got = _kernel_backend.packed_grad(vectors, weights)
    q, w = vectors.reshape(batch, count, n).double(), weights.reshape(batch, count).double()
    full = torch.einsum("bj,bji,bjl->bil", w, q, q)
    rows, cols = torch.tril_indices(n, n)
    expected = full[:, rows, cols] * torch.where(rows == cols, 1.0, 2.0).double()
    assert kernels.launches == 1 and not kernels.divergent
    torch.testing.assert_close(got.double(), expected, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lower", [True, False])
def test_cupy_backends_gather_kernel(build_dir, dtype, lower):
    """The CuPy backend's gather_kth: lambda_k and column k of V (any strides) per matrix, NaN for a
    matrix with a non-finite entry in the triangle read, none for one in the other triangle."""
    from skspectral.eig import _cupy_backend

    scalar = "float" if dtype == torch.float32 else "double"
    module = emulated_cuda.EmulatedModule(_cupy_backend._GATHER_SOURCE.replace("SCALAR", scalar), build_dir)
    rng = np.random.default_rng(int(lower))
    real, n, batch, k = emulated_cuda.real_dtype(dtype), 7, 9, 4
    A = rng.normal(size=(batch, n, n))
    A = (A + A.transpose(0, 2, 1)) / 2
    A[2, n - 1, 0] = np.nan  # lower triangle
    A[3, 0, n - 1] = np.inf  # upper triangle
    w, V = np.linalg.eigh(np.nan_to_num(A, posinf=0.0))
    V_t = np.ascontiguousarray(V.transpose(0, 2, 1))  # column k of V as row k: strides differ from V's
    A, w, V_t = (np.ascontiguousarray(a, dtype=real) for a in (A, w, V_t))
    value, vector = np.full(batch, 7.0, dtype=real), np.full((batch, n), 7.0, dtype=real)
    divergent = module.launch("gather_kth", batch, 64, (A, w, V_t, value, vector, n, k, int(lower), n, 1,
                                                        n * n, 1, n))
    assert not divergent
    bad = np.zeros(batch, dtype=bool)
    bad[2 if lower else 3] = True
    assert np.isnan(value[bad]).all() and np.isnan(vector[bad]).all()
    assert np.array_equal(value[~bad], w[~bad, k]) and np.array_equal(vector[~bad], V_t[~bad, k, :])


# ---- the losses' kernel (skspectral._cuda_losses): one block of 1,024 threads ------------------
@pytest.fixture(scope="module")
def loss_kernels(build_dir):
    from skspectral import _cuda_losses

    return emulated_cuda.EmulatedRawKernels(_cuda_losses._CODE_DEFINES + _cuda_losses._SOURCE, build_dir)


@pytest.mark.parametrize("name, kwargs", test_cuda_losses._LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_members, rows", [(1, 1), (4, 37), (4, 1310)])
def test_loss_kernel_is_autograds(monkeypatch, loss_kernels, name, kwargs, dtype, n_members, rows):
    """_cuda_losses.loss_and_gradient with its kernel emulated on CPU tensors: every training loss's
    value and gradient equal autograd's through members_fn to rounding (what test_cuda_losses.py
    checks on the GPU); the same bits on a second launch."""
    from skspectral import _cuda_losses

    monkeypatch.setattr(_cuda_losses, "_KERNELS", loss_kernels)
    loss = test_cuda_losses._loss(name, kwargs)
    output, target, weight = test_cuda_losses._batch(name, kwargs, rows, n_members, dtype, seed=rows + n_members,
                                                     device="cpu")
    if rows == 1:
        weight.fill_(1.0)
    leaf = output.clone().requires_grad_()
    expected = loss.members_fn(n_members)(leaf, target, weight)
    (expected_grad,) = torch.autograd.grad(expected, leaf)
    step = loss.fn_and_gradient
    loss_kernels.divergent = False
    value, gradient = _cuda_losses.loss_and_gradient(step.kernel_name, output, target, weight,
                                                     tuple(step.kernel_parameters), step.kernel_last_axis)
    again = _cuda_losses.loss_and_gradient(step.kernel_name, output, target, weight, tuple(step.kernel_parameters),
                                           step.kernel_last_axis)
    assert not loss_kernels.divergent
    assert value.dim() == 0 and torch.equal(value, again[0]) and torch.equal(gradient, again[1])
    torch.testing.assert_close(value, expected.detach(), **test_cuda_losses._ROUNDING[dtype])
    torch.testing.assert_close(gradient, expected_grad, **test_cuda_losses._ROUNDING[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, existing", [((1, 1), True), ((2, 9), False), ((3, 700), True)])
def test_factor_pull_kernel_adds_autograds_gradient_to_the_bit(monkeypatch, loss_kernels, dtype, shape, existing):
    """_cuda_losses.add_factor_pull with its kernel emulated on CPU tensors: the shared factors' pull
    added to the gradient the step's backward left (or to zeros where it left none) is autograd's
    term's to the bit, factors at 0 included (no pull there), over more factors than the block's
    threads; its value to rounding."""
    from skspectral import _cuda_losses

    monkeypatch.setattr(_cuda_losses, "_KERNELS", loss_kernels)
    g = torch.Generator().manual_seed(shape[1])
    scales = torch.nn.Parameter(torch.randn(shape, generator=g, dtype=dtype))
    with torch.no_grad():
        scales[torch.rand(shape, generator=g) < 0.2] = 0.0
    before = torch.randn(shape, generator=g, dtype=dtype) if existing else None
    data_loss, factor_l1 = torch.tensor(0.37, dtype=dtype), 2e-3
    leaf = scales.detach().clone().requires_grad_()
    leaf.grad = None if before is None else before.clone()
    expected = (factor_l1 * data_loss) * leaf.abs().sum()
    expected.backward()
    scales.grad = None if before is None else before.clone()
    loss_kernels.divergent = False
    value = _cuda_losses.add_factor_pull(scales, data_loss, factor_l1)
    assert not loss_kernels.divergent
    assert value.dim() == 0 and value.dtype == dtype
    assert torch.equal(scales.grad, leaf.grad)
    torch.testing.assert_close(value, expected.detach(), **test_cuda_losses._ROUNDING[dtype])


@pytest.mark.parametrize("estimator, alpha", [("regressor", 0.0), ("regressor", 1e-2), ("classifier", 1e-3)])
def test_a_fit_with_the_pull_apart_is_the_fit_through_autograd(monkeypatch, loss_kernels, estimator, alpha):
    """The trainer's step with the pull apart from autograd (as on CUDA: the rest of the penalty through
    autograd, then add_factor_pull onto the gradients; its kernel emulated, on a CPU fit without the
    compiled pass) fits what the pull through autograd fits, to float64's rounding."""
    from skspectral import SpectralClassifier, SpectralRegressor, _cuda_losses
    from skspectral._losses import Penalty
    from skspectral.model import SpectralModel

    from .test_compiled_pass import _mixed

    monkeypatch.setattr(_cuda_losses, "_KERNELS", loss_kernels)
    monkeypatch.setattr(SpectralModel, "compiled_pass", lambda self, terms_of=None: None)
    X, y = _mixed(3, classes=estimator == "classifier")
    cls = SpectralClassifier if estimator == "classifier" else SpectralRegressor
    params = dict(dim=4, n_estimators=3, shared_members=0.5, shared_factor_l1=2e-2, alpha=alpha, max_iter=2,
                  batch_size=128, dtype="float64", categorical_features=[1], random_state=0, device="cpu", refit=False)
    through_autograd = cls(**params).fit(X, y)
    calls = []
    monkeypatch.setattr(Penalty, "pulls_apart_on", lambda self, device: True)
    monkeypatch.setattr(Penalty, "add_pull", lambda self, data_loss, original=Penalty.add_pull: (
        calls.append(1), original(self, data_loss))[1])
    apart = cls(**params).fit(X, y)
    assert len(calls) == apart.t_ > 0
    np.testing.assert_allclose(apart.loss_curve_, through_autograd.loss_curve_, rtol=1e-12)
    for name, value in apart._module_state_.items():
        np.testing.assert_allclose(value, through_autograd._module_state_[name], rtol=1e-10, atol=1e-12)


# ---- the matrices' assembly (skspectral._assembly): the table, the diagonals' sums, the backward --
@pytest.fixture(scope="module")
def assembly_kernels(build_dir):
    from skspectral import _assembly

    return emulated_cuda.EmulatedRawKernels(_assembly._SOURCE, build_dir)


def _reference_matrices(Z, weight, mu_start, mu_increments):
    """diag(mu) + sum_c Z[:, c] 0.5 (W_c + W_c^T) per member, with torch's ops."""
    mu = torch.cat([mu_start, mu_start + torch.cumsum(torch.nn.functional.softplus(mu_increments), dim=1)], dim=1)
    symmetric = 0.5 * (weight + weight.transpose(-1, -2))
    return torch.einsum("bc,mcij->bmij", Z, symmetric) + torch.diag_embed(mu)[None]


@pytest.mark.parametrize("packed", [False, True])
# n = 17: a member's last diagonal block counted past 16; 260 rows: a diagonal's sum past one block's 256 threads
@pytest.mark.parametrize("n, columns, members, rows", [(1, 3, 1, 5), (3, 4, 2, 7), (15, 9, 4, 300), (17, 3, 2, 260)])
def test_assembly_kernels_are_the_models_ops(monkeypatch, assembly_kernels, packed, n, columns, members, rows):
    """The assembled matrices (whole, or their packed lower triangles) and every gradient equal
    torch's ops in float64, from the CUDA kernels emulated on CPU tensors (softplus past its
    threshold too); gradcheck where small."""
    from skspectral import _assembly

    monkeypatch.setattr(_assembly, "_KERNELS", assembly_kernels)
    g = torch.Generator().manual_seed(n * 100 + rows)
    Z = torch.randn(rows, columns, generator=g, dtype=torch.float64)
    weight = torch.randn(members, columns, n, n, generator=g, dtype=torch.float64)
    mu_start = torch.randn(members, 1, generator=g, dtype=torch.float64)
    mu_increments = torch.randn(members, n - 1, generator=g, dtype=torch.float64)
    if n > 2:
        mu_increments[0, 0] = 25.0  # past softplus' threshold
    inputs = [t.requires_grad_() for t in (Z, weight, mu_start, mu_increments)]
    assemble = _assembly.assembled_packed if packed else _assembly.assembled_matrices
    rows_i, cols_i = torch.tril_indices(n, n)

    def reference(*args):
        M = _reference_matrices(*args)
        return M[..., rows_i, cols_i] if packed else M

    assembly_kernels.divergent = False
    got = assemble(*inputs)
    expected = reference(*inputs)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(got, inputs, upstream)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert not assembly_kernels.divergent
    if rows * columns * members * n * n <= 600:
        assert torch.autograd.gradcheck(assemble, tuple(inputs), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("n, columns, own, shared_members, outputs, rows",
                         [(1, 3, 1, 1, 1, 5), (3, 4, 0, 2, 1, 6), (3, 4, 1, 2, 3, 7), (15, 9, 2, 2, 1, 300),
                          (17, 2, 1, 2, 2, 40)])
def test_assembly_of_sharing_members_is_the_composed_models(monkeypatch, assembly_kernels, packed, n, columns, own,
                                                            shared_members, outputs, rows):
    """Members that share their matrices (W = gain r S after the own members', output by output): the
    assembly from the shared set and the stored factors, never composing W, gives the values of the
    composed weight's assembly (SpectralModel._with_shared's order) to the bit, and every gradient --
    the own W, the shared set, the factors, mu -- torch's chain rule through the composition in float64;
    gradcheck where small."""
    from skspectral import _assembly

    monkeypatch.setattr(_assembly, "_KERNELS", assembly_kernels)
    g = torch.Generator().manual_seed(n * 1000 + rows + own)
    models, gain = own + shared_members * outputs, 10.0
    Z = torch.randn(rows, columns, generator=g, dtype=torch.float64)
    weight = torch.randn(own, columns, n, n, generator=g, dtype=torch.float64)
    shared = torch.randn(outputs, columns, n, n, generator=g, dtype=torch.float64)
    scales = torch.randn(shared_members, columns, generator=g, dtype=torch.float64) / gain
    scales[0, 0] = 0.0  # a column switched off
    mu_start = torch.randn(models, 1, generator=g, dtype=torch.float64)
    mu_increments = torch.randn(models, n - 1, generator=g, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (Z, weight, shared, scales, mu_start, mu_increments)]
    assemble = _assembly.assembled_packed if packed else _assembly.assembled_matrices

    def fused(Z, weight, shared, scales, mu_start, mu_increments):
        return assemble(Z, weight, mu_start, mu_increments, shared=(shared, scales, gain))

    def composed(Z, weight, shared, scales, mu_start, mu_increments):  # SpectralModel._with_shared's W
        scaled = (gain * scales).view(shared_members, 1, columns, 1, 1) * shared[None]
        dense = torch.cat([weight, scaled.reshape(shared_members * outputs, columns, n, n)])
        return assemble(Z, dense, mu_start, mu_increments)

    assembly_kernels.divergent = False
    got, expected = fused(*inputs), composed(*inputs)
    assert got.shape == expected.shape and torch.equal(got, expected)
    upstream = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert not assembly_kernels.divergent
    if rows * columns * models * n * n <= 600:
        assert torch.autograd.gradcheck(fused, tuple(inputs), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("n_outputs", [None, 3])
def test_a_models_sharing_members_assemble_as_its_torch_ops(monkeypatch, assembly_kernels, n_outputs):
    """A dense model with two members of three sharing (and three outputs, a classifier's classes): its
    matrices and every parameter's gradient through skspectral._assembly's kernels (emulated on CPU
    tensors, taken as CUDA's) equal its torch ops (the composed r A) in float64."""
    from skspectral import _assembly
    from skspectral.model import SpectralModel

    monkeypatch.setattr(_assembly, "_KERNELS", assembly_kernels)
    monkeypatch.setattr(_assembly, "applies", lambda Z, weight: True)
    fused, reference = (SpectralModel(6, 5, n_members=3, n_outputs=n_outputs, n_shared_members=2, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(1)) for _ in range(2))
    reference.assemble = False
    g = torch.Generator().manual_seed(2)
    Z = torch.randn(40, 6, generator=g, dtype=torch.float64)
    outputs = []
    for model in (fused, reference):
        M = model.matrices(Z, encoded=True)
        upstream = torch.randn(M.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        grads = torch.autograd.grad((M * upstream).sum(), list(model.parameters()))
        outputs.append([M.detach(), *grads])
    assert fused.assembles and not reference.assembles
    for got, expected in zip(*outputs):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# ---- Adam (skspectral._training.adam.ElementwiseAdam): one thread per element, eight parameters a launch
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_params, launches", [(5, 1), (11, 2)])
def test_elementwise_adam_is_torchs_adam(monkeypatch, build_dir, dtype, n_params, launches):
    """ElementwiseAdam with its CUDA kernel emulated on CPU tensors takes torch.optim.Adam's steps:
    parameters of several sizes (an empty one; in one launch a step, or two past eight parameters, the
    last of which moves the step count on: the grid's last block, after every block has read it) and a
    learning rate changed in place between steps."""
    from skspectral._training import adam as adam_module

    kernels = emulated_cuda.EmulatedRawKernels(adam_module._SOURCE, build_dir)
    monkeypatch.setattr(adam_module, "_KERNELS", kernels)
    generator = torch.Generator().manual_seed(0)
    shapes = ([(4, 1), (4, 14), (2, 13, 15, 15), (4, 0), (7,)] + [(3, 5), (300,), (1,)] * 2)[:n_params]
    ours = [torch.nn.Parameter(torch.randn(s, generator=generator, dtype=dtype)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    lr = torch.tensor(1e-2, dtype=torch.float32)
    optimizer = adam_module.ElementwiseAdam(ours, lr)
    reference = torch.optim.Adam(theirs, lr=1e-2)

    def loss(parameters):
        return sum((p.sin() * (i + 1)).square().sum() for i, p in enumerate(parameters))

    for rate in (1e-2, 1e-2, 3e-3, 1e-3):
        lr.fill_(rate)
        for group in reference.param_groups:
            group["lr"] = float(lr)
        optimizer.zero_grad(set_to_none=False)
        loss(ours).backward()
        optimizer.step()
        reference.zero_grad()
        loss(theirs).backward()
        reference.step()
    assert kernels.launches == 4 * launches and not kernels.divergent
    assert optimizer._step_count.item() == 4.0 and optimizer._finished_blocks.item() == 0
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for mine, torchs in zip(ours, theirs):
        torch.testing.assert_close(mine, torchs, **tolerance)
    assert not torch.equal(ours[2], theirs[2].detach() * 0)  # it moved


# ---- a graphed epoch's batch and totals (skspectral._training.cuda_graph.StaticBatchSteps) ------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_values", [1, 3])
def test_static_batch_steps_kernels_are_torchs_ops(monkeypatch, build_dir, dtype, n_values):
    """The batch and the totals from the two kernels (emulated, on CPU tensors): the same batches,
    bit for bit (the last one padded with zero weights), and the same totals to rounding as torch's
    ops, over two epochs."""
    from skspectral._training import cuda_graph

    kernels = emulated_cuda.EmulatedRawKernels(cuda_graph._SOURCE, build_dir)
    monkeypatch.setattr(cuda_graph, "_KERNELS", kernels)
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(203, 7, generator=g, dtype=dtype), torch.randn(203, generator=g, dtype=dtype)
    weight = torch.rand(203, generator=g, dtype=dtype)
    order = torch.randperm(203, generator=g)

    def run(with_kernels: bool):
        seen = []

        def step(xb, yb, wb):
            seen.append((xb.clone(), yb.clone(), wb.clone()))
            return tuple((xb.sum(dim=1) * yb).mean() + j for j in range(n_values))

        steps = cuda_graph.StaticBatchSteps(step, X, y, weight, batch_size=32, n_values=n_values)
        steps.kernels = with_kernels  # (on the CPU: eager steps, the kernels emulated)
        return [steps.epoch(order).clone() for _ in range(2)], seen

    (expected, expected_seen), (got, seen) = run(False), run(True)
    assert kernels.launches == 2 * 2 * 7 and not kernels.divergent  # two kernels a step
    assert len(seen) == 2 * 7 and all(torch.equal(a, b) for pair in zip(seen, expected_seen) for a, b in zip(*pair))
    assert torch.equal(seen[6][2][203 - 6 * 32:], torch.zeros(32 * 7 - 203, dtype=dtype))
    rounding = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **rounding)
