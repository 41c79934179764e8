"""t-SimCNE on CIFAR-10: training throughput (CPU) and a CPU-sized quality run.

    # images/s of the training step: augmentation alone, model step alone, whole step
    python benchmarks/tsimcne_cifar.py throughput --backbone resnet18_simclr --batch-size 64
    # 2-D 10-NN accuracy on held-out test images vs UMAP on raw pixels of the same subset
    python benchmarks/tsimcne_cifar.py quality --n-train 10000 --epochs 30 3 12

``PYTHONPATH=src`` with the project venv; UMAP runs in a subprocess of ``--umap-python``
(default ``/work/bench-venv/bin/python``) when that interpreter has umap-learn. Writes the map to
``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from twinlearn import TSimCNE
from twinlearn.data.images import CIFAR10_CLASSES, load_cifar10
from twinlearn.encoders.vision import ImageEmbedder, make_backbone, make_head
from twinlearn.kernels import CauchyKernel
from twinlearn.losses import ContrastiveLoss
from twinlearn.metrics import knn_accuracy
from twinlearn.pairs.augment import AugmentPairSource, BatchAugment
from twinlearn.training import Trainer, constant
from twinlearn.training.objectives import ViewPairObjective

OUT = Path(__file__).resolve().parent / "out"


def _subset(x, y, n, seed):
    idx = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return x[idx], y[idx]


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def throughput(args) -> dict:
    """Steady-state images/s (each image = two views) after ``--warmup-steps`` steps."""
    x, _, _, _ = load_cifar10()
    images = torch.from_numpy(_subset(x, np.zeros(len(x)), args.n_images, 0)[0]).permute(0, 3, 1, 2).contiguous()
    device = torch.device("cpu")
    results = {}
    for precision in args.precisions:
        for channels_last in args.channels_last:
            torch.manual_seed(0)
            backbone, dim = make_backbone(args.backbone)
            net = ImageEmbedder(backbone, make_head("mlp", dim, 128))
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
            augment = BatchAugment(channels_last=channels_last)
            gen = torch.Generator().manual_seed(0)
            pairs = AugmentPairSource(images, args.batch_size, device, gen, augment)
            loss = ContrastiveLoss("infonce", CauchyKernel(), "full", symmetric=True)
            objective = ViewPairObjective(net, loss)
            opt = torch.optim.SGD(net.parameters(), lr=0.0075, momentum=0.9, weight_decay=5e-4)
            trainer = Trainer(objective, pairs, opt, constant(), 1, precision=precision, clip_grad_value=4.0)
            objective.train()
            batches = pairs.epoch()
            n_steps = args.warmup_steps + args.steps
            t_aug = t_step = 0.0
            for step in range(n_steps):
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                trainer._train_step(batch)
                t2 = time.perf_counter()
                if step >= args.warmup_steps:
                    t_aug += t1 - t0
                    t_step += t2 - t1
            n = args.steps * args.batch_size
            key = f"{precision}{'+channels_last' if channels_last else ''}"
            results[key] = {
                "images_per_s_total": n / (t_aug + t_step),
                "images_per_s_augmentation_only": n / t_aug,
                "images_per_s_model_step_only": n / t_step,
                "augmentation_share": t_aug / (t_aug + t_step),
            }
            print(key, json.dumps({k: round(v, 2) for k, v in results[key].items()}), flush=True)
    return results


UMAP_SNIPPET = """
import sys, numpy as np, umap
d = np.load(sys.argv[1])
reducer = umap.UMAP(n_components=2, random_state=0)
Ytr = reducer.fit_transform(d["x_train"])
Yte = reducer.transform(d["x_test"])
np.savez(sys.argv[2], y_train=Ytr, y_test=Yte)
"""


def umap_baseline(x_train, x_test, python: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, x_train=x_train.reshape(len(x_train), -1) / 255.0, x_test=x_test.reshape(len(x_test), -1) / 255.0)
        proc = subprocess.run([python, "-c", UMAP_SNIPPET, str(src), str(dst)], capture_output=True, text=True)
        if proc.returncode != 0:
            print("UMAP failed:", proc.stderr[-2000:], file=sys.stderr)
            return None
        with np.load(dst) as d:
            return d["y_train"], d["y_test"]


def quality(args) -> dict:
    x_train, y_train, x_test, y_test = load_cifar10()
    x_tr, y_tr = _subset(x_train, y_train, args.n_train, 1)
    x_te, y_te = _subset(x_test, y_test, args.n_test, 2)
    est = TSimCNE(
        backbone=args.backbone, total_epochs=list(args.epochs), batch_size=args.batch_size,
        random_state=0, device="cpu", precision=args.precision, channels_last=args.channels_last_on,
        verbose=1,
    )
    t0 = time.perf_counter()
    est.fit(x_tr)
    fit_s = time.perf_counter() - t0
    Y_tr, Y_te = est.transform(x_tr), est.transform(x_te)
    res = {
        "tsimcne_fit_seconds": fit_s,
        "tsimcne_knn10_acc_test": knn_accuracy(Y_tr, y_tr, Y_te, y_te, n_neighbors=10),
        "loss_history": est.loss_history_,
    }
    from twinlearn.plot import plot_embedding

    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"{args.backbone}_n{args.n_train}_e{'-'.join(map(str, args.epochs))}"
    plot_embedding(Y_tr, y_tr, OUT / f"tsimcne_cifar_{tag}.png", class_names=CIFAR10_CLASSES,
                   title=f"t-SimCNE ({args.backbone}), CIFAR-10 {args.n_train} train images")
    est.save(OUT / f"tsimcne_cifar_{tag}.safetensors")
    t0 = time.perf_counter()
    umap_out = umap_baseline(x_tr, x_te, args.umap_python)
    if umap_out is not None:
        res["umap_seconds"] = time.perf_counter() - t0
        res["umap_pixels_knn10_acc_test"] = knn_accuracy(umap_out[0], y_tr, umap_out[1], y_te, n_neighbors=10)
        plot_embedding(umap_out[0], y_tr, OUT / f"umap_pixels_cifar_n{args.n_train}.png",
                       class_names=CIFAR10_CLASSES, title=f"UMAP on pixels, CIFAR-10 {args.n_train}")
    else:
        res["umap_pixels_knn10_acc_test"] = None
    print(json.dumps({k: v for k, v in res.items() if k != "loss_history"}, indent=1))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--backbone", default="resnet18_simclr")
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--n-images", type=int, default=5000)
    t.add_argument("--steps", type=int, default=6)
    t.add_argument("--warmup-steps", type=int, default=2)
    t.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    t.add_argument("--channels-last", nargs="+", type=int, default=[0, 1])
    q = sub.add_parser("quality")
    q.add_argument("--backbone", default="small_cnn")
    q.add_argument("--n-train", type=int, default=10000)
    q.add_argument("--n-test", type=int, default=2000)
    q.add_argument("--epochs", type=int, nargs=3, default=[30, 3, 12])
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--precision", default="bf16")
    q.add_argument("--channels-last-on", type=int, default=0)
    q.add_argument("--umap-python", default="/work/bench-venv/bin/python")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("machine:", _machine(), "| threads:", torch.get_num_threads(), flush=True)
    res = throughput(args) if args.mode == "throughput" else quality(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
