import numpy as np
import pytest
import scipy.sparse
import torch

from twinlearn.neighbors import (
    check_knn_indices,
    compute_knn,
    fuzzy_union_edges,
    membership_strengths,
    neighbor_distances,
    symmetric_edges,
)
from twinlearn.neighbors.faiss_index import drop_self


def brute_force(X, k):
    d = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("method", ["exact", "faiss", "hnsw"])
def test_matches_brute_force(method):
    X = np.random.default_rng(0).normal(size=(500, 12)).astype(np.float32)
    idx, dist = compute_knn(X, 7, method=method)
    ref = brute_force(X, 7)
    recall = np.mean([len(set(a) & set(b)) / 7 for a, b in zip(idx, ref)])
    assert recall > (0.999 if method != "hnsw" else 0.95)
    assert (idx != np.arange(500)[:, None]).all(), "a point is its own neighbour"
    assert np.all(np.diff(dist, axis=1) >= -1e-4), "neighbours not ordered by distance"


def test_exact_blocked_equals_single_block():
    from twinlearn.neighbors import exact_knn

    X = torch.randn(300, 5, generator=torch.Generator().manual_seed(1))
    a, _ = exact_knn(X, 4, query_block=37, database_block=50)
    b, _ = exact_knn(X, 4, query_block=1000, database_block=1000)
    assert torch.equal(a, b)


def test_duplicates_are_neighbours_but_self_is_not():
    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    X[10] = X[20]
    for method in ("exact", "faiss"):
        idx, dist = compute_knn(X, 3, method=method)
        assert idx[10, 0] == 20 and idx[20, 0] == 10
        assert dist[10, 0] == pytest.approx(0.0, abs=1e-5)


def test_cosine_metric_ignores_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    scaled = X * rng.uniform(0.1, 10, size=(200, 1)).astype(np.float32)
    a, _ = compute_knn(X, 5, method="exact", metric="cosine")
    b, _ = compute_knn(scaled, 5, method="faiss", metric="cosine")
    assert np.mean(a == b) > 0.98


def test_ivfpq_levels_run_and_find_neighbours():
    # descriptors live near a low-dimensional subspace, as real ones do
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6)) @ rng.normal(size=(6, 32)) + 0.1 * rng.normal(size=(3000, 32))
    X = X.astype(np.float32)
    ref, _ = compute_knn(X, 5, method="exact")
    for level in ("low", "medium", "high"):
        idx, _ = compute_knn(X, 5, method=f"ivfpq-{level}")
        assert idx.shape == (3000, 5) and (idx >= 0).all()
        assert (idx != np.arange(3000)[:, None]).all()
        recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, ref)])
        # PQ ranks candidates, exact distances re-rank them: near-exact on such data
        assert recall > 0.95, (level, recall)


def test_drop_self_by_index_not_position():
    hits = np.array([[3, 0, 5], [1, 2, 4]])
    idx, _ = drop_self(hits, hits.astype(float), 2)
    assert idx.tolist() == [[3, 5], [2, 4]]
    # row 1's self (1) is first; row 0's self (0) is in the middle.


def test_bad_arguments():
    X = np.zeros((10, 3), np.float32)
    with pytest.raises(ValueError, match="n_neighbors=10 must be smaller"):
        compute_knn(X, 10)
    with pytest.raises(ValueError, match="unknown kNN method"):
        compute_knn(X, 2, method="annoy")
    with pytest.raises(ValueError, match="unknown kNN metric"):
        compute_knn(X, 2, metric="manhattan")


def test_check_knn_indices():
    g = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    assert check_knn_indices(g, 4, 2).shape == (4, 2)
    with pytest.raises(ValueError, match="fewer than n_neighbors"):
        check_knn_indices(g, 4, 4)
    with pytest.raises(ValueError, match="rows"):
        check_knn_indices(g, 5)
    with pytest.raises(ValueError, match="outside"):
        check_knn_indices(g + 1, 4)
    with pytest.raises(ValueError, match="integer array"):
        check_knn_indices(g.astype(float), 4)


def test_symmetric_edges_union_without_self_loops():
    g = np.array([[1], [2], [0]])
    heads, tails = symmetric_edges(g, 3)
    assert sorted(zip(heads.tolist(), tails.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    A = scipy.sparse.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]]))
    heads, tails = symmetric_edges(A, 3)
    assert sorted(zip(heads.tolist(), tails.tolist())) == [(0, 1), (1, 0)]


def test_membership_strengths_follow_umap():
    rng = np.random.default_rng(0)
    d = np.sort(rng.uniform(0.5, 3.0, size=(50, 10)), axis=1)
    w = membership_strengths(d)
    assert np.allclose(w[:, 0], 1.0)  # the nearest neighbour has membership 1
    assert np.all((w > 0) & (w <= 1)) and np.all(np.diff(w, axis=1) <= 1e-12)
    assert np.allclose(w.sum(axis=1), np.log2(10), rtol=1e-6)
    # duplicates (all distances equal) stay finite
    assert np.allclose(membership_strengths(np.zeros((3, 4))), 1.0)


def test_membership_strengths_are_solved_row_block_by_block(monkeypatch):
    """Blocks of rows give the weights of one pass over all rows (each row is its own bisection;
    only the σ floor is global), so memory stays bounded without changing the graph."""
    import twinlearn.neighbors.graph as graph

    d = np.sort(np.random.default_rng(1).uniform(0.0, 2.0, size=(1003, 7)), axis=1).astype(np.float32)
    d[5] = 0.0  # a row of duplicates, held up by the floor from the mean of all rows
    whole = membership_strengths(d)
    monkeypatch.setattr(graph, "MEMBERSHIP_CHUNK_ROWS", 100)
    blocked = membership_strengths(d)
    assert whole.dtype == np.float32 and np.array_equal(blocked, whole)
    assert np.allclose(blocked.sum(axis=1)[d[:, -1] > 0], np.log2(7), rtol=1e-5)


def test_fuzzy_union_is_a_plus_at_minus_product():
    idx = np.array([[1, 2], [0, 2], [0, 1]])
    d = np.array([[1.0, 2.0], [1.0, 3.0], [2.0, 3.0]])
    a = membership_strengths(d)
    heads, tails, w = fuzzy_union_edges(idx, d)
    A = np.zeros((3, 3))
    for i in range(3):
        A[i, idx[i]] = a[i]
    expected = A + A.T - A * A.T
    assert np.allclose(w, expected[heads, tails])
    assert sorted(zip(heads.tolist(), tails.tolist())) == [(i, j) for i in range(3) for j in range(3) if i != j]


def test_neighbor_distances_match_the_knn_search():
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    idx, sq = compute_knn(X, 5, method="exact")
    assert np.allclose(neighbor_distances(X, idx, chunk_rows=64), np.sqrt(sq), atol=1e-4)


def test_fuzzy_edges_drop_memberships_that_underflow():
    # duplicates put ρ at 0 and σ at its floor: the other neighbours' memberships underflow
    X = np.repeat(np.random.default_rng(0).normal(size=(30, 4)), 5, axis=0).astype(np.float32)
    idx, sq = compute_knn(X, 15, method="exact")
    heads, tails, w = fuzzy_union_edges(idx, np.sqrt(sq))
    assert np.all(w > 0) and np.all(np.isfinite(w)) and w.dtype == np.float32
    assert len(heads) == len(tails) == len(w) and np.all(heads != tails)


def test_graph_helpers_refuse_bad_input():
    idx = np.array([[1], [0]])
    with pytest.raises(ValueError, match="same \\(n, k\\) shape"):
        fuzzy_union_edges(idx, np.ones((2, 2)))
    with pytest.raises(ValueError, match="finite and non-negative"):
        fuzzy_union_edges(idx, np.array([[np.nan], [1.0]]))
    with pytest.raises(ValueError, match="outside"):
        neighbor_distances(np.zeros((2, 3), np.float32), np.array([[5], [0]]))


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_verbose_fits_show_the_knn_and_graph_steps(method, capsys):
    from twinlearn import CNE

    X = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32)
    CNE(n_epochs=1, knn_method=method, verbose=1, random_state=0).fit(X)
    err = capsys.readouterr().err
    assert "kNN search" in err and "graph weights" in err and "training" in err
    assert ("kNN index" in err) == (method == "hnsw")  # a faiss index is built in chunks too
    CNE(n_epochs=1, knn_method=method, random_state=0).fit(X)
    assert capsys.readouterr().err == ""


def test_the_index_is_freed_before_the_graph_weights_are_built(monkeypatch):
    """The search structure lives only for the graph's search: at 10⁶ points an HNSW graph is
    0.6 GB that would otherwise sit beside the fuzzy union's temporaries (the fit's peak)."""
    import weakref

    import twinlearn.neighbors.graph as graph
    from twinlearn.neighbors import KNNIndex, positive_edges

    X = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    built = []

    def make_index():
        index = KNNIndex("exact").build(X)
        built.append(weakref.ref(index))
        return index

    alive_at_union = []
    real_union = graph.fuzzy_union_edges

    def union(*args, **kwargs):
        alive_at_union.append(built[0]() is not None)
        return real_union(*args, **kwargs)

    monkeypatch.setattr(graph, "fuzzy_union_edges", union)
    heads, tails, weights = positive_edges(X, None, make_index=make_index, n_neighbors=5, fuzzy=True)
    assert alive_at_union == [False] and len(heads) == len(tails) == len(weights) >= 200 * 5
    # a graph given needs no index: none is built
    positive_edges(X, np.argsort(np.random.default_rng(1).random((200, 200)), axis=1)[:, 1:6],
                   make_index=make_index, n_neighbors=5, fuzzy=True)
    assert len(built) == 1


def test_positive_edges_takes_a_built_index_too_and_refuses_neither():
    from twinlearn.neighbors import KNNIndex, positive_edges

    X = np.random.default_rng(2).normal(size=(120, 4)).astype(np.float32)
    built = KNNIndex("exact").build(X)
    by_index = positive_edges(X, None, index=built, n_neighbors=5, fuzzy=True)
    by_factory = positive_edges(X, None, make_index=lambda: KNNIndex("exact").build(X), n_neighbors=5, fuzzy=True)
    for a, b in zip(by_index, by_factory):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="make_index"):
        positive_edges(X, None, n_neighbors=5, fuzzy=True)
