"""GPU side by side at 10⁶ points, in one call: twinlearn CNE (NEG) and TLDR against TorchDR's
UMAP and InfoTSNE on the same data — wall time, peak GPU memory, recall@15, 10-NN accuracy.

Self-contained: it needs the repository (run from its root with ``PYTHONPATH=src``) and an
environment with twinlearn's dependencies plus ``torchdr``. The data are made here: deformed
MNIST (``deformed_mnist.py``) when ``mnist.npz`` is found (``$TWINLEARN_DATA``), otherwise a
synthetic set of the same shape — 10 overlapping labelled clusters around one random
12-dimensional Gaussian in 784 dimensions, squashed into [0, 1] (pixel-space 10-NN accuracy
0.95 on 3 000 points) — written once as a float32 ``.npy`` under ``--out``.
Every method runs in its own process (so each peak GPU memory is its own: torch's allocator,
``torch.cuda.max_memory_allocated``; faiss-GPU or KeOps buffers outside it are not counted);
the data loading and the copy to the GPU are outside the timed fit. Scores as
``benchmarks/scale.py``: recall@15 of the exact 15 input-space neighbours of 2 000 fixed
points, and their leave-one-out 10-NN accuracy in the map.

Usage::

    PYTHONPATH=src python benchmarks/gpu_scale.py                          # 10⁶ points on cuda
    PYTHONPATH=src python benchmarks/gpu_scale.py --device cpu --n 2000    # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

METHODS = ("tl-cne-neg", "tl-tldr", "torchdr-umap", "torchdr-infotsne")
N_CLASSES, DIM, RANK, NOISE, SPREAD = 10, 784, 12, 0.3, 0.4


def synthetic(n: int, path: Path, device: str, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Write ``n`` synthetic labelled rows (float32 in [0, 1]) to ``path``; return the labels.

    Row of class ``c``: ``sigmoid(centre_c + z·B + noise)``, ``z`` a 12-dimensional standard
    Gaussian along random directions ``B`` shared by all classes, plus isotropic noise; the
    centres are close, so classes overlap. Drawn by torch on ``device`` (a GPU makes 10⁶ rows
    in a second), written in chunks."""
    import torch

    gen = torch.Generator(device).manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=gen, device=device)  # noqa: E731
    centres, bases = draw(N_CLASSES, DIM) * SPREAD, draw(RANK, DIM) / RANK ** 0.5
    labels = torch.randint(0, N_CLASSES, (n,), generator=gen, device=device)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, chunk):
        y = labels[start:start + chunk]
        rows = centres[y] + draw(len(y), RANK) @ bases + draw(len(y), DIM) * NOISE
        out[start:start + len(y)] = torch.sigmoid(rows).cpu().numpy()
    out.flush()
    return labels.cpu().numpy()


def make_data(n: int, folder: Path, kind: str, device: str) -> tuple[Path, np.ndarray, str]:
    """The data file, its labels and what it is (deformed MNIST if available, else synthetic)."""
    from twinlearn.data import find_shared_data

    if kind in ("auto", "deformed") and find_shared_data("mnist.npz") is not None:
        os.environ.setdefault("TWINLEARN_DATA", str(find_shared_data("mnist.npz")))
        from deformed_mnist import float_rows

        path, labels = float_rows(n)
        return path, labels, "deformed MNIST"
    if kind == "deformed":
        raise FileNotFoundError("mnist.npz not found: set $TWINLEARN_DATA or use --data synthetic")
    path = folder / f"gpu_scale_synthetic_{n}.npy"
    labels_path = folder / f"gpu_scale_synthetic_{n}_labels.npy"
    if not labels_path.exists():
        np.save(labels_path, synthetic(n, path, device))
    return path, np.load(labels_path), "synthetic clusters"


def _numpy(Y) -> np.ndarray:
    """A map as a NumPy array, whether a method returned a tensor (on any device) or an array."""
    return Y.detach().cpu().numpy() if hasattr(Y, "detach") else np.asarray(Y)


def fit(method: str, X, device: str, args: argparse.Namespace):
    """Fit ``method`` on the tensor ``X`` (already on ``device``); return the map as NumPy."""
    if method == "tl-cne-neg":
        from twinlearn import CNE

        return _numpy(CNE(loss_mode="neg", device=device, random_state=0).fit_transform(X))
    if method == "tl-tldr":
        from twinlearn import TLDR

        model = TLDR(n_epochs=args.tldr_epochs, knn_method="auto", device=device, random_state=0)
        return _numpy(model.fit_transform(X))
    import torchdr

    cls = torchdr.UMAP if method == "torchdr-umap" else torchdr.InfoTSNE
    model = cls(device=device, backend=args.torchdr_backend, random_state=0)
    return _numpy(model.fit_transform(X))


def worker(method: str, data: str, result: str, args: argparse.Namespace) -> None:
    """One method in this process: the fit's wall time and peak GPU memory, the map saved."""
    import torch

    X = torch.from_numpy(np.load(data)).to(args.device)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter()
    Y = fit(method, X, args.device, args)
    if cuda:
        torch.cuda.synchronize()
    info = {"fit_s": time.perf_counter() - clock,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "data_gpu_mib": X.numel() * 4 / 2**20}
    np.save(result, np.asarray(Y, dtype=np.float32))
    print(json.dumps(info))


def run(method: str, data: Path, labels: np.ndarray, truth: tuple, args: argparse.Namespace) -> dict:
    """Run ``method`` in a subprocess and score its map."""
    from scale import score

    result = Path(args.out) / f"gpu_scale_{method}.npy"
    python = args.torchdr_python if method.startswith("torchdr") else sys.executable
    cmd = [python, __file__, "--worker", method, "--data-file", str(data), "--result", str(result),
           "--device", args.device, "--tldr-epochs", str(args.tldr_epochs),
           "--torchdr-backend", args.torchdr_backend]
    clock = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"ran past {args.timeout} s"}
    if proc.returncode != 0:
        return {"method": method, "error": proc.stderr.strip()[-1500:]}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info.update(method=method, process_s=time.perf_counter() - clock,
                **score(np.load(result), labels, *truth))
    result.unlink()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--data", default="auto", choices=["auto", "deformed", "synthetic"])
    parser.add_argument("--tldr-epochs", type=int, default=10)
    parser.add_argument("--torchdr-backend", default="faiss", help="faiss (needs faiss-gpu to search "
                        "on the GPU), keops, or none (dense: small N only)")
    parser.add_argument("--torchdr-python", default=sys.executable,
                        help="interpreter for the TorchDR runs, if torchdr lives in another environment")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per method")
    parser.add_argument("--out", default=os.environ.get("OUT", str(HERE / "out")))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data-file", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 100:
        parser.error(f"--n must be at least 100, got {args.n}")
    if args.torchdr_backend == "none":
        args.torchdr_backend = None
    if args.worker:
        worker(args.worker, args.data_file, args.result, args)
        return
    report(args)


def report(args: argparse.Namespace) -> None:
    """Make the data, run every method, print and save the table."""
    from scale import SAMPLE, sample_neighbours

    Path(args.out).mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    data, labels, kind = make_data(args.n, Path(args.out), args.data, args.device)
    X = np.load(data, mmap_mode="r")
    sample = np.sort(np.random.default_rng(0).choice(args.n, min(SAMPLE, args.n - 1), replace=False))
    truth = (sample, sample_neighbours(X, sample))
    print(f"{kind}: {args.n:,} × {X.shape[1]}, data + true neighbours in {time.perf_counter() - clock:.0f} s", flush=True)
    rows = []
    for method in args.methods:
        rows.append(run(method, data, labels, truth, args))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out, "gpu_scale.json").write_text(json.dumps({"n": args.n, "data": kind, "device": args.device,
                                                           "runs": rows}, indent=1))
    print(f"\n| method ({kind}, N = {args.n:,}, {args.device}) | fit s | peak GPU MiB | recall@15 | 10-NN acc |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed: {r['error'].splitlines()[-1][:120]} | | | |")
        else:
            gpu = f"{r['peak_gpu_mib']:,.0f}" if r["peak_gpu_mib"] is not None else "–"
            print(f"| {r['method']} | {r['fit_s']:.1f} | {gpu} | {r['recall15']:.3f} | {r['knn10_acc']:.3f} |")


if __name__ == "__main__":
    main()
