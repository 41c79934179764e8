"""TLDR on real MNIST (60 000 train digits) in its fast setting: 10-NN accuracy and recall@10
against PCA, with fit times.

The fast setting (see benchmarks/RESULTS.md, "Time to quality") replaces the original's
``mlp-2-2048`` projector and 100 epochs by a ``mlp-1-512`` projector, bfloat16 autocast, a
4× higher base learning rate, more neighbours and a few epochs. The original defaults stay
the defaults of ``TLDR()``.

Run from the repository root: ``python examples/tldr_mnist.py`` (a few minutes on 2 CPU cores;
on a machine shared with other jobs, ``OMP_NUM_THREADS=1`` is much faster).
"""

import time

from sklearn.decomposition import PCA

from twinlearn import TLDR
from twinlearn.data import load_mnist
from twinlearn.metrics import knn_accuracy, knn_recall

FAST = dict(projector="mlp-1-512", precision="bf16", learning_rate=1.6, n_neighbors=20, random_state=0)
SETTINGS = {
    "TLDR linear": dict(encoder="linear", n_epochs=20, **FAST),
    "TLDR mlp-1-512": dict(encoder="mlp-1-512", n_epochs=5, **FAST),
}
DIMS = {"TLDR linear": (8,), "TLDR mlp-1-512": (8, 16)}

x_train, y_train, x_test, y_test = load_mnist()
start = time.perf_counter()
# one exact Euclidean kNN graph of the training set, shared by every fit below
graph = TLDR(n_neighbors=FAST["n_neighbors"]).compute_knn(x_train).get_knn()
print(f"kNN graph of {len(x_train)} points: {time.perf_counter() - start:.0f} s")


def report(name: str, d: int, fit_seconds: float, transform) -> None:
    z_train, z_test = transform(x_train), transform(x_test)
    acc = knn_accuracy(z_train, y_train, z_test, y_test, n_neighbors=10)
    rec = knn_recall(x_test, z_test, n_neighbors=10)
    print(f"d={d:3d} {name:15s} 10-NN accuracy {acc:.3f}  recall@10 {rec:.3f}  fit {fit_seconds:5.1f} s")


for d in sorted({d for dims in DIMS.values() for d in dims}):
    start = time.perf_counter()
    pca = PCA(d, random_state=0).fit(x_train)
    report("PCA", d, time.perf_counter() - start, pca.transform)
    for name, params in SETTINGS.items():
        if d in DIMS[name]:
            start = time.perf_counter()
            tldr = TLDR(n_components=d, **params).fit(x_train, knn_graph=graph)
            report(name, d, time.perf_counter() - start, tldr.transform)
