"""Non-parametric CNE on all 70 000 MNIST images with one fixed exact 15-NN graph: how the number
of negatives and the spectrum move kNN accuracy and neighbour recall.

The graph (faiss exact, ~40 s) is computed once and cached in ``benchmarks/out/``; each setting
is one JSON object of ``CNE`` keyword arguments, run one after another:

    PYTHONPATH=src python benchmarks/cne_negatives.py '{"loss_mode": "neg"}' \
        '{"loss_mode": "umap", "negative_samples": 10}' '{"loss_mode": "infonce", "negative_samples": 50}'

Scoring as in ``cne_mnist.py``: 10-NN accuracy (fit on the 60 000 train rows, score the 10 000
test rows) and recall@15 on 5 000 random points.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from twinlearn import CNE
from twinlearn.data import find_shared_data
from twinlearn.metrics import knn_accuracy, knn_recall
from twinlearn.neighbors import compute_knn

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="JSON objects of CNE keyword arguments")
    args = parser.parse_args()
    settings = [json.loads(s) for s in args.settings]
    folder = find_shared_data("mnist.npz")
    if folder is None:
        raise SystemExit("mnist.npz not found: set $TWINLEARN_DATA or put it in ../shared/data")
    with np.load(folder / "mnist.npz") as f:
        X = np.concatenate([f["x_train"], f["x_test"]]).reshape(70000, -1).astype(np.float32) / 255
        y = np.concatenate([f["y_train"], f["y_test"]])
    cache = OUT / "mnist70k_exact_knn15.npy"
    if not cache.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(cache, compute_knn(X, 15, method="exact", metric="euclidean")[0])
    graph = np.load(cache)
    for params in settings:
        start = time.perf_counter()
        Y = CNE(**{"random_state": 0, **params}).fit_transform(X, knn_graph=graph)
        seconds = time.perf_counter() - start
        print(json.dumps({
            "params": params, "seconds_graph_given": round(seconds, 1),
            "knn_acc": round(knn_accuracy(Y[:60000], y[:60000], Y[60000:], y[60000:]), 4),
            "recall15": round(knn_recall(X, Y, 15, sample_size=5000, random_state=0), 4),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }), flush=True)


if __name__ == "__main__":
    main()
