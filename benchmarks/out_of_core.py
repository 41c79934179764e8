"""TLDR from a file on disk: time and peak memory of fit + transform when the data is in memory,
a memory map, an HDF5 dataset or a zarr array (one fresh process per kind, after a warm-up fit
on 2048 rows; peak anonymous memory above the level before opening the data, so the page cache
of the file does not count; one torch thread).

The kNN graph is given (each row's neighbours drawn at random): the figure is about reading the
data (validation, training batches, transform), not about the kNN search, which is the same
blocked code for every kind.

    PYTHONPATH=src python benchmarks/out_of_core.py [--n 400000] [--d 128] [--kinds memory,hdf5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

KINDS = ("memory", "memmap", "hdf5", "zarr")

#: one kind in a fresh process; prints a JSON line
CHILD = """
import json, sys, numpy as np, torch
sys.path[:0] = [{bench!r}, {tests!r}]
from common import timed
from test_memory import peak_extra_mb
from twinlearn import TLDR
kind, folder, n, d, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
torch.set_num_threads(1)  # a shared host: spinning threads would time the neighbours' load
params = dict(n_components=32, projector="mlp-1-256", n_epochs=1, batch_size=batch, random_state=0)
small = np.random.default_rng(0).normal(size=(2048, d)).astype(np.float32)
TLDR(**params).fit(small, knn_graph=np.random.default_rng(1).integers(0, 2048, size=(2048, 5)))
def open_data():
    if kind == "memory":
        return np.load(folder + "/x.npy")
    if kind == "memmap":
        return np.load(folder + "/x.npy", mmap_mode="r")
    if kind == "hdf5":
        import h5py
        return h5py.File(folder + "/x.h5", "r")["x"]
    import zarr
    return zarr.open_array(folder + "/x.zarr", mode="r")
knn = np.random.default_rng(1).integers(0, n, size=(n, 5))
out = {{}}
def run():
    X = open_data()
    model = TLDR(**params)
    with timed() as fit:
        model.fit(X, knn_graph=knn)
    with timed() as transform:
        Z = model.transform(X)
    out.update(fit_s=fit.seconds, transform_s=transform.seconds, z_sum=float(np.abs(Z).sum()))
# anonymous memory only (RssAnon): the page cache of a file read is not the process's
extra = peak_extra_mb(run)
print(json.dumps(dict(kind=kind, peak_extra_anon_mib=extra, **out)))
"""


def write_files(folder: Path, n: int, d: int) -> None:
    """The same float32 data as .npy, HDF5 (row chunks of 1024) and zarr (row chunks of 256)."""
    import h5py
    import zarr

    X = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(0)
    for start in range(0, n, 50_000):
        X[start : start + 50_000] = rng.normal(size=(min(50_000, n - start), d))
    X.flush()
    with h5py.File(folder / "x.h5", "w") as fh:
        fh.create_dataset("x", data=X, chunks=(1024, d))
    z = zarr.create_array(folder / "x.zarr", shape=(n, d), dtype=np.float32, chunks=(256, d))
    for start in range(0, n, 50_000):
        z[start : start + 50_000] = X[start : start + 50_000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"a comma-separated subset of {KINDS}")
    args = parser.parse_args()
    bench = str(Path(__file__).resolve().parent)
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    sys.path.insert(0, bench)
    from common import command_line, machine_info, save_json

    with tempfile.TemporaryDirectory() as folder:
        write_files(Path(folder), args.n, args.d)
        rows = []
        for kind in args.kinds.split(","):
            done = subprocess.run(
                [sys.executable, "-c", CHILD.format(bench=bench, tests=tests), kind, folder,
                 str(args.n), str(args.d), str(args.batch_size)],
                capture_output=True, text=True, check=True,
                # freed blocks of 128 KB and more go back to the system at once, so that the
                # anonymous memory follows what is live, not what malloc keeps for later
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    data_mib = args.n * args.d * 4 / 2**20
    print(f"data {data_mib:.0f} MiB float32 ({args.n} x {args.d})")
    save_json("out_of_core", {"command": command_line(), "machine": machine_info(), "n": args.n,
                              "d": args.d, "data_mib": data_mib, "rows": rows})


if __name__ == "__main__":
    main()
