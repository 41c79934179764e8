"""t-SimCNE on real CIFAR-10 images, CPU-sized: a 2-D map of a 3 000-image training subset with
the small CNN, its 10-NN accuracy on held-out test images, and a PNG of the map.

Run from the repository root: ``python examples/tsimcne_cifar.py`` (tens of minutes on 2 CPU
cores; the paper's configuration — ResNet-18, 1000 + 50 + 450 epochs on 50 000 images — is GPU
work, see the README).
"""

import numpy as np

from twinlearn import TSimCNE
from twinlearn.data.images import CIFAR10_CLASSES, load_cifar10
from twinlearn.metrics import knn_accuracy
from twinlearn.plot import plot_embedding

x_train, y_train, x_test, y_test = load_cifar10()  # sorted by class: take random subsets
rng = np.random.default_rng(0)
train = rng.choice(len(x_train), 3000, replace=False)
test = rng.choice(len(x_test), 1000, replace=False)

tsimcne = TSimCNE(backbone="small_cnn", total_epochs=[15, 2, 5], batch_size=128,
                  precision="bf16", random_state=0, verbose=1)
Y_train = tsimcne.fit_transform(x_train[train])
Y_test = tsimcne.transform(x_test[test])
acc = knn_accuracy(Y_train, y_train[train], Y_test, y_test[test], n_neighbors=10)
print(f"2-D 10-NN accuracy on held-out test images: {acc:.3f}")
plot_embedding(Y_train, y_train[train], "tsimcne_cifar.png", class_names=CIFAR10_CLASSES)
tsimcne.save("tsimcne_cifar.safetensors")
