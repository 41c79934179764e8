"""Exact kNN of a memmap on the CPU reads it from disk block by block: no float32 (or
normalised) copy of the whole file in RAM, and the same neighbours as for the data in memory."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_memory import STATUS

import twinlearn
from twinlearn.neighbors import exact_knn

pytestmark = pytest.mark.skipif(not STATUS.exists(), reason="needs /proc (Linux) to read RssAnon")

N, D = 256, 2**14  # few rows (the search costs N²·D) but a 16 MB float32 file
#: (dtype, metric) of the memmap: each would have been copied whole
CASES = [("float32", "cosine"), ("float64", "euclidean")]
#: run in a fresh process whose malloc hands every freed block of 128 KB or more back to the
#: system at once (a fixed mmap threshold), so that RssAnon follows the live memory rather than
#: what the allocator keeps; prints the peak extra MB of each case. One torch thread: on a
#: loaded machine two spinning threads made the 256 small blocks 20x slower
MEASURE = """
import sys
import numpy as np
import torch
from test_memory import peak_extra_mb
from twinlearn.neighbors import exact_knn
torch.set_num_threads(1)
blocks = dict(query_block=16, database_block=16)  # 1 MB each
for path, dtype, metric in zip(*[iter(sys.argv[1:])] * 3):
    X = np.memmap(path, dtype=dtype, mode="r", shape=({n}, {d}))
    exact_knn(X[:48], 5, metric=metric, **blocks)  # warm-up: BLAS buffers, lazy imports
    print(peak_extra_mb(lambda: exact_knn(X, 5, metric=metric, **blocks)))
"""


def _peak_extra_mb_in_a_fresh_process(args: list[str]) -> list[float]:
    paths = [str(Path(twinlearn.__file__).parents[1]), str(Path(__file__).parent)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-c", MEASURE.format(n=N, d=D), *args], env=env,
                          capture_output=True, text=True, check=True, timeout=300)
    return [float(line) for line in done.stdout.split()]


def test_exact_knn_of_a_memmap_does_not_copy_it(tmp_path):
    data, args = {}, []
    for dtype, metric in CASES:
        path = tmp_path / f"{dtype}.dat"
        data[dtype] = np.random.default_rng(0).normal(size=(N, D)).astype(dtype)
        data[dtype].tofile(path)
        args += [str(path), dtype, metric]
    copy_mb = N * D * 4 / 2**20
    for (dtype, metric), extra in zip(CASES, _peak_extra_mb_in_a_fresh_process(args)):
        assert extra < 0.4 * copy_mb, (dtype, metric, extra, copy_mb)

    for dtype, metric in CASES:  # the same neighbours as in memory (on 96 rows: quicker)
        X = np.memmap(tmp_path / f"{dtype}.dat", dtype=dtype, mode="r", shape=(N, D))[:96]
        idx, dist = exact_knn(X, 5, metric=metric, query_block=32, database_block=32)
        ref_idx, ref_dist = exact_knn(torch.from_numpy(data[dtype][:96].astype(np.float32)), 5, metric=metric)
        torch.testing.assert_close(dist, ref_dist)
        assert (idx == ref_idx).float().mean() > 0.99  # (ties aside)
