"""FeatureEncoder and EncodingSpec: the encoded columns on the device."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from skspectral import SpectralModel
from skspectral.encoding import LEVEL, LINEAR, MISSING, PIECEWISE, EncodingSpec, FeatureEncoder

SPEC = EncodingSpec(4, numeric=[0, 1, 3], edges=[None, [-1.0, 0.0, 2.0], [-2.0, -1.0, 0.0, 1.0, 2.0]], missing=[1],
                    categorical=[2], n_levels=[4], has_missing_level=[True])


def test_columns_follow_the_encoders_output_order():
    feature, kind, width = SPEC.columns()
    np.testing.assert_array_equal(feature, [0, 1, 1, 3, 3, 3, 3, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(kind, [LINEAR] + [PIECEWISE] * 6 + [MISSING] + [LEVEL] * 4)
    np.testing.assert_array_equal(width, [1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    assert SPEC.n_columns == 12 and not SPEC.is_plain_linear and EncodingSpec.linear(3).is_plain_linear


def test_encoded_values():
    encoder = FeatureEncoder(SPEC, dtype=torch.float64)
    nan = float("nan")
    X = torch.tensor([[0.5, 1.0, 0, -0.5], [1.0, nan, -1, 3.0], [2.0, -3.0, -2, nan]], dtype=torch.float64)
    expected = torch.tensor([
        [0.5, 1.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0, 1, 0, 0, 0],  # level 0
        [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 1, 0],  # NaN -> missing column; -1 -> "other"
        [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 1],  # -2 -> "missing" level
    ], dtype=torch.float64)
    torch.testing.assert_close(encoder(X), expected)


def test_missing_code_without_a_missing_level_goes_to_other():
    spec = EncodingSpec(1, categorical=[0], n_levels=[3], has_missing_level=[False])
    Z = FeatureEncoder(spec, dtype=torch.float64)(torch.tensor([[0.0], [1.0], [-1.0], [-2.0]], dtype=torch.float64))
    torch.testing.assert_close(Z, torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], dtype=torch.float64))


def test_piecewise_columns_are_a_continuous_path():
    spec = EncodingSpec(1, numeric=[0], edges=[[-1.0, -0.2, 0.5, 3.0]])
    encoder = FeatureEncoder(spec, dtype=torch.float64)
    x = torch.linspace(-2, 4, 601, dtype=torch.float64)[:, None]
    Z = encoder(x)
    assert Z.min() >= 0 and Z.max() <= 1
    # sum_t w_t z_t(x) = clip(x, first edge, last edge) - first edge: moving x moves the columns by |dx|
    widths = torch.tensor([0.8, 0.7, 2.5], dtype=torch.float64)
    torch.testing.assert_close(Z @ widths, x[:, 0].clamp(-1.0, 3.0) + 1.0)


@pytest.mark.parametrize("n_members", [1, 3])
def test_model_with_an_encoder_and_members(n_members):
    encoder = FeatureEncoder(SPEC, dtype=torch.float64)
    model = SpectralModel(4, 5, n_members=n_members, n_outputs=2, encoder=encoder, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    assert model.n_matrices == 12 and model.feature_matrices().shape == (2 * n_members, 12, 5, 5)
    X = torch.tensor([[0.5, 1.0, 0, -0.5], [1.0, float("nan"), -1, 3.0]], dtype=torch.float64)
    out = model(X)
    assert out.shape == ((2, n_members, 2) if n_members > 1 else (2, 2))
    M = model.matrices(X)
    expected = torch.linalg.eigvalsh(M)[..., 2].reshape(out.shape)
    torch.testing.assert_close(out, expected)
    # piecewise columns start smaller: about half of a feature's bins are active at once
    np.testing.assert_allclose(encoder.init_factor[1:3], 1 / np.sqrt(2))


@pytest.mark.parametrize("seed", range(4))
def test_gathered_terms_are_the_encoded_columns_compiled_or_not(seed):
    """sum_t weights * (columns, prefix sums)[rows] = Z @ columns, and the compiled terms (CPU,
    Numba) are torch's, value for value."""
    rng = np.random.default_rng(seed)
    encoder = FeatureEncoder(SPEC, dtype=torch.float64)
    X = torch.as_tensor(np.column_stack([rng.normal(size=60) * 2, rng.normal(size=60) * 2,
                                         rng.integers(-2, 3, 60), rng.normal(size=60) * 2]))
    X[rng.random(60) < 0.2, 1] = float("nan")
    X[rng.random(60) < 0.1, 3] = float("nan")
    X[:4, 3] = torch.tensor([-2.0, 0.0, 2.0, 9.0], dtype=torch.float64)  # on and past the edges
    columns = torch.as_tensor(rng.normal(size=(2, SPEC.n_columns, 3)))
    table = torch.cat([columns, encoder.prefix_sums(columns)], dim=1)
    rows, weights = encoder._torch_terms(X)
    gathered = torch.einsum("bt,mbtl->bml", weights, torch.cat([table, table[:, :1] * 0], 1)[:, rows])  # -1: zero
    dense = torch.einsum("bc,mcl->bml", encoder(X), columns)
    torch.testing.assert_close(gathered, dense, rtol=1e-12, atol=1e-12)
    from skspectral.encoding import _compiled

    if _compiled() is None:
        pytest.skip("Numba missing: the torch terms only")
    compiled = encoder.terms(X)
    torch.testing.assert_close(compiled[0], rows, rtol=0, atol=0)
    torch.testing.assert_close(compiled[1], weights, rtol=0, atol=0)


def _compiled_kernel_calls(monkeypatch, threads: str, prefix: str) -> list:
    """The encoder's compiled kernels ``{prefix}_{forward,backward}_{serial,parallel}`` recording
    which entry ran ("serial" or "parallel") into the returned list; "parallel" drops the work floor
    under which the kernels stay on the calling thread. Skips without Numba or a second thread."""
    from skspectral.eig import _numba_support
    from skspectral.encoding import _compiled

    if _compiled() is None:
        pytest.skip("Numba missing: the torch ops only")
    if threads == "parallel":
        if torch.get_num_threads() < 2:
            pytest.skip("one torch thread: the kernels run serially")
        monkeypatch.setattr(_numba_support, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setattr(_numba_support, "ELEMENTWISE_MIN_WORK", 0)
    kernels, calls = _compiled(), []
    for name in (f"{prefix}_forward_serial", f"{prefix}_forward_parallel", f"{prefix}_backward_serial",
                 f"{prefix}_backward_parallel"):
        monkeypatch.setattr(kernels, name, lambda *a, _run=getattr(kernels, name), _name=name:
                            (calls.append(_name.split("_")[-1]), _run(*a))[1])
    return calls


@pytest.mark.parametrize("threads", ["serial", "parallel"])
@pytest.mark.parametrize("seed", range(3))
def test_compiled_prefix_sums_are_torchs_value_for_value_and_gradient(seed, threads, monkeypatch):
    """The CPU's compiled prefix sums (forward and backward, one pass each, on the calling thread
    or over Numba's threads) give torch's cumsum values and gradients exactly (same sums, same
    order), padding bins included; gradcheck."""
    calls = _compiled_kernel_calls(monkeypatch, threads, "prefix")
    rng = np.random.default_rng(seed)
    spec = EncodingSpec(3, numeric=[0, 1, 2], edges=[[-1.0, 0.0, 2.0], list(np.linspace(-2, 2, 6)), None])
    encoder = FeatureEncoder(spec, dtype=torch.float64)
    columns = torch.as_tensor(rng.normal(size=(3, spec.n_columns, 5)), dtype=torch.float64).requires_grad_()
    compiled = encoder.prefix_sums(columns)
    F, T = encoder.bin_columns.shape
    padded = torch.cat([columns, columns.new_zeros(3, 1, 5)], dim=1)
    reference = padded[:, encoder.bin_columns.reshape(-1)].view(3, F, T, 5).cumsum(2).reshape(3, F * T, 5)
    assert compiled.grad_fn is not None and "Compiled" in type(compiled.grad_fn).__name__
    torch.testing.assert_close(compiled, reference, rtol=0, atol=0)
    upstream = torch.as_tensor(rng.normal(size=compiled.shape))
    torch.testing.assert_close(torch.autograd.grad(compiled, columns, upstream)[0],
                               torch.autograd.grad(reference, columns, upstream)[0], rtol=0, atol=0)
    assert torch.autograd.gradcheck(encoder.prefix_sums, (columns,))
    assert set(calls) == {threads}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", ["serial", "parallel"])
@pytest.mark.parametrize("seed", range(3))
def test_compiled_symmetric_tables_are_torchs_bit_for_bit(seed, threads, dtype, monkeypatch):
    """The dense model's gather tables made from its raw W in one compiled pass (the symmetric
    parts 0.5 (W + W^T), their lower triangles packed, and their prefix sums; backward, W's
    gradient from both tables') equal the torch graph they replace, bit for bit, in float64 and
    float32, on one thread or several, whichever outputs the loss reads; gradcheck in float64."""
    calls = _compiled_kernel_calls(monkeypatch, threads, "symmetric")
    rng = np.random.default_rng(seed)
    # a linear, a missing-value and two level columns besides two piecewise features (padding bins)
    spec = EncodingSpec(4, numeric=[0, 1, 2], edges=[[-1.0, 0.0, 2.0], list(np.linspace(-2, 2, 6)), None],
                        missing=[1], categorical=[3], n_levels=[2])
    encoder = FeatureEncoder(spec, dtype=dtype)
    n = 4
    weight = torch.as_tensor(rng.normal(size=(3, spec.n_columns, n, n)), dtype=dtype).requires_grad_()
    columns, prefix = encoder.symmetric_tables(weight)
    assert columns.grad_fn is not None and "Compiled" in type(columns.grad_fn).__name__
    lower = torch.tril_indices(n, n)  # packed row by row
    ref_columns = (0.5 * (weight + weight.transpose(-1, -2)))[..., lower[0], lower[1]]
    assert ref_columns.shape == (3, spec.n_columns, n * (n + 1) // 2)
    F, T = encoder.bin_columns.shape
    padded = torch.cat([ref_columns, ref_columns.new_zeros(3, 1, ref_columns.shape[2])], dim=1)
    ref_prefix = torch.stack([padded[:, encoder.bin_columns[f]] for f in range(F)], 1)
    for t in range(1, T):  # a sequential running sum, in the dtype (torch's cumsum may accumulate wider)
        ref_prefix[:, :, t] = ref_prefix[:, :, t - 1] + ref_prefix[:, :, t]
    ref_prefix = ref_prefix.reshape(3, F * T, ref_columns.shape[2])
    torch.testing.assert_close(columns, ref_columns, rtol=0, atol=0)
    torch.testing.assert_close(prefix, ref_prefix, rtol=0, atol=0)
    up_columns = torch.as_tensor(rng.normal(size=columns.shape), dtype=dtype)
    up_prefix = torch.as_tensor(rng.normal(size=prefix.shape), dtype=dtype)
    for outputs, references, upstream in [((columns, prefix), (ref_columns, ref_prefix), (up_columns, up_prefix)),
                                          ((columns,), (ref_columns,), (up_columns,)),
                                          ((prefix,), (ref_prefix,), (up_prefix,))]:
        got = torch.autograd.grad(outputs, weight, upstream, retain_graph=True)[0]
        expected = torch.autograd.grad(references, weight, upstream, retain_graph=True)[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(encoder.symmetric_tables, (weight,))
    assert set(calls) == {threads}


def test_a_fit_compiles_each_kernel_once_and_a_second_process_loads_them_from_numbas_cache(tmp_path):
    """Every compiled CPU kernel a fit uses is found in Numba's disk cache by the next process: the
    encoder's prefix sums, made inside a factory, were compiled again in every process (~3 s a
    process, and a cache file more each time). Two fresh processes on the package's cache: the
    second compiles nothing. And a fit compiles each kernel once: a compiled caller that passed a
    literal constant (``True``, ``0``) compiled its callee once more for that literal type (a first
    fit compiled ~30 % longer), and the dense eigen kernels (run_serial, run_parallel) are not
    needed by a fit, whose norms go through the gathered kernel."""
    pytest.importorskip("numba")
    code = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(2)\n"
        "from numba.core import types\n"
        "from numba.core.registry import CPUDispatcher\n"
        "from skspectral import SpectralRegressor, _encoding_kernels, _step_kernels\n"
        "from skspectral._training import _adam_kernel, _steps_kernel\n"
        "from skspectral.eig import _numba_kernels, _numba_lanes, _numba_support\n"
        "_numba_support.PARALLEL_MIN_WORK = _numba_support.ELEMENTWISE_MIN_WORK = 0  # the parallel kernels too\n"
        "X = np.random.RandomState(0).normal(size=(600, 3))\n"
        "X[::7, 1] = np.nan\n"
        "SpectralRegressor(dim=5, max_iter=2, random_state=0).fit(X, X[:, 0]).predict(X)\n"
        "for module in (_encoding_kernels, _numba_kernels, _numba_lanes, _step_kernels, _steps_kernel, _adam_kernel):\n"
        "    for name in dir(module):\n"
        "        f = getattr(module, name)\n"
        "        if isinstance(f, CPUDispatcher) and f.signatures:\n"
        "            literal = any(isinstance(t, types.Literal) for s in f.signatures for t in s)\n"
        "            print(name, sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values()),\n"
        "                  len(f.signatures), int(literal))\n"
        "k = _numba_kernels\n"
        "c_functions = {'lane_solver': _numba_lanes._lane_solver_cfunc(np.dtype('float32')),  # cfuncs\n"
        "               'gathered_range_kernel': k._c_function(k._gathered_range_c, k._gathered_range_types,\n"
        "                                                      np.dtype('float32')),\n"
        "               'gathered_grad_kernel': k._c_function(k._gathered_grad_c, k._gathered_grad_types,\n"
        "                                                     np.dtype('float32'))}\n"
        "for name, f in c_functions.items():\n"
        "    print(name, f.cache_hits, 1 - f.cache_hits, 1, 0)\n"
    )
    # an empty cache of its own: the first process compiles every kernel (its callees too, which a process
    # that loads its callers from the cache never sees), the second loads them
    env = dict(os.environ, OMP_NUM_THREADS="2", NUMBA_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, second = ({line.split()[0]: tuple(map(int, line.split()[1:])) for line in run.stdout.splitlines()}
                     for run in runs)
    # which of a kernel's serial and parallel entries ran depends on the threads the fit timed best
    assert "terms" in second and {"symmetric_forward_serial", "symmetric_forward_parallel"} & set(second)
    assert {"gathered_serial", "gathered_parallel"} & set(second)
    assert {name: misses for name, (hits, misses, _, _) in second.items() if misses} == {}
    c_functions = {"lane_solver", "gathered_range_kernel", "gathered_grad_kernel"}
    # the fit's models (four) run in groups: its one-thread steps run as one group, and the steps over the rows
    # (the other kernel) are not compiled
    assert "grouped_training_steps" in first and "training_steps" not in first and c_functions <= set(first)
    # the C functions compiled ahead by a helper process and loaded in the first process where it has a second
    # core (their callees then compiled there, not here), else compiled in the first; loaded in the second (no
    # miss above)
    ahead = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1
    assert {name: first[name][0] for name in c_functions} == dict.fromkeys(c_functions, int(ahead))
    callees = {"gathered_range", "row_gradients", "tridiagonal_pairs", "load_lane"}
    assert (not callees & set(first)) if ahead else callees <= set(first)
    assert not {"training_pass", "grouped_step"} & set(first)  # inlined into their kernels, not compiled alone
    assert "pairs" not in first  # inlined into the lanes' solve, not compiled on its own
    assert {name: count for name, (_, _, count, literal) in first.items() if count != 1 or literal} == {}
    assert not {"run_serial", "run_parallel", "dense_range"} & set(first)



def test_a_helper_process_compiles_the_c_functions_ahead_and_a_failed_helper_leaves_them_to_the_fit(tmp_path):
    """On an empty Numba cache a fit's C functions (the lanes' solve, gathered_range, the gradient) are
    compiled by a helper process while the fit compiles its steps: the fit loads them from the cache, and its
    numbers are a fit's that compiled them itself -- which a fit does where the helper fails. A cache that
    holds them starts no helper."""
    pytest.importorskip("numba")
    if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)) < 2:
        pytest.skip("one core: no helper")
    code = (
        "import sys, numpy as np, torch\n"
        "torch.set_num_threads(2)\n"
        "from skspectral import SpectralRegressor\n"
        "from skspectral.eig import _numba_kernels as k\n"
        "if sys.argv[1] == 'fail':\n"
        "    k._AHEAD_CODE = 'raise SystemExit(3)'\n"
        "started = []\n"
        "ahead = k.compile_c_functions_ahead\n"
        "k.compile_c_functions_ahead = lambda dtype: started.append(ahead(dtype)) or started[-1]\n"
        "X = np.random.RandomState(0).normal(size=(600, 3))\n"
        "print(repr(SpectralRegressor(dim=5, max_iter=2, random_state=0).fit(X, X[:, 0]).predict(X[:4]).tolist()))\n"
        "f32 = np.dtype('float32')\n"
        "print([k._numba_lanes._lane_solver_cfunc(f32).cache_hits,\n"
        "       k._c_function(k._gathered_range_c, k._gathered_range_types, f32).cache_hits,\n"
        "       k._c_function(k._gathered_grad_c, k._gathered_grad_types, f32).cache_hits],\n"
        "      started[0], any(started[1:]), k._ahead)\n"
    )

    def run(mode, cache):
        env = dict(os.environ, OMP_NUM_THREADS="2", NUMBA_CACHE_DIR=str(tmp_path / cache))
        done = subprocess.run([sys.executable, "-c", code, mode], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.splitlines()

    ahead, again, failed = run("ahead", "a"), run("ahead", "a"), run("fail", "b")
    # (the cfuncs' cache hits; whether the fit's first GatheredSteps started a helper, whether a later one did
    # (the refit's), the helpers still pending)
    assert ahead[1] == "[1, 1, 1] True False {}"  # compiled by the helper, loaded here
    assert again[1] == "[1, 1, 1] False False {}"  # in the cache: no helper
    assert failed[1] == "[0, 0, 0] True False {}"  # the helper failed: compiled here
    assert ahead[0] == again[0] == failed[0]

def test_the_tables_kernels_count_their_work_in_elements(monkeypatch):
    """The symmetric tables' kernels (one add or copy an element) take Numba's threads from
    ELEMENTWISE_MIN_WORK elements, not from the eigen kernels' floor (batch * n**3): a California step's
    tables (3 models, 256 table rows of 120 entries: 92,160 elements) run on two threads."""
    from skspectral.eig import _numba_support
    from skspectral.encoding import _symmetric_backward_args, _symmetric_forward_args

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(_numba_support, "parallel_threads", lambda: 2)
    models, n, n_columns, F, T = 3, 15, 128, 8, 16
    packed = n * (n + 1) // 2
    bin_columns, other = torch.arange(F * T).reshape(F, T), torch.zeros(0, dtype=torch.long)
    weight = torch.zeros(models, n_columns, n, n)
    columns, out = torch.zeros(models, n_columns, packed), torch.zeros(models, F * T, packed)
    forward = _symmetric_forward_args(weight, bin_columns, other, columns, out)[1]
    backward = _symmetric_backward_args(columns, out, bin_columns, other, weight)[1]
    for items, work, elementwise in (forward, backward):
        assert elementwise and work == models * (n_columns + F * T) * packed
        assert _numba_support.ELEMENTWISE_MIN_WORK <= work < _numba_support.PARALLEL_MIN_WORK
        assert _numba_support.parallel_chunks(items, work, elementwise) == 2
        assert _numba_support.parallel_chunks(items, work) == 0  # the eigen kernels' floor would keep it serial
