"""The contrastive training recipe: what CNE, the generic :class:`ContrastiveEmbedding` and the
placement of new points share.

A :class:`ContrastiveRecipe` holds the loss, optimizer and schedule settings (already
validated by the estimator) and builds the parts the one :class:`~twinlearn.training.Trainer`
runs: the resolved spectrum, the :class:`~twinlearn.losses.ContrastiveLoss` with its kernel,
the early-exaggeration phases, the objective (the fused CPU kernel for a table, the torch path
otherwise), the optimizer and the per-step LR schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn as nn

from twinlearn.data.arrays import FeatureStore
from twinlearn.encoders.table import EmbeddingTable
from twinlearn.kernels import CauchyKernel, CosineKernel
from twinlearn.losses import ContrastiveLoss, MatryoshkaLoss
from twinlearn.losses.spectrum import Spectrum, resolve_spectrum
from twinlearn.pairs.base import PairSource
from twinlearn.training.callbacks import SpectrumPhases
from twinlearn.training.objectives import PairObjective
from twinlearn.training.optim import linear_decay, warmup_cosine
from twinlearn.training.trainer import Trainer

#: NCE's ``log Z`` has its own parameter group with this LR, as in the original.
LOG_Z_LR = 1e-3
MODE_ALIASES = {"neg_sample": "neg"}


def loss_mode(value: str) -> str:
    """The canonical loss mode (``"neg_sample"``, the original's name, is ``"neg"``)."""
    return MODE_ALIASES.get(value, value)


def negatives(value: int | str) -> int | str:
    """Negatives per anchor, ``"full"`` (``-1`` and ``"full-batch"`` are accepted for it) or
    ``"all"`` (every point: :mod:`twinlearn.training.full_repulsion`)."""
    if value == "all":
        return value
    return "full" if value in (-1, "full", "full-batch") else int(value)


@dataclass(frozen=True)
class ContrastiveRecipe:
    """Validated loss / optimizer / schedule settings of a contrastive run (see
    :class:`~twinlearn.estimators.cne.CNE` for what each means)."""

    loss_mode: str = "infonce"
    metric: str = "euclidean"
    negative_samples: int | str = 5
    n_epochs: int = 200
    learning_rate: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    anneal_lr: str | bool = "none"
    lr_min_factor: float = 0.0
    warmup_epochs: int = 0
    temperature: float = 0.5
    eps: float = 1.0
    a: float = 1.0
    b: float = 1.0
    Z: float = 1.0
    s: float | None = None
    Z_bar: float | None = None
    neg_spec: float | None = None
    ince_spec: float | None = None
    early_exaggeration: bool = True
    loss_aggregation: str = "sum"
    clip_grad: float | None = 4.0
    nesting_dims: Sequence[int] | None = None
    precision: str = "fp32"

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> "ContrastiveRecipe":
        """The recipe's fields out of an estimator's parameters, with ``overrides`` applied."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in params.items() if k in names}, **overrides})

    @property
    def mode(self) -> str:
        return loss_mode(self.loss_mode)

    @property
    def anneal(self) -> str:
        if isinstance(self.anneal_lr, bool):
            return "linear" if self.anneal_lr else "none"
        return self.anneal_lr

    def spectrum(self, n: int | None, batch_size: int | None) -> Spectrum:
        """Resolve ``s`` / ``Z_bar`` / ``neg_spec`` / ``ince_spec`` for ``n`` points."""
        m = negatives(self.negative_samples)
        if m == "full":
            m = 2 * batch_size - 2 if batch_size else None
        elif m == "all":
            m = n - 1 if n else None
        needs_n = self.mode == "neg" and (self.s is not None or self.Z_bar is not None or self.early_exaggeration)
        if needs_n and (n is None or m is None):
            raise ValueError(
                "the NEG spectrum (s, Z_bar, early exaggeration) needs the number of points: pass "
                "fit(loader, n=...) (and a loader with a batch_size for negative_samples='full'), "
                "or early_exaggeration=False with neg_spec"
            )
        return resolve_spectrum(
            self.mode, n or 1, m or 1, s=self.s, Z_bar=self.Z_bar, neg_spec=self.neg_spec,
            ince_spec=self.ince_spec, early_exaggeration=self.early_exaggeration,
        )

    def loss(self, spectrum: Spectrum, generator: torch.Generator) -> ContrastiveLoss:
        """The loss at the first phase's spectrum constant."""
        kernel = (CauchyKernel.umap(self.a, self.b, eps=self.eps) if self.metric == "euclidean"
                  else CosineKernel(self.temperature))
        return ContrastiveLoss(
            self.mode, kernel, negatives(self.negative_samples),
            ince_spec=spectrum.early_spec if self.mode == "infonce" else 1.0,
            neg_spec=spectrum.early_spec if self.mode == "neg" else 1.0,
            log_Z=math.log(self.Z),
            reduction=self.loss_aggregation,
            loss_scale=self.temperature if self.mode == "infonce" else 1.0,
            generator=generator,
        )

    def phases(self, loss: ContrastiveLoss, spectrum: Spectrum) -> list[SpectrumPhases]:
        """Early exaggeration for the first third of the epochs (losses with a spectrum)."""
        if spectrum.s is None:
            return []
        attr = "ince_spec" if self.mode == "infonce" else "neg_spec"
        n_early = self.n_epochs // 3 if self.early_exaggeration else 0
        return [SpectrumPhases(loss, attr, spectrum.early_spec, spectrum.spec, n_early)]

    def objective(self, model: nn.Module, loss: ContrastiveLoss, store: FeatureStore | None) -> nn.Module:
        """The fused CPU kernel for a plain table with the Cauchy kernel, the torch path else."""
        table = isinstance(model, EmbeddingTable) and store is None and self.nesting_dims is None
        if table and model.weight.device.type == "cpu":  # numba loads only for this path
            from twinlearn.losses.fused_table import FusedTableObjective, fused_supported

            if fused_supported(loss, model.weight.device):
                return FusedTableObjective(model, loss, n_threads=torch.get_num_threads())
        pair_loss = loss if self.nesting_dims is None else MatryoshkaLoss(loss, self.nesting_dims)
        return PairObjective(model, pair_loss, store)

    def make_optimizer(self, objective: nn.Module) -> torch.optim.Optimizer:
        groups = [{"params": [p for p in objective.encoder.parameters() if p.requires_grad]}]
        log_z = getattr(getattr(objective.loss, "base_loss", objective.loss), "log_Z", None)
        if log_z is not None:
            groups.append({"params": [log_z], "lr": LOG_Z_LR})
        # a fused table under plain SGD steps the batch's rows alone (not under fp16: its loss
        # scaler unscales and checks only .grad)
        plain_sgd = self.optimizer == "sgd" and self.momentum == 0 and self.weight_decay == 0
        if plain_sgd and self.precision != "fp16" and hasattr(objective, "take_pending"):
            from twinlearn.training.row_sgd import FusedTableSGD

            return FusedTableSGD(objective, groups, lr=self.learning_rate, clip=self.clip_grad)
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.learning_rate, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        return torch.optim.Adam(groups, lr=self.learning_rate, weight_decay=self.weight_decay)

    def schedule(self, steps_per_epoch: int):
        total = self.n_epochs * steps_per_epoch
        warmup = self.warmup_epochs * steps_per_epoch
        if self.anneal == "cosine":
            return warmup_cosine(total, warmup, final_factor=self.lr_min_factor)
        return linear_decay(total, self.lr_min_factor if self.anneal == "linear" else 1.0, warmup)


@dataclass
class ContrastiveRun:
    """The parts of one contrastive run, ready for :meth:`Trainer.fit`."""

    trainer: Trainer
    loss: ContrastiveLoss
    spectrum: Spectrum

    def learned_log_z(self) -> float | None:
        return float(self.loss.log_Z.detach()) if self.loss.log_Z is not None else None


def contrastive_run(
    recipe: ContrastiveRecipe,
    model: nn.Module,
    source: PairSource,
    *,
    n: int | None,
    store: FeatureStore | None = None,
    callbacks: Sequence[Any] = (),
    **trainer_options: Any,
) -> ContrastiveRun:
    """Compose spectrum, loss, phases, objective, optimizer and schedule into a trainer.

    ``n`` is the number of points (the NEG spectrum needs it); ``trainer_options`` go to
    :class:`Trainer` (``checkpoint_dir``, ``checkpoint_meta``, ``verbose``, ...).
    """
    spectrum = recipe.spectrum(n, getattr(source, "batch_size", None))
    loss = recipe.loss(spectrum, source.generator)
    objective = recipe.objective(model, loss, store)
    objective.to(next(model.parameters()).device)
    fused = not isinstance(objective, PairObjective)
    trainer = Trainer(
        objective, source, recipe.make_optimizer(objective), recipe.schedule(len(source)), recipe.n_epochs,
        precision=recipe.precision, clip_grad_value=recipe.clip_grad,
        callbacks=[*recipe.phases(loss, spectrum), *callbacks],
        # the fused kernel threads itself; torch's own threads only hand off the tiny table
        # ops (n × 2), which cost more than they save (6 ms vs 0.1 ms per op on 2 cores)
        num_threads=1 if fused else None, **trainer_options,
    )
    return ContrastiveRun(trainer, loss, spectrum)
