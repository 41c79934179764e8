"""Bounded memory: transform and kNN never hold an N-sized intermediate beyond the data itself."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from twinlearn import TLDR
from twinlearn.neighbors import exact_knn

STATUS = Path("/proc/self/status")
pytestmark = pytest.mark.skipif(not STATUS.exists(), reason="needs /proc (Linux) to read RssAnon")


def _rss_anon_mb() -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon")


def peak_extra_mb(call) -> float:
    """Peak anonymous (non-file-backed) memory above the level before ``call``, in MB."""
    base, peak, done = _rss_anon_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon_mb())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        call()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _rss_anon_mb()) - base


def _memmap(path, n, d, seed=0):
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, d))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):
        mm[start : start + 50_000] = rng.normal(size=(min(50_000, n - start), d))
    mm.flush()
    return np.memmap(path, dtype=np.float32, mode="r", shape=(n, d))


def test_transform_memory_does_not_grow_with_n(tmp_path):
    d = 64
    model = TLDR(n_components=2, projector="mlp-1-16", n_epochs=1, batch_size=64, random_state=0)
    model.fit(np.random.default_rng(0).normal(size=(500, d)).astype(np.float32))
    small, big = _memmap(tmp_path / "s.dat", 40_000, d), _memmap(tmp_path / "b.dat", 400_000, d)
    model.transform(small)  # warm-up: allocator pools, lazy imports
    extra_small = peak_extra_mb(lambda: model.transform(small))
    extra_big = peak_extra_mb(lambda: model.transform(big))
    big_input_mb = big.nbytes / 2**20  # ~98 MB, never loaded whole
    assert extra_big < 0.35 * big_input_mb, (extra_small, extra_big)
    assert extra_big < 10 * max(extra_small, 1.0), (extra_small, extra_big)


def test_exact_knn_memory_is_bounded_by_its_blocks():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(40_000, 16)).astype(np.float32))
    blocks = dict(query_block=512, database_block=4096)
    exact_knn(X[:5000], 5, **blocks)
    small = peak_extra_mb(lambda: exact_knn(X[:4000], 5, **blocks))
    big = peak_extra_mb(lambda: exact_knn(X, 5, **blocks))
    block_mb = 512 * 4096 * 4 / 2**20  # 8 MB per distance block
    quadratic_mb = 40_000**2 * 4 / 2**20  # ~6 GB for an N×N distance matrix
    assert big < 12 * block_mb, (small, big)
    assert big < quadratic_mb / 50


def advice_now() -> bool:
    """Whether NumPy currently advises huge pages for large arrays (left as it was)."""
    from numpy._core.multiarray import _set_madvise_hugepage

    before = _set_madvise_hugepage(False)
    _set_madvise_hugepage(before)
    return before


def test_cne_fits_without_numpys_huge_page_advice_and_restores_it():
    # partly filled arrays on 2 MB pages cost 1.7 GB of peak RSS at 10^6 points (RESULTS.md)
    from numpy._core.multiarray import _set_madvise_hugepage

    from twinlearn import CNE

    seen = []
    before = _set_madvise_hugepage(True)
    try:
        CNE(n_epochs=2, batch_size=16, n_neighbors=3, random_state=0).fit(
            np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32),
            callbacks=[lambda trainer, epoch, loss: seen.append(advice_now())])
        assert seen == [False, False] and advice_now() is True
    finally:
        _set_madvise_hugepage(before)


def test_tldr_searches_its_knn_without_numpys_huge_page_advice(monkeypatch):
    from numpy._core.multiarray import _set_madvise_hugepage

    from twinlearn.neighbors import KNNIndex

    seen, build = [], KNNIndex.build
    monkeypatch.setattr(KNNIndex, "build", lambda self, X: (seen.append(advice_now()), build(self, X))[1])
    before = _set_madvise_hugepage(True)
    try:
        TLDR(n_components=2, projector="mlp-1-16", n_epochs=1, batch_size=8, n_neighbors=3,
             random_state=0).compute_knn(np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32))
        assert seen == [False] and advice_now() is True
    finally:
        _set_madvise_hugepage(before)
