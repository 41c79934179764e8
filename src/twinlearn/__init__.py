"""twinlearn: self-supervised dimensionality reduction, embedding and visualization from pairs.

Importing twinlearn is cheap: estimators load on first use, and optional dependencies
(torchvision, matplotlib) only when a feature needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

logging.getLogger("twinlearn").addHandler(logging.NullHandler())

_LAZY = {
    "TLDR": "twinlearn.estimators.tldr",
    "TSimCNE": "twinlearn.estimators.tsimcne",
    "CNE": "twinlearn.estimators.cne",
    "ContrastiveEmbedding": "twinlearn.estimators.contrastive",
    "ReLIC": "twinlearn.estimators.matryoshka",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'twinlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
