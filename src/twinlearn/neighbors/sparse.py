"""Exact nearest neighbours of scipy sparse rows (TF-IDF, counts), by blocked sparse products.

Each block of query rows is multiplied with the whole (CSR) database into a dense
``(block, n)`` array of distances, of at most ``BLOCK_ENTRIES`` floats (~256 MB), from which
the ``k`` smallest are kept: O(n²) work, fine up to ~10⁵ rows; larger sparse data wants a
dimensionality reduction first (e.g. ``TruncatedSVD``) and an approximate index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

#: entries of one dense block of distances
BLOCK_ENTRIES = 2**26


def _distances(q: scipy.sparse.csr_matrix, db: scipy.sparse.csr_matrix, db_sq: np.ndarray,
               metric: str) -> np.ndarray:
    """Dense block of distances (squared Euclidean, ``1 - cos`` or ``-q·x``), as the dense paths."""
    d = np.asarray((q @ db.T).todense(), dtype=np.float32)
    if metric == "inner_product":
        return np.negative(d, out=d)
    if metric == "cosine":
        return np.subtract(1.0, d, out=d)
    q_sq = np.asarray(q.multiply(q).sum(axis=1), dtype=np.float32)
    return np.maximum(q_sq - 2.0 * d + db_sq[None, :], 0.0)


def _normalise(X: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return scipy.sparse.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ X


def sparse_knn(
    X: scipy.sparse.spmatrix, Q: scipy.sparse.spmatrix | None, k: int, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``X`` for every row of ``Q`` (``Q=None``: of ``X`` itself,
    each row excluded from its own list by index), sorted: int64 indices and float32 distances.

    Parameters
    ----------
    X, Q : scipy sparse matrices with the same number of columns
    k : int
    metric : {"euclidean", "cosine", "inner_product"}
    """
    db = scipy.sparse.csr_matrix(X, dtype=np.float32)
    queries = db if Q is None else scipy.sparse.csr_matrix(Q, dtype=np.float32)
    if metric == "cosine":
        db = _normalise(db)
        queries = db if Q is None else _normalise(queries)
    db_sq = np.asarray(db.multiply(db).sum(axis=1), dtype=np.float32).ravel()
    n_q, n = queries.shape[0], db.shape[0]
    idx = np.empty((n_q, k), dtype=np.int64)
    dist = np.empty((n_q, k), dtype=np.float32)
    block = max(1, BLOCK_ENTRIES // max(n, 1))
    for start in range(0, n_q, block):
        stop = min(start + block, n_q)
        d = _distances(queries[start:stop], db, db_sq, metric)
        if Q is None:
            d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        part_d = np.take_along_axis(d, part, 1)
        order = np.argsort(part_d, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, 1)
        dist[start:stop] = np.take_along_axis(part_d, order, 1)
    return idx, dist
