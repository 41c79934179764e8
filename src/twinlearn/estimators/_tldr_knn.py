"""TLDR's kNN graph: searched (sized by :func:`~twinlearn.neighbors.policy.choose_knn_method`
and ``knn_memory_budget``), computed ahead, saved and loaded, or given (an index array, a
:func:`~twinlearn.neighbors.files.load_knn` result or a sparse distance graph such as
scanpy's ``obsp["distances"]``)."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse
import torch
from sklearn.utils.validation import check_is_fitted

from twinlearn._checks import one_of
from twinlearn._device import numpy_base_pages
from twinlearn.data.arrays import ArrayLike
from twinlearn.neighbors import KNNIndex, check_knn_indices
from twinlearn.neighbors import files as knn_files
from twinlearn.neighbors.index import compact_indices
from twinlearn.neighbors.precomputed import check_precomputed, precomputed_knn
from twinlearn.training import distributed
from twinlearn.training.run_folder import data_fingerprint


class TLDRKNN:
    """Mixin of :class:`~twinlearn.TLDR`: its kNN graph."""

    def _knn_metric(self) -> str:
        """``knn_metric`` or its alias ``metric`` (the same value twice is fine)."""
        alias = None if self.metric == self.knn_metric else self.metric
        return one_of(self.knn_metric, alias, "knn_metric", "metric") or "euclidean"

    def _knn_backend(self) -> str:
        return f"ivfpq-{self.knn_approximation}" if self.knn_approximation else self.knn_method

    def compute_knn(self, X: ArrayLike) -> TLDRKNN:
        """Compute and keep the kNN graph of ``X`` for the next ``fit`` on the same data."""
        self._validate_params()
        X = self._validate_fit_data(X)
        k = self._neighbors_for(self.n_neighbors, X.shape[0])
        self.knn_indices_ = self._search_knn(X, k, self._device(), self._seed()).cpu().numpy()
        self._pending_knn = (self.knn_indices_, data_fingerprint(X))
        return self

    @numpy_base_pages()  # 1.7 GB less peak RSS at 10⁶ rows (benchmarks/RESULTS.md)
    def _search_knn(self, X: ArrayLike, k: int, device: torch.device, seed: int) -> torch.Tensor:
        """The kNN graph of ``X`` as int32 indices on ``device`` (where an exact search left it;
        under ``torch.distributed`` each process searches its share of the rows)."""
        index = KNNIndex(self._knn_backend(), self._knn_metric(), device, seed, bool(self.verbose),
                         memory_budget=self.knn_memory_budget).build(X)
        return distributed.ShardedIndex(index, X).query_self(k, on_device=True)[0]

    def get_knn(self) -> np.ndarray:
        """The kNN index array of the last computed or loaded graph."""
        check_is_fitted(self, "knn_indices_")
        return self.knn_indices_

    def save_knn(self, path: str | os.PathLike) -> None:
        """Save the kNN index array as ``.npy`` (int32, atomically; ``neighbors.files.save_knn``)."""
        knn_files.save_knn(path, self.get_knn())

    def load_knn(self, path: str | os.PathLike) -> TLDRKNN:
        """Load a kNN index array saved by :meth:`save_knn`, checked before anything is
        allocated (never unpickles); the next ``fit`` uses it (its data must have as many rows)."""
        indices, _ = knn_files.load_knn(path)
        self.knn_indices_ = indices
        self._pending_knn = (self.knn_indices_, None)
        return self

    def _resolve_knn(self, X: ArrayLike, knn_graph: object, k: int, device: torch.device, seed: int) -> torch.Tensor:
        """The graph to train on: ``knn_graph``, else the one :meth:`load_knn` left for this fit
        (which must match ``X``'s rows) or :meth:`compute_knn` left (used for this very data
        only), else a new search. A left graph serves one fit only."""
        n = X.shape[0]
        pending, self._pending_knn = getattr(self, "_pending_knn", None), None
        if knn_graph is None and pending is not None:
            graph, fingerprint = pending
            if fingerprint is None and graph.shape[0] != n:
                raise ValueError(f"the graph from load_knn has {graph.shape[0]} rows but X has {n} samples")
            if fingerprint is None or fingerprint == data_fingerprint(X):
                knn_graph = graph
        if knn_graph is None:
            return self._search_knn(X, k, device, seed)
        return torch.as_tensor(compact_indices(given_indices(knn_graph, n, k), n), device=device)


def given_indices(graph: object, n: int, k: int) -> np.ndarray:
    """The first ``k`` neighbours of each of ``n`` rows from a user's graph: an index array, an
    ``(indices, distances)`` pair (as :func:`~twinlearn.neighbors.files.load_knn` returns) or a
    square sparse matrix of distances (each row's ``k`` smallest stored entries)."""
    if isinstance(graph, tuple) and len(graph) == 2:
        graph = graph[0]
    if not scipy.sparse.issparse(graph):
        return check_knn_indices(graph, n, k)
    if graph.shape != (n, n):
        raise ValueError(f"knn_graph has shape {graph.shape}, expected ({n}, {n}) for X's {n} samples")
    return precomputed_knn(check_precomputed(graph, "knn_graph"), k)[0]
