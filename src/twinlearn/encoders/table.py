"""Non-parametric encoders: a free embedding table whose rows are the points' coordinates."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class EmbeddingTable(nn.Module):
    """One trainable row per training point; ``forward(idx)`` returns rows ``idx``.

    A dense ``(n, d)`` float32 parameter (not ``nn.Embedding``): its gradient is dense, which
    lets the trainer clip and step it with ordinary optimizers and the fused CPU kernel write it
    directly.

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


class IndexRows:
    """Stands in for a :class:`~twinlearn.data.arrays.FeatureStore` when the encoder consumes
    the pair source's indices themselves (an embedding table)."""

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        return idx


def pca_init(X: np.ndarray | torch.Tensor, n_components: int, seed: int) -> np.ndarray:
    """PCA scores scaled so the first component has standard deviation 1 (CNE's default
    initialisation; later components keep their relative scale)."""
    from sklearn.decomposition import PCA

    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    k = min(n_components, X.shape[0], X.shape[1])
    solver = "randomized" if min(X.shape) > 4 * k else "full"
    # data without variance (all rows equal) is valid: its scores are 0, and sklearn's
    # explained-variance ratio 0/0 would only warn about an attribute not used here
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = PCA(k, svd_solver=solver, random_state=seed % 2**32).fit_transform(
            np.asarray(X, dtype=np.float32)
        )
    std = scores[:, 0].std()
    scores = scores / (std if std > 0 else 1.0)
    if k < n_components:
        # more output dims than the data has: a zero column would get no gradient ever
        noise = np.random.default_rng(seed).normal(scale=1e-4, size=(X.shape[0], n_components - k))
        scores = np.hstack([scores, noise])
    return scores.astype(np.float32)
