"""Command-line entry points.

``twinlearn`` (:func:`twinlearn.cli.app.main`, also ``python -m twinlearn``): fit, transform,
embed, evaluate and plot with any of the four methods. ``mrl_train`` / ``twinlearn-mrl``
(:func:`twinlearn.cli.mrl.mrl_main`): mrl-pytorch's training script on :class:`twinlearn.ReLIC`.

Both load lazily: ``--help`` never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "main": "twinlearn.cli.app",
    "mrl_main": "twinlearn.cli.mrl",
    "build_mrl_parser": "twinlearn.cli.mrl",
    "load_dataset": "twinlearn.cli.mrl",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'twinlearn.cli' has no attribute {name!r}")
