"""Training objectives: the module the trainer optimises, mapping a batch of pairs to a loss."""

from __future__ import annotations

import torch
import torch.nn as nn

from twinlearn.data.arrays import FeatureStore
from twinlearn.encoders.table import IndexRows


class TwinObjective(nn.Module):
    """Both members of each pair go through the same encoder (and projector) separately, so
    that batch normalisation sees each branch's own statistics, then into a pair loss.

    Parameters
    ----------
    encoder : nn.Module
        Maps inputs to the embedding; the part users keep.
    projector : nn.Module
        Head used only for training (identity allowed).
    loss : nn.Module
        ``loss(z1, z2) -> scalar``.
    store : FeatureStore
        Rows of the training data, looked up by the pair source's indices.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, loss: nn.Module, store: FeatureStore):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.loss = loss
        self.store = store

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        anchors, positives = batch
        z1 = self.projector(self.encoder(self.store.gather(anchors)))
        z2 = self.projector(self.encoder(self.store.gather(positives)))
        return self.loss(z1, z2)


class ViewPairObjective(nn.Module):
    """Two augmented views per item (SimCLR, t-SimCNE): both go through ``network`` as one
    stacked batch (one forward, so batch-norm statistics cover both views and a DDP-wrapped
    network sees one forward per step), then ``loss(z_view1, z_view2)``.
    """

    def __init__(self, network: nn.Module, loss: nn.Module):
        super().__init__()
        self.network = network
        self.loss = loss

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        view1, view2 = batch
        z = self.network(torch.cat([view1, view2]))
        return self.loss(z[: view1.shape[0]], z[view1.shape[0] :])


class PairObjective(nn.Module):
    """``loss(model(a), model(b))`` for contrastive pairs.

    Integer index batches (kNN edges) go through the model once per distinct index: rows are
    gathered from ``store`` (or the indices themselves are the input, for a table), embedded,
    and scattered back — an edge batch repeats many points, so this saves forward work.
    Other inputs (two augmented views) go through the model as one concatenated batch.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, store: FeatureStore | None = None) -> None:
        super().__init__()
        self.encoder = model
        self.loss = loss
        self.store = store if store is not None else IndexRows()
        self._rows: torch.Tensor | None = None

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The store's rows ``idx``, written into one reused buffer for in-memory data (the
        trainer runs backward before the next forward, so the rows saved for the gradient are
        never overwritten while needed; a second forward first raises autograd's in-place
        error)."""
        data = self.store.on_device if isinstance(self.store, FeatureStore) else None
        if data is None:
            return self.store.gather(idx)
        if self._rows is None or self._rows.shape[0] < idx.shape[0]:
            self._rows = data.new_empty((idx.shape[0], data.shape[1]))
        return self.store.gather(idx, out=self._rows[: idx.shape[0]])

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        a, b = batch
        both = torch.cat([a, b])
        if both.ndim == 1 and not both.is_floating_point():
            uniq, inverse = torch.unique(both, return_inverse=True)
            z = self.encoder(self._gather(uniq))[inverse]
        else:
            z = self.encoder(both)
        return self.loss(z[: a.shape[0]], z[a.shape[0] :])
