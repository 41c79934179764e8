"""Online network + exponential-moving-average (EMA) target, as in BYOL (Grill et al., NeurIPS
2020) and ReLIC (Mitrovic et al., ICLR 2021): the objective and the trainer callback that
updates the target after every optimizer step.

Everything the EMA needs lives in the objective (the target's weights) or follows from the
trainer's step counter (γ), so a trainer checkpoint restores it exactly.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from twinlearn.training.trainer import Trainer


class EMATargetObjective(nn.Module):
    """``½ [loss(online(v1), target(v2)) + loss(online(v2), target(v1))]`` for a batch of two
    views ``(v1, v2)``; the target is an EMA copy of the online network without gradients.

    Parameters
    ----------
    online : nn.Module
        Backbone followed by the projector; trained.
    loss : nn.Module
        ``loss(online_out, target_out) -> scalar`` (e.g. a Matryoshka-wrapped ReLIC loss); its
        own parameters (a learnable temperature) are trained too.
    backbone_name : str
        Name of the backbone submodule inside ``online`` (features come from the target's).
    """

    def __init__(self, online: nn.Module, loss: nn.Module, backbone_name: str = "0") -> None:
        super().__init__()
        self.online = online
        self.target = copy.deepcopy(online).requires_grad_(False)
        self.loss = loss
        self.backbone_name = backbone_name

    def target_backbone(self) -> nn.Module:
        return self.target.get_submodule(self.backbone_name)

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        v1, v2 = batch
        o1, o2 = self.online(v1), self.online(v2)
        with torch.no_grad():
            t1, t2 = self.target(v1), self.target(v2)
        return 0.5 * (self.loss(o1, t2) + self.loss(o2, t1))

    @torch.no_grad()
    def copy_to_target(self) -> None:
        for t, o in zip(self.target.state_dict().values(), self.online.state_dict().values()):
            t.copy_(o)

    @torch.no_grad()
    def update_target(self, gamma: float) -> None:
        """``target ← γ·target + (1 − γ)·online`` for parameters and float buffers (BatchNorm
        running statistics); integer buffers (batch counters) are copied."""
        for t, o in zip(self.target.state_dict().values(), self.online.state_dict().values()):
            if t.is_floating_point():
                t.lerp_(o, 1.0 - gamma)
            else:
                t.copy_(o)


def cosine_gamma(k: int, total: int, gamma0: float) -> float:
    """BYOL's EMA coefficient after ``k`` of ``total`` updates:
    ``1 − (1 − γ₀)·(cos(πk/total) + 1)/2``, rising from ``γ₀`` to 1."""
    return 1.0 - (1.0 - gamma0) * (math.cos(math.pi * min(k, total) / max(total, 1)) + 1.0) / 2.0


class EMAUpdate:
    """Trainer callback: after each optimizer step, update the target of an
    :class:`EMATargetObjective` (mrl-pytorch's schedule).

    Up to step ``start_step`` the target is a copy of the online network; afterwards, every
    ``every`` steps, ``target ← γ_k·target + (1 − γ_k)·online`` with
    ``γ_k = cosine_gamma(k, total_steps, gamma)`` and ``k = step − start_step``.

    Parameters
    ----------
    objective : EMATargetObjective
    gamma : float
        Initial coefficient γ₀ (0.995).
    total_steps : int
        Length of the cosine, mrl-pytorch: ``steps_per_epoch · (n_epochs + 2) − start_step``.
    start_step : int
        mrl-pytorch's ``update_gamma_after_step`` (1).
    every : int
        mrl-pytorch's ``update_gamma_every_n_steps`` (1).
    """

    def __init__(
        self,
        objective: EMATargetObjective,
        gamma: float,
        total_steps: int,
        start_step: int = 1,
        every: int = 1,
    ) -> None:
        self.objective = objective
        self.gamma0 = gamma
        self.total_steps = total_steps
        self.start_step = start_step
        self.every = every

    def gamma(self, step: int) -> float:
        """γ used at the update after optimizer step ``step`` (1-based)."""
        return cosine_gamma(step - self.start_step, self.total_steps, self.gamma0)

    def on_step_end(self, trainer: "Trainer") -> None:
        step = trainer.step
        if step <= self.start_step:
            self.objective.copy_to_target()
        elif (step - self.start_step) % self.every == 0:
            self.objective.update_target(self.gamma(step))

    def __call__(self, trainer: "Trainer", epoch: int, mean_loss: float) -> None:
        """Nothing at the end of an epoch: the update is per step."""
