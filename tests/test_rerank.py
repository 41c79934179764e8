"""Exact re-ranking of approximate candidates: the compiled loop over rows in place against a
plain computation, the gathered path of other databases, -1 candidates, near duplicates."""

import numpy as np
import pytest
import torch

from twinlearn.neighbors import rerank as rerank_module
from twinlearn.neighbors.rerank import rerank


def _expected(q, X, cand, k, metric):
    """Brute force: every candidate's score, sorted (stable), -1 and +inf for missing ones."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True) if metric == "cosine" else X
    rows = Xn[np.maximum(cand, 0)].astype(np.float64)
    if metric == "euclidean":
        cost = ((rows - q[:, None, :].astype(np.float64)) ** 2).sum(-1)
    else:
        cost = -(rows * q[:, None, :]).sum(-1)
    cost[cand < 0] = np.inf
    order = np.argsort(cost, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(cost, order, 1)
    return np.where(np.isinf(best), -1, np.take_along_axis(cand, order, 1)), best


@pytest.mark.parametrize("metric", ["euclidean", "inner_product", "cosine"])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_and_gathered_scores_equal_brute_force(metric, threads, monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 33)).astype(np.float32)
    q = rng.normal(size=(300, 33)).astype(np.float32)
    if metric == "cosine":
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    cand = rng.integers(0, 700, size=(300, 12))
    cand[::7, -3:] = -1  # too few candidates for some queries
    cand[5, :] = -1
    want_idx, want_cost = _expected(q, X, cand, 5, metric)
    monkeypatch.setattr(rerank_module, "QUERY_BLOCK", 64)  # several blocks per thread
    compiled = rerank(q, X, cand, 5, metric, n_threads=threads)
    monkeypatch.setattr(rerank_module, "_compiled", lambda database: False)
    gathered = rerank(q, X, cand, 5, metric)
    for idx, score in (compiled, gathered):
        assert idx.dtype == np.int64 and score.dtype == np.float32
        np.testing.assert_array_equal(idx, want_idx)
        finite = np.isfinite(want_cost)
        sign = 1 if metric == "euclidean" else -1
        np.testing.assert_allclose(score[finite], sign * want_cost[finite], rtol=1e-5, atol=1e-5)
    assert (compiled[0][5] == -1).all()


def test_near_duplicates_keep_their_tiny_distances():
    # |v|² - 2 v·q + |q|² of rows ~100 long loses distances below ~1e-3 to rounding
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(50, 64)) * 15).astype(np.float32)
    q = X[:10] + np.float32(1e-3)
    cand = np.tile(np.arange(50), (10, 1))
    idx, dist = rerank(q, X, cand, 1, "euclidean")
    np.testing.assert_array_equal(idx[:, 0], np.arange(10))
    np.testing.assert_allclose(dist[:, 0], 64 * 1e-6, rtol=0.05)


def test_a_memmap_is_scored_in_place_and_a_tensor_by_gathering(tmp_path, monkeypatch):
    X = np.random.default_rng(2).normal(size=(200, 8)).astype(np.float32)
    stored = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    stored[:] = X
    cand = np.random.default_rng(3).integers(0, 200, size=(40, 6))
    expected = rerank(X[:40], X, cand, 3, "euclidean")
    gathered = []
    real = rerank_module._gathered_costs
    monkeypatch.setattr(rerank_module, "_gathered_costs", lambda *a: gathered.append(1) or real(*a))
    for database, gathers in ((stored, False), (torch.from_numpy(X), True)):
        gathered.clear()
        idx, dist = rerank(X[:40], database, cand, 3, "euclidean")
        np.testing.assert_array_equal(idx, expected[0])
        np.testing.assert_allclose(dist, expected[1], rtol=1e-5)
        assert bool(gathered) == gathers


def test_a_candidate_beyond_the_database_is_refused_before_reading():
    X = np.zeros((10, 4), np.float32)
    with pytest.raises(ValueError, match="beyond the database"):
        rerank(X[:2], X, np.array([[1, 10]]), 1, "euclidean")
