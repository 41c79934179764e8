"""Non-parametric encoders: a free embedding table whose rows are the points' coordinates."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class EmbeddingTable(nn.Module):
    """One trainable row per training point; ``forward(idx)`` returns rows ``idx``.

    A dense ``(n, d)`` float32 parameter (not ``nn.Embedding``): its gradient is dense, which
    lets the trainer clip and step it with ordinary optimizers and the fused CPU kernel write it
    directly (or, with plain SGD, update the batch's rows in place:
    :class:`~twinlearn.training.row_sgd.FusedTableSGD`).

    Parameters
    ----------
    init : array of shape (n_samples, n_components)
        Initial coordinates (copied, cast to float32 whatever their dtype).
    """

    def __init__(self, init: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        weight = torch.as_tensor(np.asarray(init) if not isinstance(init, torch.Tensor) else init)
        if weight.ndim != 2:
            raise ValueError(f"init must be 2-D (n_samples, n_components), got shape {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.detach().to(torch.float32).clone())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.weight.index_select(0, idx)


class FrozenRowsTable(EmbeddingTable):
    """An embedding table whose first ``n_frozen`` rows never move (their gradient is zeroed):
    new points optimised against a fixed training embedding.

    Parameters
    ----------
    init : array of shape (n_samples, n_components)
    n_frozen : int
        Rows ``[0, n_frozen)`` stay as given.
    """

    def __init__(self, init: np.ndarray | torch.Tensor, n_frozen: int) -> None:
        super().__init__(init)
        self.n_frozen = n_frozen
        mask = torch.ones((self.weight.shape[0], 1), dtype=torch.float32)
        mask[:n_frozen] = 0.0
        self.register_buffer("trainable_rows", mask, persistent=False)
        # (a fused table updated row by row gives no gradient: its step skips the frozen rows)
        self.weight.register_hook(lambda grad: None if grad is None else grad * self.trainable_rows.to(grad.device))

    def free_rows(self) -> np.ndarray:
        """The rows past ``n_frozen``, as a float32 array."""
        return self.weight[self.n_frozen :].detach().cpu().numpy()


class IndexRows:
    """Stands in for a :class:`~twinlearn.data.arrays.FeatureStore` when the encoder consumes
    the pair source's indices themselves (an embedding table)."""

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        return idx
