"""``knn_metric="precomputed"``: the kNN graph read off a distance matrix instead of searched."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from twinlearn.neighbors.graph import index_dtype


def check_precomputed(D: object, name: str = "X") -> np.ndarray | scipy.sparse.csr_matrix:
    """Validate a square matrix of distances: finite, non-negative, at least 2 rows.

    A dense ``(n, n)`` array holds all pairwise distances; a scipy sparse ``(n, n)`` matrix
    holds each row's neighbours as its stored entries (a kNN graph of *distances*, e.g. from
    ``sklearn.neighbors.kneighbors_graph(X, mode="distance")``).
    """
    if scipy.sparse.issparse(D):
        D = scipy.sparse.csr_matrix(D, dtype=np.float64)
        values = D.data
    else:
        D = np.asarray(D)
        if D.dtype.kind not in "iuf":
            raise TypeError(f"{name} (precomputed distances) must be numeric, got dtype {D.dtype}")
        D = D.astype(np.float64, copy=False)
        values = D
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"knn_metric='precomputed' needs a square (n, n) distance matrix as {name}, "
                         f"got shape {D.shape}")
    if D.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {D.shape[0]}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{name} (precomputed distances) must be finite and non-negative")
    return D


def precomputed_knn(D: np.ndarray | scipy.sparse.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other points from a :func:`check_precomputed` matrix:
    ``(indices, distances)`` of shape ``(n, k)``.

    Dense: the ``k`` smallest off-diagonal entries. Sparse: the ``k`` smallest stored entries
    (the diagonal ignored); a row with fewer than ``k`` stored neighbours is an error.
    """
    n = D.shape[0]
    if not scipy.sparse.issparse(D):
        masked = D.copy()
        np.fill_diagonal(masked, np.inf)
        idx = np.argpartition(masked, k - 1, axis=1)[:, :k]
        dist = np.take_along_axis(masked, idx, axis=1)
    else:
        D = D.tocoo()
        off = D.row != D.col
        rows, cols, vals = D.row[off], D.col[off], D.data[off]
        counts = np.bincount(rows, minlength=n)
        if counts.min() < k:
            raise ValueError(f"the precomputed sparse graph has a row with {counts.min()} neighbours, "
                             f"fewer than n_neighbors={k}")
        order = np.lexsort((vals, rows))  # by row, then by distance
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        take = order[(starts[:, None] + np.arange(k)[None, :]).ravel()]
        idx, dist = cols[take].reshape(n, k), vals[take].reshape(n, k)
    order = np.argsort(dist, axis=1, kind="stable")
    return (np.take_along_axis(idx, order, 1).astype(index_dtype(n)),
            np.take_along_axis(dist, order, 1).astype(np.float32))


class PrecomputedIndex:
    """Stands in for a :class:`~twinlearn.neighbors.KNNIndex` built on a precomputed distance
    matrix (:func:`~twinlearn.neighbors.positive_edges` asks it for ``query_self``)."""

    metric = "precomputed"

    def __init__(self, D: np.ndarray | scipy.sparse.csr_matrix) -> None:
        self.D = D

    def query_self(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return precomputed_knn(self.D, k)
