"""TLDR on real MNIST (60 000 train digits): 10-NN accuracy and recall@10 against PCA.

Run from the repository root: ``python examples/tldr_mnist.py`` (a few minutes on 2 CPU cores).
"""

import time

from sklearn.decomposition import PCA

from twinlearn import TLDR
from twinlearn.data import load_mnist
from twinlearn.metrics import knn_accuracy, knn_recall

x_train, y_train, x_test, y_test = load_mnist()
for d in (8, 16):
    start = time.perf_counter()
    tldr = TLDR(n_components=d, encoder="mlp-1-512", projector="mlp-1-512", precision="bf16",
                random_state=0, verbose=1)
    tldr.fit(x_train, epochs=10)
    seconds = time.perf_counter() - start
    pca = PCA(d, random_state=0).fit(x_train)
    for name, f in (("TLDR", tldr.transform), ("PCA", pca.transform)):
        z_train, z_test = f(x_train), f(x_test)
        acc = knn_accuracy(z_train, y_train, z_test, y_test, n_neighbors=10)
        rec = knn_recall(x_test, z_test, n_neighbors=10)
        extra = f"  (fit {seconds:.0f} s)" if name == "TLDR" else ""
        print(f"d={d:3d} {name:5s} 10-NN accuracy {acc:.3f}  recall@10 {rec:.3f}{extra}")
