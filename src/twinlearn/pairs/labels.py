"""Label-aware kNN pairs: TLDR's positives drawn, with a given probability, among neighbours
that share the anchor's label (supervised / semi-supervised TLDR)."""

from __future__ import annotations

import numpy as np
import torch

from twinlearn.pairs.knn import KNNPairSource


class LabelAwarePairSource(KNNPairSource):
    """:class:`~twinlearn.pairs.KNNPairSource` whose labelled anchors, with probability
    ``target_weight``, take their positive uniformly among those of their ``k`` neighbours that
    carry the same label (any neighbour when none does, or for an unlabelled anchor).

    Parameters
    ----------
    knn_indices, batch_size, device, generator, drop_last
        As for :class:`~twinlearn.pairs.KNNPairSource`.
    codes : int array of shape (n_samples,)
        Label codes, ``-1`` for unlabelled rows
        (:func:`~twinlearn.neighbors.supervised.check_labels`).
    target_weight : float in [0, 1]
    """

    def __init__(self, knn_indices: np.ndarray | torch.Tensor, batch_size: int, device: torch.device,
                 generator: torch.Generator, *, codes: np.ndarray, target_weight: float,
                 drop_last: bool = True) -> None:
        super().__init__(knn_indices, batch_size, device, generator, drop_last)
        labels = torch.as_tensor(codes, dtype=torch.int64, device=device)
        self.same = (labels[self.knn] == labels[:, None]) & (labels[:, None] >= 0)
        self.target_weight = float(target_weight)

    def _columns(self, anchors: torch.Tensor) -> torch.Tensor:
        uniform = super()._columns(anchors)
        same = self.same[anchors]
        # a uniform choice among the same-label columns: the largest of random scores there
        scores = torch.rand(same.shape, generator=self.generator, device=self.device)
        same_label = scores.masked_fill_(~same, -1.0).argmax(dim=1)
        coin = torch.rand(len(anchors), generator=self.generator, device=self.device)
        return torch.where((coin < self.target_weight) & same.any(dim=1), same_label, uniform)
