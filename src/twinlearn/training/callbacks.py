"""Trainer callbacks: ``callback(trainer, epoch, mean_loss)`` after each epoch, and optionally
``on_epoch_start(trainer, epoch)`` before it. No external package needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from twinlearn.training.trainer import Trainer


class SpectrumPhases:
    """Early exaggeration: the loss's spectrum constant is ``early`` for epochs
    ``< n_early`` and ``main`` afterwards.

    Parameters
    ----------
    loss : ContrastiveLoss
        Its ``attr`` (``"ince_spec"`` or ``"neg_spec"``) is set before every epoch.
    attr : str
    early, main : float
    n_early : int
        Number of exaggerated epochs (CNE: a third of the run).
    """

    def __init__(self, loss: object, attr: str, early: float, main: float, n_early: int) -> None:
        self.loss, self.attr = loss, attr
        self.early, self.main, self.n_early = float(early), float(main), int(n_early)

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        setattr(self.loss, self.attr, self.early if epoch < self.n_early else self.main)

    def __call__(self, trainer: "Trainer", epoch: int, mean_loss: float) -> None:
        """Nothing after an epoch: the phase is chosen before it."""


class EmbeddingSnapshots:
    """Keep a copy of the embedding every ``every`` epochs (and of the initial one).

    Parameters
    ----------
    embed : callable
        ``embed() -> ndarray`` of the current embedding of the training points.
    every : int
        Snapshot period in epochs.

    Attributes
    ----------
    snapshots : list of (epoch, ndarray)
    """

    def __init__(self, embed: Callable[[], np.ndarray], every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.embed, self.every = embed, every
        self.snapshots: list[tuple[int, np.ndarray]] = []

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        if not self.snapshots and epoch == 0:
            self.snapshots.append((0, self.embed()))

    def __call__(self, trainer: "Trainer", epoch: int, mean_loss: float) -> None:
        if epoch % self.every == 0 or epoch == trainer.n_epochs:
            self.snapshots.append((epoch, self.embed()))


class LossHistory:
    """Mean loss and learning rate of every epoch (``trainer.loss_history`` holds the losses
    alone; this also records the LR of the first parameter group at the epoch's end).

    Attributes
    ----------
    history : list of dict with keys ``epoch``, ``loss``, ``lr``
    """

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def __call__(self, trainer: "Trainer", epoch: int, mean_loss: float) -> None:
        lr = float(trainer.optimizer.param_groups[0]["lr"])
        self.history.append({"epoch": epoch, "loss": float(mean_loss), "lr": lr})
