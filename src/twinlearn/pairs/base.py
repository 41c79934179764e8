"""The pair-source interface: what the trainer iterates over."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch


class PairSource(Protocol):
    """Yields, each epoch, batches of positive pairs.

    A batch is whatever the training objective consumes (index tensors for kNN pairs, two
    augmented views for images). ``generator`` is the source's only randomness, so that its
    state can be checkpointed and restored for an exact resume.
    """

    generator: torch.Generator

    def __len__(self) -> int:
        """Number of batches per epoch."""

    def epoch(self) -> Iterator[Any]:
        """Iterate over one epoch's batches."""
