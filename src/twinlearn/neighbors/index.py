"""One nearest-neighbour index object (as openTSNE's ``KNNIndex``): build it on a database once,
then ask for the neighbours of the database's own rows (the kNN graph) or of new rows (placing
new points, evaluation metrics)."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse
import torch

from twinlearn.data.arrays import ArrayLike
from twinlearn.neighbors.exact import exact_knn
from twinlearn.neighbors.faiss_index import (
    PQ_SUBQUANTIZERS,
    build_faiss_index,
    drop_self,
    fill_missing,
    reranks,
    search_faiss,
)
from twinlearn.neighbors.graph import index_dtype
from twinlearn.neighbors.policy import check_memory_budget, choose_knn_method, parse_memory_budget
from twinlearn.neighbors.sparse import sparse_knn

logger = logging.getLogger("twinlearn")

KNN_METHODS = ("auto", "exact", "faiss", "hnsw", *(f"ivfpq-{k}" for k in PQ_SUBQUANTIZERS))
KNN_METRICS = ("euclidean", "cosine", "inner_product")


def compact_indices(idx: np.ndarray | torch.Tensor, n: int) -> np.ndarray | torch.Tensor:
    """Neighbour indices among ``n`` points as int32 while they fit (half the memory of int64)."""
    dtype = index_dtype(n)
    if isinstance(idx, torch.Tensor):
        return idx.to(torch.int32 if dtype is np.int32 else torch.int64)
    return idx.astype(dtype, copy=False)


class KNNIndex:
    """Nearest neighbours among the rows of a database.

    Parameters
    ----------
    method : str, default="auto"
        ``"exact"`` (blocked torch matmul on ``device``), ``"faiss"`` (faiss exact flat index),
        ``"hnsw"`` (faiss HNSW, approximate and fast), ``"ivfpq-low|medium|high"`` (faiss
        IVF-PQ, compressed codes re-ranked by exact distances to the data) or ``"auto"``
        (:func:`~twinlearn.neighbors.policy.choose_knn_method`: exact up to 20 000 points or
        on a GPU, HNSW above while it fits ``memory_budget``, else IVF-PQ).
    metric : {"euclidean", "cosine", "inner_product"}
        Distances are squared Euclidean, cosine distances ``1 - cos``, or ``-q·x`` (the largest
        inner product is the nearest; searched by a faiss index of that metric, a flat one for
        ``"exact"``, so such "distances" can be negative and a point need not be its own
        nearest). Sparse data (scipy CSR/CSC) is searched exactly by blocked sparse products
        whatever ``method`` says (:func:`~twinlearn.neighbors.sparse.sparse_knn`, O(n²): fine
        up to ~10⁵ rows).
    device : torch.device
        Where the exact method computes.
    seed : int
        Seed of index training (IVF-PQ).
    show_progress : bool
        A progress bar over the search's blocks (estimators pass ``verbose``).
    memory_budget : int, str or None
        Bytes the index and the graph may take (``"4GB"``, ``"512MiB"`` accepted), on top of
        the data. ``None``: half the RAM available when the index is built, used by
        ``"auto"`` to choose; a budget given explicitly is also checked for a named method.
        :meth:`build` raises a ``ValueError`` before any work when the index cannot fit.

    Examples
    --------
    >>> index = KNNIndex("hnsw").build(X)                 # doctest: +SKIP
    >>> graph, dist = index.query_self(15)                # each row's 15 nearest other rows
    >>> nbrs, _ = index.query(X_new, 15)                  # nearest database rows of new rows
    """

    def __init__(self, method: str = "auto", metric: str = "euclidean",
                 device: torch.device = torch.device("cpu"), seed: int = 0,
                 show_progress: bool = False, memory_budget: int | str | None = None) -> None:
        if method not in KNN_METHODS:
            raise ValueError(f"unknown kNN method {method!r}; choose one of {', '.join(KNN_METHODS)}")
        if metric not in KNN_METRICS:
            raise ValueError(f"unknown kNN metric {metric!r}; choose one of {', '.join(KNN_METRICS)}")
        self.method, self.metric, self.device, self.seed = method, metric, device, seed
        self.show_progress = show_progress
        self.memory_budget = parse_memory_budget(memory_budget, "memory_budget")
        self._data: ArrayLike | None = None
        self._faiss = None

    def build(self, X: ArrayLike) -> "KNNIndex":
        """Index the rows of ``X`` (validated by the caller); a memmap is read in blocks."""
        n, d = X.shape
        if scipy.sparse.issparse(X):
            pass  # searched exactly by sparse products, whatever the method
        elif self.method == "auto":
            self.method = choose_knn_method(n, d, self.device, self.memory_budget, metric=self.metric)
        elif self.memory_budget is not None:
            check_memory_budget(self.method, n, d, self.memory_budget, metric=self.metric)
        self._data = X
        self._faiss = None
        return self

    @property
    def n_samples(self) -> int:
        if self._data is None:
            raise RuntimeError("build the index first")
        return int(self._data.shape[0])

    def _faiss_index(self, k: int):
        if self._faiss is None:
            kind = "flat" if self.method in ("exact", "faiss") else self.method
            self._faiss = build_faiss_index(self._data, method=kind, metric=self.metric, k=k,
                                            seed=self.seed, show_progress=self.show_progress)
        return self._faiss

    def query_self(self, k: int, on_device: bool = False) -> tuple[np.ndarray | torch.Tensor, ...]:
        """The ``k`` nearest *other* rows of every database row (self removed by index, so
        duplicates of a point are still found): int32 indices (int64 from 2³¹ rows) and
        float32 distances, as NumPy arrays, or with ``on_device`` as tensors on ``device``
        (an exact search on a GPU then never leaves it)."""
        start = time.perf_counter()
        if scipy.sparse.issparse(self._data):
            idx, dist = sparse_knn(self._data, None, k, self.metric)
            if on_device:
                idx, dist = torch.from_numpy(idx).to(self.device), torch.from_numpy(dist).to(self.device)
        elif self.method == "exact" and self.metric != "inner_product":
            idx, dist = exact_knn(self._data, k, metric=self.metric, device=self.device,
                                  show_progress=self.show_progress)
            if not on_device:
                idx, dist = idx.cpu().numpy(), dist.cpu().numpy()
        else:
            k1 = min(k + 1, self.n_samples)
            found = search_faiss(self._faiss_index(k1), self._data, k1, metric=self.metric,
                                 show_progress=self.show_progress, database=self._refine_data())
            idx, dist = drop_self(*found, k)
            fill_missing(idx, dist)
            if on_device:
                idx, dist = torch.from_numpy(idx).to(self.device), torch.from_numpy(dist).to(self.device)
        logger.info("kNN (%s, k=%d) of %d points: %.1f s", self.method, k, self.n_samples,
                    time.perf_counter() - start)
        return compact_indices(idx, self.n_samples), dist

    def _refine_data(self) -> ArrayLike | None:
        """The rows the candidates of an index of approximations (IVF-PQ codes, a PCA-reduced
        HNSW graph) are re-ranked against."""
        return self._data if reranks(self.method, self._data.shape[1], self.metric) else None

    def query(self, Q: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest database rows of every row of ``Q`` (exact searches use a faiss
        flat index built once): int32 indices (int64 from 2³¹ rows) and float32 distances."""
        k = min(k, self.n_samples)
        if scipy.sparse.issparse(self._data):
            idx, dist = sparse_knn(self._data, Q, k, self.metric)
        else:
            idx, dist = search_faiss(self._faiss_index(k), Q, k, metric=self.metric,
                                     database=self._refine_data())
            fill_missing(idx, dist)
        return compact_indices(idx, self.n_samples), dist
