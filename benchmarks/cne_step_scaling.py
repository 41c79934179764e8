"""Time of one step of non-parametric CNE's fused CPU kernel as the table grows.

One step of a batch of ``B`` anchors costs O(B) arithmetic whatever the number of points
``N``; what can make it grow with ``N`` is memory: random rows of an ``N × 2`` table and of
its gradient falling out of cache. This times :func:`twinlearn.losses.fused_table._loss_grad`
(loss and table gradient of a NEG batch, 5 negatives, the default threads) on random heads,
tails and draws for each ``N``, the median over ``--steps`` steps after 4 of warm-up, and
prints one JSON line per size (ms per step and the ratio to the smallest size).

Usage::

    python benchmarks/cne_step_scaling.py --sizes 100000 400000 1000000 3000000
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from twinlearn.losses import fused_table
from twinlearn.training import row_sgd


def step_ms(n: int, batch: int, negatives: int, steps: int, pool) -> float:
    """Median milliseconds of one NEG step (loss + gradient) on an ``n × 2`` table."""
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((n, 2)) * 10).astype(np.float32)
    times, workspace = [], {}
    for _ in range(steps + 4):
        heads = rng.integers(0, n, batch).astype(np.int32)
        tails = rng.integers(0, n, batch).astype(np.int32)
        draws = rng.integers(0, 2 * batch - 2, (batch, negatives))
        start = time.perf_counter()
        *_, rows, row_grads = fused_table._loss_grad(
            table, heads, tails, draws, fused_table._MODE_CODE["neg"], 1.0, 0.0, 1.0, 1.0, 1.0,
            1.0 / batch, pool, workspace)
        row_sgd._step_rows(table, rows, row_grads, np.float32(1e-6), np.float32(4.0), 0)  # as a fit
        times.append(time.perf_counter() - start)
    return float(np.median(times[4:]) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000, 1_000_000, 3_000_000])
    parser.add_argument("--batch", type=int, default=32768, help="anchors per step (CNE's largest default)")
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--chunk-anchors", type=int, default=fused_table.CHUNK_ANCHORS,
                        help="smallest chunk of the batch (the kernel's constant; larger: fewer chunks)")
    args = parser.parse_args()
    fused_table.CHUNK_ANCHORS = args.chunk_anchors
    n_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    first = None
    for n in args.sizes:
        ms = step_ms(n, args.batch, args.negatives, args.steps, pool)
        first = first or ms
        print(json.dumps({"n": n, "ms_per_step": round(ms, 2), "vs_smallest": round(ms / first, 2),
                          "threads": n_threads, "chunks": fused_table.kernel_chunks(args.batch)}), flush=True)


if __name__ == "__main__":
    main()
