"""Any re-iterable of ``(a, b)`` batches as a pair source."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


class LoaderPairSource:
    """Any re-iterable of ``(a, b)`` batches (e.g. a ``torch.utils.data.DataLoader``) as a pair
    source: batches are moved to ``device``; ``generator`` feeds the loss's negative draws.

    Parameters
    ----------
    loader : iterable of (tensor, tensor)
        Must support ``len`` (batches per epoch).
    device : torch.device
    generator : torch.Generator
    """

    def __init__(self, loader: Iterable, device: torch.device, generator: torch.Generator) -> None:
        self.loader, self.device, self.generator = loader, device, generator
        self.batch_size = getattr(loader, "batch_size", None)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self) -> Iterator[tuple[Any, Any]]:
        for a, b in self.loader:
            yield (a.to(self.device, non_blocking=True), b.to(self.device, non_blocking=True))
