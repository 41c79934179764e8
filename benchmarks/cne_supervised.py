"""Supervised and semi-supervised CNE on MNIST (issue 12 item 4).

CNE (non-parametric, defaults, ``random_state=0``) is fitted on MNIST training digits with 0 %,
1 %, 10 % and 100 % of their labels (the rest ``-1``); held-out test digits are then placed in
each map with ``transform``, and a 10-NN classifier fitted on the training map with the *true*
labels scores them.

    PYTHONPATH=src python benchmarks/cne_supervised.py [--n-train 60000] [--n-test 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from common import command_line, machine_info, save_json
from twinlearn import CNE
from twinlearn.data.datasets import load_mnist


def masked_labels(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray | None:
    """``y`` with all but ``fraction`` of the rows set to -1 (``None`` for 0 %)."""
    if fraction == 0:
        return None
    keep = np.random.default_rng(seed).random(len(y)) < fraction
    return np.where(keep, y, -1).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.01, 0.1, 1.0])
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_mnist()
    rng = np.random.default_rng(0)
    tr = rng.choice(len(x_train), args.n_train, replace=False) if args.n_train < len(x_train) else np.arange(len(x_train))
    te = rng.choice(len(x_test), args.n_test, replace=False)
    x_train, y_train, x_test, y_test = x_train[tr], y_train[tr], x_test[te], y_test[te]
    rows = []
    for fraction in args.fractions:
        start = time.perf_counter()
        cne = CNE(random_state=0).fit(x_train, masked_labels(y_train, fraction))
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        Z_test = cne.transform(x_test)
        transform_s = time.perf_counter() - start
        knn = KNeighborsClassifier(10).fit(cne.embedding_, y_train)
        row = {"labels": fraction, "test_knn_acc": float(knn.score(Z_test, y_test)),
               "fit_s": fit_s, "transform_s": transform_s}
        print(row, flush=True)
        rows.append(row)
    save_json("cne_supervised", {"command": command_line(), "machine": machine_info(),
                                 "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
