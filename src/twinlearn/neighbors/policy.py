"""Which kNN index ``"auto"`` builds, by the size of the data and a memory budget.

Exact search is quadratic: on this project's 2-core AVX2 host it is the fastest up to
:data:`AUTO_EXACT_MAX` points and hopeless at 400 000 (``benchmarks/knn_scale.py``). Above,
an HNSW graph (vectors + links) is built while it fits the memory budget, else an IVF-PQ
index of compressed codes (its candidates re-ranked from the data itself, which costs no
copy), the largest codes that fit. A budget below the smallest index is a ``ValueError``
before any work.
"""

from __future__ import annotations

import math
import numbers
import os
import re

import torch

from twinlearn.neighbors.faiss_index import (
    HNSW_M,
    PQ_SUBQUANTIZERS,
    hnsw_reduced_dim,
    ivf_lists,
    n_train,
    pq_subquantizers,
)

#: "auto" searches exactly up to this many points (and always on a GPU)
AUTO_EXACT_MAX = 20000
#: compressed indexes, largest codes (best recall) first
_COMPRESSED = tuple(f"ivfpq-{level}" for level in PQ_SUBQUANTIZERS)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory_budget(value: object, name: str = "knn_memory_budget") -> int | None:
    """``None``, a number of bytes, or a string such as ``"512MB"`` / ``"4GiB"``, as bytes."""
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"{name}={value!r} is not a memory size: a number of bytes or e.g. "
                             "'512MB', '4GB', '2GiB' expected")
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be None, a number of bytes or a string like '4GB', got {value!r}")
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return int(value)


def available_memory() -> int:
    """Bytes of RAM available to a new allocation (Linux ``MemAvailable``; elsewhere the free
    pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_memory_budget() -> int:
    """The budget when none is given: half the RAM available now."""
    return available_memory() // 2


def index_bytes(method: str, n: int, d: int, metric: str = "euclidean") -> int:
    """Estimated bytes an index of ``n`` ``d``-dimensional points holds (the search's outputs
    and the data itself not counted).

    Exact and flat: the float32 vectors (the exact search holds a float32 copy). HNSW: the
    vectors (their PCA projection when
    :func:`~twinlearn.neighbors.faiss_index.hnsw_reduced_dim` reduces them, plus the
    projection's training sample, twice: scikit-learn's PCA centres a copy) and ``2·M`` int32
    links per point on its base layer and ~16
    bytes of upper layers and offsets (faiss's serialized size for M=32 is within a few % of
    this). IVF-PQ: one code of ``m`` bytes and an int64 id per point, the centroids and the
    training sample.
    """
    if method in ("exact", "faiss"):
        return 4 * n * d
    if method == "hnsw":
        reduced = hnsw_reduced_dim(d, metric)
        links = n * (2 * HNSW_M * 4 + 16)
        return links + (4 * n * d if reduced is None else 4 * n * reduced + 4 * d * (reduced + 2 * n_train(n, method)))
    m = pq_subquantizers(d, method)
    return n * (m + 8) + 4 * d * (ivf_lists(n) + n_train(n))


def search_bytes(n: int, k: int) -> int:
    """Bytes of the graph a self-search returns: ``k + 1`` int64 indices and float32 distances
    per point while searching."""
    return n * (k + 1) * 12


def choose_knn_method(n: int, d: int, device: torch.device, memory_budget: int | None = None,
                      k: int = 15, metric: str = "euclidean") -> str:
    """The index ``"auto"`` builds for ``n`` points of ``d`` features.

    Exact (torch) up to :data:`AUTO_EXACT_MAX` points or on a GPU, else HNSW while it fits
    ``memory_budget`` (bytes; ``None``: :func:`default_memory_budget`), else the IVF-PQ index
    of the largest codes that fits.

    Raises
    ------
    ValueError
        When not even the smallest index fits the budget; it names the bytes needed.
    """
    budget = default_memory_budget() if memory_budget is None else memory_budget
    exact = n <= AUTO_EXACT_MAX or device.type == "cuda"
    candidates = ("exact",) if exact else ("hnsw", *_COMPRESSED)
    for method in candidates:
        if index_bytes(method, n, d, metric) + search_bytes(n, k) <= budget:
            return method
    check_memory_budget(candidates[-1], n, d, budget, k, metric)
    return candidates[-1]


def check_memory_budget(method: str, n: int, d: int, memory_budget: int | None, k: int = 15,
                        metric: str = "euclidean") -> None:
    """A ``ValueError`` when ``method``'s index and graph for ``n`` points exceed the budget."""
    budget = default_memory_budget() if memory_budget is None else memory_budget
    need = index_bytes(method, n, d, metric) + search_bytes(n, k)
    if need > budget:
        smallest = "" if method == _COMPRESSED[-1] else f" ({_COMPRESSED[-1]!r} is the smallest index)"
        raise ValueError(
            f"the {method!r} kNN index of {n} points x {d} features needs about "
            f"{need / 2**20:.0f} MiB, more than the memory budget (knn_memory_budget) of {budget} "
            f"bytes ({budget / 2**20:.0f} MiB){smallest}; raise the budget, reduce the features "
            "(e.g. PCA) or pass a precomputed knn_graph")
