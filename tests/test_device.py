"""Device and dtype choice, in one place."""

import pytest
import torch

from skspectral._device import resolve_device, resolve_dtype


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu:zero")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available on this machine"):
        resolve_device("cuda:0")


def test_resolve_dtype():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu"), cpu_kernels=False) == torch.float64
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda"), cpu_kernels=False) == torch.float32
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
