"""The kNN graph at scale: the size/memory policy of ``"auto"``, the memory budget, IVF-PQ
without a copy of the data, compact (int32/float32) graphs, and graphs given by the user."""

import numpy as np
import pytest
import scipy.sparse
import torch

from twinlearn import CNE, TLDR
from twinlearn.neighbors import KNNIndex, compute_knn, fuzzy_union_edges, symmetric_edges
from twinlearn.neighbors.files import load_knn, save_knn
from twinlearn.neighbors.policy import (
    AUTO_EXACT_MAX,
    choose_knn_method,
    index_bytes,
    parse_memory_budget,
)

CPU = torch.device("cpu")
TLDR_FAST = dict(projector="mlp-1-128", n_epochs=2, batch_size=64, random_state=0)


def test_memory_budgets_parse_or_are_refused_by_name():
    assert parse_memory_budget(None) is None
    assert parse_memory_budget("4GB") == 4 * 10**9
    assert parse_memory_budget(" 1.5 GiB ") == 3 * 2**29
    assert parse_memory_budget(2048) == parse_memory_budget("2048") == 2048
    for bad in ("lots", "4 parsecs", "-1GB", 0, -5, float("nan"), 0.5):
        with pytest.raises(ValueError, match="knn_memory_budget"):
            parse_memory_budget(bad)
    for bad in (True, [1], object()):
        with pytest.raises(TypeError, match="knn_memory_budget"):
            parse_memory_budget(bad)
    with pytest.raises(ValueError, match="knn_memory_budget"):
        TLDR(knn_memory_budget="much").fit(np.zeros((10, 2), np.float32))
    with pytest.raises(TypeError, match="knn_memory_budget"):
        CNE(knn_memory_budget=[1]).fit(np.zeros((10, 2), np.float32))


def test_auto_is_exact_when_small_then_hnsw_then_the_largest_codes_that_fit():
    n, d = 10**6, 64
    big = AUTO_EXACT_MAX + 1
    assert choose_knn_method(AUTO_EXACT_MAX, d, CPU, 10**12) == "exact"
    assert choose_knn_method(big, d, torch.device("cuda"), 10**12) == "exact"
    assert choose_knn_method(n, d, CPU, 10**12) == "hnsw"
    graph = n * 16 * 12  # the search's output
    hnsw, low, high = (index_bytes(m, n, d) + graph for m in ("hnsw", "ivfpq-low", "ivfpq-high"))
    assert high < low < hnsw
    assert choose_knn_method(n, d, CPU, hnsw - 1) == "ivfpq-low"
    assert choose_knn_method(n, d, CPU, low - 1) == "ivfpq-medium"
    assert choose_knn_method(n, d, CPU, high) == "ivfpq-high"
    with pytest.raises(ValueError, match="'ivfpq-high' kNN index.*knn_memory_budget"):
        choose_knn_method(n, d, CPU, high - 1)


def test_index_memory_estimates_match_faiss():
    import faiss

    from twinlearn.neighbors.faiss_index import build_faiss_index

    X = np.random.default_rng(0).normal(size=(4000, 24)).astype(np.float32)
    for method, tolerance in (("faiss", 0.01), ("hnsw", 0.05)):
        real = len(faiss.serialize_index(build_faiss_index(X, method="flat" if method == "faiss" else method)))
        assert abs(index_bytes(method, *X.shape) - real) < tolerance * real, method
    # a high-dimensional HNSW graph holds the PCA projection (and the projection), not the rows;
    # the estimate adds the projection's training sample and its centred copy, which the
    # index does not keep
    wide = np.random.default_rng(0).normal(size=(4000, 300)).astype(np.float32)
    real = len(faiss.serialize_index(build_faiss_index(wide, method="hnsw")))
    sample = 2 * 4 * 300 * 4000
    assert abs(index_bytes("hnsw", *wide.shape) - sample - real) < 0.05 * real
    full = index_bytes("hnsw", *wide.shape, metric="inner_product")  # never projected
    assert full > wide.nbytes and real < full / 2
    # IVF-PQ holds codes, not a copy of the vectors: far less than the data
    real = len(faiss.serialize_index(build_faiss_index(X, method="ivfpq-high")))
    assert real < X.nbytes / 2 and real < index_bytes("ivfpq-high", *X.shape)


def test_a_budget_below_the_index_is_an_error_before_any_search(monkeypatch):
    import twinlearn.neighbors.index as index_module

    def no_search(*args, **kwargs):
        raise AssertionError("searched despite the budget")

    for name in ("exact_knn", "build_faiss_index", "search_faiss"):
        monkeypatch.setattr(index_module, name, no_search)
    X = np.zeros((AUTO_EXACT_MAX + 10, 8), np.float32)
    with pytest.raises(ValueError, match="knn_memory_budget"):
        KNNIndex("auto", memory_budget="1MB").build(X)
    with pytest.raises(ValueError, match="'hnsw' kNN index"):
        KNNIndex("hnsw", memory_budget=10**6).build(X)
    X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="knn_memory_budget"):
        TLDR(knn_memory_budget="1KB", **TLDR_FAST).fit(X)
    with pytest.raises(ValueError, match="knn_memory_budget"):
        CNE(knn_memory_budget=1000, n_epochs=1).fit(X)


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product"])
def test_ivfpq_reranks_from_the_data_to_exact_distances(metric):
    X = np.random.default_rng(1).normal(size=(1500, 16)).astype(np.float32)
    idx, dist = compute_knn(X, 8, method="ivfpq-medium", metric=metric)
    exact_idx, exact_dist = compute_knn(X, 8, method="faiss", metric=metric)
    assert idx.dtype == np.int32 and dist.dtype == np.float32
    # each distance is the exact distance of the neighbour found, never below the true k-th
    np.testing.assert_allclose(dist, _distances(X, idx, metric), rtol=1e-4, atol=1e-4)
    assert (dist[:, -1] >= exact_dist[:, -1] - 1e-4).all()
    recall = np.mean([len(set(a) & set(b)) / 8 for a, b in zip(idx, exact_idx)])
    assert recall > 0.6


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_wide_hnsw_builds_on_a_projection_and_reranks_to_exact_distances(metric, mnist_small):
    from twinlearn.neighbors.faiss_index import HNSW_PCA_DIM, build_faiss_index, hnsw_reduced_dim

    X = mnist_small[0]  # 784 pixels: far more than the projection's dimensions
    assert hnsw_reduced_dim(X.shape[1], metric) == HNSW_PCA_DIM
    assert build_faiss_index(X[:500], method="hnsw", metric=metric).d == X.shape[1]
    idx, dist = compute_knn(X, 10, method="hnsw", metric=metric)
    exact_idx, _ = compute_knn(X, 10, method="faiss", metric=metric)
    np.testing.assert_allclose(dist, _distances(X, idx, metric), rtol=1e-4, atol=1e-4)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, exact_idx)])
    assert recall > 0.97
    # new rows are placed among the indexed ones the same way
    nbrs, _ = KNNIndex("hnsw", metric=metric).build(X).query(X[:50], 3)
    assert (nbrs[:, 0] == np.arange(50)).all()


def test_inner_products_and_narrow_rows_keep_their_own_hnsw_graph():
    from twinlearn.neighbors.faiss_index import HNSW_PCA_DIM, hnsw_reduced_dim

    assert hnsw_reduced_dim(784, "inner_product") is None
    assert hnsw_reduced_dim(2 * HNSW_PCA_DIM, "euclidean") is None
    assert hnsw_reduced_dim(2 * HNSW_PCA_DIM + 1, "euclidean") == HNSW_PCA_DIM


def _distances(X, idx, metric):
    if metric == "cosine":
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        return 1 - np.einsum("nd,nkd->nk", Xn, Xn[idx])
    if metric == "inner_product":
        return -np.einsum("nd,nkd->nk", X, X[idx])
    return ((X[:, None, :] - X[idx]) ** 2).sum(-1)


def test_graphs_and_edges_are_int32_and_float32(blobs):
    X, _ = blobs
    for method in ("exact", "hnsw"):
        idx, dist = compute_knn(X, 5, method=method)
        assert idx.dtype == np.int32 and dist.dtype == np.float32, method
    idx, dist = KNNIndex("exact").build(X).query_self(5, on_device=True)
    assert idx.dtype == torch.int32 and dist.dtype == torch.float32
    heads, tails, weights = fuzzy_union_edges(idx.numpy(), np.sqrt(dist.numpy()))
    assert heads.dtype == tails.dtype == np.int32 and weights.dtype == np.float32
    assert symmetric_edges(idx.numpy(), len(X))[0].dtype == np.int32
    model = TLDR(**TLDR_FAST).fit(X)
    assert model.knn_indices_.dtype == np.int32


def test_tldr_defaults_to_auto_and_keeps_exact_by_name(blobs):
    X, _ = blobs
    assert TLDR().knn_method == "auto"
    auto = TLDR(**TLDR_FAST).fit(X)
    exact = TLDR(knn_method="exact", **TLDR_FAST).fit(X)
    # small data: "auto" is the exact search, so the same graph and the same model
    np.testing.assert_array_equal(auto.knn_indices_, exact.knn_indices_)
    np.testing.assert_array_equal(auto.transform(X), exact.transform(X))


def test_tldr_takes_a_scanpy_style_distance_graph_or_a_load_knn_pair(blobs, tmp_path):
    from sklearn.neighbors import kneighbors_graph

    X, _ = blobs
    distances = kneighbors_graph(X, 5, mode="distance")  # as scanpy's obsp["distances"]
    idx, dist = compute_knn(X, 5, method="exact")
    by_indices = TLDR(**TLDR_FAST).fit(X, knn_graph=idx)
    by_sparse = TLDR(**TLDR_FAST).fit(X, knn_graph=distances)
    assert set(map(tuple, np.sort(by_sparse.knn_indices_, 1))) == set(map(tuple, np.sort(idx, 1)))
    save_knn(tmp_path / "g.npz", idx, dist)
    by_pair = TLDR(**TLDR_FAST).fit(X, knn_graph=load_knn(tmp_path / "g.npz"))
    np.testing.assert_array_equal(by_pair.transform(X), by_indices.transform(X))


def test_graphs_that_do_not_match_x_are_refused_by_name(blobs, tmp_path):
    X, _ = blobs
    idx, _ = compute_knn(X[:100], 5)
    with pytest.raises(ValueError, match="knn_graph has 100 rows"):
        TLDR(**TLDR_FAST).fit(X, knn_graph=idx)
    with pytest.raises(ValueError, match=r"knn_graph has shape \(100, 100\)"):
        TLDR(**TLDR_FAST).fit(X, knn_graph=scipy.sparse.identity(100, format="csr"))
    with pytest.raises(ValueError, match="knn_graph has 100 rows"):
        CNE(n_epochs=1).fit(X, knn_graph=idx)
    with pytest.raises(ValueError, match=r"shape \(100, 100\)"):
        CNE(n_epochs=1).fit(X, knn_graph=scipy.sparse.identity(100, format="csr"))
    save_knn(tmp_path / "g.npy", idx)
    model = TLDR(**TLDR_FAST).load_knn(tmp_path / "g.npy")
    with pytest.raises(ValueError, match="load_knn has 100 rows but X has 300"):
        model.fit(X)


def test_cne_takes_the_pair_load_knn_returns(blobs, tmp_path):
    X, _ = blobs
    idx, dist = compute_knn(X, 15)
    save_knn(tmp_path / "g.npz", idx, dist)
    params = dict(n_epochs=3, batch_size=512, random_state=0)
    by_pair = CNE(**params).fit_transform(X, knn_graph=load_knn(tmp_path / "g.npz"))
    np.testing.assert_array_equal(by_pair, CNE(**params).fit_transform(X, knn_graph=idx))
