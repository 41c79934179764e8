"""TLDR against PCA on MNIST: quality, speed, and time to quality (issue #2, "Numbers").

Fit on MNIST train (60 000 × 784, pixels/255), query with MNIST test (10 000). Three parts:

``compare``  for each d: PCA, PCA-whitening and TLDR settings side by side: 10-NN accuracy
             (train embedding → test labels), recall@10 of the true 784-d neighbours
             (``twinlearn.metrics.knn_recall`` on all 10 000 test points, neighbours searched
             within the test set), fit seconds (the shared kNN graph excluded, reported once),
             transform throughput on the test set.
``speed``    training throughput (anchors/s) of TLDR settings over a fixed number of steps,
             the FLOP rate it implies (counted from the layer shapes, see ``train_flop_per_anchor``)
             and this machine's own float32/bfloat16 matmul rate measured in the same run.
``curve``    time to quality at d = 8: kNN accuracy and recall against fit seconds for a grid
             of epochs × projectors × encoders.

``--quick`` uses a random 10 000-point training subset (queries unchanged), fewer epochs and
fewer speed steps: a smoke run of a few minutes. Results go to ``benchmarks/out/*.json``.

    PYTHONPATH=src python benchmarks/tldr_mnist.py --quick
    PYTHONPATH=src python benchmarks/tldr_mnist.py --threads 1 --parts compare speed curve

(``--threads 1`` on a machine shared with other jobs; RESULTS.md explains why.)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.decomposition import PCA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT_DIR, command_line, machine_info, matmul_gflops, save_json, timed  # noqa: E402

from twinlearn import TLDR  # noqa: E402
from twinlearn.data import load_mnist  # noqa: E402
from twinlearn.training.trainer import cpu_has_fast_bf16  # noqa: E402
from twinlearn.metrics import knn_accuracy, knn_recall  # noqa: E402
from twinlearn.neighbors import compute_knn  # noqa: E402

logger = logging.getLogger("twinlearn.bench")
KNN_COLUMNS = 20  # one exact graph for every setting; TLDR keeps the first n_neighbors columns


@dataclass(frozen=True)
class Setting:
    """One TLDR configuration (estimator parameters + fit epochs)."""

    name: str
    encoder: str = "linear"
    projector: str | None = "mlp-2-2048"
    epochs: int = 100
    batch_size: int = 1024
    learning_rate: float = 0.2
    n_neighbors: int = 5
    precision: str = "fp32"
    warmup_epochs: int = 10

    def estimator(self, d: int, seed: int) -> TLDR:
        return TLDR(
            n_components=d, encoder=self.encoder, projector=self.projector, n_neighbors=self.n_neighbors,
            n_epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            precision=self.precision, warmup_epochs=self.warmup_epochs, random_state=seed,
        )


ORIGINAL = Setting("original (linear, mlp-2-2048, fp32, 100 ep)")
# the documented fast setting (examples/tldr_mnist.py): 1-hidden-layer 512 projector, bf16,
# base LR 1.6 (8× the default per sample at batch 1024), 20 neighbours, few epochs
FAST_LINEAR = Setting("fast linear", projector="mlp-1-512", epochs=20, precision="bf16", learning_rate=1.6,
                      n_neighbors=20)
FAST_MLP = replace(FAST_LINEAR, name="fast mlp-1-512", encoder="mlp-1-512", epochs=5)


# --- data and shared kNN graph ---------------------------------------------------------------
def load_data(quick: bool, seed: int):
    x_train, y_train, x_test, y_test = load_mnist()
    if quick:
        # the npz is sorted by class: a prefix would hold only zeros and ones
        keep = np.sort(np.random.default_rng(seed).choice(len(x_train), 10_000, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    return x_train, y_train, x_test, y_test


def knn_graph(x_train: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Exact Euclidean kNN of the training set, cached in benchmarks/out (keyed by size)."""
    digest = hashlib.sha1(np.ascontiguousarray(x_train).tobytes()).hexdigest()[:12]
    path = OUT_DIR / f"mnist_knn_{len(x_train)}_{k}_{digest}.npy"
    if path.exists():
        return np.load(path), float("nan")
    with timed() as t:
        idx, _ = compute_knn(x_train, k, method="faiss", metric="euclidean")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, idx)
    return idx, t.seconds


# --- evaluation ------------------------------------------------------------------------------
def evaluate(transform, x_train, y_train, x_test, y_test) -> dict[str, float]:
    z_train = transform(x_train)
    with timed() as t:
        z_test = transform(x_test)
    return {
        "knn_acc": knn_accuracy(z_train, y_train, z_test, y_test, n_neighbors=10),
        # cosine kNN, i.e. TLDR's transform(X, l2_norm=True), applied to every method alike
        "knn_acc_l2": knn_accuracy(l2_rows(z_train), y_train, l2_rows(z_test), y_test, n_neighbors=10),
        "recall10": knn_recall(x_test, z_test, n_neighbors=10),
        "transform_per_s": len(x_test) / t.seconds,
    }


def l2_rows(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def run_pca(d, whiten, data, seed):
    x_train = data[0]
    with timed() as t:
        pca = PCA(d, whiten=whiten, random_state=seed).fit(x_train)
    return {"fit_s": t.seconds, **evaluate(pca.transform, *data)}


def run_tldr(setting: Setting, d, data, knn, seed, epochs=None):
    model = replace(setting, epochs=epochs or setting.epochs).estimator(d, seed)
    with timed() as t:
        model.fit(data[0], knn_graph=knn)
    return {"fit_s": t.seconds, "final_loss": model.loss_history_[-1], **evaluate(model.transform, *data)}


# --- FLOP accounting -------------------------------------------------------------------------
def train_flop_per_anchor(model: TLDR, projector: nn.Module, width: int) -> float:
    """FLOP of one training anchor: two branches through encoder + projector, forward (2·in·out
    per Linear), backward weight and input gradients (2·in·out each; no input gradient for
    the first layer), plus the Barlow Twins cross-correlation z1ᵀz2 (2·H² forward, 4·H² backward).
    Norm layers, ReLU and the optimizer are left out (linear in width, not quadratic)."""
    linears = [m for part in (model.encoder_, projector) for m in part.modules() if isinstance(m, nn.Linear)]
    per_branch = sum(6 * m.in_features * m.out_features for m in linears)
    per_branch -= 2 * linears[0].in_features * linears[0].out_features
    return 2 * per_branch + 6 * width * width


def run_speed(setting: Setting, d, x_train, seed, steps: int) -> dict[str, float]:
    """Anchors/s of a fit over ``steps`` full batches (warm-up excluded from the timing)."""
    n = steps * setting.batch_size
    sub = np.random.default_rng(seed).choice(len(x_train), n, replace=False)
    # random partner rows: the cost of a step does not depend on which rows are paired
    sub_knn = np.random.default_rng(seed).integers(0, n, size=(n, setting.n_neighbors))
    x = np.ascontiguousarray(x_train[sub])
    warm = setting.estimator(d, seed)
    few = min(4, steps) * setting.batch_size
    warm.fit(x[:few], knn_graph=sub_knn[:few] % few, epochs=1)
    model = setting.estimator(d, seed)
    with timed() as t:
        model.fit(x, knn_graph=sub_knn, epochs=1, retain_projector=True)
    width = int(model.projector_[-1].num_features)
    flop = train_flop_per_anchor(model, model.projector_, width)
    rate = n / t.seconds
    return {"anchors_per_s": rate, "gflop_per_anchor": flop / 1e9, "gflops": rate * flop / 1e9,
            "epoch_s_60k": 60_000 / rate, "steps": steps}


# --- parts -----------------------------------------------------------------------------------
def part_compare(args, data, knn, seed):
    rows = []
    settings = [COMPARE_SETTINGS[name] for name in args.compare_settings]
    if args.original_epochs:
        settings.append(replace(ORIGINAL, epochs=args.original_epochs))
    for d in args.dims:
        for whiten in (False, True):
            r = run_pca(d, whiten, data, seed)
            rows.append({"d": d, "method": "PCA-whiten" if whiten else "PCA", **r})
            logger.info("%s", rows[-1])
        for s in settings:
            r = run_tldr(s, d, data, knn, seed, epochs=args.epochs)
            rows.append({"d": d, "method": f"TLDR {s.name}", "setting": asdict(s), **r})
            logger.info("%s", rows[-1])
    print_table(rows, ("d", "method", "knn_acc", "knn_acc_l2", "recall10", "fit_s", "transform_per_s"))
    return rows


def part_speed(args, data, knn, seed):
    rows = []
    grid = [
        replace(ORIGINAL, name="linear, mlp-2-2048, fp32"),
        replace(ORIGINAL, name="linear, mlp-2-2048, bf16", precision="bf16"),
        replace(FAST_LINEAR, name="linear, mlp-1-512, bf16 (fast)"),
        replace(FAST_MLP, name="mlp-1-512, mlp-1-512, bf16 (fast)"),
    ]
    bf16 = cpu_has_fast_bf16()
    if not bf16:  # emulated bf16 runs ~1 000x slower: time the fp32 forms of the settings
        grid = [replace(s, name=s.name.replace("bf16", "fp32"), precision="fp32")
                for s in grid if s.precision != "bf16" or "fast" in s.name]
    for s in grid:
        # the machine is shared: measure its matmul rate right next to each setting
        peak32 = matmul_gflops(dtype="float32", min_seconds=1)
        peak16 = matmul_gflops(dtype="bfloat16", min_seconds=1) if bf16 else float("nan")
        r = run_speed(s, 32, data[0], seed, args.speed_steps)
        rows.append({"setting": s.name, **r, "matmul_fp32": peak32, "matmul_bf16": peak16,
                     "pct_fp32_peak": 100 * r["gflops"] / peak32,
                     "pct_bf16_peak": 100 * r["gflops"] / peak16})
        logger.info("%s", rows[-1])
    print_table(rows, ("setting", "anchors_per_s", "epoch_s_60k", "gflop_per_anchor", "gflops", "matmul_fp32",
                       "matmul_bf16", "pct_fp32_peak", "pct_bf16_peak"))
    return rows


def part_curve(args, data, knn, seed):
    d = 8
    rows = [{"method": "PCA", **run_pca(d, False, data, seed)}]
    grid = [(CURVE_SETTINGS[name][0], e) for name in args.curve_settings for e in args.curve_epochs[name]]
    for s, e in grid:
        r = run_tldr(s, d, data, knn, seed, epochs=e)
        rows.append({"method": f"TLDR {s.name}", "epochs": e, "setting": asdict(replace(s, epochs=e)), **r})
        logger.info("%s", rows[-1])
    print_table(rows, ("method", "epochs", "knn_acc", "knn_acc_l2", "recall10", "fit_s"))
    return rows


def print_table(rows, cols):
    def fmt(v):
        if not isinstance(v, float):
            return str(v)
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.0f}"

    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(fmt(r.get(c, "")) for c in cols))
    sys.stdout.flush()


COMPARE_SETTINGS = {"fast-linear": FAST_LINEAR, "fast-mlp": FAST_MLP}
# name: (setting, epochs of the curve)
CURVE_SETTINGS = {
    "linear-512": (FAST_LINEAR, [5, 10, 20, 50]),
    "mlp-512": (FAST_MLP, [1, 2, 5]),
    "linear-2048-1layer": (
        replace(FAST_LINEAR, name="linear, mlp-1-2048, bf16", projector="mlp-1-2048"), [10]
    ),
}


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and faiss. On a loaded machine, 2-thread OpenMP regions wait
    for a descheduled partner at every barrier: small kernels (batch norm) then run ~50× slower."""
    import faiss

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10 000-point train subset, fewer epochs/steps")
    parts = ["compare", "speed", "curve"]
    p.add_argument("--parts", nargs="+", default=parts, choices=parts)
    p.add_argument("--dims", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--compare-settings", nargs="+", default=list(COMPARE_SETTINGS),
                   choices=list(COMPARE_SETTINGS))
    p.add_argument("--epochs", type=int, default=None, help="override the epochs of the compare settings")
    p.add_argument("--original-epochs", type=int, default=0,
                   help="also run the original setting with this many epochs in compare (0: skip)")
    p.add_argument("--curve-epochs", nargs="+", type=int, default=None,
                   help="epochs of every curve setting (default: each setting's own list)")
    p.add_argument("--curve-settings", nargs="+", default=list(CURVE_SETTINGS), choices=list(CURVE_SETTINGS))
    p.add_argument("--speed-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="torch and faiss threads (default: torch's); 1 is far faster on a shared machine")
    p.add_argument("--tag", default=None, help="name of the JSON result file")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = args.epochs or 5
        args.speed_steps = min(args.speed_steps, 8)
    args.curve_epochs = {
        name: [e for e in (args.curve_epochs or CURVE_SETTINGS[name][1]) if not args.quick or e <= 10]
        for name in args.curve_settings
    }
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        set_threads(args.threads)

    info = machine_info()
    print(f"# {command_line()}\n# {info}")
    data = load_data(args.quick, args.seed)
    knn, knn_s = knn_graph(data[0], KNN_COLUMNS)
    print(f"# kNN graph of {len(data[0])} points: {knn_s:.1f} s (nan = cached)")
    out = {"command": command_line(), "machine": info, "knn_seconds": knn_s, "quick": args.quick}
    for part in args.parts:
        print(f"\n## {part}")
        out[part] = globals()[f"part_{part}"](args, data, knn, args.seed)
        save_json(args.tag or ("tldr_mnist_quick" if args.quick else "tldr_mnist"), out)
    out["machine"]["load_avg_1min_end"] = machine_info()["load_avg_1min"]
    save_json(args.tag or ("tldr_mnist_quick" if args.quick else "tldr_mnist"), out)


if __name__ == "__main__":
    main()
