"""The one training loop every method runs on."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from twinlearn import io
from twinlearn._device import RELEASE_AFTER_SECONDS, cpu_has_fast_bf16, release_free_memory, torch_threads
from twinlearn.pairs.base import PairSource
from twinlearn.training import distributed
from twinlearn.training.checkpoints import (
    checked_objective_state,
    checked_rng_state,
    checked_scaler_state,
    is_int,
)

logger = logging.getLogger("twinlearn")

PRECISIONS = ("fp32", "bf16", "fp16")
Callback = Callable[["Trainer", int, float], None]
Schedule = Callable[[int], float]


class TrainingDiverged(FloatingPointError):
    """The loss or the trained weights became NaN or infinite."""


@dataclass(frozen=True)
class Stage:
    """One phase of a multi-stage run (t-SimCNE's three stages).

    Attributes
    ----------
    n_epochs : int
        Epochs of the stage (0 allowed: the stage is entered, then left at once).
    enter : callable
        ``enter(trainer) -> (optimizer, schedule)``, called once when the stage begins, and
        again when a resumed run is rebuilt to a checkpoint inside or after it: it changes the
        objective as the stage needs (freeze, replace a layer) and returns the stage's
        optimizer and its LR schedule, a function of the step counted from the stage's start.
    """

    n_epochs: int
    enter: Callable[["Trainer"], tuple[torch.optim.Optimizer, Schedule]]


def effective_precision(precision: str, device: torch.device) -> str:
    """``precision``, except bf16 on a CPU without native bf16: emulated bf16 matrix products
    ran ~1 000× slower than fp32 on an AVX2-only EPYC, so such a run trains in fp32 (with a
    warning) rather than for days."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn("precision='bf16' asked for, but this CPU has no native bfloat16 "
                      "(AVX512-BF16/AMX); training in fp32 instead", UserWarning, stacklevel=2)
        return "fp32"
    return precision


class Trainer:
    """Runs ``objective(batch) -> loss`` over the batches of a pair source.

    Parameters
    ----------
    objective : nn.Module
        Owns every trainable module; its ``forward(batch)`` returns the scalar loss.
    pair_source : PairSource
        Yields the batches of an epoch; its ``generator`` is checkpointed.
    optimizer : torch.optim.Optimizer
    schedule : callable
        ``schedule(step) -> factor`` of each group's base LR (``initial_lr``), set every step.
    n_epochs : int
    precision : {"fp32", "bf16", "fp16"}
        Autocast dtype for the forward pass (bf16 on CPUs with AVX-512-BF16 or on GPUs; on a
        CPU without native bf16, ``"bf16"`` falls back to fp32 with a warning).
    clip_grad_value : float, optional
        Clip gradients element-wise to ±value (CNE, t-SimCNE).
    callbacks : sequence of callables
        ``callback(trainer, epoch, mean_loss)`` after every epoch. A callback that also has an
        ``on_epoch_start(trainer, epoch)`` method is called before each epoch too (phases such
        as early exaggeration set themselves up there, which also holds after a resume).
    checkpoint_dir : path, optional
        Where ``latest_snapshot.safetensors`` (every epoch) and ``snapshot_{epoch}.safetensors``
        (every ``snapshot_freq`` epochs) are written, atomically.
    checkpoint_meta : dict
        JSON-serialisable data stored in each checkpoint (the estimator's config).
        Under ``torch.distributed`` only rank 0 writes checkpoints and shows progress, and the
        recorded epoch loss is the mean over processes.
    verbose : int
        ``>= 1`` shows a progress bar over epochs.
    print_every : int
        Log the loss every this many steps (each log is a device sync); 0 = never.
    num_threads : int, optional
        Torch threads while training (the fused CPU kernel threads itself and wants 1).
    data_parallel : bool
        Under ``torch.distributed``, each process trains on its share of every batch and the
        run equals one process at the same global batch (:mod:`~twinlearn.training.distributed`;
        the pair source must draw the same batches everywhere). Ignored in one process.

    A run in stages (t-SimCNE) is built with :meth:`in_stages`: each :class:`Stage` brings its
    own optimizer and schedule, and a checkpoint taken inside any stage resumes there.
    At the end of :meth:`fit` every trained weight is checked: NaN or infinite weights (a
    last step that diverged, whose loss was still finite) raise :class:`TrainingDiverged`.

    A callback with an ``on_step_end(trainer)`` method is also called after every optimizer
    step (``trainer.step`` already counts it), e.g. the EMA target update of BYOL/ReLIC.
    """

    def __init__(
        self,
        objective: nn.Module,
        pair_source: PairSource,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        n_epochs: int,
        *,
        precision: str = "fp32",
        clip_grad_value: float | None = None,
        callbacks: Sequence[Callback] = (),
        checkpoint_dir: str | os.PathLike | None = None,
        snapshot_freq: int = 0,
        checkpoint_meta: dict[str, Any] | None = None,
        verbose: int = 0,
        print_every: int = 0,
        num_threads: int | None = None,
        data_parallel: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r}: choose one of {PRECISIONS}")
        self.objective = objective
        self.pair_source = pair_source
        self.optimizer = optimizer
        self.schedule = schedule
        self.n_epochs = n_epochs
        self._device = next(objective.parameters()).device
        self.precision = effective_precision(precision, self._device)
        self.clip_grad_value = clip_grad_value
        self.callbacks = list(callbacks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.snapshot_freq = snapshot_freq or 0
        self.checkpoint_meta = checkpoint_meta or {}
        self.verbose = verbose
        self.print_every = print_every
        self.num_threads = num_threads
        self.data_parallel = data_parallel and distributed.is_distributed()
        if self.data_parallel:
            distributed.prepare_data_parallel(objective)
        self.stages: list[Stage] = []
        self._stage = -1
        self._stage_start_step = 0
        self.epoch = 0
        self.step = 0
        self.loss_history: list[float] = []
        self.epoch_seconds: list[float] = []
        if optimizer is not None:
            self._use_optimizer(optimizer)
        self._scaler = torch.amp.GradScaler(self._device.type, enabled=self.precision == "fp16")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.pair_source)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self._device.type, dtype=dtype)

    @classmethod
    def in_stages(cls, objective: nn.Module, pair_source: PairSource, stages: Sequence[Stage],
                  **options: Any) -> "Trainer":
        """A trainer that runs ``stages`` one after the other (``options`` as for ``__init__``)."""
        trainer = cls(objective, pair_source, None, None, sum(s.n_epochs for s in stages), **options)
        trainer.stages = list(stages)
        return trainer

    def _use_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.optimizer = optimizer

    def stage_of(self, epoch: int) -> int:
        """Index of the stage that trains epoch ``epoch`` (0-based); the last for the end."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.n_epochs
            if epoch < end:
                return index
        return len(self.stages) - 1

    def _enter_stages_up_to(self, index: int) -> None:
        """Enter every stage after the current one up to ``index``, in order (a stage of 0
        epochs still changes the objective for the next)."""
        while self._stage < index:
            self._stage += 1
            optimizer, self.schedule = self.stages[self._stage].enter(self)
            self._use_optimizer(optimizer)
            start_epoch = sum(s.n_epochs for s in self.stages[: self._stage])
            self._stage_start_step = start_epoch * self.steps_per_epoch

    def _set_lr(self) -> None:
        factor = self.schedule(self.step - self._stage_start_step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def _train_step(self, batch: Any) -> torch.Tensor:
        self._set_lr()
        with self._autocast():
            loss = self.objective(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self._scaler.scale(loss).backward()
        if self.data_parallel:
            distributed.average_gradients(self.objective.parameters())
        if self.clip_grad_value is not None:
            self._scaler.unscale_(self.optimizer)
            # a fused table's row step clips its own rows (its .grad stays None), and a group
            # of parameters without gradients makes the foreach clip fail
            grads = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                torch.nn.utils.clip_grad_value_(grads, self.clip_grad_value)
        self._scaler.step(self.optimizer)
        self._scaler.update()
        self.step += 1
        return loss.detach()

    def run_epoch(self) -> float:
        """Train one epoch; return its mean loss (one device sync per epoch)."""
        self.objective.train()
        step_hooks = [c for c in self.callbacks if hasattr(c, "on_step_end")]
        start = time.perf_counter()
        total = torch.zeros((), device=self._device)
        n_batches = 0
        for batch in self.pair_source.epoch():
            loss = self._train_step(distributed.local_share(batch) if self.data_parallel else batch)
            for hook in step_hooks:
                hook.on_step_end(self)
            total += loss.float()
            n_batches += 1
            if self.print_every and self.step % self.print_every == 0:
                logger.info("epoch %d step %d loss %.5f", self.epoch, self.step, float(loss))
        mean = float(distributed.mean_across_processes(total)) / max(n_batches, 1)
        if not math.isfinite(mean):
            raise TrainingDiverged(
                f"the loss became {mean} in epoch {self.epoch}: lower the learning rate, use "
                "precision='fp32', or check the input for extreme values"
            )
        self.epoch += 1
        self.loss_history.append(mean)
        if time.perf_counter() - start > RELEASE_AFTER_SECONDS:
            release_free_memory()
        self.epoch_seconds.append(time.perf_counter() - start)
        return mean

    def fit(self) -> "Trainer":
        """Train from the current epoch up to ``n_epochs``; then check the weights."""
        threads = torch_threads(self.num_threads) if self.num_threads else contextlib.nullcontext()
        with threads:
            self._fit_epochs()
        if self.stages:  # trailing stages of 0 epochs still change the objective
            self._enter_stages_up_to(len(self.stages) - 1)
        self.check_weights()
        return self

    def check_weights(self) -> None:
        """Raise :class:`TrainingDiverged` if a trained weight (or a buffer such as an EMA
        target's) is NaN or infinite."""
        state = self.objective.state_dict()
        bad = [name for name, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise TrainingDiverged(
                f"training diverged: {len(bad)} weight tensor(s) became NaN or infinite (first: "
                f"{bad[0]}) by epoch {self.epoch}; lower the learning rate or use precision='fp32'"
            )

    def _fit_epochs(self) -> None:
        bar = None
        if self.verbose and distributed.is_main_process():
            from tqdm.auto import tqdm

            bar = tqdm(total=self.n_epochs, initial=self.epoch, desc="training", unit="epoch")
        try:
            while self.epoch < self.n_epochs:
                if self.stages:
                    self._enter_stages_up_to(self.stage_of(self.epoch))
                for callback in self.callbacks:
                    if hasattr(callback, "on_epoch_start"):
                        callback.on_epoch_start(self, self.epoch)
                mean = self.run_epoch()
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4g}")
                    bar.update(1)
                logger.debug("epoch %d: loss %.6f", self.epoch, mean)
                self._maybe_checkpoint()
                for callback in self.callbacks:
                    callback(self, self.epoch, mean)
        finally:
            if bar is not None:
                bar.close()

    # --- checkpoints ------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to resume exactly: weights, optimizer, RNG and counters."""
        optim_tensors, optim_meta = io.optimizer_to_tensors(self.optimizer)
        tensors = {
            **io.add_prefix(self.objective.state_dict(), "objective"),
            **io.add_prefix(optim_tensors, "optimizer"),
            "rng.pair_source": self.pair_source.generator.get_state(),
        }
        meta = {
            "kind": "checkpoint",
            "epoch": self.epoch,
            "step": self.step,
            "loss_history": self.loss_history,
            "optimizer": optim_meta,
            "scaler": self._scaler.state_dict() if self._scaler.is_enabled() else None,
            **self.checkpoint_meta,
        }
        return tensors, meta

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        tensors, meta = self.state_tensors()
        io.save_tensors(path, tensors, meta)

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore weights, optimizer, RNG and counters from ``path``; return its metadata.

        Everything is checked before anything changes: a checkpoint of another model or run
        (its fingerprint, tensors, optimizer state, an epoch beyond ``n_epochs``, a step count
        or loss history that disagree with it) gets a ``ValueError`` naming the file, and the
        trainer stays as it was (a staged trainer is first rebuilt to the checkpoint's stage).
        """
        tensors, meta = io.load_tensors(path, kind="checkpoint")
        epoch, step, history = self._checked_counters(meta, path)
        fingerprint = self.checkpoint_meta.get("fingerprint")
        if fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{path} is a checkpoint of another run (its data or settings differ from this "
                "fit's); remove it or use another output_folder to start afresh, or fit with the "
                "same data and parameters to resume it"
            )
        if self.stages:  # rebuild the objective and optimizer of the checkpoint's stage
            self._enter_stages_up_to(self.stage_of(max(epoch - 1, 0)))
        unknown = sorted(k for k in tensors if k != "rng.pair_source"
                         and not k.startswith(("objective.", "optimizer.")))
        if unknown:
            raise ValueError(f"checkpoint {path} holds tensors this trainer has not: {unknown[:5]}")
        objective = checked_objective_state(self.objective, tensors, path)
        optimizer = io.optimizer_state(
            self.optimizer, io.split_prefix(tensors, "optimizer"), meta.get("optimizer"), path
        )
        generator = self.pair_source.generator
        rng = checked_rng_state(generator, tensors.get("rng.pair_source"), path)
        scaler = checked_scaler_state(self._scaler, meta.get("scaler"), path)
        self.objective.load_state_dict(objective)
        self.optimizer.load_state_dict(optimizer)
        generator.set_state(rng)
        if scaler is not None:
            self._scaler.load_state_dict(scaler)
        self.epoch, self.step, self.loss_history = epoch, step, history
        return meta

    def _checked_counters(self, meta: dict[str, Any], path: object) -> tuple[int, int, list[float]]:
        """Epoch, step and loss history of a checkpoint, consistent with each other and this run
        (an epoch beyond ``n_epochs`` would silently skip training)."""
        owner = self.checkpoint_meta.get("class")
        if owner is not None and meta.get("class") != owner:
            raise ValueError(f"{path} is a checkpoint of {meta.get('class')!r}, not of {owner!r}")
        epoch, step, history = meta.get("epoch"), meta.get("step"), meta.get("loss_history")
        if not is_int(epoch) or not 0 <= epoch <= self.n_epochs:
            raise ValueError(f"{path} is at epoch {epoch!r}; this run has 0 to {self.n_epochs}")
        expected = epoch * self.steps_per_epoch
        if not is_int(step) or step != expected:
            raise ValueError(f"{path} is at step {step!r}, but {epoch} epochs of "
                             f"{self.steps_per_epoch} steps make {expected}")
        if not isinstance(history, list) or len(history) != epoch or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in history
        ):
            raise ValueError(f"{path} does not hold a loss history of {epoch} finite numbers")
        return epoch, step, [float(v) for v in history]

    def _maybe_checkpoint(self) -> None:
        if self.checkpoint_dir is None or not distributed.is_main_process():
            return
        self.save_checkpoint(self.checkpoint_dir / "latest_snapshot.safetensors")
        if self.snapshot_freq and self.epoch % self.snapshot_freq == 0:
            self.save_checkpoint(self.checkpoint_dir / f"snapshot_{self.epoch}.safetensors")

