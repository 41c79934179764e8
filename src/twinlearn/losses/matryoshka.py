r"""Matryoshka wrapper: any pair loss applied to nested prefixes of the embedding.

Matryoshka Representation Learning (Kusupati et al., NeurIPS 2022):
``L = Σ_k w_k · base_loss(z1⁽ᵏ⁾, z2⁽ᵏ⁾)`` over the nests ``k``, where ``z⁽ᵏ⁾`` is either the
first ``nesting_dims[k]`` columns of a plain embedding, or the output of the nest's own head
(:class:`twinlearn.encoders.matryoshka.NestedHeads`, MRL-E or full MRL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from twinlearn.encoders.matryoshka import check_nesting_dims

Nested = torch.Tensor | Sequence[torch.Tensor]


class MatryoshkaLoss(nn.Module):
    """Weighted sum of ``base_loss`` over nested prefixes.

    Parameters
    ----------
    base_loss : nn.Module
        Any pair loss of the library, ``base_loss(z1, z2) -> scalar`` (Barlow Twins,
        :class:`~twinlearn.losses.ContrastiveLoss`, :class:`~twinlearn.losses.ReLICLoss`, ...).
        A loss with ``stacked_nests = True`` takes ``(K, B, d)`` stacks and returns the ``K``
        per-nest losses in one call (no Python loop over nests).
    nesting_dims : list of int
        Prefix sizes, strictly increasing, e.g. ``[8, 16, 32, 64]``.
    weights : list of float, optional
        One non-negative weight per nest; all ones by default (as in the MRL paper).

    ``forward(z1, z2)`` takes either two ``(B, D)`` embeddings with ``D >= nesting_dims[-1]``
    (prefixes are sliced here) or two lists of per-nest head outputs. ``last_losses`` keeps the
    detached per-nest losses of the last call.
    """

    def __init__(
        self,
        base_loss: nn.Module,
        nesting_dims: Sequence[int],
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        dims = check_nesting_dims(nesting_dims, max(list(nesting_dims) or [0]))
        if weights is None:
            weights = [1.0] * len(dims)
        weights = [float(w) for w in weights]
        if len(weights) != len(dims):
            raise ValueError(f"weights has {len(weights)} entries for {len(dims)} nesting_dims")
        if any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"weights={weights} must be finite and non-negative")
        self.base_loss = base_loss
        self.nesting_dims = dims
        self.register_buffer("weights", torch.tensor(weights), persistent=False)
        self.last_losses: torch.Tensor | None = None

    def _nests(self, z: Nested) -> list[torch.Tensor]:
        if isinstance(z, torch.Tensor) and z.ndim == 2:
            if z.shape[1] < self.nesting_dims[-1]:
                raise ValueError(
                    f"the embedding has {z.shape[1]} dims, fewer than the largest nest "
                    f"{self.nesting_dims[-1]}"
                )
            return [z[:, :m] for m in self.nesting_dims]
        nests = list(z)
        if len(nests) != len(self.nesting_dims):
            raise ValueError(f"got {len(nests)} nested outputs for {len(self.nesting_dims)} nests")
        return nests

    def forward(self, z1: Nested, z2: Nested) -> torch.Tensor:
        a, b = self._nests(z1), self._nests(z2)
        same_width = len({t.shape for t in a}) == 1
        if getattr(self.base_loss, "stacked_nests", False) and same_width:
            losses = self.base_loss(torch.stack(a), torch.stack(b))
        else:
            losses = torch.stack([self.base_loss(x, y) for x, y in zip(a, b)])
        self.last_losses = losses.detach()
        return (self.weights.to(losses.dtype) * losses).sum()
