r"""Contrastive losses over (anchor, positive) pairs with negatives: InfoNCE, NEG, NCE, UMAP.

Conventions (chosen once for the whole library; presets in the estimators reproduce each
original's defaults):

* Each loss works on log-similarities from a kernel (:mod:`twinlearn.kernels`): ``log q⁺`` of
  each anchor with its positive, ``log q⁻`` with its negatives.
* Negatives of anchor ``i`` are drawn from the other ``2B − 2`` points of the batch — never the
  anchor itself nor its own positive (CNE could draw both) — uniformly with replacement, or are
  all ``2B − 2`` of them (``negative_samples="full"``), computed as a ``B × 2B`` similarity
  matrix: never a ``(2B)² × d`` tensor.
* InfoNCE puts the positive in the denominator:
  ``ℓ_i = −log q⁺ + (1/ρ)·log(q⁺ + Σ q⁻)``, ρ = ``ince_spec`` (1: t-SNE-like, 4: UMAP-like).
* NEG: ``h = q/(q + ξ)``, ``ℓ_i = −log h⁺ − Σ log(1 − h⁻)`` with ξ = ``neg_spec``, written in
  log space (no clamping needed). NCE is NEG with ξ = ``Z·m`` and a learned ``log Z``.
* UMAP: ``ℓ_i = −log q⁺ − Σ log(1 − q⁻)``, ``1 − q`` clamped at 1e-4; needs a kernel bounded by 1.
* ``reduction``: ``"mean"`` over anchors (default) or ``"sum"`` (CNE's non-parametric default,
  which keeps per-point gradients independent of the batch size).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from twinlearn.kernels import CauchyKernel, Kernel
from twinlearn.training.distributed import all_gather_with_grad

LOSS_MODES = ("infonce", "neg", "nce", "umap")


def sample_negatives(
    batch_size: int, m: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``(B, m)`` indices into the ``2B`` stacked batch ``[anchors; positives]``, excluding for
    row ``i`` both ``i`` and ``i + B``; uniform with replacement."""
    i = torch.arange(batch_size, device=device)[:, None]
    r = torch.randint(2 * batch_size - 2, (batch_size, m), generator=generator, device=device)
    r = r + (r >= i)
    return r + (r >= i + batch_size)


class ContrastiveLoss(nn.Module):
    """InfoNCE / NEG / NCE / UMAP with any kernel.

    Parameters
    ----------
    mode : {"infonce", "neg", "nce", "umap"}
    kernel : kernel object, default Cauchy ``1/(1 + d²)``
    negative_samples : int or "full"
        Negatives per anchor (sampled from the batch), or all other batch points.
    ince_spec : float
        InfoNCE spectrum constant ρ.
    neg_spec : float
        NEG constant ξ.
    log_Z : float
        Initial ``log Z`` of NCE (learned).
    reduction : {"mean", "sum"}
    loss_scale : float
        Constant factor (CNE multiplies InfoNCE by its temperature 0.5).
    symmetric : bool
        Also use the positives as anchors (t-SimCNE/SimCLR); only with "full" negatives.
    gather_negatives : bool
        Under ``torch.distributed``, take the "full" negatives from the batches of all
        processes (differentiable all-gather), so that ``P`` processes with batch ``B`` train
        exactly like one process with batch ``P·B``. Each process's loss is the mean over its own
        anchors. No effect in a single process.
    generator : torch.Generator, optional
        Local RNG for the negative draws (shared with the pair source so checkpoints restore it).
    """

    def __init__(
        self,
        mode: str = "infonce",
        kernel: Kernel | None = None,
        negative_samples: int | str = 5,
        *,
        ince_spec: float = 1.0,
        neg_spec: float = 1.0,
        log_Z: float = 0.0,
        reduction: str = "mean",
        loss_scale: float = 1.0,
        symmetric: bool = False,
        gather_negatives: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if mode not in LOSS_MODES:
            raise ValueError(f"loss mode {mode!r} is not one of {LOSS_MODES}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction={reduction!r}: use 'mean' or 'sum'")
        self.kernel = kernel or CauchyKernel()
        if mode == "umap" and not self.kernel.bounded_by_one:
            raise ValueError(
                "the UMAP loss needs a similarity bounded by 1 (log(1 - q)); "
                f"the {self.kernel.name} kernel is not: use metric='euclidean' or another loss"
            )
        if negative_samples != "full" and not (isinstance(negative_samples, int) and negative_samples >= 1):
            raise ValueError(f"negative_samples must be a positive int or 'full', got {negative_samples!r}")
        if (symmetric or gather_negatives) and negative_samples != "full":
            raise ValueError("symmetric=True and gather_negatives=True need negative_samples='full'")
        self.mode = mode
        self.negative_samples = negative_samples
        self.ince_spec = float(ince_spec)
        self.neg_spec = float(neg_spec)
        self.reduction = reduction
        self.loss_scale = float(loss_scale)
        self.symmetric = symmetric
        self.gather_negatives = gather_negatives
        self.generator = generator
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z))) if mode == "nce" else None

    # --- similarities ----------------------------------------------------------------------
    def _log_sims(self, za: torch.Tensor, zp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log q⁺`` (A,) and ``log q⁻`` (A, m) for the anchors (A = B, or 2B if symmetric)."""
        B = za.shape[0]
        if self.negative_samples == "full":
            if self.gather_negatives:
                (za, offset), (zp, _) = all_gather_with_grad(za), all_gather_with_grad(zp)
            else:
                offset = 0
            total = za.shape[0]
            z = torch.cat([za, zp])
            # this process's anchors, as rows of the (possibly gathered) stacked batch
            own = torch.arange(offset, offset + B, device=z.device)
            own = torch.cat([own, own + total]) if self.symmetric else own
            sims = self.kernel.log_sim_matrix(z[own], z)
            rows = torch.arange(own.shape[0], device=z.device)
            partner = (own + total) % (2 * total)
            pos = sims[rows, partner]
            mask = torch.ones_like(sims, dtype=torch.bool)
            mask[rows, own] = False
            mask[rows, partner] = False
            return pos, sims[mask].view(own.shape[0], 2 * total - 2)
        m = self.negative_samples
        neg_idx = sample_negatives(B, m, self.generator, za.device)
        z = torch.cat([za, zp])
        pos = self.kernel.log_sim(za, zp)
        neg = self.kernel.log_sim(za[:, None, :], z[neg_idx])
        return pos, neg

    # --- losses ----------------------------------------------------------------------------
    def forward(self, za: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        za, zp = za.float(), zp.float()
        pos, neg = self._log_sims(za, zp)
        per_anchor = getattr(self, f"_{self.mode}")(pos, neg)
        total = per_anchor.sum() if self.reduction == "sum" else per_anchor.mean()
        return self.loss_scale * total

    def _infonce(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        denom = torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1)
        return -pos + denom / self.ince_spec

    def _neg_estimator(self, pos: torch.Tensor, neg: torch.Tensor, log_xi: torch.Tensor | float) -> torch.Tensor:
        log_xi = torch.as_tensor(log_xi, dtype=pos.dtype, device=pos.device)
        log_h_pos = pos - torch.logaddexp(pos, log_xi)
        log_1m_h_neg = log_xi - torch.logaddexp(neg, log_xi)
        return -log_h_pos - log_1m_h_neg.sum(dim=1)

    def _neg(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return self._neg_estimator(pos, neg, math.log(self.neg_spec))

    def _nce(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return self._neg_estimator(pos, neg, self.log_Z + math.log(neg.shape[1]))

    def _umap(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        log_1m_q = torch.log(torch.clamp(-torch.expm1(neg), min=1e-4))
        return -pos - log_1m_q.sum(dim=1)
