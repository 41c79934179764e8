"""TLDR's kNN default, old against new, in one run: ``knn_method="exact"`` vs ``"auto"``.

MNIST train (60 000 × 784, pixels/255) embedded to 32 dimensions, the same settings and seed
for both; the kNN graph is timed on its own (``compute_knn``), then ``fit`` trains on it.
Reported: kNN seconds, the share of the exact graph the method found, fit seconds, recall@10
of the 784-d neighbours in the test embedding (``twinlearn.metrics.knn_recall`` on the 10 000
test points) and 10-NN accuracy (train embedding → test labels).

    PYTHONPATH=src python benchmarks/knn_tldr_default.py --epochs 5 --projector mlp-1-512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine_info, save_json  # noqa: E402

from twinlearn import TLDR  # noqa: E402
from twinlearn.data import load_mnist  # noqa: E402
from twinlearn.metrics import knn_accuracy, knn_recall  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--projector", default="mlp-2-2048")
    parser.add_argument("--learning-rate", type=float, default=0.2)
    parser.add_argument("--n-train", type=int, default=60000)
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_mnist()
    if args.n_train < len(x_train):  # a random subset (the file is sorted by digit)
        keep = np.random.default_rng(0).choice(len(x_train), args.n_train, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    rows, graphs = [], {}
    for method in ("exact", "auto"):
        model = TLDR(n_components=32, knn_method=method, n_epochs=args.epochs, random_state=0,
                     projector=args.projector, learning_rate=args.learning_rate)
        start = time.perf_counter()
        graphs[method] = model.compute_knn(x_train).knn_indices_
        knn_s = time.perf_counter() - start
        start = time.perf_counter()
        model.fit(x_train)
        fit_s = time.perf_counter() - start
        z_train, z_test = model.transform(x_train), model.transform(x_test)
        graph_recall = float(np.mean([len(set(a) & set(b)) / graphs["exact"].shape[1]
                                      for a, b in zip(graphs[method], graphs["exact"])]))
        rows.append({"knn_method": method, "knn_s": knn_s, "graph_recall": graph_recall,
                     "graph_dtype": str(graphs[method].dtype), "fit_s": fit_s,
                     "recall@10": knn_recall(x_test, z_test, 10),
                     "10nn_acc": knn_accuracy(z_train, y_train, z_test, y_test, 10)})
        print(rows[-1], flush=True)
    print("| knn_method | kNN s | share of exact graph | fit s | recall@10 | 10-NN acc |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['knn_method']} | {r['knn_s']:.1f} | {r['graph_recall']:.4f} | {r['fit_s']:.1f} | "
              f"{r['recall@10']:.4f} | {r['10nn_acc']:.4f} |")
    save_json("knn_tldr_default", {"command": command_line(), "machine": machine_info(), "args": vars(args),
                                   "rows": rows})


if __name__ == "__main__":
    main()
