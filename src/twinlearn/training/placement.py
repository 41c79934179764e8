"""Placing new points in a fixed non-parametric embedding (CNE's ``transform``).

The same parts as training, composed differently: the new points are extra rows of a table
whose training rows are frozen (:class:`~twinlearn.encoders.table.FrozenRowsTable`); each new
point starts at the mean of its nearest training points' embeddings and is attracted to them
(positive pairs from the query of a :class:`~twinlearn.neighbors.KNNIndex`) while repelled
from random training points, with the loss, kernel and spectrum the embedding was trained with.
"""

from __future__ import annotations

import numpy as np
import torch

from twinlearn._device import make_generator
from twinlearn.encoders.table import FrozenRowsTable
from twinlearn.pairs import EdgePairSource
from twinlearn.training.contrastive import ContrastiveRecipe, contrastive_run

#: random training pairs added to the batches, so that the sampled negatives are mostly random
#: training points however few points are placed
MIN_FILL_PAIRS = 2048


def place_points(
    embedding: np.ndarray,
    neighbors: np.ndarray,
    recipe: ContrastiveRecipe,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Coordinates of new points given their nearest training points.

    Parameters
    ----------
    embedding : array of shape (n_train, d)
        The fixed training embedding.
    neighbors : int array of shape (n_new, k)
        Indices of each new point's nearest training points (in the input space).
    recipe : ContrastiveRecipe
        The training run's loss settings, with ``n_epochs`` set to the placement epochs and
        the spectrum given as the main phase's constant (no exaggeration).
    batch_size : int
    device : torch.device
    seed : int
    weights : array of shape (n_new, k), optional
        Membership of each new point's neighbours (positive): the start is their
        weighted mean and each edge is drawn with probability ``w / max(w)`` per epoch, as
        umap-learn's ``transform``; None: the plain mean, every edge every epoch.

    Returns
    -------
    ndarray of shape (n_new, d)
    """
    n_train, (n_new, k) = embedding.shape[0], neighbors.shape
    w = np.ones((n_new, k)) if weights is None else np.asarray(weights, dtype=np.float64)
    start = (embedding[neighbors] * w[..., None]).sum(axis=1) / w.sum(axis=1, keepdims=True)
    table = FrozenRowsTable(np.vstack([embedding, start]), n_train).to(device)
    # a membership that underflows float32 is no edge (it would never be drawn)
    edge = w.ravel().astype(np.float32) > 0
    new_ids, nbrs = np.repeat(np.arange(n_train, n_train + n_new), k)[edge], neighbors.ravel()[edge]
    heads, tails = np.concatenate([new_ids, nbrs]), np.concatenate([nbrs, new_ids])
    fill = np.random.default_rng(seed).integers(0, n_train, size=(2, max(len(heads), MIN_FILL_PAIRS)))
    # the random pairs only bring negatives: drawn every epoch (the largest weight)
    edge_w = None if weights is None else np.concatenate([w.ravel()[edge]] * 2 + [np.full(fill.shape[1], w.max())])
    pairs = EdgePairSource(np.concatenate([heads, fill[0]]), np.concatenate([tails, fill[1]]),
                           batch_size, device, make_generator(seed + 2, device), weights=edge_w)
    contrastive_run(recipe, table, pairs, n=n_train).trainer.fit()
    return table.free_rows()
