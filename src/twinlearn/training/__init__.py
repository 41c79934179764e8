"""The single training loop, optimizers and schedules."""

from twinlearn.training.optim import LARS, constant, lars_param_groups, linear_decay, warmup_cosine
from twinlearn.training.trainer import PRECISIONS, Trainer, TrainingDiverged

__all__ = [
    "LARS",
    "PRECISIONS",
    "Trainer",
    "TrainingDiverged",
    "constant",
    "lars_param_groups",
    "linear_decay",
    "warmup_cosine",
]
