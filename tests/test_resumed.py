"""A generator run with a context entered around each of its resumptions (skspectral/_resumed.py)."""

import contextlib
import gc

import pytest

from skspectral._resumed import resumed_within


class Switch:
    """A context whose state the generator's code must see, and its consumer must not."""

    def __init__(self):
        self.inside, self.events = 0, []

    @contextlib.contextmanager
    def __call__(self):
        self.inside += 1
        self.events.append("in")
        try:
            yield
        finally:
            self.inside -= 1
            self.events.append("out")


def epochs(switch, seen, n=3, fail_at=None):
    try:
        for epoch in range(1, n + 1):
            seen.append(("runs", epoch, switch.inside))
            if epoch == fail_at:
                raise ValueError("diverged")
            yield epoch
        return "fitted"
    finally:
        seen.append(("cleans up", switch.inside))


def test_the_generators_code_runs_inside_the_switch_and_its_consumers_outside():
    switch, seen = Switch(), []
    run = resumed_within(epochs(switch, seen), switch)
    consumed = []
    for epoch in run:
        consumed.append((epoch, switch.inside))
    assert consumed == [(1, 0), (2, 0), (3, 0)]
    assert seen == [("runs", 1, 1), ("runs", 2, 1), ("runs", 3, 1), ("cleans up", 1)]
    assert switch.events == ["in", "out"] * 4  # three epochs, then the run to its end


def test_the_return_value_passes_through_and_a_finished_generator_is_not_closed_again():
    switch, seen = Switch(), []

    def caller():
        result = yield from resumed_within(epochs(switch, seen, n=1), switch)
        seen.append(("result", result))

    assert list(caller()) == [1]
    assert seen[-1] == ("result", "fitted") and switch.events == ["in", "out"] * 2


@pytest.mark.parametrize("how", ["close", "collected"])
def test_a_generator_left_early_is_closed_inside_the_switch(how):
    switch, seen = Switch(), []
    run = resumed_within(epochs(switch, seen), switch)
    assert next(run) == 1 and switch.inside == 0
    if how == "close":
        run.close()
    else:
        del run
        gc.collect()
    assert seen == [("runs", 1, 1), ("cleans up", 1)] and switch.inside == 0


def test_generators_interleaved_on_one_thread_leave_each_others_state_alone():
    """Two runs stepped in turn and closed in the order they began (a ``with`` held over the yields undid
    the first run's entry while the second's was still in force)."""
    switch, seen_a, seen_b = Switch(), [], []
    a, b = resumed_within(epochs(switch, seen_a), switch), resumed_within(epochs(switch, seen_b), switch)
    assert (next(a), next(b), switch.inside) == (1, 1, 0)
    assert (next(a), next(b), switch.inside) == (2, 2, 0)
    a.close()
    assert switch.inside == 0
    assert list(b) == [3] and switch.inside == 0
    assert all(inside == 1 for *_, inside in seen_a + seen_b)


def test_an_error_in_the_generator_reaches_the_consumer_after_the_switch_is_left():
    switch, seen = Switch(), []
    run = resumed_within(epochs(switch, seen, fail_at=2), switch)
    assert next(run) == 1
    with pytest.raises(ValueError, match="diverged"):
        next(run)
    assert switch.inside == 0 and seen[-1] == ("cleans up", 1)
    assert switch.events == ["in", "out"] * 2  # no close of a generator that is done
