"""Quality of data-parallel TLDR and parametric CNE on 5 000 MNIST digits: 2 processes (gloo)
reach the 10-NN accuracy of one process at the same global batch, within 0.01.

Slow (two spawned processes train both models); run with ``pytest -m slow -s`` to print the
figures."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from twinlearn import CNE, TLDR
from twinlearn._device import torch_threads
from twinlearn.data import find_shared_data, load_mnist
from twinlearn.metrics import knn_accuracy

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")]

WORLD = 2
N_TRAIN, N_TEST = 5000, 1000


def _digits():
    x_train, y_train, x_test, y_test = load_mnist()
    rng = np.random.default_rng(0)
    tr = rng.choice(len(x_train), N_TRAIN, replace=False)
    te = rng.choice(len(x_test), N_TEST, replace=False)
    return x_train[tr], y_train[tr], x_test[te], y_test[te]


def _models():
    """The documented fast TLDR setting, and parametric CNE, each at a global batch of 1024."""
    return {"TLDR": TLDR(n_components=32, projector="mlp-1-512", learning_rate=1.6, n_neighbors=20,
                         n_epochs=20, batch_size=1024, random_state=0),
            "CNE(parametric=True)": CNE(parametric=True, n_epochs=15, batch_size=1024, random_state=0)}


def _fit_all() -> dict[str, np.ndarray]:
    """Test embeddings, fit seconds and accuracies of every model, trained in this process."""
    x_train, y_train, x_test, y_test = _digits()
    out = {}
    for name, model in _models().items():
        start = time.perf_counter()
        model.fit(x_train)
        out[f"{name} seconds"] = np.array(time.perf_counter() - start)
        out[f"{name} acc"] = np.array(knn_accuracy(model.transform(x_train), y_train,
                                                   model.transform(x_test), y_test))
    return out


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **_fit_all())
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(find_shared_data("mnist.npz") is None, reason="MNIST not found ($TWINLEARN_DATA)")
def test_two_processes_match_one_process_on_mnist(tmp_path):
    from test_distributed_pairs import _free_port

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD)
    r0, r1 = (dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(WORLD))
    with torch_threads(1):  # one core per process, as each rank had
        one = _fit_all()
    for name in _models():
        acc1, acc2 = float(one[f"{name} acc"]), float(r0[f"{name} acc"])
        print(f"{name}: 10-NN accuracy 1 process {acc1:.4f}, 2 processes {acc2:.4f}; fit "
              f"{float(one[f'{name} seconds']):.1f} s vs {float(r0[f'{name} seconds']):.1f} s")
        assert float(r1[f"{name} acc"]) == acc2  # both ranks hold the same model
        assert acc2 > 0.5 and abs(acc2 - acc1) <= 0.01  # chance: 0.1
