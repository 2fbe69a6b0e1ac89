"""The CUDA eigen kernel's source run on the CPU, for CI (no GPU): compiled with g++ against
``warp_emulator.h`` (fibers stand for a block's threads) and called through ctypes on numpy arrays,
with the defines ``skspectral.eig._kernel_backend`` compiles it with."""

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
KERNEL_SOURCE = (Path(_kernel_backend.__file__).with_name("_kernel_source.cu")).read_text()


def available() -> bool:
    """g++ (C++17) and glibc's ucontext: Linux with a compiler."""
    return sys.platform.startswith("linux") and shutil.which("g++") is not None


class EmulatedEigenKernel:
    """``kth_eigenpair`` for n x n matrices (n <= 64: one or two warps a block) of ``dtype``, compiled as
    ``_kernel_backend`` would for the flags given; ``source`` replaces the kernel's text (a test of
    the emulator itself). Compiled objects are kept in ``build_dir`` by the source's hash."""

    def __init__(self, n: int, dtype: torch.dtype, build_dir: Path, *, several: bool = False,
                 packed: bool = False, paired: bool = False, source: str = KERNEL_SOURCE):
        if not 2 <= n <= 64:
            raise ValueError(f"the emulator runs blocks of one or two warps: 2 <= n <= 64, got {n}")
        self.n, self.dtype, self.packed, self.paired = n, dtype, packed, paired
        defines = {"N": str(n), **_kernel_backend._DEFINES[dtype], "SEVERAL": str(int(several)),
                   "PACKED": str(int(packed)), "PAIRED": str(int(paired)), "MIN_BLOCKS": "1"}
        text = ('#include "warp_emulator.h"\n' + "".join(f"#define {k} {v}\n" for k, v in defines.items())
                + source + (HERE / "eigen_kernel_driver.cpp").read_text())
        text_hash = hashlib.sha1((text + (HERE / "warp_emulator.h").read_text()).encode()).hexdigest()[:16]
        library = Path(build_dir) / f"eigen_kernel_{text_hash}.so"
        if not library.exists():
            cpp = library.with_suffix(".cpp")
            cpp.write_text(text)
            # -O0: no two places in the source may share one return address (the emulator's check)
            subprocess.run(["g++", "-std=c++17", "-O0", "-w", "-shared", "-fPIC", f"-I{HERE}", str(cpp), "-o",
                            str(library)], check=True, capture_output=True)
        self._library = ctypes.CDLL(str(library))

    def __call__(self, inputs: np.ndarray, ks, want_vector: bool = True, lower: bool = True):
        """(divergent, values (B, K), vectors (B, K, n)) for a batch of matrices (B, n, n), or of their
        lower triangles (B, n (n + 1) / 2) when packed, and evenly spaced indices ``ks`` (an int or a
        tuple). Outputs start as 7.0: an entry the kernel never wrote shows as 7."""
        ks = (ks,) if isinstance(ks, int) else tuple(ks)
        stride = ks[1] - ks[0] if len(ks) > 1 else 1
        real = np.float32 if self.dtype == torch.float32 else np.float64
        inputs = np.ascontiguousarray(inputs, dtype=real)
        batch = inputs.shape[0]
        values = np.full((batch, len(ks)), 7.0, dtype=real)
        vectors = np.full((batch, len(ks), self.n), 7.0, dtype=real)
        grid = (batch + 1) // 2 if self.paired else batch
        pointer = ctypes.c_void_p
        divergent = self._library.emulate(
            pointer(inputs.ctypes.data), pointer(values.ctypes.data), pointer(vectors.ctypes.data),
            ctypes.c_int(ks[0]), ctypes.c_int(len(ks)), ctypes.c_int(stride), ctypes.c_int(int(lower or self.packed)),
            ctypes.c_int(int(want_vector)), ctypes.c_longlong(batch), ctypes.c_longlong(grid))
        return bool(divergent), values, vectors
