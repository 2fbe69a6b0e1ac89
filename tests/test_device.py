"""Device and dtype choice, in one place."""

import threading
import time

import pytest
import torch

from skspectral._device import StreamLeases, own_stream, resolve_device, resolve_dtype, stream_lease


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


class _Pool:
    """torch's stream pool in small: ``size`` streams handed out round robin, as torch.cuda.Stream does."""

    def __init__(self, size):
        self.size, self.drawn = size, 0

    def __call__(self, device):
        stream = type("Stream", (), {"cuda_stream": self.drawn % self.size})()
        self.drawn += 1
        return stream


def test_leased_streams_are_distinct_while_held_and_a_lease_past_the_pool_waits_for_one_given_back():
    # A fit's CUDA stream must be its own (another thread's work on it would join its graph capture), but
    # torch's pool gives the same streams out again, round robin: leases skip the held ones.
    device = torch.device("cuda", 0)
    leases = StreamLeases(new_stream=_Pool(4), pool_size=4)
    held = [leases.lease(device) for _ in range(4)]
    assert len({s.cuda_stream for s in held}) == 4
    got = []
    waiting = threading.Thread(target=lambda: got.append(leases.lease(device)))
    waiting.start()
    time.sleep(0.2)
    assert not got  # every stream of the pool is held
    leases.give_back(device, held[2])
    waiting.join(timeout=5)
    assert [s.cuda_stream for s in got] == [held[2].cuda_stream]
    leases.give_back(device, held[0])
    again = leases.lease(device)  # one given back first, not a new draw that another holder has
    assert again is held[0]
    assert leases.lease(torch.device("cuda", 1)).cuda_stream in range(4)  # each device its own


def test_own_stream_changes_nothing_off_cuda():
    with stream_lease(torch.device("cpu")) as stream, own_stream(torch.device("cpu"), stream):
        assert stream is None and torch.ones(2).sum() == 2
