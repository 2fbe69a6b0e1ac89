import os
from pathlib import Path

import pytest
import torch

# California Housing is cached beside the repository on our machines (no internet).
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scikit_learn_data"
if "SCIKIT_LEARN_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["SCIKIT_LEARN_DATA"] = str(_SHARED_DATA)

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cupy_available() -> bool:
    from skspectral.eig import _cupy_backend

    return _cupy_backend.is_available()


def available_backends(device: str) -> list[str]:
    if device == "cpu":
        return ["torch"]
    return ["torch", "cupy", "kernel"] if cupy_available() else ["torch"]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
