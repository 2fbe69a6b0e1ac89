"""CUDA sources run on the CPU, for CI (no GPU): a source's ``extern "C" __global__`` kernels are
compiled with g++ against ``warp_emulator.h`` (fibers stand for a block's threads; a collective that
some lanes skip is reported) and launched through ctypes, on torch CPU tensors or numpy arrays.
:class:`EmulatedRawKernels` stands in for ``skspectral.eig._cupy_support.RawKernels``, so a module's
own Python around its kernels runs unchanged on CPU tensors."""

from __future__ import annotations

import ctypes
import hashlib
import re
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
_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_SCALARS = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float,
            "double": ctypes.c_double, "unsigned": ctypes.c_uint}


def available() -> bool:
    """g++ (C++17) and glibc's ucontext: Linux with a compiler."""
    return sys.platform.startswith("linux") and shutil.which("g++") is not None


class EmulatedModule:
    """The ``extern "C" __global__`` kernels of a CUDA ``source`` (with ``defines``) compiled for the
    CPU, once per text, into ``build_dir``."""

    def __init__(self, source: str, build_dir: Path, defines: dict | None = None):
        text = "".join(f"#define {k} {v}\n" for k, v in (defines or {}).items()) + source
        # the kernels' names and parameters, read off the preprocessed source (macros expanded)
        expanded = subprocess.run(["g++", "-E", "-P", "-x", "c++", "-D__launch_bounds__(...)=", "-"], input=text,
                                  capture_output=True, text=True, check=True).stdout
        self.kernels = {name: [self._parameter(p) for p in params.split(",") if p.strip()]
                        for name, params in _SIGNATURE.findall(expanded)}
        code = '#include "warp_emulator.h"\n' + text + "".join(self._driver(name) for name in self.kernels)
        code_hash = hashlib.sha1((code + (HERE / "warp_emulator.h").read_text()).encode()).hexdigest()[:16]
        library = Path(build_dir) / f"kernels_{code_hash}.so"
        if not library.exists():
            cpp = library.with_suffix(".cpp")
            cpp.write_text(code)
            # -O0: no two places in the source may share one return address (the emulator's check)
            subprocess.run(["g++", "-std=c++17", "-O0", "-w", "-shared", "-fPIC", f"-I{HERE}", str(cpp),
                            "-o", str(library)], check=True, capture_output=True)
        self._library = ctypes.CDLL(str(library))

    @staticmethod
    def _parameter(text: str) -> tuple[str, str, object]:
        """(declaration as a struct member, name, ctypes type) of one kernel parameter."""
        words = text.replace("__restrict__", "").replace("*", " * ").split()
        name, type_words = words[-1], words[:-1]
        if "*" in type_words:
            return " ".join(type_words) + " " + name, name, ctypes.c_void_p
        type_name = " ".join(w for w in type_words if w != "const")  # a struct member is assigned
        return f"{type_name} {name}", name, _SCALARS[type_name]

    def _driver(self, name: str) -> str:
        members = "; ".join(declaration for declaration, _, _ in self.kernels[name])
        names = [n for _, n, _ in self.kernels[name]]
        parameters = ", ".join(declaration for declaration, _, _ in self.kernels[name])
        return f"""
namespace emulated_{name} {{
struct Arguments {{ {members}; }};
Arguments arguments;
void body() {{ {name}({", ".join("arguments." + n for n in names)}); }}
}}
extern "C" int emulate_{name}({parameters}, long long grid, int block) {{
    emulated_{name}::arguments = {{{", ".join(names)}}};
    return emu::run_grid(block, grid, emulated_{name}::body);
}}
"""

    def launch(self, name: str, blocks: int, threads: int, args: tuple) -> bool:
        """Run kernel ``name`` on a grid of ``blocks`` blocks of ``threads``; tensors (CPU, contiguous)
        and numpy arrays go as their data pointers. Whether the lanes fell out of step."""
        types = [kind for _, _, kind in self.kernels[name]]
        if len(args) != len(types):
            raise TypeError(f"{name} takes {len(types)} arguments, got {len(args)}")
        values = []
        for arg, kind in zip(args, types):
            if isinstance(arg, torch.Tensor):
                if arg.device.type != "cpu" or not arg.is_contiguous():
                    raise ValueError(f"{name}: a tensor argument must be a contiguous CPU tensor")
                arg = arg.data_ptr()
            elif isinstance(arg, np.ndarray):
                arg = arg.ctypes.data
            values.append(kind(arg.item() if isinstance(arg, np.generic) else arg))
        divergent = getattr(self._library, f"emulate_{name}")(*values, ctypes.c_longlong(blocks), ctypes.c_int(threads))
        if divergent < 0:
            raise ValueError(f"{name}: the emulator runs blocks of 32 to 1,024 threads (multiples of 32), "
                             f"got {threads}")
        return bool(divergent)


class EmulatedRawKernels:
    """``skspectral.eig._cupy_support.RawKernels`` on the CPU: ``launch(name, dtype, index, blocks,
    threads, args)`` runs ``{name}_float`` or ``{name}_double`` on CPU tensors; ``divergent`` is set
    where a launch's lanes fell out of step; ``launches`` counts them."""

    def __init__(self, source: str, build_dir: Path):
        self.module = EmulatedModule(source, build_dir)
        self.divergent = False
        self.launches = 0

    def launch(self, name: str, dtype, index, blocks: int, threads: int, args: tuple) -> None:
        suffix = "double" if dtype == torch.float64 else "float"
        self.divergent |= self.module.launch(f"{name}_{suffix}", blocks, threads, args)
        self.launches += 1


def real_dtype(dtype: torch.dtype):
    """numpy's scalar type for a torch float dtype."""
    return np.float32 if dtype == torch.float32 else np.float64


class EmulatedEigenKernel:
    """``kth_eigenpair`` for n x n matrices (n <= 64: one or two warps a block) of ``dtype``, compiled as
    ``_kernel_backend`` would for the flags given; ``source`` replaces the kernel's text (a test of
    the emulator itself)."""

    def __init__(self, n: int, dtype: torch.dtype, build_dir: Path, *, several: bool = False,
                 packed: bool = False, paired: bool = False, source: str = KERNEL_SOURCE):
        self.n, self.dtype, self.packed, self.paired = n, dtype, packed, paired
        defines = {"N": str(n), **_kernel_backend._DEFINES[dtype], "SEVERAL": str(int(several)),
                   "PACKED": str(int(packed)), "PAIRED": str(int(paired)), "MIN_BLOCKS": "1"}
        self.module = EmulatedModule(source, build_dir, defines)

    def __call__(self, inputs: np.ndarray, ks, want_vector: bool = True, lower: bool = True):
        """(divergent, values (B, K), vectors (B, K, n)) for a batch of matrices (B, n, n), or of their
        lower triangles (B, n (n + 1) / 2) when packed, and evenly spaced indices ``ks`` (an int or a
        tuple). Outputs start as 7.0: an entry the kernel never wrote shows as 7."""
        ks = (ks,) if isinstance(ks, int) else tuple(ks)
        stride = ks[1] - ks[0] if len(ks) > 1 else 1
        real = real_dtype(self.dtype)
        inputs = np.ascontiguousarray(inputs, dtype=real)
        batch = inputs.shape[0]
        values = np.full((batch, len(ks)), 7.0, dtype=real)
        vectors = np.full((batch, len(ks), self.n), 7.0, dtype=real)
        divergent = self.module.launch(
            "kth_eigenpair", (batch + 1) // 2 if self.paired else batch, 32 * ((self.n + 31) // 32),
            (inputs, values, vectors, ks[0], len(ks), stride, int(lower or self.packed), int(want_vector), batch))
        return divergent, values, vectors


class EmulatedTridiagonalKernel:
    """``kth_tridiagonal`` (a warp a matrix, any n) for ``dtype``, compiled as ``_kernel_backend`` would."""

    def __init__(self, dtype: torch.dtype, build_dir: Path, source: str = TRIDIAGONAL_SOURCE):
        self.dtype = dtype
        defines = {key: _kernel_backend._DEFINES[dtype][key] for key in ("real", "EPS", "SAFE_MIN", "INF")}
        self.module = EmulatedModule(source, build_dir, defines)

    def __call__(self, diagonal: np.ndarray, off: np.ndarray, k: int, want_vector: bool = True):
        """(divergent, values (B,), vectors (B, n)) of tridiagonal matrices: diagonals (B, n), off-diagonals
        (B, n - 1). Outputs start as 7.0. (One warp a block here; the GPU runs four, which never meet.)"""
        real = real_dtype(self.dtype)
        diagonal = np.ascontiguousarray(diagonal, dtype=real)
        off = np.ascontiguousarray(off, dtype=real) if off.size else diagonal  # never read when n = 1
        B, n = diagonal.shape
        values = np.full(B, 7.0, dtype=real)
        vectors = np.full((B, n), 7.0, dtype=real)
        work = np.empty(B * 5 * n if want_vector else 1, dtype=real)
        divergent = self.module.launch("kth_tridiagonal", B, 32,
                                       (diagonal, off, values, vectors, work, B, n, k, int(want_vector)))
        return divergent, values, vectors
