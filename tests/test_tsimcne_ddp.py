"""DDP on CPU (gloo, 2 processes): negatives are gathered across processes, so two processes
with batch B train exactly like one process with batch 2B."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from twinlearn.losses import ContrastiveLoss
from twinlearn.training import distributed
from twinlearn.training.objectives import ViewPairObjective

WORLD = 2


def _net():
    # no batch norm: its per-process statistics would differ from one big batch's
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 2))


def _views(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 4, 4, generator=g), torch.rand(n, 3, 4, 4, generator=g)


def _loss_and_grads(objective, batch):
    objective.zero_grad()
    loss = objective(batch)
    loss.backward()
    net = objective.network.module if hasattr(objective.network, "module") else objective.network
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def _worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        v1, v2 = _views()
        half = slice(rank * 4, (rank + 1) * 4)
        local = (v1[half], v2[half])
        results = {}
        for gather in (True, False):
            loss_fn = ContrastiveLoss("infonce", negative_samples="full", symmetric=True, gather_negatives=gather)
            objective = ViewPairObjective(distributed.wrap_ddp(_net()), loss_fn)
            loss, grads = _loss_and_grads(objective, local)
            results[f"loss_{gather}"] = distributed.mean_across_processes(loss).numpy()
            for i, g in enumerate(grads):  # DDP has already averaged them
                results[f"grad{i}_{gather}"] = g.numpy()
        # the estimator end to end on 2 processes: replicas must stay identical
        from twinlearn import TSimCNE

        X = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
        est = TSimCNE(backbone="small_cnn", total_epochs=[1, 1, 1], batch_size=4, devices=WORLD,
                      random_state=0, device="cpu").fit(X)
        results["params"] = torch.cat([p.detach().flatten() for p in est.model_.parameters()]).numpy()
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **results)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_gathers_negatives_like_one_big_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in range(WORLD))

    single = ViewPairObjective(_net(), ContrastiveLoss("infonce", negative_samples="full", symmetric=True))
    loss, grads = _loss_and_grads(single, _views())
    np.testing.assert_allclose(r0["loss_True"], loss.numpy(), rtol=1e-5)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(r0[f"grad{i}_True"], g.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(r0[f"grad{i}_True"], r1[f"grad{i}_True"])
    # without the gather each process only sees its own 2·4 − 2 negatives: a different loss
    assert abs(float(r0["loss_False"]) - float(loss)) > 1e-3
    np.testing.assert_array_equal(r0["params"], r1["params"])
