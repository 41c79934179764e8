"""Labels in the neighbour graph: UMAP's supervised and semi-supervised embeddings.

umap-learn (``UMAP().fit(X, y)``) intersects the fuzzy kNN graph with a graph of the labels
(``discrete_metric_simplicial_set_intersection``): an edge between two labelled points of
different classes is scaled by ``exp(-far_dist)`` with ``far_dist = 2.5 / (1 - target_weight)``,
an edge with an unlabelled end by ``exp(-1)``; then every row is rescaled so that its strongest
edge has weight 1 and the graph is union-symmetrised again (``reset_local_connectivity``), so
that each point keeps full confidence in at least one neighbour. :func:`supervised_edges` does
the same on the edge list CNE trains on.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse

from twinlearn.neighbors.graph import index_dtype, positive_edges

#: distance of an unlabelled point to any point (umap-learn's ``unknown_dist``)
UNKNOWN_DIST = 1.0


def check_labels(y: object, n_samples: int, name: str = "y") -> np.ndarray | None:
    """Labels as int codes ``>= 0``, ``-1`` for unlabelled rows, or ``None`` for ``y=None``.

    Integer (or integral float) labels use ``-1`` for unlabelled rows; string / object labels
    use ``None`` (or ``-1``). Raises a ``ValueError``/``TypeError`` naming ``y`` for a wrong
    length, more than one dimension, NaN, or a non-label dtype.
    """
    if y is None:
        return None
    labels = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per sample), got shape {labels.shape}")
    if labels.shape[0] != n_samples:
        raise ValueError(f"{name} has {labels.shape[0]} labels but X has {n_samples} samples")
    kind = labels.dtype.kind
    if kind in "bc" or kind not in "iufUSO":
        raise TypeError(f"{name} must hold int or str labels, got dtype {labels.dtype}")
    if kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError(f"{name} contains NaN or infinity; mark unlabelled rows with -1")
        if (labels != np.round(labels)).any():
            raise ValueError(f"{name} holds non-integer floats; labels are categories")
    if kind in "iuf":
        unlabelled = labels == -1
    else:
        unlabelled = np.array([v is None or (isinstance(v, (int, np.integer)) and v == -1)
                               or (isinstance(v, float) and np.isnan(v)) for v in labels.tolist()])
    codes = np.full(n_samples, -1, dtype=np.int64)
    if (~unlabelled).any():
        _, codes[~unlabelled] = np.unique(labels[~unlabelled].astype(str if kind == "O" else labels.dtype),
                                          return_inverse=True)
    return codes


def far_distance(target_weight: float) -> float:
    """umap-learn's distance between two different labels: ``2.5 / (1 - target_weight)``
    (``target_weight=1``: infinite, such edges are dropped)."""
    return 2.5 / (1.0 - target_weight) if target_weight < 1.0 else np.inf


def supervised_edges(
    heads: np.ndarray, tails: np.ndarray, weights: np.ndarray, codes: np.ndarray, target_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The directed edges of a symmetric fuzzy graph intersected with the labels ``codes``
    (from :func:`check_labels`), as umap-learn does (see the module docstring).

    Returns ``(heads, tails, weights)`` with weights in (0, 1]; edges whose weight becomes 0
    (different labels at ``target_weight=1``) are gone.
    """
    n = codes.shape[0]
    w = np.asarray(weights, dtype=np.float64).copy()
    unknown = (codes[heads] < 0) | (codes[tails] < 0)
    w[unknown] *= np.exp(-UNKNOWN_DIST)
    w[~unknown & (codes[heads] != codes[tails])] *= np.exp(-far_distance(target_weight))
    W = scipy.sparse.csr_matrix((w, (heads, tails)), shape=(n, n))
    W.eliminate_zeros()
    # reset_local_connectivity: each row's strongest edge back to 1, then the fuzzy union
    row_max = W.max(axis=1).toarray().ravel()
    W = scipy.sparse.diags(1.0 / np.where(row_max > 0, row_max, 1.0)) @ W
    W = (W + W.T - W.multiply(W.T)).tocoo()
    keep = (W.row != W.col) & (W.data.astype(np.float32) > 0)
    if not keep.any():
        raise ValueError("no edges are left between points of the same label; lower target_weight")
    return (W.row[keep].astype(index_dtype(n)), W.col[keep].astype(index_dtype(n)),
            W.data[keep].astype(np.float32))


def labelled_positive_edges(
    X: object, graph: object, *, make_index: Callable[[], Any] | None, n_neighbors: int, fuzzy: bool,
    codes: np.ndarray | None, target_weight: float, show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`~twinlearn.neighbors.positive_edges`, then intersected with the labels ``codes``
    (:func:`supervised_edges`) when there are any; ``codes=None`` changes nothing."""
    heads, tails, weights = positive_edges(X, graph, make_index=make_index, n_neighbors=n_neighbors,
                                           fuzzy=fuzzy, show_progress=show_progress)
    if codes is None or weights is None:  # callers refuse labels with a binary graph
        return heads, tails, weights
    return supervised_edges(heads, tails, weights, codes, target_weight)
