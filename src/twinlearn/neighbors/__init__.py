"""Nearest-neighbour search behind one interface.

``compute_knn(X, n_neighbors, method=...)`` returns the ``(n, k)`` indices of every point's
nearest *other* points (self removed by index, duplicates kept) and their distances.

Methods: ``"exact"`` (blocked torch matmul on the training device), ``"faiss"`` (faiss exact
flat index), ``"hnsw"`` (faiss HNSW graph, approximate and fast), ``"ivfpq-low"``,
``"ivfpq-medium"``, ``"ivfpq-high"`` (faiss product quantization), ``"auto"`` (exact up to
20 000 points, HNSW above while it fits a memory budget, IVF-PQ beyond:
:func:`~twinlearn.neighbors.policy.choose_knn_method`).
"""

from __future__ import annotations

import numpy as np
import torch

from twinlearn.data.arrays import ArrayLike, validate_features
from twinlearn.neighbors.exact import exact_knn
from twinlearn.neighbors.faiss_index import faiss_knn
from twinlearn.neighbors.graph import (
    check_knn_indices,
    fuzzy_union_edges,
    knn_to_sparse,
    membership_strengths,
    neighbor_distances,
    positive_edges,
    symmetric_edges,
)
from twinlearn.neighbors.index import KNN_METHODS, KNN_METRICS, KNNIndex


def check_knn_method(method: str) -> str:
    """Raise a clear ``ValueError`` for an unknown method name."""
    if method not in KNN_METHODS:
        raise ValueError(f"unknown kNN method {method!r}; choose one of {', '.join(KNN_METHODS)}")
    return method


def check_n_neighbors(n_neighbors: object, n_samples: int, name: str = "n_neighbors") -> int:
    """``n_neighbors`` must be an int in [1, n_samples - 1]."""
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {n_neighbors!r}")
    if n_neighbors < 1:
        raise ValueError(f"{name} must be >= 1, got {n_neighbors}")
    if n_neighbors >= n_samples:
        raise ValueError(
            f"{name}={n_neighbors} must be smaller than the number of samples ({n_samples})"
        )
    return int(n_neighbors)


def compute_knn(
    X: ArrayLike,
    n_neighbors: int,
    *,
    method: str = "auto",
    metric: str = "euclidean",
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of the ``n_neighbors`` nearest other points of each row.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    n_neighbors : int
        Must be smaller than ``n_samples``.
    method : str
        See the module docstring.
    metric : {"euclidean", "cosine"}
    device : torch.device
        Where the ``"exact"`` method computes.
    seed : int
        Seed for index training (IVF-PQ).

    Returns
    -------
    indices : numpy.ndarray of int32 (int64 from 2³¹ rows), shape (n_samples, n_neighbors)
    distances : numpy.ndarray of float32 (squared Euclidean or cosine distances)
    """
    X = validate_features(X, min_samples=2)
    check_knn_method(method)
    if metric not in KNN_METRICS:
        raise ValueError(f"unknown kNN metric {metric!r}; choose one of {', '.join(KNN_METRICS)}")
    check_n_neighbors(n_neighbors, X.shape[0])
    return KNNIndex(method, metric, device, seed).build(X).query_self(n_neighbors)


__all__ = [
    "KNNIndex",
    "KNN_METHODS",
    "check_knn_indices",
    "check_knn_method",
    "check_n_neighbors",
    "compute_knn",
    "exact_knn",
    "faiss_knn",
    "fuzzy_union_edges",
    "knn_to_sparse",
    "membership_strengths",
    "neighbor_distances",
    "positive_edges",
    "symmetric_edges",
]
