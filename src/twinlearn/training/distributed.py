"""Multi-process training on PyTorch's own engine (``torch.distributed`` + DDP).

Launch a script with ``torchrun --nproc_per_node=N script.py`` (or initialise a process group
yourself); the library then shards the data across processes, wraps the trained network in
``DistributedDataParallel`` and, for contrastive losses with all in-batch negatives, gathers the
embeddings of every process so each anchor sees the negatives of the global batch.

Gradient bookkeeping: each process's loss is the mean over its own anchors; the gather keeps
gradients (its backward sums the contributions of all processes to each embedding) and DDP
averages parameter gradients, so training equals one process on the concatenated batch.
"""

from __future__ import annotations

import os

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
    (``gloo`` on CPU, ``nccl`` with CUDA)."""
    if not dist.is_initialized() and launched_processes() > 1:
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))


def require_processes(n: int) -> None:
    """Join the process group for ``n > 1`` processes (``devices=n``), or say how to launch."""
    if n <= 1:
        return
    init_from_env()
    if world_size() != n:
        raise ValueError(f"devices={n} needs as many processes: launch with "
                         f"torchrun --nproc_per_node={n} (found {world_size()})")


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rows of ``x`` from every process, concatenated in rank order, differentiable; and the
    offset of this process's rows. Every process must pass the same shape."""
    if not is_distributed():
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous())
    return torch.cat(parts), rank() * x.shape[0]


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
