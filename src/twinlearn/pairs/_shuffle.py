"""An epoch's edge order on a CPU, compiled: keep each edge with its probability and shuffle
the kept ones in one pass over the edges and one within cache-sized buckets.

A plain ``randperm`` of 10⁷ edges swaps entries across ~60 MB, a cache miss per swap; with
the Bernoulli draw, its compaction, the gather of the edges and the transpose into heads and
tails, an epoch's order took 0.85–0.99 s at 10⁶ points (2.2·10⁷ edges), ~20 % of the epoch. Here
each kept edge gets a uniform random bucket of ~4 096 entries and a counting sort places it
(sequential reads, writes into a few thousand streams), and a Fisher–Yates shuffle within each
bucket finishes a uniformly random order (sorting by i.i.d. bucket, then uniformly within
buckets): 0.52–0.60 s for the same edges (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import numba
import numpy as np

#: edges per bucket (two int32 arrays of it: ~32 KB, in L1/L2 while it is shuffled)
BUCKET_EDGES = 4096
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@numba.njit(inline="always")
def _uniform(seed, i):  # pragma: no cover - compiled
    """The ``i``-th uniform in [0, 1) of stream ``seed`` (SplitMix64: a counter hashed, so
    no state to carry and every pass can draw where it needs)."""
    z = seed + np.uint64(i + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(nogil=True, cache=True)
def _bucket_counts(keep, n, seed, n_buckets):  # pragma: no cover - compiled
    """Each edge's bucket (``n_buckets``: dropped) and the buckets' start offsets. A kept
    edge's ``u / p`` is uniform given ``u < p``: one draw decides both."""
    label = np.empty(n, np.int32)
    start = np.zeros(n_buckets + 2, np.int64)
    weighted = keep.shape[0] > 0
    for i in range(n):
        u = _uniform(seed, i)
        if weighted:
            b = min(int(u / keep[i] * n_buckets), n_buckets - 1) if u < keep[i] else n_buckets
        else:
            b = min(int(u * n_buckets), n_buckets - 1)
        label[i] = b
        start[b + 1] += 1
    for b in range(n_buckets + 1):
        start[b + 1] += start[b]
    return label, start


@numba.njit(nogil=True, cache=True)
def _shuffled_edges(edges, keep, n_out, seed):  # pragma: no cover - compiled
    """``n_out`` edges (rows of ``edges``) in a uniformly random order, as ``(heads, tails)``:
    each edge kept with probability ``keep[i]`` (all of them if ``keep`` is empty), the kept
    ones shuffled, cut to ``n_out`` or, if fewer, repeated in that order."""
    n = edges.shape[0]
    expected = n_out if keep.shape[0] > 0 else n
    n_buckets = expected // BUCKET_EDGES + 1
    label, start = _bucket_counts(keep, n, seed, n_buckets)
    total = start[n_buckets]
    heads = np.empty(max(total, n_out), edges.dtype)
    tails = np.empty(max(total, n_out), edges.dtype)
    fill = start[:n_buckets].copy()
    for i in range(n):
        b = label[i]
        if b < n_buckets:
            heads[fill[b]], tails[fill[b]] = edges[i, 0], edges[i, 1]
            fill[b] += 1
    second = seed ^ _MIX2
    for b in range(n_buckets):
        low = start[b]
        for j in range(start[b + 1] - 1, low, -1):
            k = low + min(int(_uniform(second, j) * (j - low + 1)), j - low)
            heads[j], heads[k] = heads[k], heads[j]
            tails[j], tails[k] = tails[k], tails[j]
    for j in range(total, n_out):  # fewer kept than an epoch holds: repeats, in order
        heads[j], tails[j] = heads[j % total], tails[j % total]
    return heads[:n_out], tails[:n_out]


def shuffled_edges(edges: np.ndarray, keep: np.ndarray | None, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An epoch of ``n_out`` edges from ``edges`` (an ``(n, 2)`` integer array) in random
    order: every edge once (``keep=None``; ``n_out`` must then be ``n``), or each kept with
    probability ``keep[i]`` (the heaviest has 1, so at least one is), cut to ``n_out`` or
    repeated up to it. ``seed`` (any int) fixes the result."""
    probabilities = np.empty(0, np.float32) if keep is None else keep
    return _shuffled_edges(edges, probabilities, n_out, np.uint64(seed % 2**64))
