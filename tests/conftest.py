import os
from pathlib import Path

import numpy as np
import pytest
import torch

# California Housing is cached beside the repository on our machines (no internet).
_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scikit_learn_data"
if "SCIKIT_LEARN_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["SCIKIT_LEARN_DATA"] = str(_SHARED_DATA)

HAS_CUDA = torch.cuda.is_available()


@pytest.hookimpl(tryfirst=True)  # before ``-m``'s selection reads the marks
def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip themselves where there is no CUDA GPU (CI). Where there is one, a case
    parametrised with "cuda" (``DEVICES``, ``CASES``) is marked ``cuda`` too, so that ``-m cuda`` (the GPU
    machine's ``gpu_run.sh cuda-tests``) runs it: it had left out such cases of unmarked tests. Not without
    a GPU: there "cuda" is also data (the rules "auto" follows for a CUDA fit) that CI checks."""
    if HAS_CUDA:
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if any(isinstance(value, str) and value == "cuda" for value in params.values()):
                item.add_marker(pytest.mark.cuda)
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def cupy_available() -> bool:
    from skspectral.eig import _cupy_support

    return _cupy_support.is_available()


def available_backends(device: str) -> list[str]:
    from skspectral.eig import REGISTRY

    return [name for name, backend in REGISTRY.items()
            if torch.device(device).type in backend.device_types and backend.is_available()][::-1]


# The series' model (linear features, one member): for tests of its exact structure.
SERIES = dict(feature_encoding="linear", n_estimators=1, shared_members=0.0)

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


def make_data(seed=0, n=200):
    """Three features on very different scales and offsets; a smooth target with a little noise."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 20.0, 0.1] + [0.0, 100.0, 5.0]
    y = 3 * np.tanh(X[:, 0]) + 0.05 * X[:, 1] - 10 * X[:, 2] + rng.normal(scale=0.1, size=n)
    return X, y


def allow_look_ahead(monkeypatch, allowed: bool, asked: list | None = None) -> None:
    """From here on, fits queue their next epoch ahead only where they would and ``allowed`` (False: never,
    to compare a fit with the same fit one epoch at a time); ``asked`` collects what each Trainer.epochs call
    was given."""
    from skspectral._training import Trainer

    original = getattr(Trainer.epochs, "_looking_ahead_of", Trainer.epochs)

    def epochs(self, *args, look_ahead=False, **kwargs):
        if asked is not None:
            asked.append(look_ahead and allowed)
        return original(self, *args, look_ahead=look_ahead and allowed, **kwargs)

    epochs._looking_ahead_of = original
    monkeypatch.setattr(Trainer, "epochs", epochs)
