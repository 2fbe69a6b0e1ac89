"""A generator whose runs change what the calling thread holds (torch's thread count, the current CUDA
stream), undone while its consumer runs."""

from __future__ import annotations

from typing import Callable, ContextManager, Generator, Iterator, TypeVar

T = TypeVar("T")


def resumed_within(generator: Iterator[T], switch: Callable[[], ContextManager]) -> Generator[T, None, object]:
    """``yield from generator``, with a fresh ``switch()`` (a context manager) entered around each of its
    resumptions -- the first, every next, and its close -- and left while the consumer holds what it
    yielded. A ``with`` around a ``yield from`` would keep its state over the yields instead: the
    consumer's own code would run inside it, and generators interleaved on one thread (two ``fit_iter``
    loops stepped in turn, closed in any order) would undo each other's entries in the wrong order.
    An exception thrown in at a yield closes ``generator`` (it is not thrown into it)."""
    finished = False
    try:
        while True:
            with switch():
                try:
                    value = next(generator)
                except StopIteration as stop:
                    finished = True
                    return stop.value
                except BaseException:
                    finished = True  # a generator that raised is done: nothing to close
                    raise
            yield value
    finally:
        if not finished:
            with switch():
                generator.close()
