"""Contrastive neighbor embeddings of real MNIST: the defaults (UMAP's loss), t-SNE-like
(InfoNCE) and the parametric defaults (NEG on a network that embeds unseen test digits).

Run from the repository root: ``python examples/cne_mnist.py`` (a few minutes on 2 CPU cores;
pass ``--n 70000`` for the full data set). Writes ``cne_mnist.png`` when matplotlib is there.
"""

import argparse
import time

import numpy as np

from twinlearn import CNE
from twinlearn.data import load_mnist
from twinlearn.metrics import knn_accuracy, knn_recall

parser = argparse.ArgumentParser()
parser.add_argument("--n", type=int, default=20000, help="random training digits to embed")
args = parser.parse_args()

x_train, y_train, x_test, y_test = load_mnist()
rng = np.random.default_rng(0)
idx = rng.choice(len(x_train), min(args.n, len(x_train)), replace=False)  # files are sorted by digit
X, y = x_train[idx], y_train[idx]
te = rng.choice(len(x_test), 2000, replace=False)

panels = []
for title, model in [
    ("defaults (UMAP's loss)", CNE(random_state=0)),
    ("InfoNCE (t-SNE-like)", CNE(loss_mode="infonce", random_state=0)),
    ("parametric (NEG)", CNE(parametric=True, random_state=0)),
]:
    start = time.perf_counter()
    Y = model.fit_transform(X)
    seconds = time.perf_counter() - start
    Y_test = model.transform(x_test[te])  # parametric: the network; otherwise optimised placement
    acc = knn_accuracy(Y, y, Y_test, y_test[te])
    rec = knn_recall(X, Y, 15, sample_size=5000)
    print(f"{title:22s} fit {seconds:6.1f} s  held-out 10-NN accuracy {acc:.3f}  recall@15 {rec:.3f}")
    panels.append((title, Y))

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    raise SystemExit(0)
fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5))
for ax, (title, Y) in zip(axes, panels):
    ax.scatter(Y[:, 0], Y[:, 1], c=y, s=0.5, cmap="tab10", rasterized=True)
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.axis("off")
fig.savefig("cne_mnist.png", dpi=100, bbox_inches="tight")
print("wrote cne_mnist.png")
