"""CNE against umap-learn at several sizes: MNIST 5 000 / 20 000 / 70 000 and CIFAR-10 pixels.

Each (dataset, method) runs in its own process, one after another (``common.run_peer``:
twinlearn with this interpreter, umap-learn with the peers' ``/work/bench-venv``). The worker
times the fit *with* its kNN graph (imports included, data loading excluded, as
``cne_mnist.py``), then places the held-out points (``transform``) and times that apart. This
process scores every map the same way:

* ``acc``: 10-NN accuracy in the map. MNIST-70k and CIFAR: a classifier fitted on the map's
  train rows, scored on its test rows (the original 60 000 / 10 000 and 50 000 / 10 000
  split, as ``cne_mnist.py``); MNIST subsets (N random train images): leave-one-out over all N
  points (each point's 10 nearest others vote; ties to the smaller label, as scikit-learn),
  whose sampling error (±0.004 at 5 000) is half that of a held-out seventh;
* ``recall15``: share of each point's 15 input-space neighbours among its 15 nearest in the
  map, on 5 000 random points;
* ``placed_acc`` (MNIST subsets): 1 000 random *test* images (never in the map) placed by
  ``transform``, scored by a 10-NN classifier fitted on the whole map.

Datasets are drawn once (seed 0) and cached under ``benchmarks/out/`` (CIFAR decoded from
``cifar10-jpg.tar.gz`` once, cached there too).

Usage::

    python benchmarks/cne_sizes.py --data mnist5k mnist20k --methods neg umap-learn
    python benchmarks/cne_sizes.py --data mnist5k --methods neg --params '{"n_epochs": 200}' --tag old
    python benchmarks/cne_sizes.py --data mnist20k --methods infonce --s-dial 0 0.25 0.5 0.75 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import OUT_DIR, PEER_PYTHON, machine_info, run_peer  # noqa: E402

#: name -> CNE keyword arguments ("umap-learn" runs the peer with its defaults)
METHODS = {
    "default": {},
    "neg": {"loss_mode": "neg"},
    "infonce": {"loss_mode": "infonce"},
    "infonce-s1": {"loss_mode": "infonce", "s": 1.0},
    "umap-loss": {"loss_mode": "umap"},
    "umap-learn": None,
}
DATASETS = ("mnist5k", "mnist20k", "mnist70k", "cifar")
N_PLACED = 1000


# --- data ----------------------------------------------------------------------------------------
def _mnist(n: int) -> dict[str, np.ndarray]:
    from twinlearn.data import find_shared_data

    with np.load(find_shared_data("mnist.npz") / "mnist.npz") as f:
        xtr, ytr, xte, yte = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    flat = lambda a: (a.reshape(len(a), -1) / 255.0).astype(np.float32)  # noqa: E731
    if n == 70_000:
        X, y = flat(np.concatenate([xtr, xte])), np.concatenate([ytr, yte])
        return {"X": X, "y": y, "scored": np.arange(70_000) >= 60_000}
    rng = np.random.default_rng(0)
    rows, placed = rng.choice(60_000, n, replace=False), rng.choice(10_000, N_PLACED, replace=False)
    return {"X": flat(xtr[rows]), "y": ytr[rows],
            "X_new": flat(xte[placed]), "y_new": yte[placed]}


def _cifar() -> dict[str, np.ndarray]:
    os.environ.setdefault("TWINLEARN_CACHE", str(OUT_DIR))
    from twinlearn.data.images import load_cifar10

    xtr, ytr, xte, yte = load_cifar10()
    X = (np.concatenate([xtr, xte]).reshape(60_000, -1) / 255.0).astype(np.float32)
    return {"X": X, "y": np.concatenate([ytr, yte]), "scored": np.arange(60_000) >= 50_000}


def dataset_file(name: str) -> Path:
    """``benchmarks/out/cne_sizes_<name>.npz``, written the first time."""
    path = OUT_DIR / f"cne_sizes_{name}.npz"
    if not path.exists():
        arrays = _cifar() if name == "cifar" else _mnist(int(name.removeprefix("mnist").removesuffix("k")) * 1000)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return path


# --- worker (own process; the peer's never imports twinlearn) ------------------------------------
def _fit_place(method: str, params: dict, X: np.ndarray, X_new: np.ndarray | None):
    if method == "umap-learn":
        import umap

        model = umap.UMAP(**params)
        Y = model.fit_transform(X)
        fitted = time.perf_counter()
        return Y, fitted, (model.transform(X_new) if X_new is not None else None), {}
    from twinlearn import CNE

    model = CNE(**{"random_state": 0, **METHODS[method], **params}).fit(X)
    fitted = time.perf_counter()
    Y_new = model.transform(X_new) if X_new is not None else None
    return model.embedding_, fitted, Y_new, {"timings": model.timings_, "n_epochs": model.n_epochs_trained_}


def _worker(method: str, data: str, result: str, params: dict) -> None:
    with np.load(data) as f:
        X, X_new = f["X"], (f["X_new"] if "X_new" in f.files else None)
    start = time.perf_counter()
    Y, fitted, Y_new, info = _fit_place(method, params, X, X_new)
    info.update(seconds=fitted - start, transform_seconds=time.perf_counter() - fitted)
    np.save(result + ".npy", np.asarray(Y, dtype=np.float32))
    if Y_new is not None:
        np.save(result + "_new.npy", np.asarray(Y_new, dtype=np.float32))
    print(json.dumps(info, default=float))


# --- driver --------------------------------------------------------------------------------------
def _loo_accuracy(Y: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Leave-one-out ``k``-NN accuracy: each point's ``k`` nearest other points vote."""
    from twinlearn.neighbors import KNNIndex
    from twinlearn.neighbors.faiss_index import drop_self

    hits, _ = KNNIndex("faiss").build(Y).query(Y, k + 1)
    others = drop_self(hits, hits, k)[0]
    votes = (y[others][:, :, None] == np.arange(y.max() + 1)).sum(axis=1)
    return float((votes.argmax(axis=1) == y).mean())


def _score(data: Path, result: str) -> dict[str, float]:
    from twinlearn.metrics import knn_accuracy, knn_recall

    with np.load(data) as f:
        d = {k: f[k] for k in f.files}
    Y, y = np.load(result + ".npy"), d["y"]
    s = d.get("scored")
    scores = {"acc": _loo_accuracy(Y, y) if s is None else knn_accuracy(Y[~s], y[~s], Y[s], y[s]),
              "recall15": knn_recall(d["X"], Y, 15, sample_size=5000, random_state=0)}
    if "X_new" in d:
        scores["placed_acc"] = knn_accuracy(Y, d["y"], np.load(result + "_new.npy"), d["y_new"])
    return scores


def run_one(name: str, method: str, params: dict, tag: str) -> dict:
    """Fit ``method`` on dataset ``name`` in a fresh process and score it."""
    data = dataset_file(name)
    label = f"{name}_{method}{'_' + tag if tag else ''}"
    result = str(OUT_DIR / f"cne_sizes_{label}")
    peer = method == "umap-learn"
    args = ["--worker", method, "--data-file", str(data), "--result", result, "--params", json.dumps(params)]
    run = run_peer(__file__, args, python=PEER_PYTHON if peer else sys.executable,
                   env=None if peer else {"PYTHONPATH": str(REPO / "src")})
    row = {"data": name, "method": method, "tag": tag, "params": params, **run.result,
           "peak_rss_mib": run.peak_rss_mib, **_score(data, result)}
    print(json.dumps(row, default=float), flush=True)
    return row


def _table(rows: list[dict]) -> str:
    lines = ["| data | method | params | wall s (kNN incl.) | transform s | 10-NN acc | recall@15 | placed acc |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        placed = f"{r['placed_acc']:.4f}" if "placed_acc" in r else ""
        lines.append(f"| {r['data']} | {r['method']}{' ' + r['tag'] if r['tag'] else ''} | "
                     f"{json.dumps(r['params']) if r['params'] else 'defaults'} | {r['seconds']:.1f} | "
                     f"{r['transform_seconds']:.1f} | {r['acc']:.4f} | {r['recall15']:.3f} | {placed} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=["default", "neg", "infonce-s1", "umap-learn"],
                        choices=list(METHODS))
    parser.add_argument("--params", default="{}", help="JSON of keyword arguments for every method run")
    parser.add_argument("--s-dial", nargs="+", type=float, help="run each method at each of these s")
    parser.add_argument("--tag", default="", help="suffix of the result names (old/new defaults, ...)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--data-file", dest="data_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = json.loads(args.params)
    if args.worker:
        return _worker(args.worker, args.data_file, args.result, params)
    sys.path.insert(0, str(REPO / "src"))
    grid = [{**params, "s": s} for s in args.s_dial] if args.s_dial else [params]
    rows = [run_one(name, method, p, args.tag + (f"s{p['s']}" if args.s_dial else ""))
            for name in args.data for method in args.methods for p in grid]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (OUT_DIR / f"cne_sizes_{stamp}.json").write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1, default=float))
    print(json.dumps(machine_info()))
    print(_table(rows))


if __name__ == "__main__":
    main()
