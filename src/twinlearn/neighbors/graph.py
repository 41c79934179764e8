"""Checking user-supplied kNN graphs and turning them into edge lists.

Compact throughout: node indices are int32 while there are fewer than 2³¹ points (int64
beyond), weights float32; every step is a vectorised sparse-matrix operation, O(n·k).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse

from twinlearn._progress import progress


def index_dtype(n: int) -> type:
    """int32 for node indices of a graph of ``n`` points while they fit, else int64."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


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
    return np.ascontiguousarray(idx, dtype=index_dtype(n_samples))


def knn_to_sparse(indices: np.ndarray) -> scipy.sparse.csr_matrix:
    """Binary directed kNN adjacency matrix A with A[i, j] = 1 when j is a neighbour of i."""
    n, k = indices.shape
    rows = np.repeat(np.arange(n, dtype=index_dtype(n)), k)
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
    return _nodes(A.row[keep], n_samples), _nodes(A.col[keep], n_samples)


def _nodes(ids: np.ndarray, n: int) -> np.ndarray:
    return ids.astype(index_dtype(n), copy=False)


#: UMAP's floor on σ_i, as a fraction of the mean neighbour distance (keeps duplicates finite)
_MIN_SIGMA_SCALE = 1e-3


#: rows whose memberships are solved at once: the bisection's float64 temporaries stay ~10 MB
#: each instead of growing with n (at 10⁶ points × 15 they took 0.5 GB)
MEMBERSHIP_CHUNK_ROWS = 65536


def membership_strengths(distances: np.ndarray, n_iter: int = 40, show_progress: bool = False) -> np.ndarray:
    """UMAP's fuzzy membership of each point's neighbours (McInnes, Healy & Melville, 2018).

    ``w_ij = exp(−(d_ij − ρ_i) / σ_i)``, with ``ρ_i`` the distance to the nearest neighbour and
    ``σ_i`` found by bisection (rows in blocks of :data:`MEMBERSHIP_CHUNK_ROWS`) so that each
    row sums to ``log2(k)``.

    Parameters
    ----------
    distances : array of shape (n_samples, k)
        Distances (not squared) to each point's ``k`` neighbours.
    n_iter : int
        Bisection steps.

    Returns
    -------
    ndarray of float32, shape (n_samples, k), values in [0, 1]
    """
    distances = np.asarray(distances)
    n, k = distances.shape
    floor = _MIN_SIGMA_SCALE * max(float(np.mean(distances, dtype=np.float64)), np.finfo(np.float64).tiny)
    out = np.empty((n, k), dtype=np.float32)
    for start in progress(range(0, n, MEMBERSHIP_CHUNK_ROWS), show_progress, "graph weights",
                          -(-n // MEMBERSHIP_CHUNK_ROWS), "block"):
        stop = start + MEMBERSHIP_CHUNK_ROWS
        out[start:stop] = _row_memberships(distances[start:stop], n_iter, floor)
    return out


def _row_memberships(distances: np.ndarray, n_iter: int, floor: float) -> np.ndarray:
    """:func:`membership_strengths` of a block of rows (float64: each row's sum must hit
    ``log2 k``), with σ at least ``floor``."""
    d = np.asarray(distances, dtype=np.float64)
    excess = np.maximum(d - d.min(axis=1, keepdims=True), 0.0)
    target = np.log2(max(d.shape[1], 2))
    lo = np.zeros((len(d), 1))
    hi = np.full((len(d), 1), np.inf)
    sigma = np.ones((len(d), 1))
    for _ in range(n_iter):
        too_wide = np.exp(-excess / sigma).sum(axis=1, keepdims=True) > target
        hi = np.where(too_wide, sigma, hi)
        lo = np.where(too_wide, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    return np.exp(-excess / np.maximum(sigma, floor))


def fuzzy_union_edges(
    indices: np.ndarray, distances: np.ndarray, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges of UMAP's symmetrised fuzzy graph ``W = A + Aᵀ − A∘Aᵀ``, no self-loops.

    ``A`` holds :func:`membership_strengths` of the kNN graph ``indices`` (``distances`` are
    Euclidean, not squared). Returns ``(heads, tails, weights)`` with weights in (0, 1].
    """
    indices, distances = np.asarray(indices), np.asarray(distances)
    if indices.ndim != 2 or indices.shape != distances.shape or indices.dtype.kind not in "iu":
        raise ValueError(f"indices (integers) and distances must have the same (n, k) shape, got "
                         f"{indices.shape} {indices.dtype} and {distances.shape}")
    if not np.all(np.isfinite(distances)) or (distances < 0).any():
        raise ValueError("distances must be finite and non-negative")
    n, k = indices.shape
    memberships = membership_strengths(distances, show_progress=show_progress)
    rows = np.repeat(np.arange(n, dtype=index_dtype(n)), k)
    A = scipy.sparse.csr_matrix((memberships.ravel(), (rows, indices.ravel())), shape=(n, n))
    del memberships, rows  # each step frees what it consumed: at 10⁶ points every copy is 0.1 GB
    np.minimum(A.data, 1.0, out=A.data)  # a neighbour listed twice is still one membership
    mutual = A.multiply(A.T)
    W = A + A.T
    del A
    W = W - mutual
    del mutual
    W = W.tocoo()
    weights = W.data
    # memberships that underflow float32 (far neighbours of a tight point) are no edges
    keep = (W.row != W.col) & (weights > 0)
    if not keep.any():
        raise ValueError("the kNN graph has no edges between distinct points")
    return _nodes(W.row[keep], n), _nodes(W.col[keep], n), weights[keep]


def neighbor_distances(X, indices: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """Euclidean distance from each row of ``X`` to its neighbours ``indices`` (n, k), chunked.

    For graphs that come without distances (a user's index array).
    """
    import torch

    from twinlearn.data.arrays import to_tensor

    indices = check_knn_indices(indices, X.shape[0])
    cpu = torch.device("cpu")
    n, k = indices.shape
    out = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        nbrs = indices[start : start + chunk_rows]
        rows = to_tensor(X[start : start + len(nbrs)], cpu)
        others = to_tensor(X[nbrs.ravel()], cpu).reshape(len(nbrs), k, -1)
        out[start : start + len(nbrs)] = (rows[:, None, :] - others).norm(dim=2).numpy()
    return out


def weighted_edges(graph: scipy.sparse.spmatrix, n_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges of ``max(W, Wᵀ)`` for a square sparse graph of positive weights (a
    symmetric one, such as UMAP's or scanpy's connectivities, is kept as it is), no self-loops."""
    if graph.shape != (n_samples, n_samples):
        raise ValueError(f"sparse graph has shape {graph.shape}, expected ({n_samples}, {n_samples})")
    W = scipy.sparse.csr_matrix(graph, dtype=np.float64, copy=True)
    W.eliminate_zeros()
    if W.nnz and (not np.isfinite(W.data).all() or (W.data < 0).any()):
        raise ValueError("a weighted graph needs finite, non-negative weights")
    W = W.maximum(W.T).tocoo()
    keep = W.row != W.col
    if not keep.any():
        raise ValueError("the graph has no edges between distinct points")
    return _nodes(W.row[keep], n_samples), _nodes(W.col[keep], n_samples), W.data[keep].astype(np.float32)


def membership_distances(dist: np.ndarray, metric: str) -> np.ndarray:
    """The non-negative distances the fuzzy weights are computed from, given a
    :class:`~twinlearn.neighbors.KNNIndex`'s: the square root of squared Euclidean (and of
    cosine) distances; ``-q·x`` shifted by each row's minimum (fuzzy weights depend only on
    ``d - ρ``, with ``ρ`` the row's smallest distance, so the shift changes no weight);
    precomputed distances as they are."""
    if metric == "inner_product":
        return dist - dist.min(axis=1, keepdims=True)
    if metric == "precomputed":
        return dist
    return np.sqrt(np.maximum(dist, 0))


def positive_edges(
    X, graph: object, *, make_index: Callable[[], Any] | None = None, n_neighbors: int, fuzzy: bool,
    show_progress: bool = False, index: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Directed edges ``(heads, tails)`` of the symmetrised neighbour graph of ``X`` and their
    weights (``None`` for a binary graph): CNE's positive pairs.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    graph : None, int array of shape (n_samples, k), (indices, distances) or scipy sparse matrix
        ``None``: the ``n_neighbors`` nearest neighbours from the index ``make_index`` builds; an
        index array (or the pair :func:`~twinlearn.neighbors.files.load_knn` returns, whose
        distances of unknown metric are not used): those neighbours (their distances computed
        from ``X`` for fuzzy weights); a sparse matrix:
        its weights, symmetrised as ``max(W, Wᵀ)`` (its nonzero pattern when not ``fuzzy``),
        e.g. scanpy's ``obsp["connectivities"]``.
    make_index : callable returning a built KNNIndex, or None
        Called only when ``graph`` is None. The index lives only for its search, so its
        structures (0.6 GB for an HNSW graph of 10⁶ points) are freed before the weights are
        built.
    n_neighbors : int
    fuzzy : bool
        UMAP's fuzzy union weights (:func:`fuzzy_union_edges`) instead of a binary union.
    show_progress : bool
        Progress bars over the weights' blocks.
    index : KNNIndex, optional
        A built index instead of ``make_index`` (it then lives as long as its caller keeps it).
    """
    n = X.shape[0]
    if isinstance(graph, tuple) and len(graph) == 2:
        graph = graph[0]
    if scipy.sparse.issparse(graph):
        return weighted_edges(graph, n) if fuzzy else (*symmetric_edges(graph, n), None)
    if graph is None:
        if make_index is None and index is None:
            raise ValueError("positive_edges needs make_index (or index) when no graph is given")
        idx, dist = _search(make_index or (lambda: index), n_neighbors)
    else:
        idx = check_knn_indices(graph, n)
        dist = neighbor_distances(X, idx) if fuzzy else None
    if fuzzy:
        return fuzzy_union_edges(idx, dist, show_progress=show_progress)
    return (*symmetric_edges(idx, n), None)


def _search(make_index: Callable[[], Any], n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n_neighbors`` nearest other rows and the distances fuzzy weights read, from
    an index that is gone when this returns."""
    index = make_index()
    idx, dist = index.query_self(n_neighbors)
    return idx, membership_distances(dist, index.metric)
