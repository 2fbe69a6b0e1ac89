"""The CUDA eigen kernels' sources run on the CPU, for CI (no GPU): compiled with g++ against
``warp_emulator.h`` (fibers stand for a block's threads) and called through ctypes on numpy arrays,
with the defines ``skspectral.eig._kernel_backend`` compiles them with."""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from skspectral.eig import _kernel_backend

HERE = Path(__file__).parent
KERNEL_SOURCE = Path(_kernel_backend.__file__).with_name("_kernel_source.cu").read_text()
TRIDIAGONAL_SOURCE = Path(_kernel_backend.__file__).with_name("_tridiagonal_source.cu").read_text()
_POINTER = ctypes.c_void_p


def available() -> bool:
    """g++ (C++17) and glibc's ucontext: Linux with a compiler."""
    return sys.platform.startswith("linux") and shutil.which("g++") is not None


def _compiled(defines: dict, source: str, driver: str, build_dir: Path) -> ctypes.CDLL:
    """The kernel's source with its defines and driver, compiled once per text into ``build_dir``."""
    text = ('#include "warp_emulator.h"\n' + "".join(f"#define {k} {v}\n" for k, v in defines.items()) + source
            + (HERE / driver).read_text())
    text_hash = hashlib.sha1((text + (HERE / "warp_emulator.h").read_text()).encode()).hexdigest()[:16]
    library = Path(build_dir) / f"kernel_{text_hash}.so"
    if not library.exists():
        cpp = library.with_suffix(".cpp")
        cpp.write_text(text)
        # -O0: no two places in the source may share one return address (the emulator's check)
        subprocess.run(["g++", "-std=c++17", "-O0", "-w", "-shared", "-fPIC", f"-I{HERE}", str(cpp),
                        "-o", str(library)], check=True, capture_output=True)
    return ctypes.CDLL(str(library))


def _real(dtype: torch.dtype):
    return np.float32 if dtype == torch.float32 else np.float64


class EmulatedEigenKernel:
    """``kth_eigenpair`` for n x n matrices (n <= 64: one or two warps a block) of ``dtype``, compiled as
    ``_kernel_backend`` would for the flags given; ``source`` replaces the kernel's text (a test of
    the emulator itself)."""

    def __init__(self, n: int, dtype: torch.dtype, build_dir: Path, *, several: bool = False,
                 packed: bool = False, paired: bool = False, source: str = KERNEL_SOURCE):
        if not 2 <= n <= 64:
            raise ValueError(f"the emulator runs blocks of one or two warps: 2 <= n <= 64, got {n}")
        self.n, self.dtype, self.packed, self.paired = n, dtype, packed, paired
        defines = {"N": str(n), **_kernel_backend._DEFINES[dtype], "SEVERAL": str(int(several)),
                   "PACKED": str(int(packed)), "PAIRED": str(int(paired)), "MIN_BLOCKS": "1"}
        self._library = _compiled(defines, source, "eigen_kernel_driver.cpp", build_dir)

    def __call__(self, inputs: np.ndarray, ks, want_vector: bool = True, lower: bool = True):
        """(divergent, values (B, K), vectors (B, K, n)) for a batch of matrices (B, n, n), or of their
        lower triangles (B, n (n + 1) / 2) when packed, and evenly spaced indices ``ks`` (an int or a
        tuple). Outputs start as 7.0: an entry the kernel never wrote shows as 7."""
        ks = (ks,) if isinstance(ks, int) else tuple(ks)
        stride = ks[1] - ks[0] if len(ks) > 1 else 1
        real = _real(self.dtype)
        inputs = np.ascontiguousarray(inputs, dtype=real)
        batch = inputs.shape[0]
        values = np.full((batch, len(ks)), 7.0, dtype=real)
        vectors = np.full((batch, len(ks), self.n), 7.0, dtype=real)
        grid = (batch + 1) // 2 if self.paired else batch
        divergent = self._library.emulate(
            _POINTER(inputs.ctypes.data), _POINTER(values.ctypes.data), _POINTER(vectors.ctypes.data),
            ctypes.c_int(ks[0]), ctypes.c_int(len(ks)), ctypes.c_int(stride), ctypes.c_int(int(lower or self.packed)),
            ctypes.c_int(int(want_vector)), ctypes.c_longlong(batch), ctypes.c_longlong(grid))
        return bool(divergent), values, vectors


class EmulatedTridiagonalKernel:
    """``kth_tridiagonal`` (a warp a matrix, any n) for ``dtype``, compiled as ``_kernel_backend`` would."""

    def __init__(self, dtype: torch.dtype, build_dir: Path, source: str = TRIDIAGONAL_SOURCE):
        self.dtype = dtype
        defines = {key: _kernel_backend._DEFINES[dtype][key] for key in ("real", "EPS", "SAFE_MIN", "INF")}
        self._library = _compiled(defines, source, "tridiagonal_kernel_driver.cpp", build_dir)

    def __call__(self, diagonal: np.ndarray, off: np.ndarray, k: int, want_vector: bool = True):
        """(divergent, values (B,), vectors (B, n)) of tridiagonal matrices: diagonals (B, n), off-diagonals
        (B, n - 1). Outputs start as 7.0."""
        real = _real(self.dtype)
        diagonal = np.ascontiguousarray(diagonal, dtype=real)
        off = np.ascontiguousarray(off, dtype=real) if off.size else diagonal  # never read when n = 1
        B, n = diagonal.shape
        values = np.full(B, 7.0, dtype=real)
        vectors = np.full((B, n), 7.0, dtype=real)
        work = np.empty(B * 5 * n if want_vector else 1, dtype=real)
        divergent = self._library.emulate(
            _POINTER(diagonal.ctypes.data), _POINTER(off.ctypes.data), _POINTER(values.ctypes.data),
            _POINTER(vectors.ctypes.data), _POINTER(work.ctypes.data), ctypes.c_int(B), ctypes.c_int(n),
            ctypes.c_int(k), ctypes.c_int(int(want_vector)))
        return bool(divergent), values, vectors


class EmulatedLossKernel:
    """The losses' CUDA kernel (``skspectral._cuda_losses``: every training loss's value and gradient,
    one block of 1,024 threads) as ``_cuda_losses`` compiles it."""

    def __init__(self, build_dir: Path):
        from skspectral import _cuda_losses

        self._library = _compiled({}, _cuda_losses._CODE_DEFINES + _cuda_losses._SOURCE, "loss_kernel_driver.cpp",
                                  build_dir)
        self._codes = _cuda_losses.CODES

    def __call__(self, kernel_name: str, output: np.ndarray, target: np.ndarray, weight: np.ndarray,
                 parameters=(), last_axis: bool = False):
        """(divergent, value, gradient) as ``_cuda_losses.loss_and_gradient`` takes them: output
        (rows[, members][, classes or levels where last_axis]), target and weight (rows,)."""
        real = output.dtype.type
        output = np.ascontiguousarray(output)
        target, weight = (np.ascontiguousarray(a, dtype=real) for a in (target, weight))
        rows = output.shape[0]
        k = output.shape[-1] if last_axis else 1
        members = output.size // max(1, rows * k)
        constants = np.ascontiguousarray(np.asarray(parameters or (0.0,), dtype=np.float64).reshape(-1))
        value = np.full(1, 7.0, dtype=real)
        gradient = np.full_like(output, 7.0)
        emulate = self._library.emulate_float if real == np.float32 else self._library.emulate_double
        divergent = emulate(ctypes.c_int(self._codes[kernel_name]), _POINTER(output.ctypes.data),
                            _POINTER(target.ctypes.data), _POINTER(weight.ctypes.data),
                            _POINTER(constants.ctypes.data), ctypes.c_longlong(rows), ctypes.c_longlong(members),
                            ctypes.c_int(k), _POINTER(value.ctypes.data), _POINTER(gradient.ctypes.data))
        return bool(divergent), value[0], gradient
