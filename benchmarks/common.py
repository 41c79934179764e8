"""Small helpers shared by the benchmarks: timing, peak memory, the machine's matmul rate,
machine facts, and running a peer library in a subprocess of the peers' environment.

Benchmarks are scripts, not tests: run them from the repository root, e.g.
``PYTHONPATH=src python benchmarks/tldr_mnist.py --quick``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The peers' environment (umap-learn, openTSNE, contrastive-ne, tsimcne, mrl-pytorch); see
#: benchmarks/README.md. ``$TWINLEARN_PEER_PYTHON`` overrides it.
PEER_PYTHON = os.environ.get("TWINLEARN_PEER_PYTHON", "/work/bench-venv/bin/python")
OUT_DIR = Path(__file__).resolve().parent / "out"


@dataclass
class Timing:
    """Wall-clock seconds of a ``timed()`` block (filled in when the block exits)."""

    seconds: float = float("nan")


@contextmanager
def timed():
    """``with timed() as t: ...`` then ``t.seconds``."""
    t = Timing()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children) so far, in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def traced_peak_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` under tracemalloc; return its result and the peak of Python/NumPy allocations
    during it in MiB (torch's own allocator is not traced: use :func:`peak_rss_mib` for that)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak / 2**20


def matmul_gflops(
    m: int = 1024, k: int = 2048, n: int = 2048, dtype: str = "float32", min_seconds: float = 2.0
) -> float:
    """This machine's torch matmul rate in GFLOP/s for ``(m×k)·(k×n)`` in ``dtype``.

    Takes the best of several timed repeats (the machine is shared, so the best repeat is the
    least disturbed one), each lasting at least ``min_seconds / 4``.
    """
    import torch

    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(torch_dtype)
    b = torch.randn(k, n, generator=gen).to(torch_dtype)
    flop = 2.0 * m * k * n
    for _ in range(2):  # warm-up: thread pool and packed-kernel selection
        a @ b
    best, spent = 0.0, 0.0
    while spent < min_seconds:
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds / 4:
            a @ b
            reps += 1
        elapsed = time.perf_counter() - start
        spent += elapsed
        best = max(best, reps * flop / elapsed / 1e9)
    return best


def machine_info() -> dict[str, Any]:
    """CPU model, core count, torch threads and versions, UTC date: the context of a figure."""
    import torch

    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_avg_1min": os.getloadavg()[0],
    }


@dataclass
class PeerRun:
    """Result of :func:`run_peer`: the JSON the script printed last, and what it cost."""

    result: Any
    seconds: float
    peak_rss_mib: float
    stderr_tail: str = field(repr=False, default="")


# Runs the peer script as __main__ and records its own peak RSS (KiB) in a file on the way out,
# so the figure is the child's alone and needs no cooperation from the script.
_PEER_SHIM = """
import resource, runpy, sys
script, rss_file = sys.argv[1], sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    with open(rss_file, "w") as fh:
        fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def run_peer(
    script: str | os.PathLike,
    args: Sequence[str] = (),
    *,
    timeout: float | None = None,
    python: str = PEER_PYTHON,
    env: dict[str, str] | None = None,
) -> PeerRun:
    """Run ``script`` with the peers' interpreter and read its result.

    The script must print its result as one JSON document on the LAST line of stdout.
    Wall time (interpreter start included) and the child's own peak RSS come back with it.
    Raises ``RuntimeError`` with the stderr tail when it fails or runs past ``timeout``.
    """
    if not Path(python).exists():
        raise FileNotFoundError(
            f"peer interpreter {python} is missing: build it as benchmarks/README.md says"
        )
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        cmd = [python, "-c", _PEER_SHIM, str(script), str(rss_file), *map(str, args)]
        shown = " ".join([python, str(script), *map(str, args)])
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{shown} ran past {timeout} s") from None
        seconds = time.perf_counter() - start
        rss = int(rss_file.read_text()) / 1024 if rss_file.exists() else float("nan")
    if proc.returncode != 0:
        raise RuntimeError(f"{shown} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{shown} printed no result:\n{proc.stderr[-3000:]}")
    return PeerRun(json.loads(lines[-1]), seconds, rss, proc.stderr[-3000:])


def save_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/out/<name>.json`` (ignored by git) and return its path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=float))
    return path


def command_line() -> str:
    """The command that ran this benchmark, to record next to its figures."""
    return " ".join([Path(sys.executable).name, *sys.argv])



def cifar_subsets(n_train: int, n_test: int, seed: int = 0):
    """Random CIFAR-10 train and test subsets ``(x_train, y_train, x_test, y_test)`` from the
    local tarball, the same for every benchmark with the same sizes and seed."""
    import numpy as np

    from twinlearn.data.images import load_cifar10

    x_train, y_train, x_test, y_test = load_cifar10()
    rng = np.random.default_rng(seed)
    tr = rng.choice(len(x_train), n_train, replace=False)
    te = rng.choice(len(x_test), n_test, replace=False)
    return x_train[tr], y_train[tr], x_test[te], y_test[te]
