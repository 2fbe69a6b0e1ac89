"""Training: the mini-batch loop (trainer), CUDA-graph replay of its steps
(cuda_graph), epochs streamed from host memory (streaming) and the per-epoch record
(history). No scikit-learn here."""

from . import history
from .cuda_graph import StaticBatchSteps
from .streaming import HostRows
from .threads import FitThreads, StepThreads, step_threads
from .trainer import Dataset, Trainer, TrainingOptions, TrainingState, predict_in_chunks, schedule_share

__all__ = ["Dataset", "FitThreads", "HostRows", "StaticBatchSteps", "StepThreads", "Trainer", "TrainingOptions",
           "TrainingState", "history", "predict_in_chunks", "schedule_share", "step_threads"]
