"""Scaling curve: TLDR, CNE (NEG and InfoNCE defaults), umap-learn and openTSNE from 10⁴ to
millions of points, one process per (method, N) run.

Data: deformed MNIST (``deformed_mnist.py``: affine + elastic distortions of the 70 000 real
digits, labels kept; the set of size N is the prefix of any larger one), or the real MNIST
(70 000 × 784) / CIFAR-10 (60 000 × 3072) pixels, all as float32 (pixels / 255) ``.npy`` files
that every run opens as a read-only memory map. Each run reports:

* wall time of the whole process (interpreter start included), the fit's time (imports and
  loading excluded; just-in-time compilation included) and its split into kNN search /
  graph (memberships, symmetrisation) / init / optimisation, from the method's own clocks:
  twinlearn's ``timings_`` and its ``"kNN (...) of N points: x s"`` log line, umap-learn's
  ``nearest_neighbors`` / ``fuzzy_simplicial_set`` / ``optimize_layout_euclidean`` timed by
  wrappers, openTSNE's own verbose "Time elapsed" lines; TLDR: ``compute_knn`` then one
  epoch of ``fit`` (samples/s) then ``transform``;
* peak RSS of the process (the memory-mapped input counts once its pages are read);
* recall@15: the share of the exact 15 nearest input-space neighbours of 2 000 fixed sample
  points (faiss flat search among all N rows) that are among their 15 nearest in the map;
* 10-NN accuracy of the same 2 000 points, leave-one-out, on the map's neighbours.

Results go to ``benchmarks/out/scale_<data>_<method>_<N>.json`` (a finished run is not redone
unless ``--force``); the summary table and the log-log slope of wall time in N are printed.

Usage::

    PYTHONPATH=src python benchmarks/scale.py --sizes 10000 100000 --methods tl-neg umap
    PYTHONPATH=src python benchmarks/scale.py --summary          # table of what is saved
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import OUT_DIR, machine_info, run_peer  # noqa: E402

METHODS = {
    "tl-default": "twinlearn CNE, defaults (UMAP's loss on the table)",
    "tl-neg": "twinlearn CNE, NEG (defaults)",
    "tl-infonce": "twinlearn CNE, InfoNCE (defaults)",
    "tl-tldr": "twinlearn TLDR, fast setting, 1 epoch (kNN 'auto': exact <= 20 000, HNSW above)",
    "umap": "umap-learn 0.5.12, defaults",
    "opentsne": "openTSNE 1.0.4, defaults (n_jobs = cores)",
}
PEERS = ("umap", "opentsne")
#: TLDR's documented fast setting (docstring Notes), one epoch: the figure is the throughput
TLDR_PARAMS = dict(n_components=32, projector="mlp-1-512", learning_rate=1.6, n_neighbors=20,
                   knn_method="auto", random_state=0)
K, SAMPLE = 15, 2000


# --- workers: run in their own process; the peers' never import twinlearn ----------------------
def _twinlearn_cne(X: np.ndarray, mode: str | None) -> tuple[np.ndarray, dict]:
    from twinlearn import CNE

    model = CNE(loss_mode=mode, random_state=0)
    Y = model.fit_transform(X)
    return Y, dict(model.timings_)


def _twinlearn_tldr(X: np.ndarray) -> tuple[np.ndarray, dict]:
    from twinlearn import TLDR

    model, clock = TLDR(n_epochs=1, **TLDR_PARAMS), time.perf_counter()
    model.compute_knn(X)
    stages = {"knn": time.perf_counter() - clock}
    clock = time.perf_counter()
    model.fit(X)
    stages["optimisation"] = time.perf_counter() - clock
    stages["samples_per_s"] = X.shape[0] / stages["optimisation"]
    clock = time.perf_counter()
    Y = model.transform(X)
    stages["transform"] = time.perf_counter() - clock
    return Y, stages


def _umap(X: np.ndarray) -> tuple[np.ndarray, dict]:
    """umap-learn with its stages timed by wrapping the functions ``UMAP.fit`` calls."""
    import umap
    import umap.umap_ as impl

    spent: dict[str, float] = {}

    def clocked(name: str, fn):
        def wrapper(*args, **kwargs):
            clock = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - clock
        return wrapper

    for name, fn_name in [("knn", "nearest_neighbors"), ("graph", "fuzzy_simplicial_set"),
                          ("embedding", "simplicial_set_embedding"),
                          ("optimisation", "optimize_layout_euclidean")]:
        setattr(impl, fn_name, clocked(name, getattr(impl, fn_name)))
    Y = umap.UMAP(random_state=None).fit_transform(X)
    # fuzzy_simplicial_set contains no search here (fit passes it the kNN it found)
    spent["init"] = spent.pop("embedding") - spent["optimisation"]
    return Y, spent


def _opentsne(X: np.ndarray) -> tuple[np.ndarray, dict]:
    """openTSNE with its stages read from its own verbose "Time elapsed" lines."""
    import openTSNE

    log = io.StringIO()
    with redirect_stdout(log):
        Y = np.asarray(openTSNE.TSNE(n_jobs=os.cpu_count(), verbose=True, random_state=0).fit(X))
    stages: dict[str, float] = {}
    names = {"Finding": "knn", "Calculating affinity": "graph", "Calculating PCA": "init",
             "Running optimization": "optimisation"}
    current = None
    for line in log.getvalue().splitlines():
        if line.startswith("===>"):
            current = next((v for k, v in names.items() if line[5:].startswith(k)), "other")
        elif "Time elapsed:" in line and current:
            seconds = float(line.split("Time elapsed:")[1].split()[0])
            stages[current] = stages.get(current, 0.0) + seconds
    return Y, stages


def _knn_search_seconds(records: list[logging.LogRecord]) -> float | None:
    """Seconds of twinlearn's kNN search from its ``"kNN (...) of N points: x s"`` log line."""
    found = [r.args[-1] for r in records if r.getMessage().startswith("kNN (")]
    return float(sum(found)) if found else None


def worker(method: str, data: str, n: int, result: str) -> None:
    """Fit ``method`` on the first ``n`` rows of ``data``; save the map, print the stages."""
    X = np.load(data, mmap_mode="r")[:n]
    records: list[logging.LogRecord] = []
    # imports are not timed; torch._dynamo (~5 s) is imported by the first torch optimizer
    for module in {"umap": ["umap"], "opentsne": ["openTSNE"]}.get(method, ["twinlearn", "torch._dynamo"]):
        __import__(module)
    if method.startswith("tl-"):
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("twinlearn").addHandler(handler)
        logging.getLogger("twinlearn").setLevel(logging.INFO)
    clock = time.perf_counter()
    runners = {"tl-default": lambda: _twinlearn_cne(X, None), "tl-neg": lambda: _twinlearn_cne(X, "neg"), "tl-infonce": lambda: _twinlearn_cne(X, "infonce"),
               "tl-tldr": lambda: _twinlearn_tldr(X), "umap": lambda: _umap(X), "opentsne": lambda: _opentsne(X)}
    Y, stages = runners[method]()
    stages["fit"] = time.perf_counter() - clock
    search = _knn_search_seconds(records)
    if search is not None and method != "tl-tldr":  # CNE's "knn" holds search + graph
        stages["graph"], stages["knn"] = stages["knn"] - search, search
    np.save(result, np.asarray(Y, dtype=np.float32))
    print(json.dumps(stages))


# --- driver ---------------------------------------------------------------------------------------
def _real_rows(name: str) -> tuple[Path, np.ndarray]:
    """Float32 ``.npy`` (pixels / 255) and labels of all of MNIST or CIFAR-10, cached, rows in a
    fixed random order (the files are sorted by class, and a run of N uses the first N rows)."""
    target = OUT_DIR / f"{name}.f32.npy"
    label_path = OUT_DIR / f"{name}_labels.npy"
    if not target.exists():
        if name == "mnist":
            from deformed_mnist import real_digits

            images, labels = real_digits()
        else:
            from twinlearn.data.images import load_cifar10

            x_train, y_train, x_test, y_test = load_cifar10()
            images, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        order = np.random.default_rng(0).permutation(len(labels))
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        np.save(label_path, np.asarray(labels, dtype=np.int64)[order])
        np.save(target, images[order].reshape(len(images), -1).astype(np.float32) / 255)
    return target, np.load(label_path)


def dataset(name: str, n: int) -> tuple[Path, np.ndarray]:
    """The data file (first ``n`` rows are used) and the labels of its first ``n`` rows."""
    if name == "deformed":
        from deformed_mnist import float_rows

        return float_rows(n)
    path, labels = _real_rows(name)
    if n > len(labels):
        raise ValueError(f"{name} has {len(labels)} rows, asked for {n}")
    return path, labels[:n]


def sample_neighbours(X: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Exact ``K`` nearest other rows of ``X`` (faiss flat, memmap read in blocks) of ``sample``."""
    from twinlearn.neighbors import KNNIndex
    from twinlearn.neighbors.faiss_index import drop_self

    idx, dist = KNNIndex("faiss").build(X).query(np.asarray(X[sample], dtype=np.float32), K + 1)
    return drop_self(idx, dist, K, query_ids=sample)[0]


def truth(name: str, n: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fixed sample of ``SAMPLE`` points and their true neighbours (cached per data and N)."""
    cache = OUT_DIR / f"scale_truth_{name}_{n}.npz"
    if cache.exists():
        with np.load(cache) as f:
            return f["sample"], f["neighbours"]
    sample = np.sort(np.random.default_rng(0).choice(n, min(SAMPLE, n), replace=False))
    clock = time.perf_counter()
    neighbours = sample_neighbours(np.load(path, mmap_mode="r")[:n], sample)
    print(f"   true neighbours of {len(sample)} points among {n}: {time.perf_counter() - clock:.1f} s", flush=True)
    np.savez(cache, sample=sample, neighbours=neighbours)
    return sample, neighbours


def score(Y: np.ndarray, labels: np.ndarray, sample: np.ndarray, true: np.ndarray) -> dict:
    """recall@15 of the true neighbours and leave-one-out 10-NN accuracy, on the sample."""
    found = sample_neighbours(Y, sample)
    recall = (true[:, :, None] == found[:, None, :]).any(axis=2).mean()
    votes = labels[found[:, :10]]
    predicted = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in votes])
    return {"recall15": float(recall), "knn10_acc": float((predicted == labels[sample]).mean())}


def run_one(name: str, method: str, n: int, timeout: float) -> dict:
    """One (method, N) run in its own process, scored; the record that is saved."""
    path, labels = dataset(name, n)
    sample, true = truth(name, n, path)
    result = OUT_DIR / f"scale_{name}_{method}_{n}.npy"
    python = os.environ.get("TWINLEARN_PEER_PYTHON", "/work/bench-venv/bin/python") if method in PEERS else sys.executable
    env = None if method in PEERS else {"PYTHONPATH": str(HERE.parent / "src")}
    run = run_peer(__file__, ["--worker", method, "--data-file", str(path), "--n", str(n), "--result", str(result)],
                   timeout=timeout, python=python, env=env)
    Y = np.load(result)
    input_mib = n * np.load(path, mmap_mode="r").shape[1] * 4 / 2**20
    record = {"data": name, "method": method, "n": n, "wall_s": run.seconds, "stages": run.result,
              "peak_rss_mib": run.peak_rss_mib, "input_mib": input_mib,
              "rss_beyond_input_mib": run.peak_rss_mib - input_mib, **score(Y, labels, sample, true),
              "machine": machine_info()}
    result.unlink()  # maps of millions of points are not kept
    return record


def slope(ns: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(time) against log(N)."""
    return float(np.polyfit(np.log(ns), np.log(seconds), 1)[0]) if len(ns) > 1 else float("nan")


def summary(name: str) -> str:
    """Markdown table of every saved run of ``name`` and each method's log-log slope."""
    runs = [json.loads(p.read_text()) for p in sorted(OUT_DIR.glob(f"scale_{name}_*.json"))]
    runs.sort(key=lambda r: (list(METHODS).index(r["method"]), r["n"]))
    lines = ["| method | N | wall s | fit s | kNN / graph / init / optim. s | peak RSS MiB (beyond input) "
             "| recall@15 | 10-NN acc | TLDR samples/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["stages"]
        split = " / ".join(f"{s[k]:.1f}" if k in s else "–" for k in ("knn", "graph", "init", "optimisation"))
        rate = f"{s['samples_per_s']:,.0f}" if "samples_per_s" in s else ""
        lines.append(f"| {r['method']} | {r['n']:,} | {r['wall_s']:.1f} | {s['fit']:.1f} | {split} | {r['peak_rss_mib']:,.0f} "
                     f"({r['rss_beyond_input_mib']:,.0f}) | {r['recall15']:.3f} | {r['knn10_acc']:.3f} | {rate} |")
    lines += ["", "| method | sizes | slope of fit time in N (log-log) | slope from 10⁵ on |", "|---|---|---|---|"]
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if mine:
            big = [r for r in mine if r["n"] >= 100_000]
            sizes = ", ".join(f"{r['n']:,}" for r in mine)
            slopes = [slope([r["n"] for r in rs], [r["stages"]["fit"] for r in rs]) for rs in (mine, big)]
            shown = ["–" if np.isnan(v) else f"{v:.2f}" for v in slopes]
            lines.append(f"| {method} | {sizes} | {shown[0]} | {shown[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--data", default="deformed", choices=["deformed", "mnist", "cifar10"])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--until", help="HH:MM UTC: start no run after this time")
    parser.add_argument("--force", action="store_true", help="redo runs already saved")
    parser.add_argument("--summary", action="store_true", help="only print the table of saved runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--data-file", dest="data_file", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.worker:
        worker(args.worker, args.data_file, args.n, args.result)
        return
    for n in sorted(args.sizes) if not args.summary else []:
        for method in args.methods:
            out = OUT_DIR / f"scale_{args.data}_{method}_{n}.json"
            if out.exists() and not args.force:
                continue
            if args.until and time.strftime("%H:%M", time.gmtime()) >= args.until:
                print(f"== {method}, N = {n:,}: not started, past {args.until} UTC", flush=True)
                continue
            print(f"== {method}, N = {n:,} ({time.strftime('%H:%M', time.gmtime())} UTC)", flush=True)
            try:
                record = run_one(args.data, method, n, args.timeout)
            except RuntimeError as error:  # a failed or timed-out run is reported, the rest go on
                print(f"   failed: {str(error)[-1500:]}", flush=True)
                continue
            out.write_text(json.dumps(record, indent=1))
            print(f"   {record['wall_s']:.1f} s, {record['stages']}, RSS {record['peak_rss_mib']:.0f} MiB, "
                  f"recall@15 {record['recall15']:.3f}, 10-NN acc {record['knn10_acc']:.3f}", flush=True)
    print(summary(args.data))


if __name__ == "__main__":
    main()
