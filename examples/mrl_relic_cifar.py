"""Matryoshka ReLIC on a small CIFAR-10 subset, then nested TLDR on MNIST digits.

Run from the repository root: ``python examples/mrl_relic_cifar.py`` (~10 minutes on 2 CPU
cores; on a GPU pass ``device="cuda"``, ``backbone="resnet18"`` and more images and epochs).
"""

import numpy as np

from twinlearn import TLDR, ReLIC
from twinlearn.data import load_mnist
from twinlearn.data.images import load_cifar10
from twinlearn.metrics import accuracy_across_dims, format_dims_table, knn_accuracy

rng = np.random.default_rng(0)
x_train, y_train, x_test, y_test = load_cifar10()
tr, te = rng.choice(len(x_train), 2000, replace=False), rng.choice(len(x_test), 1000, replace=False)

relic = ReLIC(backbone="small_cnn", n_epochs=10, batch_size=128, precision="bf16", random_state=0)
relic.fit(x_train[tr])
rows = accuracy_across_dims(relic.transform(x_train[tr]), y_train[tr],
                            relic.transform(x_test[te]), y_test[te], relic.nesting_dims_)
print(format_dims_table(rows, "linear-probe acc"))
print("first 16 features of 3 test images:\n", relic.transform(x_test[te[:3]], n_components=16))

# nesting works for every estimator: one TLDR, usable at 8, 16 and 32 dimensions
mx, my, mxt, myt = load_mnist()
keep = rng.choice(len(mx), 10000, replace=False)
tldr = TLDR(n_components=32, nesting_dims=[8, 16, 32], projector="mlp-1-256", precision="bf16",
            n_epochs=10, random_state=0).fit(mx[keep])
for d in (8, 16, 32):
    acc = knn_accuracy(tldr.transform(mx[keep], n_components=d), my[keep],
                       tldr.transform(mxt, n_components=d), myt)
    print(f"nested TLDR, first {d:2d} dims: 10-NN accuracy {acc:.3f}")
