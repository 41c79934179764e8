"""Matryoshka ReLIC on a CPU-sized CIFAR-10 run: linear-probe accuracy of every nested prefix
of the learned features vs PCA of the full features at the same dimension (same run).

    PYTHONPATH=src python benchmarks/mrl_relic_cifar.py --n-train 2500 --epochs 15 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import cifar_subsets
from twinlearn import ReLIC
from twinlearn.metrics import accuracy_across_dims, format_dims_table, plot_accuracy_across_dims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=2500)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = cifar_subsets(args.n_train, args.n_test)

    start = time.perf_counter()
    model = ReLIC(backbone=args.backbone, n_epochs=args.epochs, batch_size=args.batch_size,
                  precision=args.precision, channels_last=True, random_state=0, verbose=0)
    model.fit(x_train)
    fit_seconds = time.perf_counter() - start
    f_train, f_test = model.transform(x_train), model.transform(x_test)
    rows = accuracy_across_dims(f_train, y_train, f_test, y_test, model.nesting_dims_)
    pixels = accuracy_across_dims(
        x_train.reshape(len(x_train), -1) / 255.0, y_train, x_test.reshape(len(x_test), -1) / 255.0,
        y_test, model.nesting_dims_, pca=True,
    )
    for row, pix in zip(rows, pixels):
        row["pca_of_pixels"] = pix["pca"]
    args.out.mkdir(parents=True, exist_ok=True)
    plot_accuracy_across_dims(rows, args.out / "mrl_relic_cifar.png",
                              title=f"ReLIC-MRL {args.backbone}, CIFAR-10 {args.n_train} imgs, {args.epochs} ep")
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "fit_s": fit_seconds,
              "loss_history": model.loss_history_, "inverse_temperature": model.inverse_temperature_,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    (args.out / "mrl_relic_cifar.json").write_text(json.dumps(record, indent=2))
    print(format_dims_table(rows, "linear-probe acc"))
    print(f"fit {fit_seconds:.0f} s, losses {model.loss_history_[0]:.3f} -> {model.loss_history_[-1]:.3f}")


if __name__ == "__main__":
    main()
