"""Peak resident memory inside each step of a ``CNE()`` fit: where the memory of a large fit goes.

Wraps the steps of the fit (kNN index build and search, the fuzzy graph's memberships and
union, the pair source, the initialisation, the run's set-up) and prints, for each call, its
time and the process's RSS on entry, at its peak (sampled every 50 ms) and on exit, in MiB.
The input is a float32 ``.npy`` opened as a read-only memory map (its pages count in RSS once
read: the ``input MiB`` line is what to subtract).

Usage::

    python benchmarks/deformed_mnist.py 1000000        # the data, once
    PYTHONPATH=src python benchmarks/cne_memory_profile.py --n 1000000 --epochs 3
"""

from __future__ import annotations

import argparse
import functools
import importlib
import resource
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "out" / "deformed_mnist_1000000_s0.f32.npy"
#: (module, function) pairs timed and measured; looked up where the fit calls them
STEPS = [
    ("twinlearn.neighbors.index", "build_faiss_index"),
    ("twinlearn.neighbors.index", "search_faiss"),
    ("twinlearn.neighbors.index", "drop_self"),
    ("twinlearn.neighbors.graph", "_search"),
    ("twinlearn.neighbors.graph", "membership_strengths"),
    ("twinlearn.neighbors.graph", "fuzzy_union_edges"),
    ("twinlearn.estimators._cne_inputs", "labelled_positive_edges"),
    ("twinlearn.estimators._cne_inputs", "EdgePairSource"),
    ("twinlearn.estimators._cne_inputs", "initial_coordinates"),
    ("twinlearn.estimators.cne", "contrastive_run"),
]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakSampler:
    """The highest RSS seen since the last :meth:`reset`, sampled by a daemon thread."""

    def __init__(self, interval: float = 0.05) -> None:
        self.peak = 0.0
        threading.Thread(target=self._run, args=(interval,), daemon=True).start()

    def _run(self, interval: float) -> None:
        while True:
            self.peak = max(self.peak, rss_mib())
            time.sleep(interval)

    def reset(self, value: float) -> float:
        before, self.peak = self.peak, value
        return before


def measure(sampler: PeakSampler, start: float, module: str, name: str) -> None:
    """Replace ``module.name`` by a wrapper that prints its time and RSS (entry, peak, exit)."""
    mod = importlib.import_module(module)
    fn = getattr(mod, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        entry = rss_mib()
        outer = sampler.reset(entry)
        clock = time.perf_counter()
        result = fn(*args, **kwargs)
        print(f"{time.perf_counter() - start:7.1f} s  {name:26s} {time.perf_counter() - clock:6.1f} s  "
              f"RSS in {entry:6.0f} peak {max(sampler.peak, rss_mib()):6.0f} out {rss_mib():6.0f}", flush=True)
        sampler.peak = max(outer, sampler.peak)
        return result

    setattr(mod, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=1_000_000, help="rows of the file to fit")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    X = np.load(args.data, mmap_mode="r")[: args.n]
    sampler = PeakSampler()
    start = time.perf_counter()
    from twinlearn import CNE

    for module, name in STEPS:
        measure(sampler, start, module, name)
    print(f"RSS after imports {rss_mib():.0f} MiB, input MiB {X.nbytes / 2**20:.0f}", flush=True)
    model = CNE(n_epochs=args.epochs, random_state=0).fit(X)
    print("timings", {k: round(v, 1) for k, v in model.timings_.items()})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB, beyond the input {peak - X.nbytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
