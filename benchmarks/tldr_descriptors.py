"""TLDR's own promise on real descriptors: does it keep each point's neighbours better than PCA?

For each descriptor set and each d, side by side in one run: PCA, PCA-whitening, a Gaussian
random projection, and the TLDR variants asked for (``--variants``), for each TLDR setting asked
for: ``default`` (``TLDR()``'s own: PCA start, orthonormal output basis), ``trained`` (PCA start,
the weights as trained: ``output_basis="trained"``, the former default), ``random`` (random
start, weights as trained: the original's) and ``k5`` (the default with ``n_neighbors=5``, the
library's own, in place of the fast setting's 20). Figures:

``recall10``  recall@10 of the true neighbours: the share of each query's 10 nearest neighbours
              in the input space that are among its 10 nearest in the reduced space (a fixed
              random sample of ``--queries`` fitted points, searched against the whole fitted
              set; ``twinlearn.metrics.knn_recall``).
``knn_acc``   10-NN accuracy, fitted embedding → held-out embedding (sets with labels).

Descriptor sets (``--sets``): ``mnist`` (pixels/255, a random ``--mnist-train`` subset of the
training images, the 10 000 test images held out); ``minilm`` (``--minilm-rows`` random rows of
the token-embedding table of all-MiniLM-L6-v2, 30 522 × 384) and ``cifar`` (128-d backbone features of CIFAR-10 from a small
CNN trained briefly with twinlearn's t-SimCNE), both built first by
``benchmarks/tldr_descriptor_sets.py``.

TLDR settings (``--settings``): ``default`` is ``TLDR()``'s own (``mlp-2-2048`` projector,
5 neighbours, LR 0.2) with ``--default-epochs`` epochs; ``fast`` the documented fast setting
(``mlp-1-512`` projector, 20 neighbours, LR 1.6, fp32 here) with ``--fast-epochs`` epochs.

    PYTHONPATH=src python benchmarks/tldr_descriptors.py --sets mnist minilm cifar --dims 8 16 32
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.random_projection import GaussianRandomProjection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine_info, save_json, timed  # noqa: E402
from tldr_descriptor_sets import cifar_path, minilm_path  # noqa: E402
from tldr_mnist import KNN_COLUMNS, print_table, set_threads  # noqa: E402

from twinlearn import TLDR  # noqa: E402
from twinlearn.data import load_mnist  # noqa: E402
from twinlearn.metrics import knn_accuracy, knn_recall  # noqa: E402
from twinlearn.neighbors import compute_knn  # noqa: E402

logger = logging.getLogger("twinlearn.bench")
#: TLDR settings: estimator parameters besides n_components, epochs and the init
SETTINGS = {
    "default": {},
    "fast": {"projector": "mlp-1-512", "n_neighbors": 20, "learning_rate": 1.6},
}
#: TLDR variants: label and the parameters that differ from the setting's
VARIANTS = {
    "default": ("PCA start, orthonormal basis (default)", {}),
    "trained": ("PCA start, trained basis", {"output_basis": "trained"}),
    "random": ("random start, trained basis", {"encoder_init": "random", "output_basis": "trained"}),
    "k5": ("PCA start, orthonormal basis, 5 neighbours", {"n_neighbors": 5}),
}


def load_set(name: str, args) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(x_fit, y_fit, x_held_out, y_held_out)``; the last three None for unlabelled sets."""
    if name == "mnist":
        x_tr, y_tr, x_te, y_te = load_mnist()
        keep = np.sort(np.random.default_rng(args.seed).choice(len(x_tr), args.mnist_train, replace=False))
        return x_tr[keep], y_tr[keep], x_te, y_te
    path = minilm_path() if name == "minilm" else cifar_path()
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build it with benchmarks/tldr_descriptor_sets.py {name}")
    with np.load(path) as data:
        if name == "cifar":
            return data["x_train"], data["y_train"], data["x_test"], data["y_test"]
        table = data["x"]
    keep = np.sort(np.random.default_rng(args.seed).choice(len(table), min(args.minilm_rows, len(table)), replace=False))
    return table[keep], None, None, None


def evaluate(transform, data, queries: int, seed: int) -> dict[str, float]:
    x_fit, y_fit, x_out, y_out = data
    z_fit = transform(x_fit)
    row = {"recall10": knn_recall(x_fit, z_fit, 10, sample_size=queries, random_state=seed)}
    if y_fit is not None:
        row["knn_acc"] = knn_accuracy(z_fit, y_fit, transform(x_out), y_out, n_neighbors=10)
    return row


def baselines(d: int, data, args) -> list[dict]:
    rows = []
    makers = {"PCA": lambda: PCA(d, random_state=args.seed),
              "PCA-whiten": lambda: PCA(d, whiten=True, random_state=args.seed),
              "random projection": lambda: GaussianRandomProjection(d, random_state=args.seed)}
    for name, make in makers.items():
        with timed() as t:
            model = make().fit(data[0])
        rows.append({"method": name, "fit_s": t.seconds, **evaluate(model.transform, data, args.queries, args.seed)})
    return rows


def tldr_rows(d: int, data, knn: np.ndarray, args) -> list[dict]:
    rows = []
    for setting in args.settings:
        epochs = args.default_epochs if setting == "default" else args.fast_epochs
        for variant in args.variants:
            label, params = VARIANTS[variant]
            model = TLDR(n_components=d, n_epochs=epochs, random_state=args.seed,
                         **{**SETTINGS[setting], **params})
            with timed() as t:
                model.fit(data[0], knn_graph=knn)
            rows.append({"method": f"TLDR {setting} {epochs} ep, {label}", "fit_s": t.seconds,
                         "final_loss": model.loss_history_[-1],
                         **evaluate(model.transform, data, args.queries, args.seed)})
    return rows


def run_set(name: str, args) -> list[dict]:
    data = load_set(name, args)
    with timed() as t:
        knn, _ = compute_knn(data[0], KNN_COLUMNS, method="faiss", metric="euclidean")
    print(f"\n## {name}: fit set {data[0].shape}, held out {None if data[2] is None else data[2].shape}, "
          f"kNN graph {t.seconds:.1f} s")
    rows = []
    for d in args.dims:
        for row in baselines(d, data, args) + tldr_rows(d, data, knn, args):
            rows.append({"set": name, "d": d, **row})
            logger.info("%s", rows[-1])
    print_table(rows, ("d", "method", "recall10", "knn_acc", "final_loss", "fit_s"))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=["mnist", "minilm", "cifar"], choices=["mnist", "minilm", "cifar"])
    p.add_argument("--dims", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--settings", nargs="+", default=["fast"], choices=list(SETTINGS))
    p.add_argument("--variants", nargs="+", default=["trained", "default"], choices=list(VARIANTS))
    p.add_argument("--default-epochs", type=int, default=5)
    p.add_argument("--fast-epochs", type=int, default=10)
    p.add_argument("--mnist-train", type=int, default=10_000)
    p.add_argument("--minilm-rows", type=int, default=10_000, help="random rows of the token table")
    p.add_argument("--queries", type=int, default=2_000, help="recall@10 query sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="tldr_descriptors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(args.threads)
    info = machine_info()
    print(f"# {command_line()}\n# {info}")
    out = {"command": command_line(), "machine": info, "rows": []}
    for name in args.sets:
        out["rows"] += run_set(name, args)
        save_json(args.tag, out)
    out["machine"]["load_avg_1min_end"] = machine_info()["load_avg_1min"]
    save_json(args.tag, out)


if __name__ == "__main__":
    main()
