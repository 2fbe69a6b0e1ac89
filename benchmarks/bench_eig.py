"""Benchmark of the k-th eigenvalue: torch.linalg vs raw CuPy vs kth_eigvalsh.

    python benchmarks/bench_eig.py --cuda [--quick]   # on a GPU
    python benchmarks/bench_eig.py --cpu              # on the 2-core CI-like CPU (Numba kernel vs torch)
    python benchmarks/bench_eig.py --cuda --indices 1 3 5 --ns 15 --batches 800 5240
                                          # several eigenvalues of each matrix (a model's quantiles)
    python benchmarks/bench_eig.py --paired --ns 8 15 16 --batches 1000 2620 5240 8448 20000
                                          # the fused kernel: two matrices a warp vs one a block

CUDA timings use CUDA events on torch's current stream after a warm-up; each
number is the median of several repeats (ms per call, whole batch). Each row
measures the baselines in the same run. Results as a markdown table on stdout
and as JSON (--json PATH).
"""

from __future__ import annotations

import argparse
import json
import sys
from unittest import mock

import torch
from _common import markdown_table, sym_batch, time_cpu, time_cuda, versions, write_json

from skspectral import kth_eigvalsh, resolve_backend
from skspectral.eig import REGISTRY
from skspectral.regressor import quantile_indices
from skspectral.eig._cupy_support import current_cupy_stream


def torch_fwd(A, k):
    return lambda: torch.linalg.eigvalsh(A)[:, k]


def torch_fwdbwd(A, k):
    X = A.detach().requires_grad_(True)

    def run():
        X.grad = None
        torch.linalg.eigvalsh(X)[:, k].sum().backward()

    return run


def ours_fwd(A, k, backend="auto"):
    def run():
        with torch.no_grad():
            return kth_eigvalsh(A, k, backend=backend)

    return run


def ours_fwdbwd(A, k, backend="auto"):
    X = A.detach().requires_grad_(True)

    def run():
        X.grad = None
        kth_eigvalsh(X, k, backend=backend).sum().backward()

    return run


def cupy_fwd(A, k):
    import cupy

    stream = current_cupy_stream(torch.cuda.current_device())

    def run():
        with stream:
            return cupy.linalg.eigvalsh(cupy.from_dlpack(A))[:, k]

    return run


def cupy_fwdbwd(A, k):
    import cupy

    stream = current_cupy_stream(torch.cuda.current_device())

    def run():
        with stream:
            w, v = cupy.linalg.eigh(cupy.from_dlpack(A))
            q = v[:, :, k]
            return w[:, k], q[:, :, None] * q[:, None, :]

    return run


def run_cuda(quick: bool, ns=None, batches=None):
    ns = ns or [4, 8, 16, 32, 45, 64, 100, 128]
    batches = batches or ([1, 64, 1024, 4096, 16384, 65536] if not quick else [1, 4096])
    dtypes = [torch.float32, torch.float64]
    have_cupy = REGISTRY["cupy"].is_available()
    kernel = REGISTRY["kernel"]
    rows = []
    # skip a torch config when a smaller batch already predicts > this per call
    torch_limit_ms = 3000.0
    for dtype in dtypes:
        for n in ns:
            torch_ms_per_matrix = {}
            for B in batches:
                A = sym_batch(B, n, dtype, "cuda")
                k = n // 2
                row = {"dtype": str(dtype)[6:], "n": n, "B": B, "auto": resolve_backend("cuda", n, dtype, B)}
                for mode, t_fn, c_fn, o_fn in (
                    ("fwd", torch_fwd, cupy_fwd, ours_fwd),
                    ("fwdbwd", torch_fwdbwd, cupy_fwdbwd, ours_fwdbwd),
                ):
                    # torch's time per matrix only falls with B, so a smaller batch bounds it
                    predicted = torch_ms_per_matrix.get(mode, 0) * B
                    row[f"torch_{mode}"] = time_cuda(t_fn(A, k)) if predicted < torch_limit_ms else None
                    if row[f"torch_{mode}"] is not None and B >= 64:
                        torch_ms_per_matrix[mode] = row[f"torch_{mode}"] / B
                    row[f"cupy_{mode}"] = time_cuda(c_fn(A, k)) if have_cupy else None
                    row[f"auto_{mode}"] = time_cuda(o_fn(A, k))
                    if kernel.is_available() and kernel.supports("cuda", n):
                        row[f"kernel_{mode}"] = time_cuda(o_fn(A, k, "kernel"))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                del A
                torch.cuda.empty_cache()
    return rows


def run_cpu(quick: bool, ns=None, batches=None):
    """torch.linalg against our CPU backends: "auto" (the Numba kernel for n <= 64) and
    "torch" (LAPACK single-threaded, the batch over a thread pool); syevr for one pair."""
    import scipy.linalg.lapack as lapack

    rows = []
    batches = batches or ([1, 16, 200, 4096, 65536] if not quick else [16, 200])
    for dtype in (torch.float32, torch.float64):
        for n in ns or [8, 15, 30, 45, 64]:
            for B in batches:
                A = sym_batch(B, n, dtype, "cpu")
                k = n // 2
                row = {"dtype": str(dtype)[6:], "n": n, "B": B, "auto": resolve_backend("cpu", n, dtype, B)}
                row["torch_fwd"] = time_cpu(torch_fwd(A, k))
                row["torch_fwdbwd"] = time_cpu(torch_fwdbwd(A, k))
                row["auto_fwd"] = time_cpu(ours_fwd(A, k))
                row["auto_fwdbwd"] = time_cpu(ours_fwdbwd(A, k))
                if row["auto"] != "torch":
                    row["torch_backend_fwdbwd"] = time_cpu(ours_fwdbwd(A, k, "torch"))
                if B <= 256:  # the k-th pair only (LAPACK syevr), one call per matrix
                    syevr = lapack.ssyevr if dtype == torch.float32 else lapack.dsyevr
                    An = A.numpy()
                    row["syevr_pair"] = time_cpu(lambda: [syevr(a, range="I", il=k + 1, iu=k + 1) for a in An])
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def side_by_side_vs_loop(A, k, timer, kernel_backend) -> dict:
    """The fused kernel's time with several indices side by side (compiled with SEVERAL, whatever n)
    over its one-index loop's."""
    times = {}
    for label, limit in (("side", kernel_backend.MAX_N), ("loop", 0)):
        with mock.patch.object(kernel_backend, "SEVERAL_MAX_N", limit):
            times[label] = (timer(ours_fwd(A, k, "kernel")), timer(ours_fwdbwd(A, k, "kernel")))
    return {"fwd_vs_loop": times["side"][0] / times["loop"][0], "fwdbwd_vs_loop": times["side"][1] / times["loop"][1]}


def run_indices(device: str, counts: list, ns=None, batches=None):
    """The default backend for 1, 3, ... indices of each matrix in one call: what a model's
    several quantiles cost beside one (ms per call; ratio to one index in the same run). On CUDA
    also ``*_vs_loop``: the fused kernel with the indices side by side over the same kernel taking
    them one after the other (SEVERAL_MAX_N chooses between the two by n)."""
    from skspectral.eig import _kernel_backend

    timer = time_cuda if device == "cuda" else time_cpu
    rows = []
    for dtype in (torch.float32, torch.float64):
        for n in ns or [15]:
            for B in batches or ([800, 5240] if device == "cuda" else [600, 4096]):
                A = sym_batch(B, n, dtype, device)
                base = {}
                for count in counts:
                    ks = quantile_indices(n // 2, count, n)  # a quantile model's, around the default k
                    k = ks[0] if count == 1 else ks
                    row = {"dtype": str(dtype)[6:], "n": n, "B": B, "indices": count,
                           "auto": resolve_backend(device, n, dtype, B),
                           "fwd": timer(ours_fwd(A, k)), "fwdbwd": timer(ours_fwdbwd(A, k))}
                    base = base or row
                    row["fwd_vs_one"] = row["fwd"] / base["fwd"]
                    row["fwdbwd_vs_one"] = row["fwdbwd"] / base["fwdbwd"]
                    if device == "cuda" and count > 1 and row["auto"] == "kernel":
                        row.update(side_by_side_vs_loop(A, k, timer, _kernel_backend))
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def kernel_us(run, calls: int = 20) -> float:
    """Microseconds a call of ``run``, timed over ``calls`` back-to-back launches (the GPU's time,
    not the host's launch gaps)."""
    ms = time_cuda(lambda: [run() for _ in range(calls)])
    return ms * 1000 / calls


def run_paired(ns=None, batches=None):
    """The fused kernel with two matrices a warp (compiled with PAIRED, n <= PAIRED_MAX_N) against
    one matrix a block, on the training's call (packed lower triangles, value and vector) and
    prediction's (values only); also the paired float32 kernel held to 32 blocks an SM (``paired32``:
    PAIRED_MIN_BLOCKS = 32, 64 registers a thread); measured in the same run, microseconds a call."""
    from skspectral.eig import _kernel_backend

    default = _kernel_backend.PAIRED_MAX_N
    rows = []
    for dtype in (torch.float32, torch.float64):
        for n in ns or [8, 15, 16]:
            rows_i, cols_i = torch.tril_indices(n, n)
            for B in batches or [1000, 2620, 5240, 8448, 20000]:
                P = sym_batch(B, n, dtype, "cuda")[:, rows_i, cols_i].contiguous()
                k = n // 2
                row = {"dtype": str(dtype)[6:], "n": n, "B": B}
                for label, limit, blocks in (("paired", default, 1), ("paired32", default, 32), ("one", 0, 1)):
                    with mock.patch.multiple(_kernel_backend, PAIRED_MAX_N=limit, PAIRED_MIN_BLOCKS=blocks):
                        row[f"{label}_vector_us"] = kernel_us(lambda: _kernel_backend.packed_k(P, n, k, True))
                        row[f"{label}_value_us"] = kernel_us(lambda: _kernel_backend.packed_k(P, n, k, False))
                row["vector_ratio"] = row["paired_vector_us"] / row["one_vector_us"]
                row["value_ratio"] = row["paired_value_us"] / row["one_value_us"]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    p.add_argument("--ns", type=int, nargs="+")
    p.add_argument("--batches", type=int, nargs="+")
    p.add_argument("--indices", type=int, nargs="+", metavar="COUNT",
                   help="only time COUNT indices per matrix (a quantile model's: every other one around "
                        "n // 2), e.g. 1 3 5")
    p.add_argument("--paired", action="store_true",
                   help="only time the fused kernel with two matrices a warp against one a block (CUDA)")
    a = p.parse_args()
    out = {"versions": versions("cuda" if a.cuda or a.paired else "cpu")}
    print(json.dumps(out["versions"]))
    if a.paired:
        out["paired"] = run_paired(a.ns, a.batches)
        cols = ["dtype", "n", "B", "paired_vector_us", "paired32_vector_us", "one_vector_us", "vector_ratio",
                "paired_value_us", "paired32_value_us", "one_value_us", "value_ratio"]
        print("\nCUDA, the fused kernel, us per call (median; packed input):\n" + markdown_table(out["paired"], cols))
        write_json(a.json, out)
        return
    if a.indices:
        for device in (["cuda"] if a.cuda else []) + (["cpu"] if a.cpu else []):
            out[f"indices_{device}"] = run_indices(device, a.indices, a.ns, a.batches)
            cols = ["dtype", "n", "B", "indices", "auto", "fwd", "fwd_vs_one", "fwdbwd", "fwdbwd_vs_one"]
            if device == "cuda":
                cols += ["fwd_vs_loop", "fwdbwd_vs_loop"]
            table = markdown_table(out[f"indices_{device}"], cols)
            print(f"\n{device}, several indices, ms per call (median):\n" + table)
        write_json(a.json, out)
        return
    if a.cuda:
        out["cuda"] = run_cuda(a.quick, a.ns, a.batches)
        cols = ["dtype", "n", "B", "auto", "torch_fwd", "cupy_fwd", "auto_fwd", "kernel_fwd",
                "torch_fwdbwd", "cupy_fwdbwd", "auto_fwdbwd", "kernel_fwdbwd"]
        print("\nCUDA, ms per call (median):\n" + markdown_table(out["cuda"], cols))
    if a.cpu:
        out["cpu"] = run_cpu(a.quick, a.ns, a.batches)
        cols = ["dtype", "n", "B", "auto", "torch_fwd", "auto_fwd", "torch_fwdbwd", "auto_fwdbwd",
                "torch_backend_fwdbwd", "syevr_pair"]
        print("\nCPU, ms per call (median):\n" + markdown_table(out["cpu"], cols))
    write_json(a.json, out)


if __name__ == "__main__":
    main()
