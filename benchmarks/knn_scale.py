"""kNN back-ends at scale: where exact search stops paying, HNSW recall and memory at large n.

Data: random MNIST subsets (784-d, pixels/255) and "deformed MNIST" at 50 dimensions: every
point a random MNIST image shifted by up to ±2 pixels in x and y, projected on the first 50
principal components of the plain images (a stand-in for a large descriptor set).

For each set: exact torch and faiss flat are timed on ``--queries`` random rows against the
whole set and extrapolated linearly to all rows (their cost is linear in the number of
queries; at 400 000 points a full exact search takes far longer than the benchmark); HNSW
(M=32) and IVF-PQ are built and searched in full. Recall@k is over the same query rows, against
the exact neighbours. Memory: the faiss index's serialized size (its vectors and links) next to
the estimate of :func:`twinlearn.neighbors.policy.index_bytes` (which counts IVF-PQ's
transient training sample too).

    PYTHONPATH=src python benchmarks/knn_scale.py --sets mnist-20000 mnist-70000 deformed-200000 deformed-400000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine_info, save_json  # noqa: E402

from twinlearn.data import load_mnist  # noqa: E402
from twinlearn.neighbors.exact import _database, _nearest  # noqa: E402
from twinlearn.neighbors.faiss_index import build_faiss_index, drop_self, search_faiss  # noqa: E402


def deformed_mnist(n: int, d: int, seed: int = 0) -> np.ndarray:
    """``n`` shifted MNIST images projected on ``d`` principal components (float32)."""
    images = load_mnist(flatten=False)[0]
    rng = np.random.default_rng(seed)
    flat = images.reshape(len(images), -1)
    mean = flat.mean(0)
    _, _, vt = np.linalg.svd(flat[rng.choice(len(flat), 10000, replace=False)] - mean, full_matrices=False)
    basis = vt[:d].T.astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 20000):
        m = min(20000, n - start)
        batch = images[rng.integers(0, len(images), m)].copy()
        for dx, dy in {(int(a), int(b)) for a, b in rng.integers(-2, 3, (25, 2))}:
            pick = rng.random(m) < 0.04
            batch[pick] = np.roll(batch[pick], (dy, dx), axis=(1, 2))
        out[start:start + m] = (batch.reshape(m, -1) - mean) @ basis
    return out


def dataset(name: str) -> np.ndarray:
    kind, n = name.rsplit("-", 1)
    if kind == "mnist":  # train and test images together: up to 70 000
        x = np.concatenate(load_mnist()[::2])
        return np.ascontiguousarray(x[np.random.default_rng(0).choice(len(x), int(n), replace=False)])
    return deformed_mnist(int(n), 50)


def exact_on_queries(X: np.ndarray, rows: np.ndarray, k: int) -> tuple[float, float]:
    """Seconds of the torch exact search's set-up, and of its search for ``rows`` against all
    of ``X``."""
    start = time.perf_counter()
    db = _database(X, torch.device("cpu"), "euclidean", 16384)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for s in range(0, len(rows), 1024):
        # the query offset only masks self-matches; the sampled rows are not contiguous, so pass
        # an offset past the data (nothing masked; the timing is what is measured)
        _nearest(torch.from_numpy(X[rows[s:s + 1024]]), X.shape[0], db, k + 1, "euclidean")
    return setup, time.perf_counter() - start


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def run_set(name: str, k: int, n_queries: int, ef_values: list[int]) -> list[dict]:
    from twinlearn.neighbors.policy import index_bytes

    X = dataset(name)
    n, d = X.shape
    rows = np.sort(np.random.default_rng(1).choice(n, n_queries, replace=False))
    out = []
    setup, t = exact_on_queries(X, rows, k)
    out.append({"set": name, "method": "exact", "seconds": setup + t * n / n_queries, "extrapolated": True})
    start = time.perf_counter()
    flat = build_faiss_index(X, method="flat", k=k + 1)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    truth, _ = drop_self(*search_faiss(flat, X[rows], k + 1), k, query_ids=rows)
    t = time.perf_counter() - start
    out.append({"set": name, "method": "faiss", "seconds": setup + t * n / n_queries, "extrapolated": True})
    del flat
    for method in ("hnsw", "ivfpq-medium"):
        import faiss

        start = time.perf_counter()
        index = build_faiss_index(X, method=method, k=k + 1)
        built = time.perf_counter() - start
        size = len(faiss.serialize_index(index))
        settings = ef_values if method == "hnsw" else [None]
        for ef in settings:
            if ef is not None:
                index.hnsw.efSearch = ef
            start = time.perf_counter()
            database = X if method.startswith("ivfpq") else None  # re-ranked, as KNNIndex does
            found, _ = drop_self(*search_faiss(index, X, k + 1, database=database), k)
            searched = time.perf_counter() - start
            out.append({"set": name, "method": method, "efSearch": ef, "build_s": built,
                        "search_s": searched, "seconds": built + searched,
                        "recall": recall(found[rows], truth), "faiss_bytes": size,
                        "estimate_bytes": index_bytes(method, n, d)})
        del index
    for row in out:
        print(row, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["mnist-20000", "mnist-70000"])
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--ef", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    rows = [r for name in args.sets for r in run_set(name, args.k, args.queries, args.ef)]
    print("| set | method | efSearch | seconds (build + search) | recall@k | index MB (faiss / estimate) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        extra = "(extrapolated)" if r.get("extrapolated") else f"({r['build_s']:.1f} + {r['search_s']:.1f})"
        mem = (f"{r['faiss_bytes'] / 2**20:.0f} / {r['estimate_bytes'] / 2**20:.0f}"
               if "faiss_bytes" in r else "")
        print(f"| {r['set']} | {r['method']} | {r.get('efSearch') or ''} | {r['seconds']:.1f} {extra} | "
              f"{r.get('recall', 1.0):.3f} | {mem} |")
    save_json("knn_scale", {"command": command_line(), "machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
