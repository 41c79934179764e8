"""Progress bars for the long steps (kNN search, graph weights, image decoding): tqdm when asked
for, the plain iterable otherwise (no tqdm import then)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], enabled: bool, desc: str, total: int | None = None,
             unit: str = "it") -> Iterator[T] | Iterable[T]:
    """``items`` under a tqdm bar named ``desc`` if ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, leave=False)
