"""The one builder of fully connected stacks every network of the library is made of (TLDR's
spec strings, CNE's parametric network, t-SimCNE's head, the Matryoshka projector)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn as nn


def mlp(
    widths: Sequence[int],
    *,
    bias: bool = True,
    norm: Callable[[int], nn.Module] | None = None,
    activation: bool = True,
) -> nn.Sequential:
    """``Linear(widths[0], widths[1]) → [norm] → [ReLU] → ... → Linear(widths[-2], widths[-1])``.

    Parameters
    ----------
    widths : sequence of int
        Input width, hidden widths, output width (at least two entries).
    bias : bool
        Biases of every linear layer.
    norm : callable, optional
        ``norm(width)`` builds the normalisation after each hidden linear layer.
    activation : bool
        A ReLU after each hidden layer (after its norm).
    """
    layers: list[nn.Module] = []
    for i in range(len(widths) - 2):
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if norm is not None:
            layers.append(norm(widths[i + 1]))
        if activation:
            layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Linear(widths[-2], widths[-1], bias=bias))
    return nn.Sequential(*layers)


def cne_network(in_dim: int, out_dim: int) -> nn.Sequential:
    """CNE's parametric network: D → 100 → 100 → 100 → d with ReLUs, default PyTorch init."""
    return mlp([in_dim, 100, 100, 100, out_dim])
