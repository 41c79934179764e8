"""Exact k-nearest neighbours by blocked matrix products in torch (CPU or CUDA)."""

from __future__ import annotations

import torch

from twinlearn.data.arrays import ArrayLike, iter_row_chunks, to_tensor


def _block_distances(q: torch.Tensor, db: torch.Tensor, db_sq: torch.Tensor, metric: str) -> torch.Tensor:
    d = q @ db.T
    if metric == "cosine":
        return d.neg_().add_(1.0)
    # in place: the block is the largest buffer here
    return d.mul_(-2.0).add_((q * q).sum(1, keepdim=True)).add_(db_sq[None, :]).clamp_min_(0.0)


def _prepare(block: ArrayLike, device: torch.device, metric: str) -> torch.Tensor:
    t = to_tensor(block, device)
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    return t


def exact_knn(
    X: ArrayLike,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    device: torch.device = torch.device("cpu"),
    query_block: int = 1024,
    database_block: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_neighbors`` nearest other points of every row of ``X``.

    Each point is excluded from its own list by index (so exact duplicates of a point are
    still found as neighbours). The data is held on ``device`` (a memmap is read block by block
    into it); the working memory on top is O(query_block × database_block), never N × N.

    Returns
    -------
    indices : torch.LongTensor of shape (n, n_neighbors), nearest first
    distances : torch.Tensor of shape (n, n_neighbors); squared Euclidean or cosine distance
    """
    n = X.shape[0]
    k = n_neighbors
    db_blocks = []
    for start, block in zip(range(0, n, database_block), iter_row_chunks(X, database_block)):
        t = _prepare(block, device, metric)
        db_blocks.append((start, t, (t * t).sum(1)))
    all_idx = torch.empty((n, k), dtype=torch.int64, device=device)
    all_dist = torch.empty((n, k), dtype=torch.float32, device=device)
    for q_start in range(0, n, query_block):
        q = db_blocks_slice(db_blocks, q_start, min(q_start + query_block, n))
        rows = torch.arange(q_start, q_start + q.shape[0], device=device)
        best_d = torch.full((q.shape[0], k), float("inf"), device=device)
        best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=device)
        for db_start, db, db_sq in db_blocks:
            d = _block_distances(q, db, db_sq, metric)
            cols = torch.arange(db_start, db_start + db.shape[0], device=device)
            d.masked_fill_(rows[:, None] == cols[None, :], float("inf"))
            kk = min(k, db.shape[0])
            blk_d, blk_i = torch.topk(d, kk, dim=1, largest=False)
            cand_d = torch.cat([best_d, blk_d], dim=1)
            cand_i = torch.cat([best_i, blk_i + db_start], dim=1)
            best_d, order = torch.topk(cand_d, k, dim=1, largest=False)
            best_i = cand_i.gather(1, order)
        all_idx[q_start : q_start + q.shape[0]] = best_i
        all_dist[q_start : q_start + q.shape[0]] = best_d
    return all_idx, all_dist


def db_blocks_slice(blocks: list, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` out of the list of (offset, tensor, sq-norm) database blocks."""
    parts = []
    for offset, t, _ in blocks:
        lo, hi = max(start, offset), min(stop, offset + t.shape[0])
        if lo < hi:
            parts.append(t[lo - offset : hi - offset])
    return parts[0] if len(parts) == 1 else torch.cat(parts)
