"""Barlow Twins redundancy-reduction loss (Zbontar et al., ICML 2021), as used by TLDR."""

from __future__ import annotations

import torch
import torch.nn as nn


class BarlowTwinsLoss(nn.Module):
    r"""``scale · [Σ_i (C_ii − 1)² + λ Σ_{i≠j} C_ij²]`` with ``C = z1ᵀ z2 / B``.

    ``z1`` and ``z2`` are the two branches' projector outputs, already standardised over the
    batch (TLDR's projector ends in a non-affine BatchNorm). Under autocast the H×H product
    ``C`` runs in the autocast dtype (bf16 halves the cost of this, the largest matmul of a
    TLDR step, and rounding errors of single ``C_ij`` average out in the off-diagonal sum),
    while the diagonal is recomputed exactly in float32: ``C_ii ≈ 1``, where bf16's spacing of
    2⁻⁸ would swamp ``(C_ii − 1)²``.

    Parameters
    ----------
    lambd : float
        Weight of the off-diagonal (redundancy) term, 3.9e-3 in TLDR.
    scale_loss : float
        Overall factor, 1/32 in TLDR.
    """

    def __init__(self, lambd: float = 3.9e-3, scale_loss: float = 1 / 32) -> None:
        super().__init__()
        self.lambd = lambd
        self.scale_loss = scale_loss

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        n = z1.shape[0]
        c = z1.T @ z2 / n
        with torch.autocast(z1.device.type, enabled=False):
            diag = (z1.float() * z2.float()).sum(0) / n
            c = c.float()
            on_diag = (diag - 1).pow(2).sum()
            off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return self.scale_loss * (on_diag + self.lambd * off_diag)
