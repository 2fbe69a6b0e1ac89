"""Epochs of fixed-shape training steps, each step replayed from one CUDA graph."""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from .._device import leased_stream, thread_stream
from .._warn import warn
from ..eig._cupy_support import RawKernels, is_available

# A step's own work around the step function -- its batch's rows, targets and masked weights taken
# by the shuffled order at the device's offset, and the epoch's running totals -- was a dozen small
# torch kernels (index arithmetic, four gathers, a mask, a stack, a sum); on CUDA it is two.
_SOURCE = r"""
#define THREADS 256

// (rows, columns) of the batch from X by order[offset + r]; then each row's target and weight, the
// weight 0 past the epoch's last row (the last batch's padding)
template <typename T>
__device__ void take_batch(const T* X, const T* y, const T* weight, const long long* order, const long long* offset,
                           long long n, long long batch, long long columns, T* X_batch, T* y_batch, T* w_batch) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long in_rows = batch * columns;
    if (idx < in_rows) {
        long long r = idx / columns, c = idx - r * columns;
        X_batch[idx] = X[order[*offset + r] * columns + c];
    } else if (idx < in_rows + batch) {
        long long r = idx - in_rows, i = *offset + r, row = order[i];
        y_batch[r] = y[row];
        w_batch[r] = i < n ? weight[row] : (T)0;
    }
}

// totals[j] += values[j] * (the batch's weight sum) for the step's values (up to four); one block,
// a fixed-order sum (the same every run); then the offset moves on by a batch
template <typename T>
__device__ void add_totals(const T* w_batch, long long batch, const T* v0, const T* v1, const T* v2, const T* v3,
                           int n_values, T* totals, long long* offset) {
    __shared__ double partial[THREADS];
    double total = 0.0;
    for (long long r = threadIdx.x; r < batch; r += THREADS) total += (double)w_batch[r];
    partial[threadIdx.x] = total;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const T* values[4] = {v0, v1, v2, v3};
        for (int j = 0; j < n_values; ++j) totals[j] += (T)((double)*values[j] * partial[0]);
        *offset += batch;
    }
}

extern "C" __global__ void take_batch_float(const float* X, const float* y, const float* w, const long long* order,
                                            const long long* offset, long long n, long long batch,
                                            long long columns, float* Xb, float* yb, float* wb) {
    take_batch<float>(X, y, w, order, offset, n, batch, columns, Xb, yb, wb);
}
extern "C" __global__ void take_batch_double(const double* X, const double* y, const double* w,
                                             const long long* order, const long long* offset, long long n,
                                             long long batch, long long columns, double* Xb, double* yb,
                                             double* wb) {
    take_batch<double>(X, y, w, order, offset, n, batch, columns, Xb, yb, wb);
}
extern "C" __global__ void add_totals_float(const float* wb, long long batch, const float* v0, const float* v1,
                                            const float* v2, const float* v3, int n_values, float* totals,
                                            long long* offset) {
    add_totals<float>(wb, batch, v0, v1, v2, v3, n_values, totals, offset);
}
extern "C" __global__ void add_totals_double(const double* wb, long long batch, const double* v0, const double* v1,
                                             const double* v2, const double* v3, int n_values, double* totals,
                                             long long* offset) {
    add_totals<double>(wb, batch, v0, v1, v2, v3, n_values, totals, offset);
}
"""
_THREADS = 256  # THREADS in the source
_KERNELS = RawKernels(_SOURCE, "skspectral's CUDA training steps")
_MAX_VALUES = 4  # add_totals' value slots

# step(X_batch, y_batch, weight_batch) -> scalar tensors whose weighted means the epoch reports
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple]


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    """Where the eager warm-up steps and the capture run: the stream a fit holds as its own (_device.own_stream,
    the current stream then), else a side stream of this thread's (the current stream may be the default
    one, where nothing is captured)."""
    leased = leased_stream(device)
    return leased if leased is not None else thread_stream(device)


@contextlib.contextmanager
def capturing(graph: torch.cuda.CUDAGraph, device: torch.device):
    """Capture the work queued in the block into ``graph``, as ``torch.cuda.graph`` does, without
    emptying the device's and the pinned host memory's caches first: that made the next fit allocate
    its pinned staging buffers afresh (13 ms for flights' rows) and the capture itself take 4 ms
    (benchmarks/bench_capture.py); a capture allocates from its graph's own pool anyway.
    thread_local: another thread calling CUDA meanwhile (NCCL's watchdog in a data-parallel fit)
    does not invalidate the capture. The capture runs after the work queued before: in a fit that holds
    its stream (_device.own_stream) it is that stream's work, queued there; elsewhere the device is
    synchronised (as in a data-parallel fit's rank). Not in a fit on a stream of its own: CUDA refuses the
    device's synchronisation while another thread's fit captures its step on the same device."""
    if leased_stream(device) is None:
        torch.cuda.synchronize(device)
    with torch.cuda.stream(_capture_stream(device)):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            yield graph
        finally:
            graph.capture_end()


class StaticBatchSteps:
    """An epoch of fixed-shape steps of any step function, replayed from one CUDA graph.

    Every step reads its batch inside the graph: rows ``order[offset:offset +
    batch_size]`` with ``offset`` a device counter the step advances, so a
    step needs nothing from the host and costs one ``graph.replay()`` of
    host time. The epoch's last, shorter batch is padded with zero-weight rows,
    which leaves a weighted mean loss and its gradient unchanged. The first
    steps run eagerly on a side stream (optimizer state, module loads), then
    one step is captured. Off CUDA (tests) the same steps run eagerly.

    ``step`` must be capture-safe on CUDA (no host synchronisation, no
    allocation whose address changes between calls); a capture that fails
    warns once and the epoch continues eagerly. ``agree(captured) -> bool``
    (data-parallel fits) makes the ranks agree after their captures: a step
    holding a collective replays from a graph on every rank or on none.
    """

    WARMUP_STEPS = 3

    def __init__(self, step: StepFn, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, batch_size: int,
                 n_values: int, before_capture: Callable[[], None] | None = None,
                 agree: Callable[[bool], bool] | None = None):
        n, device = X.shape[0], X.device
        self.step, self.X, self.y, self.weight = step, X, y, weight
        self.n_steps = -(-n // batch_size)
        self.order = torch.zeros(self.n_steps * batch_size, dtype=torch.long, device=device)
        self.offset = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.arange(batch_size, device=device)
        self.totals = torch.zeros(n_values, dtype=X.dtype, device=device)
        self.before_capture = before_capture
        self.agree = agree
        self.capture = device.type == "cuda"
        # the batch and the totals in kernels of their own: contiguous CUDA rows, targets and weights
        # of one dtype, up to four values a step
        self.kernels = (self.capture and X.dim() == 2 and y.dim() == 1 and weight.dim() == 1
                        and X.is_contiguous() and y.is_contiguous()
                        and weight.is_contiguous() and X.dtype in (torch.float32, torch.float64)
                        and y.dtype == X.dtype and weight.dtype == X.dtype and n_values <= _MAX_VALUES
                        and is_available())
        self.graph = None
        self.eager_steps = 0

    def _step(self) -> None:
        if self.kernels:
            return self._step_with_kernels()
        index = self.offset + self.positions
        rows = self.order[index]
        weight = self.weight[rows] * (index < self.X.shape[0]).to(self.weight.dtype)
        values = self.step(self.X[rows], self.y[rows], weight)
        self.totals.add_(torch.stack(values) * weight.sum())
        self.offset.add_(self.positions.shape[0])

    def _step_with_kernels(self) -> None:
        """_step with the batch taken and the totals added in two kernels (the same rows and sums)."""
        X, batch = self.X, self.positions.shape[0]
        columns = X.shape[1]
        X_batch = X.new_empty(batch, columns)
        y_batch, w_batch = self.y.new_empty(batch), self.weight.new_empty(batch)
        index, dtype = X.device.index, X.dtype
        _KERNELS.launch("take_batch", dtype, index, (batch * (columns + 1) + _THREADS - 1) // _THREADS, _THREADS,
                        (X, self.y, self.weight, self.order, self.offset, np.int64(X.shape[0]), np.int64(batch),
                         np.int64(columns), X_batch, y_batch, w_batch))
        values = [v.to(dtype).contiguous() for v in self.step(X_batch, y_batch, w_batch)]
        slots = values + [values[0]] * (_MAX_VALUES - len(values))
        _KERNELS.launch("add_totals", dtype, index, 1, _THREADS,
                        (w_batch, np.int64(batch), *slots, np.int32(len(values)), self.totals, self.offset))

    def _eager_step_on_side_stream(self) -> None:
        # torch.cuda.graphs: warm-up runs before capture go on the capture's stream (_capture_stream: in a
        # fit, its own stream, the current one; else a side stream of this thread's)
        current = torch.cuda.current_stream(self.X.device)
        side = _capture_stream(self.X.device)
        if side == current:  # a fit's own stream: nothing to order
            self._step()
            return
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self._step()
        current.wait_stream(side)

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        if self.before_capture is not None:
            self.before_capture()
        try:
            with capturing(graph, self.X.device):
                self._step()
        except RuntimeError as exc:  # a step that is not capture-safe after all: keep going eagerly
            warn(f"CUDA graph capture of the training step failed ({exc}); training continues without it.",
                 RuntimeWarning)
            graph = None
        if self.agree is not None and not self.agree(graph is not None):
            graph = None  # another rank's capture failed: nothing captured has run, so drop it
        self.capture = graph is not None
        self.graph = graph

    def epoch(self, order: torch.Tensor, n_steps: int | None = None) -> torch.Tensor:
        """Run one epoch over the rows in ``order`` (its first ``n_steps`` batches; None: all);
        the weighted mean of each step value (``totals``: the weighted sums)."""
        self.order[: order.shape[0]].copy_(order)
        self.offset.zero_()
        self.totals.zero_()
        for _ in range(self.n_steps if n_steps is None else n_steps):
            if self.graph is None and self.capture and self.eager_steps >= self.WARMUP_STEPS:
                self._capture()
            if self.graph is not None:
                self.graph.replay()
            elif self.capture:
                self._eager_step_on_side_stream()
                self.eager_steps += 1
            else:
                self._step()
        return self.totals / self.weight.sum()
