"""Exact k-nearest neighbours by blocked matrix products in torch (CPU or CUDA)."""

from __future__ import annotations

import torch

from twinlearn._progress import progress
from twinlearn.data.arrays import ArrayLike, to_tensor
from twinlearn.data.disk import is_out_of_core

#: a database block: (first row, its rows, their squared norms). The rows are a prepared tensor,
#: or their slice of the data when an on-disk array is searched from disk
_Block = tuple[int, torch.Tensor | slice, torch.Tensor]


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


def _database(X: ArrayLike, device: torch.device, metric: str, block_rows: int) -> list[_Block]:
    """The database blocks. They are held on ``device``, except for an on-disk array (memmap,
    HDF5, zarr) searched on the CPU: a prepared (float32, normalised) copy would cost RAM for the
    whole file, so its blocks are read from disk again for every query block (only their
    slices are kept), which the matrix products, ``query_block`` times more work, hide."""
    from_disk = is_out_of_core(X) and device.type == "cpu"
    blocks = []
    for start in range(0, X.shape[0], block_rows):
        t = _prepare(X[start : start + block_rows], device, metric)
        blocks.append((start, slice(start, start + t.shape[0]) if from_disk else t, (t * t).sum(1)))
    return blocks


def _nearest(
    q: torch.Tensor, q_start: int, X: ArrayLike, database: list[_Block], k: int, metric: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest database rows of the query rows ``q`` (rows ``q_start..`` of the data,
    each excluded from its own list); blocks kept as slices are read from ``X``."""
    device = q.device
    rows = torch.arange(q_start, q_start + q.shape[0], device=device)
    best_d = torch.full((q.shape[0], k), float("inf"), device=device)
    best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=device)
    for db_start, block, db_sq in database:
        db = block if isinstance(block, torch.Tensor) else _prepare(X[block], device, metric)
        d = _block_distances(q, db, db_sq, metric)
        cols = torch.arange(db_start, db_start + db.shape[0], device=device)
        d.masked_fill_(rows[:, None] == cols[None, :], float("inf"))
        blk_d, blk_i = torch.topk(d, min(k, db.shape[0]), dim=1, largest=False)
        cand_d = torch.cat([best_d, blk_d], dim=1)
        cand_i = torch.cat([best_i, blk_i + db_start], dim=1)
        best_d, order = torch.topk(cand_d, k, dim=1, largest=False)
        best_i = cand_i.gather(1, order)
    return best_i, best_d


def exact_knn(
    X: ArrayLike,
    n_neighbors: int,
    *,
    metric: str = "euclidean",
    device: torch.device = torch.device("cpu"),
    query_block: int = 1024,
    database_block: int = 16384,
    show_progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_neighbors`` nearest other points of every row of ``X`` (``show_progress``: a
    bar over the query blocks).

    Each point is excluded from its own list by index (so exact duplicates of a point are
    still found as neighbours). The data is held on ``device`` (an on-disk array is read block
    by block into it), except that an on-disk array searched on the CPU stays on disk and is
    read block by block for each query block; the working memory on top is O(query_block × database_block), never
    N × N.

    Returns
    -------
    indices : torch.LongTensor of shape (n, n_neighbors), nearest first
    distances : torch.Tensor of shape (n, n_neighbors); squared Euclidean or cosine distance
    """
    n = X.shape[0]
    database = _database(X, device, metric, database_block)
    all_idx = torch.empty((n, n_neighbors), dtype=torch.int64, device=device)
    all_dist = torch.empty((n, n_neighbors), dtype=torch.float32, device=device)
    starts = range(0, n, query_block)
    for q_start in progress(starts, show_progress, "kNN search", unit="block"):
        q = _prepare(X[q_start : q_start + query_block], device, metric)
        best_i, best_d = _nearest(q, q_start, X, database, n_neighbors, metric)
        all_idx[q_start : q_start + q.shape[0]] = best_i
        all_dist[q_start : q_start + q.shape[0]] = best_d
    return all_idx, all_dist
