"""t-SimCNE's high-dimensional stage trained nested (Matryoshka) vs plain, on a CPU-sized
CIFAR-10 subset: 10-NN accuracy of every prefix of the stage-1 output, next to PCA of the full
output at the same dimension, for both models (same data, seed and epochs).

One stage at ``out_dim`` = 128 (``total_epochs=[n]``), so the trained output itself is what is
scored; ``nesting_dims`` sums the InfoNCE over the prefixes.

    PYTHONPATH=src python benchmarks/tsimcne_nested.py --n-train 5000 --epochs 15
"""

from __future__ import annotations

import argparse
import json
import time

from common import cifar_subsets
from twinlearn import TSimCNE
from twinlearn.metrics import accuracy_across_dims

DIMS = [2, 8, 32, 128]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backbone", default="small_cnn")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = cifar_subsets(args.n_train, args.n_test)
    for nested in (True, False):
        start = time.perf_counter()
        model = TSimCNE(backbone=args.backbone, total_epochs=[args.epochs], out_dim=DIMS[-1],
                        batch_size=args.batch_size, nesting_dims=DIMS if nested else None,
                        channels_last=True, random_state=0, device="cpu")
        model.fit(x_train)
        seconds = time.perf_counter() - start
        rows = accuracy_across_dims(model.transform(x_train), y_train, model.transform(x_test), y_test,
                                    DIMS, probe="knn")
        print(json.dumps({"nested": nested, "fit_s": round(seconds, 1), "epochs": args.epochs,
                          "n_train": args.n_train, "rows": [{k: round(v, 4) if isinstance(v, float) else v
                                                             for k, v in r.items()} for r in rows],
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}), flush=True)


if __name__ == "__main__":
    main()
