"""Device choice, in one place."""

from __future__ import annotations

import torch


def resolve_device(device="auto") -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:N" or a torch.device into a usable torch.device.

    "auto" is CUDA when available, else CPU. Asking for CUDA where there is
    none is an error, not a silent fallback.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}.") from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'."
        )
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return torch.device("cuda", index)


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is float64 on CPU (exact, reproducible scikit-learn behaviour at little
    cost) and float32 on CUDA (several times faster there); else the named dtype."""
    if dtype == "auto":
        return torch.float32 if device.type == "cuda" else torch.float64
    return DTYPES[dtype]
