"""Would non-parametric CNE gain from several processes? The figures behind
docs/distributed-cne.md.

Measures, on this machine: (1) one process's non-parametric CNE on MNIST (``--n`` digits):
seconds per optimisation step, steps per epoch and the share of the table one step touches
(heads, tails and their negatives, which are other batch points); (2) the time of a gloo
all-reduce between 2 processes of that many table rows — what keeping a table consistent
across processes would add to every step. Run from the repository root:

    PYTHONPATH=src python benchmarks/distributed_table_sync.py --n 70000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_info

REPEATS = 50


def one_process(n: int) -> dict[str, float]:
    """Seconds per step and rows touched per step of CNE's default non-parametric run."""
    from twinlearn import CNE
    from twinlearn.data import load_mnist
    from twinlearn.pairs import EdgePairSource

    x_train, _, x_test, _ = load_mnist()
    x = np.concatenate([x_train, x_test])[np.random.default_rng(0).permutation(70000)[:n]]
    model = CNE(random_state=0).fit(x)
    graph = model.neighbor_graph_.tocoo()
    # the run's own pair source, rebuilt: its length and one batch's distinct points
    source = EdgePairSource(graph.row, graph.col, model.batch_size, torch.device("cpu"),
                            torch.Generator().manual_seed(0), weights=graph.data)
    heads, tails = next(iter(source.epoch()))
    steps = model.n_epochs_trained_ * len(source)
    return {"n": n, "epochs": model.n_epochs_trained_, "steps_per_epoch": len(source),
            "batch_size": model.batch_size, "knn_s": model.timings_["knn"],
            "optimisation_s": model.timings_["optimisation"],
            "s_per_step": model.timings_["optimisation"] / steps,
            "rows_touched_per_step": len(torch.unique(torch.cat([heads, tails])))}


def _worker(rank: int, port: int, rows: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    table = torch.randn(rows, 2)
    for _ in range(5):
        dist.all_reduce(table)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(REPEATS):
        dist.all_reduce(table)
    seconds = (time.perf_counter() - start) / REPEATS
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"rows": rows, "allreduce_s": seconds}, f)
    dist.destroy_process_group()


def all_reduce_seconds(rows: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        mp.spawn(_worker, args=(port, rows, out), nprocs=2)
        with open(out) as f:
            return json.load(f)["allreduce_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=70000)
    args = parser.parse_args()
    facts = one_process(args.n)
    facts["allreduce_touched_s"] = all_reduce_seconds(facts["rows_touched_per_step"])
    facts["machine"] = machine_info()
    print(json.dumps(facts, indent=1, default=str))


if __name__ == "__main__":
    main()
