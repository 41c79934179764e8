r"""ReLIC loss (Mitrovic et al., "Representation Learning via Invariant Causal Mechanisms",
ICLR 2021), in the form used by mrl-pytorch.

With ``x`` the L2-normalised online projections of one view and ``x′`` the target projections of
the other view (``B × p``), and the inverse temperature ``β = min(exp(t′), β_max)``:

* ``S = β · x x′ᵀ`` (B × B logits, positives on the diagonal),
* ``L_CE = (1/B) Σ_i −log softmax_row(S)_ii`` (instance discrimination online → target),
* ``L_KL = (1/B) Σ_i Σ_j P2_ij (log P2_ij − log P1_ij)`` with ``P1 = softmax(S, dim=1)`` and
  ``P2 = softmax(S, dim=0)ᵀ``: the online→target and target→online distributions of the same
  logits are pushed together (mrl-pytorch's simplification of ReLIC's invariance penalty),
* ``loss = L_CE + α · L_KL``.

One deliberate change: the clamp at ``β_max`` keeps the value but lets the gradient through
to ``t′`` (straight-through), since a hard clamp freezes ``t′`` for good once
``exp(t′) > β_max``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ReLICLoss(nn.Module):
    """ReLIC's cross-entropy + α·KL with a learnable inverse temperature.

    Parameters
    ----------
    alpha : float, default=1.0
        Weight of the KL invariance term.
    max_inverse_temperature : float, default=5.0
        Upper bound of ``β = exp(t′)``.
    init_log_inverse_temperature : float, default=0.0
        Initial ``t′`` (β = 1).

    ``forward(online, target)`` takes ``(B, p)`` tensors, or ``(K, B, p)`` stacks of ``K`` nests
    (then it returns the ``K`` losses; see :class:`~twinlearn.losses.MatryoshkaLoss`). One
    ``t′`` is shared by all nests, as in mrl-pytorch. Computed in float32.
    """

    stacked_nests = True

    def __init__(
        self,
        alpha: float = 1.0,
        max_inverse_temperature: float = 5.0,
        init_log_inverse_temperature: float = 0.0,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.max_inverse_temperature = max_inverse_temperature
        t_prime = torch.tensor(float(init_log_inverse_temperature))
        self.log_inverse_temperature = nn.Parameter(t_prime)

    def inverse_temperature(self) -> torch.Tensor:
        beta = self.log_inverse_temperature.float().exp()
        return beta - (beta - beta.clamp(max=self.max_inverse_temperature)).detach()

    def logits(self, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``β · x x′ᵀ`` of the normalised projections, ``(..., B, B)``."""
        x = F.normalize(online.float(), dim=-1)
        y = F.normalize(target.float(), dim=-1)
        return self.inverse_temperature() * x @ y.transpose(-1, -2)

    def forward(self, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s = self.logits(online, target)
        log_p1 = s.log_softmax(dim=-1)
        log_p2 = s.log_softmax(dim=-2).transpose(-1, -2)
        ce = -torch.diagonal(log_p1, dim1=-2, dim2=-1).mean(-1)
        kl = (log_p2.exp() * (log_p2 - log_p1)).sum(-1).mean(-1)
        return ce + self.alpha * kl
