"""Nested (Matryoshka) TLDR vs TLDR trained per dimension vs PCA on MNIST.

One ``TLDR(n_components=64, nesting_dims=[8, 16, 32, 64])`` model is compared, at each prefix
size d, with a TLDR trained for d alone and with PCA-d: 10-NN accuracy (train embedding →
test embedding) and recall@10 of the test points' input-space neighbours.

    PYTHONPATH=src python benchmarks/mrl_tldr_mnist.py --epochs 10 --out benchmarks/results
    PYTHONPATH=src python benchmarks/mrl_tldr_mnist.py --encoder mlp-1-512 --projector mlp-1-512 \
        --learning-rate 1.6 --n-neighbors 20 --epochs 10      # the documented fast setting
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from twinlearn import TLDR
from twinlearn.data import load_mnist
from twinlearn.metrics import knn_accuracy, knn_recall
from twinlearn.neighbors import compute_knn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--projector", default="mlp-1-256")
    parser.add_argument("--encoder", default="linear")
    parser.add_argument("--learning-rate", type=float, default=None, help="TLDR's base LR (default 0.2)")
    parser.add_argument("--n-neighbors", type=int, default=5)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--n-train", type=int, default=60000, help="random subset size (<= 60000)")
    parser.add_argument("--recall-sample", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=["nested", "single", "pca"],
                        choices=["nested", "single", "pca"], help="run only some (to split a run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = load_mnist()
    if args.n_train < len(x_train):
        keep = np.random.default_rng(0).choice(len(x_train), args.n_train, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    t0 = time.perf_counter()
    knn, _ = compute_knn(x_train, args.n_neighbors, method="faiss")
    knn_seconds = time.perf_counter() - t0
    params = dict(encoder=args.encoder, projector=args.projector, n_epochs=args.epochs,
                  batch_size=args.batch_size, precision=args.precision, n_neighbors=args.n_neighbors,
                  random_state=0)
    if args.learning_rate is not None:
        params["learning_rate"] = args.learning_rate

    def scores(train_emb: np.ndarray, test_emb: np.ndarray) -> dict[str, float]:
        return {
            "knn_acc": knn_accuracy(train_emb, y_train, test_emb, y_test, n_neighbors=10),
            "recall10": knn_recall(x_test, test_emb, 10, sample_size=args.recall_sample),
        }

    rows: list[dict] = []
    full = max(args.dims)
    for d in args.dims if "nested" in args.methods else []:
        if d == args.dims[0]:
            t0 = time.perf_counter()
            nested = TLDR(n_components=full, nesting_dims=args.dims, **params).fit(x_train, knn_graph=knn)
            nested_seconds = time.perf_counter() - t0
        rows.append({"method": "nested TLDR prefix", "d": d, "fit_s": nested_seconds,
                     **scores(nested.transform(x_train, n_components=d),
                              nested.transform(x_test, n_components=d))})
        print(rows[-1], flush=True)
    for d in args.dims if "single" in args.methods else []:
        t0 = time.perf_counter()
        single = TLDR(n_components=d, **params).fit(x_train, knn_graph=knn)
        rows.append({"method": "TLDR trained for d", "d": d, "fit_s": time.perf_counter() - t0,
                     **scores(single.transform(x_train), single.transform(x_test))})
        print(rows[-1], flush=True)
    for d in args.dims if "pca" in args.methods else []:
        t0 = time.perf_counter()
        pca = PCA(d, random_state=0).fit(x_train)
        rows.append({"method": "PCA", "d": d, "fit_s": time.perf_counter() - t0,
                     **scores(pca.transform(x_train), pca.transform(x_test))})
        print(rows[-1], flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "knn_s": knn_seconds,
              "machine": f"{platform.machine()} {platform.processor()} ({__import__('os').cpu_count()} cpus)",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    (args.out / "mrl_tldr_mnist.json").write_text(json.dumps(record, indent=2))
    print("| d | nested prefix 10-NN acc | per-d TLDR 10-NN acc | PCA 10-NN acc | nested recall@10 | per-d recall@10 | PCA recall@10 |")
    print("|---|---|---|---|---|---|---|")
    by = {(r["method"], r["d"]): r for r in rows}
    nan = {"knn_acc": float("nan"), "recall10": float("nan")}
    for d in args.dims:
        n, s, p = (by.get((m, d), nan) for m in ("nested TLDR prefix", "TLDR trained for d", "PCA"))
        print(f"| {d} | {n['knn_acc']:.4f} | {s['knn_acc']:.4f} | {p['knn_acc']:.4f} | "
              f"{n['recall10']:.4f} | {s['recall10']:.4f} | {p['recall10']:.4f} |")


if __name__ == "__main__":
    main()
