"""Quality metrics for embeddings, usable by users and benchmarks alike."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.manifold import trustworthiness as _sk_trustworthiness

from twinlearn.data.arrays import validate_features
from twinlearn.neighbors.faiss_index import drop_self


def _as_numpy(X) -> np.ndarray:
    X = validate_features(X)
    return X.cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float32)


def _neighbours_of(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest database rows of each query row (exact, blocked)."""
    import faiss

    index = faiss.IndexFlatL2(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def knn_recall(
    X_high,
    X_low,
    n_neighbors: int = 10,
    *,
    sample_size: int | None = None,
    random_state: int | None = 0,
) -> float:
    """Share of each point's ``n_neighbors`` true neighbours (in ``X_high``) that are also among
    its ``n_neighbors`` nearest in ``X_low`` (neighbour recall / "kNN preservation").

    Parameters
    ----------
    X_high, X_low : arrays with the same rows
    n_neighbors : int
    sample_size : int, optional
        Evaluate on this many random query points (neighbours are still searched among all).
    random_state : int, optional
        Seed of the query sample.

    Returns
    -------
    float in [0, 1]
    """
    X_high, X_low = _as_numpy(X_high), _as_numpy(X_low)
    n = X_high.shape[0]
    if X_low.shape[0] != n:
        raise ValueError(f"X_high has {n} rows but X_low has {X_low.shape[0]}")
    if not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be in [1, {n - 1}], got {n_neighbors}")
    if sample_size is None or sample_size >= n:
        queries = np.arange(n)
    else:
        queries = np.sort(np.random.default_rng(random_state).choice(n, sample_size, replace=False))
    recalls = []
    for X in (X_high, X_low):
        hits = _neighbours_of(X[queries], X, n_neighbors + 1)
        recalls.append(drop_self(hits, hits, n_neighbors, query_ids=queries)[0])
    high, low = recalls
    overlap = (high[:, :, None] == low[:, None, :]).any(axis=2).sum(axis=1)
    return float(overlap.mean() / n_neighbors)


def knn_accuracy(
    train_embedding,
    train_labels,
    test_embedding,
    test_labels,
    n_neighbors: int = 10,
) -> float:
    """Accuracy of a ``n_neighbors``-NN majority-vote classifier fitted on the train embedding
    and scored on the test embedding (scikit-learn's ``KNeighborsClassifier``)."""
    from sklearn.neighbors import KNeighborsClassifier

    train, test = _as_numpy(train_embedding), _as_numpy(test_embedding)
    clf = KNeighborsClassifier(n_neighbors=n_neighbors, algorithm="brute", n_jobs=1)
    clf.fit(train, np.asarray(train_labels))
    return float(clf.score(test, np.asarray(test_labels)))


def trustworthiness(X_high, X_low, n_neighbors: int = 5) -> float:
    """scikit-learn's trustworthiness: how far the low-d neighbourhoods are true neighbours."""
    return float(_sk_trustworthiness(_as_numpy(X_high), _as_numpy(X_low), n_neighbors=n_neighbors))


__all__ = ["knn_accuracy", "knn_recall", "trustworthiness"]
