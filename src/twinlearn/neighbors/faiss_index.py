"""k-nearest neighbours with faiss: exact flat, IVF-PQ (``knn_approximation``) and HNSW, built
and searched in chunks (with a progress bar).

High-dimensional HNSW graphs are built over a PCA projection of the rows
(:func:`hnsw_reduced_dim`) and their candidates re-ranked by exact distance, as IVF-PQ's are:
the graph's cost and memory grow with the dimension it is built in, the re-ranking only with
the candidates it reads."""

from __future__ import annotations

import numpy as np

from twinlearn._progress import progress
from twinlearn.data.arrays import ArrayLike, iter_row_chunks
from twinlearn.neighbors.rerank import rerank

#: TLDR's ``knn_approximation`` levels -> number of PQ sub-quantizers.
PQ_SUBQUANTIZERS = {"low": 32, "medium": 16, "high": 8}
#: IVF-PQ candidates re-ranked by exact distance, per neighbour asked for.
REFINE_FACTOR = 4
#: the same for a PCA-reduced HNSW graph, whose search beam is as wide as its candidates:
#: on 10⁵ deformed MNIST digits 3 found 99.2 % of the true 15 neighbours (4: 99.6 %, 2: 97.6 %)
#: and the re-ranking's row reads cost as much as the search
HNSW_REFINE_FACTOR = 3


def _as_float32(block: ArrayLike, metric: str) -> np.ndarray:
    import torch

    if isinstance(block, torch.Tensor):
        block = block.detach().cpu().numpy()
    elif hasattr(block, "toarray"):  # a chunk of sparse queries against a dense index
        block = block.toarray()
    block = np.ascontiguousarray(block, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = block / np.maximum(norms, 1e-12)
    return block


#: HNSW links per point and layer (2·M on the base layer)
HNSW_M = 32
#: an HNSW graph over more features than this is built in a PCA projection of this many
HNSW_PCA_DIM = 64


def hnsw_reduced_dim(d: int, metric: str) -> int | None:
    """The PCA dimension an HNSW graph of ``d``-dimensional rows is built in, or ``None`` (the
    rows themselves). Inner products are not kept by a centred projection, so
    ``"inner_product"`` is never reduced (``"cosine"`` is: unit rows rank the same by L2)."""
    return HNSW_PCA_DIM if d > 2 * HNSW_PCA_DIM and metric != "inner_product" else None


def reranks(method: str, d: int, metric: str) -> bool:
    """Whether ``method``'s index holds approximations of the rows (compressed codes or a PCA
    projection), so its candidates are re-ranked against the rows themselves."""
    return method.startswith("ivfpq") or (method == "hnsw" and hnsw_reduced_dim(d, metric) is not None)


def hnsw_ef_search(k: int) -> int:
    """HNSW's search beam: at least 64, wider for large k (keeps the recall)."""
    return max(64, 2 * k)


def ivf_lists(n: int) -> int:
    """Inverted lists of an IVF index of ``n`` points (about √n, ≥ 39 training points each)."""
    return max(1, min(int(np.sqrt(n)), n // 39))


def pq_subquantizers(d: int, method: str) -> int:
    """Bytes per code of ``"ivfpq-low|medium|high"``: the level's sub-quantizers, a divisor of d."""
    m = PQ_SUBQUANTIZERS[method.removeprefix("ivfpq-")]
    while d % m:
        m -= 1
    return m


def _build_index(d: int, method: str, metric: str, n: int, k: int):
    import faiss

    by_product = metric in ("cosine", "inner_product")
    faiss_metric = faiss.METRIC_INNER_PRODUCT if by_product else faiss.METRIC_L2
    if method == "flat":
        return faiss.IndexFlatIP(d) if by_product else faiss.IndexFlatL2(d)
    if method == "hnsw":
        return _hnsw_index(d, metric, faiss_metric, k)
    n_lists = ivf_lists(n)
    # 8-bit codebooks want several training points per centroid: small data gets smaller ones
    n_bits = int(np.clip(np.log2(max(n_train(n) / 8, 2)), 1, 8))
    index = faiss.index_factory(d, f"IVF{n_lists},PQ{pq_subquantizers(d, method)}x{n_bits}", faiss_metric)
    index.nprobe = max(1, n_lists // 8)
    # polysemous codebook re-ordering only serves Hamming-distance search, which is not used,
    # and it dominated training time (58 s for 3 000 points)
    index.do_polysemous_training = False
    return index


def _hnsw_index(d: int, metric: str, faiss_metric: int, k: int):
    """HNSW (M = 32, efConstruction 40) over the rows, or over their PCA projection to
    :data:`HNSW_PCA_DIM` dimensions when :func:`hnsw_reduced_dim` says so (searched for
    ``HNSW_REFINE_FACTOR·k`` candidates then, its beam as wide)."""
    import faiss

    # M = 32, efSearch 64 finds 99.9 % of MNIST-70k's 16 neighbours; M = 16, efSearch 32
    # (97.7 %) is twice as fast but cost CNE ~1 point of 10-NN accuracy there. A wider
    # search beam for large k keeps the recall
    reduced = hnsw_reduced_dim(d, metric)
    graph = faiss.IndexHNSWFlat(reduced or d, HNSW_M, faiss.METRIC_L2 if reduced else faiss_metric)
    graph.hnsw.efConstruction = 40
    graph.hnsw.efSearch = HNSW_REFINE_FACTOR * k if reduced else hnsw_ef_search(k)
    if reduced is None:
        return graph
    # an untrained projection, fitted by _fit_projection; the wrapper keeps both alive
    return faiss.IndexPreTransform(faiss.LinearTransform(d, reduced, True), graph)


#: rows a PCA projection of an HNSW graph is fitted on: on CIFAR-10's 3 072 pixels 10 000,
#: 20 000 and 50 000 rows found 96.5 / 96.7 / 96.6 % of the 16 true neighbours
PCA_TRAIN_ROWS = 20000


def _fit_projection(index, sample: np.ndarray, seed: int) -> None:
    """Fit the PCA projection of a reduced HNSW ``index`` on ``sample`` with scikit-learn's
    randomized solver: faiss's own ``PCAMatrix`` decomposes the full ``d × d`` covariance,
    26 s of CIFAR-10's 44 s kNN graph, where the 64 leading axes take 2.7 s."""
    import faiss
    from sklearn.decomposition import PCA

    projection = faiss.downcast_VectorTransform(index.chain.at(0))
    pca = PCA(projection.d_out, svd_solver="randomized", random_state=seed % 2**32).fit(sample)
    A = np.ascontiguousarray(pca.components_, dtype=np.float32)
    faiss.copy_array_to_vector(A.ravel(), projection.A)
    faiss.copy_array_to_vector((-(A @ pca.mean_.astype(np.float32))).astype(np.float32), projection.b)
    projection.is_trained = index.is_trained = True


def n_train(n: int, method: str = "ivfpq") -> int:
    """Training points of an index of ``n`` points: an IVF-PQ index's quantizers, or an HNSW
    graph's PCA projection."""
    if method == "hnsw":
        return min(n, PCA_TRAIN_ROWS)
    return min(n, max(10000, n // 10))


def drop_self(
    indices: np.ndarray, distances: np.ndarray, k: int, query_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own index from its ``k + 1`` results; where absent, drop the last.

    ``query_ids`` are the database indices of the query rows (default ``0..n-1``). Removing by
    index, not by position, handles duplicates and approximate indexes, where the point itself
    is not always first.
    """
    n = indices.shape[0]
    ids = np.arange(n) if query_ids is None else np.asarray(query_ids)
    is_self = indices == ids[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    first = np.argmax(is_self, axis=1)
    keep = np.ones_like(is_self)
    keep[np.arange(n), first] = False
    return indices[keep].reshape(n, k), distances[keep].reshape(n, k)


def build_faiss_index(
    X: ArrayLike, *, method: str = "flat", metric: str = "euclidean", k: int = 16, seed: int = 0,
    chunk_rows: int = 16384, show_progress: bool = False,
):
    """A faiss index over the rows of ``X``, added in chunks (a memmap is read block by block;
    ``show_progress``: a bar over them).

    ``method`` is ``"flat"`` (exact), ``"hnsw"`` (graph, M=32, efSearch max(64, 2k); over a
    PCA projection of wide rows, :func:`hnsw_reduced_dim`, searched with ``database=X``), or
    ``"ivfpq-low"``, ``"ivfpq-medium"``, ``"ivfpq-high"`` (codes of 32/16/8 bytes from
    product quantization, trained on a random sample rather than the first rows; search it with
    ``database=X`` to re-rank the best ``4·k`` candidates by exact distance). ``k`` is the
    number of results queries will ask.
    """
    n, d = X.shape
    index = _build_index(d, method, metric, n, k)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = _as_float32(X[np.sort(rng.choice(n, size=n_train(n, method), replace=False))], metric)
        if method == "hnsw":  # the graph itself needs no training, its projection does
            _fit_projection(index, sample, seed)
        else:
            index.train(sample)
    n_chunks = -(-n // chunk_rows)
    for block in progress(iter_row_chunks(X, chunk_rows), show_progress, "kNN index", n_chunks, "block"):
        index.add(_as_float32(block, metric))
    return index


def search_faiss(
    index, Q: ArrayLike, k: int, *, metric: str = "euclidean", chunk_rows: int = 16384,
    show_progress: bool = False, database: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows of every row of ``Q``: int64 indices and float32
    distances (squared Euclidean, cosine distances ``1 - cos`` for ``metric="cosine"``, or
    ``-q·x`` for ``metric="inner_product"``), searched in chunks into preallocated outputs.

    ``database`` (the indexed rows, for an IVF-PQ index, which holds only their compressed
    codes, or a PCA-reduced HNSW graph): the best ``REFINE_FACTOR·k`` (``HNSW_REFINE_FACTOR·k``)
    candidates by code (projection) are re-ranked by exact distance to
    these rows (a memmap is read row by row; no copy of the data is held). Approximate indexes
    may return -1 for too few hits: see :func:`fill_missing`."""
    n = Q.shape[0]
    dist = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    start = 0
    n_chunks = -(-n // chunk_rows)
    for block in progress(iter_row_chunks(Q, chunk_rows), show_progress, "kNN search", n_chunks, "block"):
        q = _as_float32(block, metric)
        if database is None:
            D, I = index.search(q, k)
        else:
            I, D = rerank(q, database, index.search(q, _candidates(index, k))[1], k, metric)
        dist[start : start + len(D)], idx[start : start + len(D)] = D, I
        start += len(D)
    if metric == "cosine":
        dist = 1.0 - dist
    elif metric == "inner_product":
        dist = -dist  # the largest product is the nearest: a distance that grows away from it
    return idx, dist


def _candidates(index, k: int) -> int:
    """How many candidates of ``k`` neighbours an index of approximations is searched for."""
    import faiss

    return (HNSW_REFINE_FACTOR if isinstance(index, faiss.IndexPreTransform) else REFINE_FACTOR) * k


def faiss_knn(
    X: ArrayLike,
    n_neighbors: int,
    *,
    method: str = "flat",
    metric: str = "euclidean",
    seed: int = 0,
    chunk_rows: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of every row of ``X`` among the other rows, via a faiss index (see
    :func:`build_faiss_index` for the methods)."""
    k1 = min(n_neighbors + 1, X.shape[0])
    index = build_faiss_index(X, method=method, metric=metric, k=k1, seed=seed, chunk_rows=chunk_rows)
    database = X if reranks(method, X.shape[1], metric) else None
    idx, dist = drop_self(*search_faiss(index, X, k1, metric=metric, chunk_rows=chunk_rows,
                                        database=database), n_neighbors)
    fill_missing(idx, dist)
    return idx, dist


def fill_missing(idx: np.ndarray, dist: np.ndarray) -> None:
    """Approximate indexes can return -1 for too few hits: repeat the row's nearest result."""
    missing = idx < 0
    if missing.any():
        rows = np.nonzero(missing)[0]
        idx[missing] = idx[rows, 0]
        dist[missing] = dist[rows, 0]
