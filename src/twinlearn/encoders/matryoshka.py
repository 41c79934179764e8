"""Nested ("Matryoshka") heads: one projection per prefix of the embedding.

Matryoshka Representation Learning (Kusupati et al., NeurIPS 2022) trains the first ``m``
dimensions of an embedding to be useful on their own, for every ``m`` in ``nesting_dims``. A
head maps each prefix to the space the loss works in:

* **MRL-E** (``shared=True``): one head; the prefix ``x[:, :m]`` meets only the first ``m``
  input columns of its first linear layer. Computed by zeroing the columns past ``m``, which
  is the same thing for any head that starts with a linear layer.
* **full MRL** (``shared=False``): one head per nest, built for an input of width ``m``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from twinlearn.encoders.mlp import mlp


def default_nesting_dims(dim: int, smallest: int = 8) -> list[int]:
    """``[8, 16, 32, ..., dim]``: powers of two from ``smallest``, ending with ``dim`` itself
    (mrl-pytorch stops at the largest power of two, which for a non-power-of-two feature size
    leaves the last dimensions untrained)."""
    dims = []
    m = smallest
    while m < dim:
        dims.append(m)
        m *= 2
    return [*dims, dim]


def check_nesting_dims(nesting_dims: object, dim: int, name: str = "nesting_dims") -> list[int]:
    """Strictly increasing positive ints, the largest at most ``dim``."""
    if isinstance(nesting_dims, (str, bytes)) or not isinstance(nesting_dims, Sequence):
        raise TypeError(f"{name} must be a list of ints such as [8, 16, 32], got {nesting_dims!r}")
    dims = list(nesting_dims)
    if not dims:
        raise ValueError(f"{name} is empty: give at least one prefix size")
    for m in dims:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral):
            raise TypeError(f"{name} must hold ints, got {m!r}")
    dims = [int(m) for m in dims]
    if dims[0] < 1 or any(b <= a for a, b in zip(dims, dims[1:])):
        raise ValueError(f"{name}={dims} must be positive and strictly increasing")
    if dims[-1] > dim:
        raise ValueError(f"{name}={dims} asks for {dims[-1]} dims but the embedding has {dim}")
    return dims


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


class NestedHeads(nn.Module):
    """Apply a head to every nested prefix of the input.

    Parameters
    ----------
    make_head : callable
        ``make_head(in_dim) -> nn.Module``.
    nesting_dims : list of int
        Prefix sizes, strictly increasing.
    shared : bool
        MRL-E (one head, sliced input columns) if True, full MRL (one head per nest) if False.

    ``forward(x)`` returns a list with one ``(B, out)`` tensor per nest; ``x`` may be wider than
    the largest nest (the rest is ignored).
    """

    def __init__(
        self,
        make_head: Callable[[int], nn.Module],
        nesting_dims: Sequence[int],
        shared: bool = True,
    ) -> None:
        super().__init__()
        self.nesting_dims = list(nesting_dims)
        self.shared = shared
        if shared:
            self.heads = nn.ModuleList([make_head(self.nesting_dims[-1])])
        else:
            self.heads = nn.ModuleList([make_head(m) for m in self.nesting_dims])
        # Batch statistics must be those of each nest alone, so BN heads run nest by nest; a
        # shared head without BN runs once on all nests stacked along the batch.
        self._stack = shared and not _has_batchnorm(self.heads[0])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        full = self.nesting_dims[-1]
        x = x[:, :full]
        if not self.shared:
            return [head(x[:, :m]) for head, m in zip(self.heads, self.nesting_dims)]
        cols = torch.arange(full, device=x.device)
        masks = torch.stack([cols < m for m in self.nesting_dims]).to(x.dtype)  # (K, full)
        if self._stack:
            k, b = len(self.nesting_dims), x.shape[0]
            out = self.heads[0]((x.unsqueeze(0) * masks[:, None, :]).reshape(k * b, full))
            return list(out.reshape(k, b, -1).unbind(0))
        return [self.heads[0](x * mask) for mask in masks]


class NestedMLPProjector(NestedHeads):
    """The ReLIC/MRL projector: ``Linear(m, H) → ReLU → Linear(H, out)`` on each prefix, without
    biases by default (mrl-pytorch's ``MatryoshkaProjector``, with its hidden layer actually
    used: the original computed it and then discarded it).

    Parameters
    ----------
    nesting_dims : list of int
    out_dim : int
        Projection size (64 in mrl-pytorch).
    hidden_dim : int or None
        Hidden width; ``None`` gives a single nested linear layer (what the original computed).
    shared : bool
        MRL-E (default, as in mrl-pytorch) or full MRL.
    bias : bool
    """

    def __init__(
        self,
        nesting_dims: Sequence[int],
        out_dim: int,
        hidden_dim: int | None = None,
        shared: bool = True,
        bias: bool = False,
    ) -> None:
        def make_head(in_dim: int) -> nn.Module:
            if hidden_dim is None:
                return nn.Linear(in_dim, out_dim, bias=bias)
            return mlp([in_dim, hidden_dim, out_dim], bias=bias)

        super().__init__(make_head, nesting_dims, shared)


__all__ = ["NestedHeads", "NestedMLPProjector", "check_nesting_dims", "default_nesting_dims"]
