"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling, as in Barlow Twins / TLDR.

    For parameter groups with ``lars=True``: ``g ← g + wd·p``, then ``g ← g · η‖p‖/‖g‖`` when
    both norms are positive. Groups with ``lars=False`` (biases, norm weights) get neither.
    Then SGD with momentum: ``μ ← m·μ + g``, ``p ← p − lr·μ``. The step consumes the
    gradient: afterwards ``p.grad`` holds ``g + wd·p`` (the next backward pass starts afresh).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        eta: float = 0.001,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):  # noqa: D102
        # In place on the gradient (this step consumes it) and one fused momentum update: a
        # TLDR projector holds ~8.5 M weights, and each temporary copy costs a pass over them.
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                trust = torch.ones((), dtype=p.dtype, device=p.device)
                if group["lars"]:
                    g.add_(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).addcmul_(g, trust)
                p.add_(state["mu"], alpha=-group["lr"])


def lars_param_groups(module: nn.Module) -> list[dict]:
    """Split parameters: matrices get LARS and weight decay, 1-D ones (bias, norm) do not."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "lars": False, "weight_decay": 0.0},
    ]


def warmup_cosine(
    total_steps: int, warmup_steps: int, final_factor: float = 0.001
) -> Callable[[int], float]:
    """Factor of the base LR at step ``s`` (0-based): linear warm-up from ``1/warmup`` to 1,
    then a cosine from 1 down to ``final_factor`` at the last step (TLDR / Barlow Twins)."""

    def factor(step: int) -> float:
        s = step + 1
        if s <= warmup_steps:
            return s / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        q = 0.5 * (1 + math.cos(math.pi * min(s - warmup_steps, span) / span))
        return q + final_factor * (1 - q)

    return factor


def linear_decay(total_steps: int, min_factor: float = 0.0, warmup_steps: int = 0) -> Callable[[int], float]:
    """Linear warm-up (optional) then linear decay of the LR factor to ``min_factor`` (CNE)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        return max(min_factor, 1.0 - (step - warmup_steps) / span)

    return factor


def constant() -> Callable[[int], float]:
    """No schedule."""
    return lambda step: 1.0

