"""Argument checks that name the argument, shared by every layer (estimators, training,
encoders): a clear ``TypeError``/``ValueError`` instead of a failure deep inside torch."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """An int ``>= minimum``; ``TypeError``/``ValueError`` naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(value: object, name: str, positive: bool = True) -> float:
    """A finite real number, ``> 0`` when ``positive``, else ``>= 0`` (weight decays, momenta,
    loss weights: no hyperparameter checked here means anything when negative)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value}")
    return float(value)


def finite_or_none(value: object, name: str) -> float | None:
    """A finite number (any sign) or None, e.g. a value read from a model file."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number or null, got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: tuple) -> Any:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {choices}")
    return value


def one_of(value: Any, alias: Any, name: str, alias_name: str) -> Any:
    """An argument given under its name or its alias (another tool's name), not both."""
    if value is not None and alias is not None:
        raise ValueError(f"give {name} or {alias_name} (its alias), not both")
    return value if value is not None else alias
