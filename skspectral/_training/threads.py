"""How many threads a CPU fit's steps use, chosen by timing them.

A step on the CPU is a batch of small eigenproblems split over threads (Numba's, which
follow torch's thread count) and a few small torch ops. On an idle machine two threads
beat one; with another busy process on the cores the threads wait on each other (the
OpenMP runtime torch and Numba share spins at every barrier) and the step takes several
times as long as on one thread. So the trainer times its steps: it runs a few with every
candidate count, keeps the fastest for a while, then measures again (the load may
change). The steps' results do not depend on the thread count (the kernels split work
in a fixed way), so neither does the fit.
"""

from __future__ import annotations

import time

import torch

# Steps timed per candidate (the first is not counted: the new count's threads start up),
# and steps run on the chosen count before the next measurement.
PROBE_STEPS = 6
HOLD_STEPS = 300


class AdaptiveThreads:
    """``with threads.step(): ...`` around each step: the threads it runs on, chosen among
    1 and the thread count the fit started with (torch's, the user's knob), restored by
    ``close()``."""

    def __init__(self, probe_steps: int = PROBE_STEPS, hold_steps: int = HOLD_STEPS):
        self.start_threads = torch.get_num_threads()
        self.candidates = [self.start_threads, 1] if self.start_threads > 1 else [1]
        self.probe_steps, self.hold_steps = probe_steps, hold_steps
        self.timings = {n: [] for n in self.candidates}
        self.probing = 0  # index into candidates while measuring; None while holding
        self.held = 0
        self.chosen = self.start_threads

    @property
    def current(self) -> int:
        return self.candidates[self.probing] if self.probing is not None else self.chosen

    def step(self):
        return _TimedStep(self)

    def record(self, seconds: float) -> None:
        if self.probing is None:
            self.held += 1
            if self.held >= self.hold_steps:  # measure again
                self.probing, self.held = 0, 0
                self.timings = {n: [] for n in self.candidates}
            return
        samples = self.timings[self.candidates[self.probing]]
        samples.append(seconds)
        if len(samples) > self.probe_steps:
            self.probing += 1
            if self.probing == len(self.candidates):
                # the median of each candidate's steps, its first (thread start-up) left out
                medians = {n: sorted(t[1:])[len(t[1:]) // 2] for n, t in self.timings.items()}
                self.chosen = min(medians, key=medians.get)
                self.probing = None

    def close(self) -> None:
        torch.set_num_threads(self.start_threads)


class _TimedStep:
    def __init__(self, threads: AdaptiveThreads):
        self.threads = threads

    def __enter__(self):
        n = self.threads.current
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.threads.record(time.perf_counter() - self.start)
        return False
