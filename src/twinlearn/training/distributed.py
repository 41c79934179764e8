"""Multi-process training on PyTorch's own engine (``torch.distributed``).

Launch a script with ``torchrun --nproc_per_node=P script.py`` (``--nnodes`` for several
machines), or initialise a process group yourself; ``gloo`` on CPUs, ``nccl`` on GPUs. Two
ways of training run on it:

- **t-SimCNE** (``devices=P``) shards the images, wraps the network in
  ``DistributedDataParallel`` and gathers the embeddings of every process so that each anchor
  sees the negatives of the global batch.
- **Data-parallel pairs** (TLDR, parametric CNE: the trainer's ``data_parallel``): every
  process draws the same global batch of pairs (the pair source's generator is seeded alike
  everywhere) and keeps its own contiguous share (:func:`local_share`); batch-norm statistics
  are taken over the global batch (:class:`GlobalBatchNorm1d`), the loss's inputs are gathered
  so every process computes the loss of the global batch, and gradients are averaged
  (:func:`average_gradients`). The run then equals one process at the same global batch, up
  to the order of floating-point sums, and every process ends with the same model.

Gradient bookkeeping: a differentiable gather or all-reduce sums, in its backward, the
gradients every process computes for a tensor; when every process computes the same global
loss each local gradient is thus ``P`` times its share, and averaging over processes (DDP's
own averaging, or :func:`average_gradients`) gives exactly one process's gradient.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def launched_processes() -> int:
    """Processes started by ``torchrun`` (``$WORLD_SIZE``), 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(backend: str | None = None) -> None:
    """Initialise the default process group from torchrun's environment, if not done yet
    (``gloo`` on CPU, ``nccl`` with CUDA, each process on its ``$LOCAL_RANK`` GPU)."""
    if not dist.is_initialized() and launched_processes() > 1:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)


def require_processes(n: int) -> None:
    """Join the process group for ``n > 1`` processes (``devices=n``), or say how to launch."""
    if n <= 1:
        return
    init_from_env()
    if world_size() != n:
        raise ValueError(f"devices={n} needs as many processes: launch with "
                         f"torchrun --nproc_per_node={n} (found {world_size()})")


def refuse_under_process_group(what: str, advice: str) -> None:
    """Raise ``ValueError`` when this process belongs to a group of several (``what`` cannot
    train across processes; ``advice`` says what can)."""
    init_from_env()
    if is_distributed():
        raise ValueError(f"{what} does not train across processes (this one is rank {rank()} of "
                         f"{world_size()}): {advice}")


def _all_gather_objects(value: Any) -> list[Any]:
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def same_everywhere(value: Any, what: str) -> Any:
    """``value``, checked equal in every process (a ``ValueError`` naming ``what`` and each
    process's value otherwise, raised in all of them so none waits for the others)."""
    if not is_distributed():
        return value
    values = _all_gather_objects(value)
    if any(v != values[0] for v in values):
        listed = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
        raise ValueError(f"the processes of the group disagree on {what} ({listed})")
    return value


def agreed_seed(X: Any, seed: int) -> int:
    """Join torchrun's process group if launched by it; check, before any work, that every
    process fits the same data (shape and content fingerprint); return rank 0's ``seed``, so
    that initialisation and pair sampling agree even for ``random_state=None``."""
    init_from_env()
    if not is_distributed():
        return seed
    from twinlearn.training.run_folder import data_fingerprint

    same_everywhere((tuple(int(s) for s in X.shape), data_fingerprint(X)),
                    "X (its shape, then a fingerprint of its rows): every process must fit the same data")
    return int(_all_gather_objects(seed)[0])


def shard_bounds(n: int) -> tuple[int, int]:
    """This process's rows ``[lo, hi)`` of ``n``: nearly equal contiguous parts in rank order."""
    p, r = world_size(), rank()
    return n * r // p, n * (r + 1) // p


def local_share(batch: Any) -> Any:
    """This process's rows of a batch (a tensor, or a tuple or list of tensors of equal rows)."""
    if not is_distributed():
        return batch
    if isinstance(batch, torch.Tensor):
        lo, hi = shard_bounds(batch.shape[0])
        return batch[lo:hi]
    return type(batch)(local_share(part) for part in batch)


def _gather(x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` from every process (their counts may differ: padded for the collective)."""
    sizes = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    sizes = [int(s) for s in sizes]
    padded = torch.cat([x.contiguous(), x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))])
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sum(sizes[: rank()])


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` from every process, concatenated in rank order, differentiable; and the
    offset of this process's rows. Row counts may differ between processes."""
    if not is_distributed():
        return x, 0
    return _gather(x, with_grad=True)


def _gather_loss_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(all_gather_with_grad(a)[0] if isinstance(a, torch.Tensor) else a for a in args)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics cover the batches of all processes
    (differentiable all-reduces of the sums), on CPUs too: torch's ``SyncBatchNorm`` needs a
    GPU. Outside a process group, or in eval mode, it is ``BatchNorm1d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.ndim)]
        shape = [1, -1, *[1] * (x.ndim - 2)]
        x = x.float()  # sums over the global batch in float32 whatever autocast gives
        rows = x.new_tensor([x.numel() // max(x.shape[1], 1)])
        totals = all_reduce(torch.cat([x.sum(dims), rows]))
        count = totals[-1].detach()
        mean = totals[:-1] / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / count  # two passes: no cancellation
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), float(count))
        return y

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        unbiased = var * count / max(count - 1.0, 1.0)  # as BatchNorm keeps it
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def prepare_data_parallel(objective: nn.Module) -> None:
    """Make ``objective`` train on each process's share of the global batch: its
    ``BatchNorm1d`` layers take global statistics (same parameters and state-dict keys) and
    its ``loss`` module receives the gathered inputs of every process."""
    loss = getattr(objective, "loss", None)
    if not isinstance(loss, nn.Module):
        raise TypeError(f"{type(objective).__name__} has no loss module to gather the batch for; "
                        "data-parallel training needs one")
    for module in objective.modules():
        if type(module) is nn.BatchNorm1d:
            module.__class__ = GlobalBatchNorm1d
    loss.register_forward_pre_hook(_gather_loss_inputs)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the processes (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not is_distributed():
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


class ShardedIndex:
    """A built :class:`~twinlearn.neighbors.KNNIndex` whose kNN graph each process searches
    for its own rows against the whole index, then gathers: every process gets the same
    graph for a ``1/P`` share of the search. Outside a process group, the index itself.

    Parameters
    ----------
    index : KNNIndex
        Built on ``X``.
    X : array of shape (n_samples, n_features)
    """

    def __init__(self, index: Any, X: Any) -> None:
        self.index, self.X = index, X
        self.metric = index.metric

    def query_self(self, k: int, on_device: bool = False) -> tuple[Any, Any]:
        """As ``KNNIndex.query_self``: the ``k`` nearest other rows of every row."""
        if not is_distributed():  # (a precomputed-distance index has no device to ask for)
            return self.index.query_self(k, on_device=True) if on_device else self.index.query_self(k)
        from twinlearn.neighbors.faiss_index import drop_self

        n = self.index.n_samples
        lo, hi = shard_bounds(n)
        idx, dist_ = self.index.query(self.X[lo:hi], min(k + 1, n))
        idx, dist_ = drop_self(idx, dist_, k, np.arange(lo, hi))
        device = _collective_device()
        found = [_gather(torch.from_numpy(np.ascontiguousarray(a)).to(device), with_grad=False)[0]
                 for a in (idx.astype(np.int64), dist_.astype(np.float32))]
        if on_device:
            return tuple(t.to(self.index.device) for t in found)
        return tuple(t.cpu().numpy() for t in found)


def _collective_device() -> torch.device:
    """Where a collective's own tensors live: this process's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_processes(value: torch.Tensor) -> torch.Tensor:
    """The average of a scalar over processes (itself when not distributed)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size()


def local_device(device: torch.device) -> torch.device:
    """This process's GPU under a multi-GPU launch (``$LOCAL_RANK``), ``device`` otherwise."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank())))
    return device


def wrap_ddp(module: nn.Module) -> nn.Module:
    """``DistributedDataParallel(module)`` under a process group, ``module`` otherwise."""
    if not is_distributed():
        return module
    device = next(module.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
