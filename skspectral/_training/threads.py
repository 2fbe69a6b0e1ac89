"""How many threads a CPU fit's steps use, chosen by timing them.

A step on the CPU is a batch of small eigenproblems split over threads (Numba's, which
follow torch's thread count) and a few small torch ops. On an idle machine two threads
beat one; with another busy process on the cores the threads wait on each other (the
OpenMP runtimes spin at every barrier: torch's wheel brings its own libgomp, Numba's omp layer
loads the system's) and the step takes several
times as long as on one thread. So the trainer times its steps: it runs a few with every
candidate count, keeps the fastest for a while, then measures again (the load may
change). A held choice of several threads is watched: a block of steps slower than one
thread measured (the load came back; or a few lucky probe steps beside a busy process, a
scheduler's slice, chose them) ends the hold at once. A held single thread is not measured
against several where the machine's other cores were busy all through the hold (read from the
kernel's idle counters, :class:`IdleCores`): the probe could only lose there, and cost several ms a
step. The steps' results do not depend on the thread count (the kernels split work in a fixed way),
so neither does the fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time

import torch

from ..eig._numba_support import numba_follows_torch

# Steps timed per candidate (the first is not counted: the new count's threads start up),
# and steps run on the chosen count before the next measurement; each measurement that chooses
# the count before it again doubles that, up to MAX_HOLD_FACTOR times: a probe of two threads on a
# busy machine costs several ms a step (they wait on each other), ~8 % of a fit of 1.3 ms steps
# probed every 300 steps.
PROBE_STEPS = 6
HOLD_STEPS = 300
MAX_HOLD_FACTOR = 16
# a probed candidate's timed step this many times the first candidate's mean ends its probe
ABANDON_FACTOR = 1.5
# and a later candidate (several threads) is timed for at least this long (up to MAX_PROBE_STEPS steps,
# each a call of its own: tiny steps): beside a busy process a few steps of 0.4 ms can fall in one
# scheduler slice of the other process off the cores and look fast
PROBE_SECONDS = 0.01
MAX_PROBE_STEPS = 32
# While several threads hold, at most this many steps run together (one timed block), and a block whose
# step is ABANDON_FACTOR times one thread's measured mean ends the hold: beside a busy process, probes of
# 2-5 ms sometimes fell in a slice where the other process was off the cores and chose two threads, which
# then held 300-1,000 steps at ~3 ms against one thread's 0.65 (California fits of 4.3-5.1 s against
# 2.15 s on one thread)
WATCH_STEPS = 50
# Steps a fit runs on one thread before its first measurement: its first steps pay for new
# buffers and cold caches (one-thread steps timed at 3-7 ms against 1.8 later beside a busy
# process), which made the first measurement hold two threads for 300 steps of several ms.
WARMUP_STEPS = 5
# A hold of one thread that ends with fewer than this many of the process's cores idle on average (the
# one it ran on busy too) is held again without a probe of several threads: their probe beside a busy
# process lost every time (its 12-19 steps of 5-10 ms cost a California fit 0.06-0.12 s, 3-7 %, against
# one thread's), and an idle machine leaves a whole core free. Judged over at least IDLE_WINDOW_SECONDS
# (the kernel counts idle time in ticks of 10 ms): a shorter hold of one thread (the warm-up's few ms) is
# held on until then.
BUSY_FREE_CORES = 0.5
IDLE_WINDOW_SECONDS = 0.05


@dataclasses.dataclass
class StepThreads:
    """What a fit's CPU steps are tuned from: the caller's thread count, and the machine's idle cores read
    since the fit's set-up began (an :class:`IdleCores`, None off the CPU)."""

    count: int
    idle_cores: "IdleCores | None" = None


def step_threads(on_cpu: bool) -> StepThreads:
    """The :class:`StepThreads` a fit's steps (its :class:`AdaptiveThreads`) are tuned from: the caller's
    thread count (torch's, read here, before the fit's code runs on :class:`FitThreads`' count) and, on the
    CPU, the idle cores read from here on."""
    idle_cores = None
    if on_cpu:
        idle_cores = IdleCores()
        idle_cores.start()
    return StepThreads(torch.get_num_threads(), idle_cores)


class FitThreads:
    """torch's thread count (which Numba's kernels follow) while a CPU fit's code runs, set by
    :meth:`running` around each of its resumptions (:func:`skspectral._resumed.resumed_within`) and the
    caller's back in between, and Numba's count following it again (the fit's kernels set it to follow the
    fit's own count): a ``fit_iter`` consumer's code between the epochs runs on its own count, and a fit, or
    loops interleaved on one thread, leave the counts as they found them. The fit starts on one thread: its
    set-up (columns, rows, model, encodings) runs there, as the steps' warm-up does, so their first hold of
    one thread need not wait for a window of its own (a small fit's 50 ms, ~6 % of credit's 0.45 s); the
    steps then set their own count (:class:`AdaptiveThreads`), which the fit keeps from one resumption to
    the next. The set-up gained little from two threads (California's 18-20 ms either way, 2M rows 1.06 s
    against 1.11 s on one) and beside a busy process its threads waited on each other (California 74 ms
    against 18 ms, flights 0.71 s against 0.41 s). Off the CPU it changes nothing."""

    def __init__(self, on_cpu: bool):
        self.on_cpu = on_cpu
        self.fits_count = 1  # the count the fit's code runs on when it resumes

    @contextlib.contextmanager
    def running(self):
        if not self.on_cpu:
            yield
            return
        callers = torch.get_num_threads()
        if callers != self.fits_count:
            torch.set_num_threads(self.fits_count)
        try:
            yield
        finally:  # also after an error
            self.fits_count = torch.get_num_threads()
            if self.fits_count != callers:
                torch.set_num_threads(callers)
            numba_follows_torch()  # (the fit's kernels set Numba's count to follow its own code's)


class IdleCores:
    """How many of this process's CPUs were idle, on average, since :meth:`start` (Linux's /proc/stat:
    the idle and iowait ticks of each CPU the process may run on); None where that cannot be read or the
    window is shorter than IDLE_WINDOW_SECONDS. Where /proc/stat counts CPUs the process does not get (a
    container's CPU quota), cores look idle and the tuner probes as it would without this."""

    def __init__(self):
        try:
            self.cpus = {b"cpu%d" % cpu for cpu in os.sched_getaffinity(0)}
            self.tick = 1.0 / os.sysconf("SC_CLK_TCK")
        except (AttributeError, ValueError, OSError):  # not Linux
            self.cpus = None
        self.mark = None

    def _idle_seconds(self) -> float | None:
        if self.cpus is None:
            return None
        try:
            with open("/proc/stat", "rb") as stat:
                lines = stat.read().splitlines()
        except OSError:
            return None
        ticks = 0
        for line in lines:
            fields = line.split()
            if fields and fields[0] in self.cpus:  # cpuN user nice system idle iowait ...
                ticks += int(fields[4]) + int(fields[5])
        return ticks * self.tick

    def start(self) -> None:
        self.mark = (time.perf_counter(), self._idle_seconds())

    def seconds_left(self) -> float | None:
        """How long until the window is long enough to tell (0: it is); None where nothing can be read."""
        if self.mark is None or self.mark[1] is None:
            return None
        return max(0.0, IDLE_WINDOW_SECONDS - (time.perf_counter() - self.mark[0]))

    def free(self) -> float | None:
        if self.seconds_left() != 0.0:
            return None
        seconds = time.perf_counter() - self.mark[0]
        idle = self._idle_seconds()
        return None if idle is None else (idle - self.mark[1]) / seconds


class AdaptiveThreads:
    """``with threads.step(): ...`` around each step (``threads.step(count)`` around ``count`` steps
    run together while the choice holds, see :meth:`steps_left`): the threads it runs on, chosen
    among 1 and the thread count the fit started with (``start_threads``, default torch's: the user's
    knob); ``close()`` sets back the count torch had when the tuner came. ``idle_cores``: what reads the
    machine's idle cores over a hold, started (default: a new :class:`IdleCores`, started now)."""

    def __init__(self, probe_steps: int = PROBE_STEPS, hold_steps: int = HOLD_STEPS,
                 warmup_steps: int = WARMUP_STEPS, start_threads: int | None = None, idle_cores=None):
        # the count set when the tuner came, which close() sets back: a fit's finish then runs as its set-up
        # did (FitThreads), not on several threads beside a busy process (6-17 ms against 1)
        self.found_threads = torch.get_num_threads()
        self.start_threads = self.found_threads if start_threads is None else start_threads
        # one thread first: a later candidate whose timed step is already far slower than its mean
        # stops being probed (two threads on a busy machine: several ms a step)
        self.candidates = [1, self.start_threads] if self.start_threads > 1 else [1]
        self.probe_steps, self.hold_steps = probe_steps, hold_steps
        self.timings = {n: [] for n in self.candidates}
        self.probing = 0  # index into candidates while measuring; None while holding
        self.held, self.held_seconds = 0, 0.0  # steps and their seconds of the current hold
        self.chosen = self.start_threads
        self.hold = hold_steps  # steps to hold the current choice
        self.measured = False  # whether a measurement chose before
        self.means: dict = {}  # each candidate's mean step in the last measurement
        self.watch = [0.0, 0]  # seconds and steps of the held choice not yet judged (see WATCH_STEPS)
        # the machine's idle cores over a hold (an IdleCores, started by its owner: a fit's set-up; or a
        # scripted one in tests)
        if idle_cores is None:
            idle_cores = IdleCores()
            idle_cores.start()
        self.idle_cores = idle_cores
        if warmup_steps > 0:  # the warm-up: a first hold of one thread, untimed
            self.probing, self.chosen, self.hold = None, self.candidates[0], warmup_steps

    @property
    def current(self) -> int:
        return self.candidates[self.probing] if self.probing is not None else self.chosen

    def step(self, count: int = 1):
        """The context of ``count`` consecutive steps (more than one only up to :meth:`steps_left`)."""
        return _TimedStep(self, count)

    def steps_left(self) -> int:
        """How many steps may run together on the current count before the next one is timed alone:
        1 while probing, else the rest of the hold (at most WATCH_STEPS on several threads: watched)."""
        if self.probing is not None:
            return 1
        left = max(1, self.hold - self.held)
        return min(left, WATCH_STEPS) if self._watched() else left

    def _watched(self) -> bool:
        """Whether the held choice is several threads that a measurement timed against one thread."""
        return self.chosen != self.candidates[0] and self.candidates[0] in self.means

    def record(self, seconds: float, count: int = 1) -> None:
        if self.probing is None:
            self.held += count
            self.held_seconds += seconds
            slow = False
            if self._watched():  # judged over WATCH_STEPS steps (one block, or single steps summed)
                self.watch[0] += seconds
                self.watch[1] += count
                if self.watch[1] >= WATCH_STEPS:
                    slow = self.watch[0] > ABANDON_FACTOR * self.watch[1] * self.means[self.candidates[0]]
                    self.watch = [0.0, 0]
            if slow:  # the choice no longer pays: measure now, and hold what it chooses from the base (_hold)
                self.measured = False
            elif self.held < self.hold:
                return
            elif self._one_thread_held():
                left = self.idle_cores.seconds_left()
                if left:  # too short a hold to read the idle cores (the warm-up): held on until it is
                    self.hold += math.ceil(left * self.held / max(self.held_seconds, 1e-9))
                    return
                free = self.idle_cores.free()
                if free is not None and free < BUSY_FREE_CORES:
                    # one thread again, held twice as long as a measurement choosing it again would
                    self._hold(self.candidates[0])
                    return
            self.probing = 0  # measure again (the next hold starts afresh: _hold)
            self.timings = {n: [] for n in self.candidates}
            return
        samples = self.timings[self.candidates[self.probing]]
        samples.append(seconds)
        hopeless = self.probing > 0 and len(samples) > 1 and seconds > ABANDON_FACTOR * self._mean(
            self.timings[self.candidates[0]])
        timed_enough = self.probing == 0 or sum(samples[1:]) >= PROBE_SECONDS or len(samples) > MAX_PROBE_STEPS
        if (len(samples) > self.probe_steps and timed_enough) or hopeless:
            self.probing += 1
            if self.probing == len(self.candidates):
                # each candidate's mean step, its first (thread start-up) left out
                means = self.means = {n: self._mean(t) for n, t in self.timings.items()}
                self._hold(min(means, key=means.get))

    def _hold(self, chosen: int) -> None:
        """Hold ``chosen`` from the next step: twice the last hold where a measurement chose it before
        (up to MAX_HOLD_FACTOR times HOLD_STEPS), else HOLD_STEPS."""
        again = self.measured and chosen == self.chosen
        self.hold = min(2 * self.hold, MAX_HOLD_FACTOR * self.hold_steps) if again else self.hold_steps
        self.chosen, self.measured = chosen, True
        self.probing, self.watch, self.held, self.held_seconds = None, [0.0, 0], 0, 0.0
        self.idle_cores.start()

    def _one_thread_held(self) -> bool:
        """Whether one thread is held where several are candidates too."""
        return self.chosen == self.candidates[0] and len(self.candidates) > 1

    @staticmethod
    def _mean(samples: list) -> float:
        """The mean of a candidate's timed steps, its first (thread start-up) left out: not the median,
        for the stalls are the price (two threads on a busy machine: a median 1.64 ms step against one
        thread's 1.77, but a mean of 4.4 ms, some steps 40 ms, where one thread's was 2.6)."""
        timed = samples[1:]
        return sum(timed) / len(timed)

    def close(self) -> None:
        torch.set_num_threads(self.found_threads)


class _TimedStep:
    def __init__(self, threads: AdaptiveThreads, count: int = 1):
        if count > 1 and threads.probing is not None:
            raise ValueError("A probed step is timed alone.")
        self.threads, self.count = threads, count

    def __enter__(self):
        n = self.threads.current
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.threads.record(time.perf_counter() - self.start, self.count)
        return False
