"""CNE on all 70 000 MNIST images, side by side with umap-learn, openTSNE and contrastive-ne.

Each method runs in its own subprocess, one after another: twinlearn with this interpreter,
the peers with the benchmark environment's (``--peer-python`` or ``$TWINLEARN_BENCH_PYTHON``,
default ``/work/bench-venv/bin/python``), so the library never imports them. A worker reports
its wall time (kNN included, data loading excluded) and peak resident memory; this process
then scores every embedding the same way:

* kNN-acc: 10-NN classifier fitted on the 60 000 train points of the 2-D embedding, scored on
  the 10 000 test points (parametric methods: train points from ``fit``, test points from
  ``transform``);
* recall@15: share of each point's 15 nearest neighbours in pixel space among its 15 nearest in
  the embedding, on 5 000 random points;

and saves a PNG scatter coloured by digit into ``benchmarks/out/``.

Usage::

    python benchmarks/cne_mnist.py                      # every method
    python benchmarks/cne_mnist.py --methods tl-infonce tl-neg umap
    python benchmarks/cne_mnist.py --methods opentsne tl-tsne   # the t-SNE end, same run
    python benchmarks/cne_mnist.py --list
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PEER_PYTHON = "/work/bench-venv/bin/python"

#: name -> (runs with the peer interpreter?, description)
METHODS = {
    "tl-infonce": (False, "twinlearn CNE, non-parametric InfoNCE (defaults)"),
    "tl-neg": (False, "twinlearn CNE, non-parametric NEG (defaults)"),
    "tl-umap": (False, "twinlearn CNE, non-parametric UMAP loss (a = b = 1, defaults)"),
    "tl-infonce-binary": (False, "twinlearn CNE, InfoNCE, binary graph: contrastive-ne's work per epoch"),
    "tl-neg-binary": (False, "twinlearn CNE, NEG, binary graph: contrastive-ne's work per epoch"),
    "tl-param-neg": (False, "twinlearn CNE, parametric NEG (Adam), fit on train, transform test"),
    "tl-tsne": (False, "twinlearn CNE, negative_samples='all' (t-SNE end, FFT repulsion), 750 epochs"),
    **{f"tl-tsne-s{s}": (False, f"as tl-tsne at spectrum s={s} (exaggeration 4^s)") for s in (0.25, 0.5, 0.75, 1)},
    "umap": (True, "umap-learn, defaults"),
    "opentsne": (True, "openTSNE, defaults"),
    "cne-infonce": (True, "contrastive-ne, non-parametric InfoNCE (defaults)"),
    "cne-neg": (True, "contrastive-ne, non-parametric NEG (defaults)"),
    "cne-param-neg": (True, "contrastive-ne, parametric NEG, Adam, 20 epochs"),
}


# --- workers (run in a subprocess; peers must not import twinlearn) ------------------------------
def _load(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(data) as f:
        x_train, y_train = f["x_train"], f["y_train"]
        x_test, y_test = f["x_test"], f["y_test"]
    flat = lambda a: (a.reshape(len(a), -1) / 255.0).astype(np.float32)  # noqa: E731
    return flat(x_train), y_train, flat(x_test), y_test


def _worker(method: str, data: str, out: str, args: argparse.Namespace) -> None:
    x_train, _, x_test, _ = _load(data)
    X = np.vstack([x_train, x_test])
    extra = json.loads(args.params) if args.params else {}
    start = time.perf_counter()
    info: dict = {}
    if method.startswith("tl-"):
        import logging

        from twinlearn import CNE

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if method.startswith("tl-tsne"):
            s = float(method.removeprefix("tl-tsne-s")) if method != "tl-tsne" else 0.0
            model = CNE(negative_samples="all", n_epochs=750, s=s, random_state=0, **extra)
            Y = model.fit_transform(X)
        elif method == "tl-param-neg":
            model = CNE(loss_mode="neg", parametric=True, random_state=0, **extra)
            Y_train = model.fit_transform(x_train)
            Y = np.vstack([Y_train, model.transform(x_test)])
        else:
            mode, _, graph = method.removeprefix("tl-").partition("-")
            weights = {"edge_weights": graph} if graph else {}
            model = CNE(loss_mode=mode, random_state=0, **weights, **extra)
            Y = model.fit_transform(X)
        info["timings"] = model.timings_
    elif method == "umap":
        import umap

        Y = umap.UMAP(**extra).fit_transform(X)
    elif method == "opentsne":
        import openTSNE

        Y = np.asarray(openTSNE.TSNE(n_jobs=os.cpu_count(), **extra).fit(X))
    elif method.startswith("cne-"):
        import cne

        if method == "cne-param-neg":
            params = dict(loss_mode="neg", parametric=True, optimizer="adam", n_epochs=20, seed=0)
            params.update(extra)
            model = cne.CNE(**params)
            # contrastive-ne 0.4.0's parametric fit calls len(init), so init=None fails; the
            # array is only measured, never used
            Y_train = model.fit_transform(x_train, init=np.zeros((len(x_train), 2), np.float32))
            Y = np.vstack([Y_train, model.transform(x_test)])
        else:
            model = cne.CNE(loss_mode=method.removeprefix("cne-"), seed=0, **extra)
            Y = model.fit_transform(X)
    else:
        raise SystemExit(f"unknown method {method}")
    info["seconds"] = time.perf_counter() - start
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(out + ".npy", np.asarray(Y, dtype=np.float32))
    Path(out + ".json").write_text(json.dumps(info))


# --- driver --------------------------------------------------------------------------------------
def _scatter(Y: np.ndarray, labels: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7))
    sc = ax.scatter(Y[:, 0], Y[:, 1], c=labels, s=0.2, cmap="tab10", rasterized=True)
    ax.legend(*sc.legend_elements(), loc="upper right", fontsize=7, markerscale=0.8, title="digit")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--peer-python", default=os.environ.get("TWINLEARN_BENCH_PYTHON", DEFAULT_PEER_PYTHON))
    parser.add_argument("--out-dir", default=str(HERE / "out"))
    parser.add_argument("--params", default="", help="JSON of extra keyword arguments for the methods run")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        for name, (_, desc) in METHODS.items():
            print(f"{name:15s} {desc}")
        return
    if args.worker:
        _worker(args.worker, args.data, args.result, args)
        return

    sys.path.insert(0, str(REPO / "src"))
    from twinlearn.data import find_shared_data
    from twinlearn.metrics import knn_accuracy, knn_recall

    folder = find_shared_data("mnist.npz")
    if folder is None:
        raise SystemExit("mnist.npz not found: set $TWINLEARN_DATA or put it in ../shared/data")
    data = str(folder / "mnist.npz")
    x_train, y_train, x_test, y_test = _load(data)
    X, labels = np.vstack([x_train, x_test]), np.concatenate([y_train, y_test])
    n_train = len(x_train)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows = []
    for method in args.methods:
        peer, desc = METHODS[method]
        python = args.peer_python if peer else sys.executable
        result = str(out_dir / f"cne_mnist_{method}")
        cmd = [python, __file__, "--worker", method, "--data", data, "--result", result]
        if args.params:
            cmd += ["--params", args.params]
        print(f"== {method}: {desc}", flush=True)
        proc = subprocess.run(cmd, env=env if not peer else None, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
            rows.append({"method": method, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        info = json.loads(Path(result + ".json").read_text())
        Y = np.load(result + ".npy")
        info["knn_acc"] = knn_accuracy(Y[:n_train], y_train, Y[n_train:], y_test)
        info["recall15"] = knn_recall(X, Y, 15, sample_size=5000, random_state=0)
        if "param" in method:
            info["recall15_train"] = knn_recall(X[:n_train], Y[:n_train], 15, sample_size=5000, random_state=0)
            info["recall15_test"] = knn_recall(X[n_train:], Y[n_train:], 15, sample_size=5000, random_state=0)
        _scatter(Y, labels, f"{method}: {info['seconds']:.0f} s, kNN-acc {info['knn_acc']:.3f}, "
                 f"recall@15 {info['recall15']:.3f}", out_dir / f"cne_mnist_{method}.png")
        info["method"] = method
        rows.append(info)
        print(json.dumps(info), flush=True)
    (out_dir / "cne_mnist_results.json").write_text(json.dumps(rows, indent=1))
    print("\n| method | wall s (kNN incl.) | peak RSS MB | kNN-acc | recall@15 |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error']} | | | |")
        else:
            print(f"| {r['method']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {r['knn_acc']:.4f} | {r['recall15']:.3f} |")


if __name__ == "__main__":
    main()
