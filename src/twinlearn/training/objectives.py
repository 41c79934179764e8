"""Training objectives: the module the trainer optimises, mapping a batch of pairs to a loss."""

from __future__ import annotations

import torch
import torch.nn as nn

from twinlearn.data.arrays import FeatureStore


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
