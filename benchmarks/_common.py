"""What every benchmark script shares: inputs, timers, versions, tables, the California split.

Scripts run from the repository root (``python benchmarks/NAME.py``); this module
puts the repository on ``sys.path`` so the checkout under test is what runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# California Housing is cached beside the repository on our machines (no internet there).
_SHARED_DATA = ROOT.parent / "shared" / "data" / "scikit_learn_data"
if "SCIKIT_LEARN_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["SCIKIT_LEARN_DATA"] = str(_SHARED_DATA)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def sym_batch(B: int, n: int, dtype: torch.dtype, device, seed: int = 0) -> torch.Tensor:
    """B random symmetric n x n matrices (Gaussian entries), generated on ``device``."""
    g = torch.Generator(device=device).manual_seed(seed)
    G = torch.randn(B, n, n, generator=g, device=device, dtype=dtype)
    return (G + G.mT) / 2


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_cuda(fn, budget_s: float = 0.25, max_reps: int = 50) -> float | None:
    """Median milliseconds of ``fn`` with CUDA events on the current stream, after a warm-up.

    None when the warm-up fails (e.g. torch's cuSOLVER call on very large batches).
    """
    try:
        fn()  # warm-up: compilation, handles, workspace
    except RuntimeError as exc:
        print(f"failed: {str(exc)[:120]}", file=sys.stderr)
        return None
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < 3 or (len(times) < max_reps and time.perf_counter() - t0 < budget_s):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_cpu(fn, budget_s: float = 0.5, max_reps: int = 30) -> float:
    """Median milliseconds of ``fn`` on the host clock, after a warm-up."""
    fn()
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < 3 or (len(times) < max_reps and time.perf_counter() - t0 < budget_s):
        s = time.perf_counter()
        fn()
        times.append((time.perf_counter() - s) * 1e3)
    return statistics.median(times)


def versions(device=None) -> dict:
    """The machine and library versions a result belongs to, and the date."""
    import sklearn

    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__, "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        info["device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        try:
            import cupy

            info["cupy"] = cupy.__version__
        except ImportError:
            pass
    else:
        info["device"] = f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    try:  # the CPU kernels' compiler and its code-generation settings (a debug or profiling run's are not the usual)
        import numba

        from skspectral._kernel_cache import codegen_settings

        info["numba"] = numba.__version__
        info["numba_codegen"] = dict(codegen_settings())
    except ImportError:
        pass
    return info


def fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def markdown_table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def named_json(items: list[str]) -> dict:
    """``--extra NAME=JSON ...`` as {NAME: parsed JSON} (a benchmark's ad-hoc model parameters)."""
    parsed = {}
    for item in items:
        name, _, params = item.partition("=")
        parsed[name] = json.loads(params)
    return parsed


def write_json(path, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1))


def california(test_size: float = 0.2, validation_size: float = 0.0, seed: int = 0):
    """California Housing split into train/test (and validation when asked), target in $100k."""
    from sklearn.datasets import fetch_california_housing
    from sklearn.model_selection import train_test_split

    X, y = fetch_california_housing(return_X_y=True)
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_size=test_size, random_state=seed)
    if not validation_size:
        return X_rest, X_test, y_rest, y_test
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=validation_size / (1 - test_size), random_state=seed
    )
    return X_train, X_val, X_test, y_train, y_val, y_test


def run_in_checkout(code: str, path: str, *args: str, timeout: int = 1800, env: dict | None = None) -> dict:
    """``python -c code args`` in a fresh process on the checkout at ``path`` (first on its path),
    returning the JSON object its last line prints: old code against new in the same minutes.
    ``env``: variables to set beside the current ones."""
    import subprocess

    env = dict(os.environ, **(env or {}), PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                         timeout=timeout, cwd=path)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def revision(path: str) -> str:
    """The checkout's short commit, with "+" where tracked files differ from it."""
    import subprocess

    out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return out.stdout.strip() + ("+" if dirty else "")
