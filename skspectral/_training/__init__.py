"""Training: the mini-batch loop (trainer), CUDA-graph replay of its steps
(cuda_graph) and the per-epoch record (history). No scikit-learn here."""

from . import history
from .cuda_graph import StaticBatchSteps
from .trainer import Dataset, Trainer, TrainingOptions, TrainingState, predict_in_chunks

__all__ = ["Dataset", "StaticBatchSteps", "Trainer", "TrainingOptions", "TrainingState", "history", "predict_in_chunks"]
