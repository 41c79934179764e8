"""kNN back-ends on MNIST subsets: recall of the exact neighbours and wall time.

Every back-end of :func:`twinlearn.neighbors.compute_knn` (exact torch, faiss flat, HNSW and
the three IVF-PQ levels that TLDR's ``knn_approximation`` selects) on random subsets of the
MNIST training images (784-d, pixels/255); recall@k is the share of each point's exact k
neighbours that a back-end finds.

    PYTHONPATH=src python benchmarks/knn_backends.py --sizes 3000 20000 --k 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from twinlearn.data import load_mnist
from twinlearn.neighbors import compute_knn

METHODS = ("faiss", "hnsw", "ivfpq-low", "ivfpq-medium", "ivfpq-high")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 20000])
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    x_train = load_mnist()[0]
    rng = np.random.default_rng(0)
    print("| n | method | recall@k | seconds |\n|---|---|---|---|")
    for n in args.sizes:
        X = x_train[rng.choice(len(x_train), n, replace=False)].reshape(n, -1)
        start = time.perf_counter()
        exact, _ = compute_knn(X, args.k, method="exact")
        print(f"| {n} | exact | 1 | {time.perf_counter() - start:.2f} |", flush=True)
        for method in METHODS:
            start = time.perf_counter()
            idx, _ = compute_knn(X, args.k, method=method)
            seconds = time.perf_counter() - start
            recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(idx, exact)])
            print(f"| {n} | {method} | {recall:.3f} | {seconds:.2f} |", flush=True)
            print(json.dumps({"n": n, "method": method, "recall": recall, "seconds": seconds}),
                  file=__import__("sys").stderr)


if __name__ == "__main__":
    main()
