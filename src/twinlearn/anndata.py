"""AnnData / scanpy interface: :func:`tldr` and :func:`cne` in the style of ``sc.tl.umap``.

``twinlearn.tl``-like functions that read a representation of an :class:`anndata.AnnData`
(``use_rep``: ``obsm["X_pca"]`` when present, else ``X``), fit the estimator, and write the
embedding to ``adata.obsm[key_added]`` and the settings to ``adata.uns[key_added]``. With
``neighbors_key`` they reuse the graph ``sc.pp.neighbors`` stored in ``adata.obsp`` instead of
computing a kNN graph again. Needs the ``anndata`` package (``pip install 'twinlearn[anndata]'``).

Examples
--------
>>> import scanpy as sc                                            # doctest: +SKIP
>>> from twinlearn.anndata import cne
>>> adata = sc.datasets.pbmc68k_reduced()                          # doctest: +SKIP
>>> cne(adata, neighbors_key="neighbors")                          # doctest: +SKIP
>>> sc.pl.embedding(adata, "X_cne", color="bulk_labels")           # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse

from twinlearn._optional import import_optional
from twinlearn.data.disk import is_backed_sparse, is_disk_array
from twinlearn.estimators._base import json_safe_params


def _check_adata(adata: object, key_added: object, copy: bool) -> None:
    anndata = import_optional("anndata")
    if not isinstance(adata, anndata.AnnData):
        raise TypeError(f"adata must be an anndata.AnnData, got {type(adata).__name__}")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")
    if copy and adata.isbacked:
        raise ValueError("copy=True on a backed AnnData would load it whole: use copy=False "
                         "(the result goes to .obsm/.uns in memory) or adata.to_memory() first")


def _rep_name(adata: Any, use_rep: str | None) -> str:
    """``use_rep`` checked, or scanpy's default: ``"X_pca"`` when present, else ``"X"``."""
    if use_rep is None:
        return "X_pca" if "X_pca" in adata.obsm else "X"
    if use_rep != "X" and use_rep not in adata.obsm:
        raise ValueError(f"use_rep={use_rep!r} is not in adata.obsm (keys: {list(adata.obsm)}); "
                         "give one of them or 'X'")
    return use_rep


def _read_rep(adata: Any, rep: str) -> Any:
    """The representation to embed: in memory as float32, or a backed dense ``X`` left on disk
    (an HDF5 dataset the estimators read a block of rows at a time)."""
    X = adata.obsm[rep] if rep != "X" else adata.X
    if X is None:
        raise ValueError("adata.X is empty; give use_rep, a key of adata.obsm")
    if scipy.sparse.issparse(X) or is_backed_sparse(X):
        raise TypeError(f"adata.{'X' if rep == 'X' else f'obsm[{rep!r}]'} is sparse; the "
                        "estimators take dense features: run sc.pp.pca and use "
                        "use_rep='X_pca' (the default when present)")
    return X if is_disk_array(X) else np.asarray(X, dtype=np.float32)


def _obsp_graph(adata: Any, neighbors_key: str, which: str) -> scipy.sparse.csr_matrix:
    """``adata.obsp`` graph ``which`` ("connectivities" or "distances") that
    ``sc.pp.neighbors(key_added=neighbors_key)`` recorded in ``adata.uns[neighbors_key]``."""
    if not isinstance(neighbors_key, str) or neighbors_key not in adata.uns:
        raise ValueError(f"neighbors_key={neighbors_key!r} is not in adata.uns (keys: "
                         f"{list(adata.uns)}); run sc.pp.neighbors first")
    info = adata.uns[neighbors_key]
    # scanpy's names, also for files written before it recorded them in uns
    default = which if neighbors_key == "neighbors" else f"{neighbors_key}_{which}"
    key = info.get(f"{which}_key", default) if isinstance(info, Mapping) else default
    if key not in adata.obsp:
        raise ValueError(f"adata.obsp has no {key!r} graph for neighbors_key={neighbors_key!r} "
                         f"(obsp keys: {list(adata.obsp)})")
    graph = scipy.sparse.csr_matrix(adata.obsp[key])
    if graph.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(f"adata.obsp[{key!r}] has shape {graph.shape}, expected (n_obs, n_obs) = "
                         f"({adata.n_obs}, {adata.n_obs})")
    return graph


def knn_from_distances(distances: scipy.sparse.spmatrix, k: int) -> np.ndarray:
    """The ``k`` nearest neighbours of each row of a sparse distance graph (``sc.pp.neighbors``'
    ``obsp["distances"]``), nearest first, the diagonal (self) excluded.

    Rows with fewer than ``k`` stored neighbours are refused, not padded: repeating a neighbour
    would make it a positive more often than the others.

    Returns
    -------
    ndarray of shape (n_obs, k), int64
    """
    graph = scipy.sparse.coo_matrix(distances)
    keep = graph.row != graph.col
    rows, cols, dist = graph.row[keep], graph.col[keep], graph.data[keep]
    counts = np.bincount(rows, minlength=graph.shape[0])
    if counts.min() < k:
        short = int(np.argmin(counts))
        raise ValueError(f"the distance graph has {counts[short]} neighbours for cell {short}, fewer "
                         f"than n_neighbors={k}: lower n_neighbors or rerun sc.pp.neighbors with more")
    order = np.lexsort((dist, rows))  # by row, then by distance
    starts = np.cumsum(counts) - counts
    return cols[order][starts[:, None] + np.arange(k)].astype(np.int64)


def _embed(
    method: str, adata: Any, use_rep: str | None, key_added: str, neighbors_key: str | None,
    copy: bool, params: dict[str, Any],
) -> Any:
    """Shared body of :func:`tldr` and :func:`cne`: checks first, then the fit."""
    import twinlearn

    _check_adata(adata, key_added, copy)
    estimator = getattr(twinlearn, method)(**{"random_state": 0, **params})
    estimator._validate_params()
    target = adata.copy() if copy else adata
    rep = _rep_name(target, use_rep)
    graph = None
    if neighbors_key is not None:
        if method == "CNE":  # the weighted symmetric graph: CNE's positive pairs
            graph = _obsp_graph(target, neighbors_key, "connectivities")
        else:  # TLDR samples positives among each point's k nearest
            graph = knn_from_distances(_obsp_graph(target, neighbors_key, "distances"),
                                       estimator.n_neighbors)
    X = _read_rep(target, rep)
    target.obsm[key_added] = np.asarray(estimator.fit_transform(X, knn_graph=graph))
    # JSON round trip: h5ad stores lists, not tuples
    settings = json.loads(json.dumps(json_safe_params(estimator.get_params(deep=False))))
    target.uns[key_added] = {"method": method, "params": settings, "use_rep": rep,
                             "neighbors_key": neighbors_key}
    return target if copy else None


def tldr(
    adata: Any,
    n_components: int = 32,
    *,
    use_rep: str | None = None,
    key_added: str = "X_tldr",
    neighbors_key: str | None = None,
    copy: bool = False,
    **estimator_params: Any,
) -> Any:
    """Embed the cells of ``adata`` with :class:`~twinlearn.TLDR`.

    Parameters
    ----------
    adata : anndata.AnnData
        In memory or backed (``anndata.read_h5ad(path, backed="r")``: a dense backed ``X``
        stays on disk, and the kNN search, the training and the embedding read it a block of
        rows at a time; ``obsm`` arrays are in memory already).
    n_components : int, default=32
    use_rep : str, optional
        Key of ``adata.obsm`` to embed, or ``"X"``; default ``"X_pca"`` when present, else
        ``"X"``. A sparse ``X`` is refused (run ``sc.pp.pca``).
    key_added : str, default="X_tldr"
        The embedding goes to ``adata.obsm[key_added]``; the method, its parameters (as JSON
        data), ``use_rep`` and ``neighbors_key`` to ``adata.uns[key_added]``.
    neighbors_key : str, optional
        Take the kNN graph of ``sc.pp.neighbors(adata, key_added=...)`` (``"neighbors"`` for
        its default) instead of computing one: each cell's ``n_neighbors`` nearest in
        ``obsp["distances"]``. A cell with fewer stored neighbours is an error.
    copy : bool, default=False
        Work on and return a copy of ``adata``; otherwise return ``None``.
    **estimator_params
        Other :class:`~twinlearn.TLDR` parameters; ``random_state`` defaults to 0 (scanpy's
        convention: reproducible by default).

    Returns
    -------
    anndata.AnnData or None
    """
    params = {"n_components": n_components, **estimator_params}
    return _embed("TLDR", adata, use_rep, key_added, neighbors_key, copy, params)


def cne(
    adata: Any,
    n_components: int = 2,
    *,
    use_rep: str | None = None,
    key_added: str = "X_cne",
    neighbors_key: str | None = None,
    copy: bool = False,
    **estimator_params: Any,
) -> Any:
    """Embed the cells of ``adata`` with :class:`~twinlearn.CNE` (a 2-D map by default).

    Parameters
    ----------
    adata : anndata.AnnData
        In memory or backed (see :func:`tldr`).
    n_components : int, default=2
    use_rep : str, optional
        As :func:`tldr`: ``"X_pca"`` when present, else ``"X"``.
    key_added : str, default="X_cne"
        ``adata.obsm[key_added]`` gets the embedding, ``adata.uns[key_added]`` the settings.
    neighbors_key : str, optional
        Train on the graph of ``sc.pp.neighbors`` (``obsp["connectivities"]`` for
        ``"neighbors"``), passed with its weights, instead of a new kNN graph.
    copy : bool, default=False
        Work on and return a copy of ``adata``; otherwise return ``None``.
    **estimator_params
        Other :class:`~twinlearn.CNE` parameters (``loss_mode``, ``n_epochs``, ...);
        ``random_state`` defaults to 0.

    Returns
    -------
    anndata.AnnData or None
    """
    params = {"n_components": n_components, **estimator_params}
    return _embed("CNE", adata, use_rep, key_added, neighbors_key, copy, params)
