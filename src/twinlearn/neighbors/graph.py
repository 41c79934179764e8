"""Checking user-supplied kNN graphs and turning them into edge lists."""

from __future__ import annotations

import numpy as np
import scipy.sparse


def check_knn_indices(graph: object, n_samples: int, n_neighbors: int | None = None) -> np.ndarray:
    """Validate a precomputed ``(n_samples, k)`` array of neighbour indices.

    With ``n_neighbors`` given, extra columns are trimmed and too few columns are an error.
    """
    if scipy.sparse.issparse(graph):
        raise TypeError("expected an (n_samples, k) index array here, got a sparse matrix")
    idx = np.asarray(graph)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ValueError(
            f"knn_graph must be an integer array of shape (n_samples, k), got dtype {idx.dtype} "
            f"and shape {idx.shape}"
        )
    if idx.shape[0] != n_samples:
        raise ValueError(f"knn_graph has {idx.shape[0]} rows but the data has {n_samples} samples")
    if n_neighbors is not None:
        if idx.shape[1] < n_neighbors:
            raise ValueError(
                f"knn_graph has {idx.shape[1]} neighbours per point, fewer than n_neighbors="
                f"{n_neighbors}"
            )
        idx = idx[:, :n_neighbors]
    if idx.size and (idx.min() < 0 or idx.max() >= n_samples):
        raise ValueError(f"knn_graph holds indices outside [0, {n_samples})")
    return np.ascontiguousarray(idx, dtype=np.int64)


def knn_to_sparse(indices: np.ndarray) -> scipy.sparse.csr_matrix:
    """Binary directed kNN adjacency matrix A with A[i, j] = 1 when j is a neighbour of i."""
    n, k = indices.shape
    rows = np.repeat(np.arange(n), k)
    data = np.ones(n * k, dtype=np.float32)
    A = scipy.sparse.csr_matrix((data, (rows, indices.ravel())), shape=(n, n))
    A.data[:] = 1.0
    return A


def symmetric_edges(graph: np.ndarray | scipy.sparse.spmatrix, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed edge list (heads, tails) of the union-symmetrised graph ``A ∨ Aᵀ``, no self-loops.

    ``graph`` is an index array ``(n, k)`` or a square scipy sparse matrix whose nonzero
    pattern defines the edges (weights are ignored).
    """
    if scipy.sparse.issparse(graph):
        if graph.shape != (n_samples, n_samples):
            raise ValueError(
                f"sparse graph has shape {graph.shape}, expected ({n_samples}, {n_samples})"
            )
        A = scipy.sparse.csr_matrix(graph, dtype=np.float32, copy=True)
        A.data[:] = 1.0
    else:
        A = knn_to_sparse(check_knn_indices(graph, n_samples))
    A = (A + A.T).tocoo()
    keep = A.row != A.col
    if not keep.any():
        raise ValueError("the kNN graph has no edges between distinct points")
    return A.row[keep].astype(np.int64), A.col[keep].astype(np.int64)
