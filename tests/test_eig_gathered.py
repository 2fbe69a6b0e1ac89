"""Matrices gathered from tables (skspectral/eig/_gathered.py) and the model's gather path:
equal to the dense assembly (to rounding), the same gradients, on every structure, with
bins, levels, missing values, members and monotone columns."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skspectral.eig import REGISTRY
from skspectral.eig._gathered import kth_eigvalsh_gathered
from skspectral.encoding import EncodingSpec, FeatureEncoder
from skspectral.model import model_class

from .conftest import available_backends

GATHERING = [name for name in available_backends("cpu") if REGISTRY[name].gathered_k is not None]
pytestmark = pytest.mark.skipif(not GATHERING, reason="no backend gathers here (Numba missing)")


def _tables(rng, models, R, R_extra, n, dense, packed=False):
    """Tables of random rows: dense symmetric n x n matrices (packed: their lower triangles, row by
    row) or tridiagonal band rows."""
    length = (n * (n + 1) // 2 if packed else n * n) if dense else 2 * n
    def make(rows):
        t = torch.as_tensor(rng.normal(size=(models, rows, length)))
        if dense and not packed:  # symmetric matrices
            m = t.view(models, rows, n, n)
            t = (0.5 * (m + m.transpose(-1, -2))).reshape(models, rows, length)
        elif not dense:
            t[..., -1] = 0.0
        return t.contiguous()
    return make(R), make(R_extra)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), models=st.integers(1, 3), B=st.integers(0, 12), T=st.integers(1, 6),
       layout=st.sampled_from(["full", "packed", "tridiagonal"]), seed=st.integers(0, 2**31 - 1))
def test_gathered_values_and_gradients_equal_the_dense_assembly(n, models, B, T, layout, seed):
    """The CPU kernel's values and gradients (table rows, extra rows, diagonal) are the torch
    reference's -- the gathered matrices, then torch.linalg -- for each row layout."""
    rng = np.random.default_rng(seed)
    R, R_extra = 5, 3
    dense = layout != "tridiagonal"
    table, extra = _tables(rng, models, R, R_extra, n, dense, packed=layout == "packed")
    diagonal = torch.as_tensor(np.sort(rng.normal(size=(models, n)), axis=1))
    rows = torch.as_tensor(rng.integers(-1, R + R_extra, (B, T)))
    weights = torch.as_tensor(rng.normal(size=(B, T)))
    weights[torch.as_tensor(rng.random((B, T)) < 0.2)] = 0.0  # (torch 2.1 takes no numpy mask)
    k = int(rng.integers(0, n))
    g = torch.as_tensor(rng.normal(size=(B, models)))
    results = []
    for name in (GATHERING[0], "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (table, extra, diagonal)]
        values = kth_eigvalsh_gathered(*leaves[:2], leaves[2], rows, weights, k, REGISTRY[name], dense=dense)
        (values * g).sum().backward()
        results.append([values.detach()] + [leaf.grad for leaf in leaves])
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["full", "packed", "tridiagonal"])
@pytest.mark.parametrize("n", [1, 3, 15])
def test_gathered_non_finite_and_zero_matrices_keep_the_solvers_contract(dtype, layout, n):
    """A gathered matrix with a NaN or an infinite entry gives NaN (value and vector), a zero one
    lambda = 0 and q = e_k, whatever shares its vector's lanes; the others their own pair."""
    rng = np.random.default_rng(n)
    dense = layout != "tridiagonal"
    table, extra = (t.to(dtype) for t in _tables(rng, 1, 4, 1, n, dense, packed=layout == "packed"))
    # the last entry read: a packed row's vector tail or its last vector (a band row ends in padding)
    table[0, 1, -1 if dense else n - 1] = float("nan")
    table[0, 2, 0] = float("inf")
    table[0, 3] = 0.0
    diagonal = torch.zeros(1, n, dtype=dtype)
    rows = torch.tensor([[0], [1], [2], [3], [0], [-1]] * 2)  # rows 3 and -1: zero matrices
    weights = torch.ones(rows.shape, dtype=dtype)
    k = n // 2
    backend = REGISTRY[GATHERING[0]]
    values, vectors = backend.gathered_k(table, extra, diagonal, rows, weights, k, dense, True)
    for b in (1, 2, 7, 8):
        assert torch.isnan(values[b, 0]) and torch.isnan(vectors[b, 0]).all()
    for b in (3, 5, 9, 11):
        assert values[b, 0] == 0 and torch.equal(vectors[b, 0], torch.eye(n, dtype=dtype)[k])
    reference = kth_eigvalsh_gathered(table[:, :1].double(), extra[:, :0].double(), diagonal.double(),
                                      rows[:1], weights[:1].double(), k, REGISTRY["torch"], dense=dense)
    for b in (0, 4, 6, 10):
        torch.testing.assert_close(values[b, 0].double(), reference[0, 0], rtol=1e-5, atol=1e-5)


def test_gathered_gradcheck():
    rng = np.random.default_rng(3)
    table, extra = _tables(rng, 2, 4, 2, 5, True)
    diagonal = torch.as_tensor(np.sort(rng.normal(size=(2, 5)), axis=1))
    rows = torch.as_tensor(rng.integers(-1, 6, (6, 3)))
    weights = torch.as_tensor(rng.normal(size=(6, 3)))
    leaves = [t.clone().requires_grad_(True) for t in (table, extra, diagonal)]

    def symmetric(t):  # the op reads one triangle, its gradient is symmetric (as torch.linalg.eigvalsh's)
        m = t.view(t.shape[0], t.shape[1], 5, 5)
        return (0.5 * (m + m.transpose(-1, -2))).reshape(t.shape)

    def fn(t, e, d):
        return kth_eigvalsh_gathered(symmetric(t), symmetric(e), d, rows, weights, 2, REGISTRY[GATHERING[0]])

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5)


SPECS = {
    "bins, levels, missing": EncodingSpec(4, numeric=[0, 1, 3], edges=[None, [-1.0, 0.0, 2.0],
                                                                   [-2.0, -1.0, 0.0, 1.0, 2.0]],
                                          missing=[1], categorical=[2], n_levels=[4], has_missing_level=[True]),
    "uneven bins only": EncodingSpec(2, numeric=[0, 1], edges=[[-1.0, 1.0], [-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]]),
    "levels only": EncodingSpec(2, categorical=[0, 1], n_levels=[3, 5], has_missing_level=[False, True]),
    "plain linear": None,
}


def _rows(rng, n):
    nan = np.nan
    X = rng.normal(size=(n, 4)) * 2.0
    X[:, 2] = rng.integers(-2, 4, n)  # level codes: -1 unseen, -2 missing
    X[rng.random(n) < 0.2, 1] = nan
    X[:5, 3] = [-5.0, -2.0, 0.0, 2.0, 5.0]  # below, at and above the edges
    return torch.as_tensor(X)


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("structure", ["dense", "tridiagonal"])
@pytest.mark.parametrize("monotone", [False, True])
def test_the_gather_path_is_the_dense_models_forward_and_gradient(spec_name, structure, monotone):
    spec = SPECS[spec_name]
    rng = np.random.default_rng(7)
    X = _rows(rng, 40)
    if spec is None:
        X = torch.nan_to_num(X[:, :3], nan=0.0)
    elif spec.n_features == 2:
        X = X[:, :2] if spec.categorical == [] else torch.stack([X[:, 2], (X[:, 0] > 0) * 2.0 - 1.0], 1)
    encoder = None if spec is None else FeatureEncoder(spec, dtype=torch.float64)
    n_features = X.shape[1]
    n_columns = n_features if encoder is None else encoder.n_columns
    signs = None
    if monotone:
        signs = np.zeros(n_columns)
        if spec is None or spec.numeric:
            signs[: max(1, n_columns // 3)] = 1.0
        else:
            return  # no numeric column to constrain
    outputs = []
    for gather in (True, False):
        model = model_class(structure)(n_features, 6, n_members=2, n_outputs=2, encoder=encoder, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(1), monotonic=signs,
                                       backend=GATHERING[0])
        model.gather = gather
        assert model.gathers == gather
        out = model(X)
        weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)
        (out * weights).sum().backward()
        outputs.append([out.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), models=st.integers(1, 3), B=st.integers(0, 10),
       layout=st.sampled_from(["full", "packed", "tridiagonal"]), seed=st.integers(0, 2**31 - 1))
def test_several_indices_gather_once_and_equal_one_index_at_a_time(n, models, B, layout, seed):
    """A tuple of indices: (B, models, K) values and summed gradients, as one call per index."""
    rng = np.random.default_rng(seed)
    dense = layout != "tridiagonal"
    table, extra = _tables(rng, models, 4, 2, n, dense, packed=layout == "packed")
    diagonal = torch.as_tensor(np.sort(rng.normal(size=(models, n)), axis=1))
    rows = torch.as_tensor(rng.integers(-1, 6, (B, 3)))
    weights = torch.as_tensor(rng.normal(size=(B, 3)))
    ks = tuple(sorted(int(i) for i in rng.choice(n, min(3, n), replace=False)))
    g = torch.as_tensor(rng.normal(size=(B, models, len(ks))))
    backend = REGISTRY[GATHERING[0]]
    together = [t.clone().requires_grad_(True) for t in (table, extra, diagonal)]
    values = kth_eigvalsh_gathered(*together, rows, weights, ks, backend, dense=dense)
    assert values.shape == (B, models, len(ks))
    (values * g).sum().backward()
    apart = [t.clone().requires_grad_(True) for t in (table, extra, diagonal)]
    each = torch.stack([kth_eigvalsh_gathered(*apart, rows, weights, k, backend, dense=dense) for k in ks], dim=-1)
    (each * g).sum().backward()
    torch.testing.assert_close(values.detach(), each.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(together, apart):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), lead=st.lists(st.integers(0, 4), min_size=1, max_size=2),
       dtype=st.sampled_from([torch.float32, torch.float64]), scale=st.sampled_from([1e-30, 1.0, 1e30]),
       seed=st.integers(0, 2**31 - 1))
def test_a_stack_through_the_gathered_kernel_is_the_dense_kernel_to_the_bit(n, lead, dtype, scale, seed):
    """kth_eigvalsh_stacked (a model's norms: each matrix one table row of weight one, zero diagonal)
    gives the dense kernel's values to the bit, extreme indices together, and the same gradient;
    with zero and non-finite matrices in the stack."""
    from skspectral.eig._api import kth_eigvalsh_unchecked
    from skspectral.eig._gathered import kth_eigvalsh_stacked

    backend = REGISTRY[GATHERING[0]]
    rng = np.random.default_rng(seed)
    A = torch.as_tensor(rng.normal(size=(*lead, n, n)) * scale, dtype=dtype)
    A = 0.5 * (A + A.transpose(-1, -2))
    flat = A.view(-1, n, n)
    if flat.shape[0] > 1:
        flat[0] = 0.0
        flat[1, -1, 0] = float("nan")
    ks = (0, n - 1) if n > 1 else 0
    dense = kth_eigvalsh_unchecked(A, ks, backend)
    stacked = kth_eigvalsh_stacked(A, ks, backend)
    assert stacked.shape == dense.shape and stacked.dtype == dtype
    assert torch.equal(torch.nan_to_num(stacked, nan=7.0), torch.nan_to_num(dense, nan=7.0))
    assert torch.equal(stacked.isnan(), dense.isnan())

    finite = torch.isfinite(A).flatten(-2).all(-1)
    A1, A2 = A[finite].clone().requires_grad_(), A[finite].clone().requires_grad_()
    g = torch.as_tensor(rng.normal(size=kth_eigvalsh_unchecked(A1.detach(), ks, backend).shape), dtype=dtype)
    (kth_eigvalsh_unchecked(A1, ks, backend) * g).sum().backward()
    (kth_eigvalsh_stacked(A2, ks, backend) * g).sum().backward()
    torch.testing.assert_close(A2.grad, A1.grad, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0.0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), models=st.integers(1, 5), B=st.integers(0, 40), T=st.integers(1, 6),
       indices=st.integers(1, 3), chunks=st.integers(1, 6), layout=st.sampled_from(["full", "packed", "tridiagonal"]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_the_gradient_over_threads_is_the_serial_gradient_to_the_bit(n, models, B, T, indices, chunks, layout, dtype,
                                                                    seed):
    """The gathered gradient's parallel kernel -- rows' gradients split by rows, the sums by model and, with
    fewer models than threads, by table rows -- gives the serial kernel's bits for any thread count: each
    entry adds its terms in the same order (rows of -1, zero weights, zero gradients, a table row twice in
    one row included)."""
    pytest.importorskip("numba")
    from skspectral.eig import _numba_kernels as kernels

    rng = np.random.default_rng(seed)
    R, R_extra = 7, 4
    length = (n * (n + 1) // 2 if layout == "packed" else n * n) if layout != "tridiagonal" else 2 * n
    rows = rng.integers(-1, R + R_extra, (B, T))
    if B and T > 1:
        rows[0, 1] = rows[0, 0]  # one table row twice in a row's terms
    weights = rng.normal(size=(B, T)).astype(dtype)
    weights[rng.random((B, T)) < 0.2] = 0.0
    g = rng.normal(size=(B, models, indices)).astype(dtype)
    g[rng.random((B, models, indices)) < 0.2] = 0.0
    vectors = rng.normal(size=(B, models, indices, n)).astype(dtype)
    dense = layout != "tridiagonal"

    def gradients(chunks):
        out = (np.full((models, R, length), np.nan, dtype), np.full((models, R_extra, length), np.nan, dtype),
               np.full((models, n), np.nan, dtype))
        grad_kernel = kernels.gathered_grad_kernel(dtype)
        if chunks:
            kernels.gathered_grad_parallel(*out, g, vectors, rows, weights, dense, grad_kernel, chunks)
        else:
            kernels.gathered_grad_serial(*out, g, vectors, rows, weights, dense, grad_kernel)
        return out

    serial = gradients(0)
    assert all(np.isfinite(part).all() for part in serial)  # every entry written (the buffers start as NaN)
    for ours, reference in zip(gradients(chunks), serial):
        np.testing.assert_array_equal(ours, reference)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20), models=st.integers(1, 3), B=st.integers(1, 12), indices=st.integers(1, 4),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_row_gradients_of_several_indices_have_the_element_by_element_bits(n, models, B, indices, dtype, seed):
    """A row's packed gradient sum_j g_j q_j q_j^T (off-diagonal entries doubled) is written a vector of a
    matrix row's entries at a time for several indices (packed_row_gradient), element by element for one:
    each entry is 0 + the indices' terms in order, ((g_j q_ji) q_jk) doubled (k < i) or (g_j q_ji) q_ji --
    numpy's float32/float64 arithmetic in that order gives the same bits, with rows of zero gradient
    (left as they were) and gradients of -0.0; the padding after a row's entries is the kernel's."""
    pytest.importorskip("numba")
    from skspectral.eig import _numba_kernels as kernels

    rng = np.random.default_rng(seed)
    L = n * (n + 1) // 2
    g = (rng.normal(size=(B, models, indices)) * 10.0 ** rng.integers(-6, 3)).astype(dtype)
    g[rng.random(g.shape) < 0.2] = 0.0
    g[rng.random(g.shape) < 0.1] = -0.0
    vectors = rng.normal(size=(B, models, indices, n)).astype(dtype)
    width = 8 if dtype == np.float32 else 4
    dMs = np.full((B, models, L + width), np.nan, dtype)
    kernels.row_gradients(g, vectors, True, L, dMs, 0, B)
    for b in range(B):
        for m in range(models):
            if not (g[b, m] != 0).any():
                assert np.isnan(dMs[b, m, :L]).all()  # a row without gradient is left as it was
                continue
            expected = np.zeros(L, dtype)
            for j in range(indices):
                q = vectors[b, m, j]
                p = 0
                for i in range(n):
                    gq = g[b, m, j] * q[i]
                    for k in range(i):
                        product = gq * q[k]
                        expected[p] += product + product
                        p += 1
                    expected[p] += gq * q[i]
                    p += 1
            assert expected.tobytes() == dMs[b, m, :L].tobytes()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 16), B=st.integers(1, 21), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1e-30, 1.0, 1e30]), seed=st.integers(0, 2**31 - 1))
def test_packed_lanes_loaded_together_solve_as_the_dense_kernel_to_the_bit(n, B, dtype, scale, seed):
    """The gathered kernel's packed triangles, loaded a vector's width of lanes at a time (transposed in
    registers: _numba_lanes.load_packed_lanes), give the dense kernel's values and vectors (each matrix
    loaded alone) to the bit: matrices as packed table rows of weight one, a zero diagonal; zero and
    non-finite matrices, partial blocks of lanes, every triangle length."""
    pytest.importorskip("numba")
    from skspectral.eig import _numba_kernels as kernels

    rng = np.random.default_rng(seed)
    A = (rng.normal(size=(B, n, n)) * scale).astype(dtype)
    A = (A + A.transpose(0, 2, 1)) / dtype(2)
    A[0] = 0.0
    if B > 2:
        A[2, n - 1, 0] = np.nan
    lower = np.tril_indices(n)
    table = np.ascontiguousarray(A[:, lower[0], lower[1]][None])  # (1, B, n(n+1)/2), row by row
    ks = np.array(sorted({0, n // 2, n - 1}), np.int64)
    values, vectors = np.zeros((B, 1, len(ks)), dtype), np.zeros((B, 1, len(ks), n), dtype)
    kernels.gathered_serial(table, np.zeros((1, 0, table.shape[2]), dtype), np.zeros((1, n), dtype),
                            np.arange(B)[:, None], np.ones((B, 1), dtype), ks, True, True, values, vectors,
                            kernels.lane_solver(dtype), kernels.gathered_range_kernel(dtype))
    dense_values, dense_vectors = np.zeros((B, len(ks)), dtype), np.zeros((B, len(ks), n), dtype)
    kernels.run_serial(A, True, ks, True, dense_values, dense_vectors, kernels.lane_solver(dtype))
    np.testing.assert_array_equal(values[:, 0], dense_values)
    np.testing.assert_array_equal(vectors[:, 0], dense_vectors)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_call_the_c_functions_by_their_address_and_link_none_of_their_code(dtype):
    """The lanes' solve (pairs and tridiagonal_pairs, ~0.7 MB of LLVM IR a dtype), gathered_range and the
    gathered gradient's parts are cfuncs the kernels call by their address: a kernel links none of their
    code, which Numba would otherwise optimise and compile again in every caller's library (up to seven
    levels of a fit's call tree: a first fit's compile ~8 s longer for the lanes' solve, ~6 s for the
    other two), and the kernels solve as before (numpy's eigenpairs, dense, packed and tridiagonal) and give
    the gradient sum_j g_j q_j q_j^T on the table rows and the diagonal."""
    numba = pytest.importorskip("numba")
    from skspectral.eig import _numba_kernels as kernels

    rng = np.random.default_rng(0)
    B, n = 11, 5
    A = rng.normal(size=(B, n, n)).astype(dtype)
    A = (A + A.transpose(0, 2, 1)) / dtype(2)
    ks = np.array([1, 3], np.int64)
    other = np.float64 if dtype == np.float32 else np.float32
    addresses = (kernels.lane_solver(dtype), kernels.gathered_range_kernel(dtype), kernels.gathered_grad_kernel(dtype))
    others = (kernels.lane_solver(other), kernels.gathered_range_kernel(other), kernels.gathered_grad_kernel(other))
    # one cfunc a dtype, compiled once
    assert addresses == (kernels.lane_solver(dtype), kernels.gathered_range_kernel(dtype),
                         kernels.gathered_grad_kernel(dtype))
    assert len(set(addresses + others)) == 6
    solver = addresses[0]

    @numba.njit  # not cached: its IR holds what it links of each kernel
    def dense(A, ks, values, vectors, solver):
        kernels.run_serial(A, True, ks, True, values, vectors, solver)

    @numba.njit
    def gathered(table, extra, diagonal, rows, weights, ks, values, vectors, g, grads, addresses):
        solver, range_kernel, grad_kernel = addresses
        kernels.gathered_serial(table, extra, diagonal, rows, weights, ks, True, True, values, vectors, solver,
                                range_kernel)
        kernels.gathered_parallel(table, extra, diagonal, rows, weights, ks, True, True, values, vectors, solver,
                                  range_kernel, 2)
        kernels.gathered_grad_serial(grads[0], grads[1], grads[2], g, vectors, rows, weights, True, grad_kernel)
        kernels.gathered_grad_parallel(grads[0], grads[1], grads[2], g, vectors, rows, weights, True, grad_kernel, 2)

    lower = np.tril_indices(n)
    table = np.ascontiguousarray(A[:, lower[0], lower[1]][None])
    extra, diagonal = np.zeros((1, 0, table.shape[2]), dtype), np.zeros((1, n), dtype)
    rows, weights = np.arange(B)[:, None], np.ones((B, 1), dtype)
    values, vectors = np.zeros((B, 2), dtype), np.zeros((B, 2, n), dtype)
    gathered_values, gathered_vectors = np.zeros((B, 1, 2), dtype), np.zeros((B, 1, 2, n), dtype)
    g = rng.normal(size=(B, 1, 2)).astype(dtype)
    grads = (np.full(table.shape, np.nan, dtype), np.full(extra.shape, np.nan, dtype), np.full((1, n), np.nan, dtype))
    dense(A, ks, values, vectors, solver)
    gathered(table, extra, diagonal, rows, weights, ks, gathered_values, gathered_vectors, g, grads, addresses)
    dense_code = dense.inspect_llvm(dense.signatures[0])
    gathered_code = gathered.inspect_llvm(gathered.signatures[0])
    assert "dense_range" in dense_code and "load_lane" in dense_code  # a kernel's own code is linked here
    for function in ("householder", "tridiagonal_pairs", "kth_value", "inverse_iteration", "gathered_range",
                     "gather_into", "load_packed_lanes", "store_lane", "row_gradients", "gathered_grad_model",
                     "scatter_into"):
        assert function not in gathered_code
        if function in ("householder", "tridiagonal_pairs", "kth_value", "inverse_iteration"):
            assert function not in dense_code
    expected_values, expected_vectors = np.linalg.eigh(A.astype(np.float64))
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    for got_values, got_vectors in ((values, vectors), (gathered_values[:, 0], gathered_vectors[:, 0])):
        np.testing.assert_allclose(got_values, expected_values[:, ks], atol=tolerance * 10)
        overlap = np.abs(np.einsum("bkn,bnk->bk", got_vectors.astype(np.float64), expected_vectors[:, :, ks]))
        np.testing.assert_allclose(overlap, 1.0, atol=tolerance * 10)
    # the gradient of sum_bj g_bj lambda_kj (each matrix a table row taken once): the packed triangle of
    # sum_j g_j q_j q_j^T with the off-diagonal entries doubled, and the diagonal's sum_bj g_bj q_j^2
    q = gathered_vectors[:, 0].astype(np.float64)
    full = np.einsum("bk,bki,bkj->bij", g[:, 0].astype(np.float64), q, q)
    expected_table = (full * (2.0 - np.eye(n)))[:, lower[0], lower[1]]
    np.testing.assert_allclose(grads[0][0], expected_table, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grads[2][0], np.einsum("bii->i", full), rtol=tolerance, atol=tolerance)
    d, e = np.ascontiguousarray(A[:, range(n), range(n)]), np.ascontiguousarray(A[:, range(1, n), range(n - 1)])
    tridiagonal_values, tridiagonal_vectors = np.zeros((B, 2), dtype), np.zeros((B, 2, n), dtype)
    kernels.tridiagonal_serial(d, e, ks, True, tridiagonal_values, tridiagonal_vectors, solver)
    T = np.zeros((B, n, n))
    T[:, range(n), range(n)], T[:, range(1, n), range(n - 1)], T[:, range(n - 1), range(1, n)] = d, e, e
    np.testing.assert_allclose(tridiagonal_values, np.linalg.eigvalsh(T)[:, ks], atol=tolerance * 10)


def test_a_c_function_called_with_other_types_than_it_was_compiled_for_is_a_typing_error():
    """The gathered kernels call gathered_range's C function with their arrays' pointers and shapes: weights of
    another dtype than the tables', or a strided array, would be read with the wrong layout. The call is a
    typing error that names what the function takes, never a call."""
    numba = pytest.importorskip("numba")
    from skspectral.eig import _numba_kernels as kernels

    n, B = 3, 2
    table, extra, diagonal = np.zeros((1, 4, n * n), np.float32), np.zeros((1, 0, n * n), np.float32), \
        np.zeros((1, n), np.float32)
    rows, ks = np.zeros((B, 1), np.int64), np.array([0], np.int64)
    values, vectors = np.zeros((B, 1, 1), np.float32), np.zeros((B, 1, 1, n), np.float32)
    addresses = (kernels.lane_solver(np.float32), kernels.gathered_range_kernel(np.float32))
    wrong = ((np.ones((B, 1)), "float64"), (np.ones((B, 2), np.float32)[:, ::2], "array(float32, 2d, A)"))
    for weights, named in wrong:
        with pytest.raises(numba.core.errors.TypingError, match="compiled for the arguments") as raised:
            kernels.gathered_serial(table, extra, diagonal, rows, weights, ks, True, True, values, vectors, *addresses)
        assert named in str(raised.value)
    weights = np.ones((B, 1), np.float32)
    kernels.gathered_serial(table, extra, diagonal, rows, weights, ks, True, True, values, vectors, *addresses)
    np.testing.assert_array_equal(values, 0.0)  # zero matrices: lambda = 0


def test_a_fit_on_another_thread_waits_for_the_helper_compiling_the_c_functions_ahead(monkeypatch):
    """Fits on several threads after an install (a search on joblib's threads): the first to need the C
    functions waits for the helper compiling them into the cache, and so does every other -- a fit that
    found the helper already taken off the list went on while it ran, and compiled them itself."""
    pytest.importorskip("numba")
    import threading
    import time

    from skspectral.eig import _numba_kernels

    done = threading.Event()

    class Helper:  # a helper process that takes a while
        def wait(self, timeout=None):
            time.sleep(0.3)
            done.set()

    dtype = np.dtype("float32")
    monkeypatch.setattr(_numba_kernels, "_ahead", {dtype: Helper()})
    returned = []

    def fit_needs_them():
        _numba_kernels._await_ahead(dtype)
        returned.append(done.is_set())

    threads = [threading.Thread(target=fit_needs_them) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=10)
    assert returned == [True] * 4 and _numba_kernels._ahead == {}
