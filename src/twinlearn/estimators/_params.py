"""Declared parameter constraints.

Each estimator lists, for every ``__init__`` argument, what it accepts
(``_parameter_constraints``, in the spirit of scikit-learn's); :func:`validate_params` checks
them all before any work, with an error that names the argument. Upper bounds are
*plausibility* bounds: a value past them (``n_components=10**9``, ``learning_rate=1e300``) is
a typo, and failing at once beats failing inside torch after the kNN graph was built.
Relations between arguments (an alias that disagrees, nesting dims larger than the output)
are each estimator's ``_check_param_relations``.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from twinlearn._device import resolve_device, seed_from
from twinlearn.neighbors.policy import parse_memory_budget

#: largest plausible width of an embedding or a hidden layer
MAX_WIDTH = 2**16
#: largest plausible epoch count, batch size and learning rate
MAX_EPOCHS = 10**6
MAX_BATCH = 2**24
MAX_LEARNING_RATE = 1e6
#: largest plausible side of an image, in pixels
MAX_IMAGE_SIDE = 8192


class Constraint(Protocol):
    """Checks one value; raises ``TypeError``/``ValueError`` naming ``name``."""

    def check(self, value: object, name: str) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Integer:
    """An int in ``[low, high]`` (bools are not ints here)."""

    low: int = 1
    high: int | None = None

    def check(self, value: object, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < self.low:
            raise ValueError(f"{name} must be >= {self.low}, got {value}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{name}={value} is implausibly large (at most {self.high})")

    def describe(self) -> str:
        high = "" if self.high is None else f" and <= {self.high}"
        return f"an int >= {self.low}{high}"


@dataclass(frozen=True)
class Real:
    """A finite real number ``> low`` (``>= low`` unless ``strict``), at most ``high``."""

    low: float = 0.0
    high: float | None = None
    strict: bool = True

    def check(self, value: object, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value < self.low or (self.strict and value == self.low):
            raise ValueError(f"{name} must be a finite number {'>' if self.strict else '>='} "
                             f"{self.low:g}, got {value}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{name}={value} is implausibly large (at most {self.high:g})")

    def describe(self) -> str:
        return f"a number {'>' if self.strict else '>='} {self.low:g}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (strings, ``None``, ``True``/``False``)."""

    values: tuple

    def check(self, value: object, name: str) -> None:
        value = bool(value) if isinstance(value, np.bool_) else value
        # same type as well as equal: True == 1, and an option set of strings must not admit True
        if any(type(value) is type(v) and value == v for v in self.values):
            return
        # a value of a type no option has is a TypeError; a wrong value of the right type not
        kind = ValueError if any(type(value) is type(v) for v in self.values) else TypeError
        raise kind(f"{name}={value!r} is not supported; choose one of {self.values}")

    def describe(self) -> str:
        return " or ".join(repr(v) for v in self.values)


BOOLEAN = Options((True, False))


@dataclass(frozen=True)
class Instance:
    """An instance of one of ``types`` (modules, callables given as classes)."""

    types: tuple
    label: str

    def check(self, value: object, name: str) -> None:
        if not isinstance(value, self.types):
            raise TypeError(f"{name} must be {self.label}, got {type(value).__name__}")

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class Check:
    """A value accepted by an existing checker ``check(value, name)`` (spec strings, nesting dims)."""

    checker: Callable[[object, str], object]
    label: str

    def check(self, value: object, name: str) -> None:
        self.checker(value, name)

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class AnyOf:
    """Accepted when one of ``members`` accepts it."""

    members: tuple

    def check(self, value: object, name: str) -> None:
        errors = []
        for member in self.members:
            try:
                member.check(value, name)
                return
            except (TypeError, ValueError) as err:
                errors.append(err)
        # a member that took the value's type but not the value says most (a ValueError), the
        # range of a number more than a list of options
        value_errors = [(m, e) for m, e in zip(self.members, errors) if isinstance(e, ValueError)]
        specific = [e for m, e in value_errors if not isinstance(m, Options)]
        if len(value_errors) == 1 or len(specific) == 1:
            raise (value_errors[0][1] if len(value_errors) == 1 else specific[0])
        kind = TypeError if not value_errors else ValueError
        raise kind(f"{name} must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        return " or ".join(m.describe() for m in self.members)


def none_or(constraint: Constraint) -> AnyOf:
    return AnyOf((Options((None,)), constraint))


def _check_seed(value: object, name: str) -> None:
    if isinstance(value, np.random.Generator):  # drawing from it now would consume it
        return
    try:
        seed_from(value)
    except (TypeError, ValueError) as err:
        raise type(err)(str(err).replace("random_state", name)) from None


def _check_device(value: object, name: str) -> None:
    try:
        resolve_device(value)
    except (TypeError, ValueError) as err:
        raise type(err)(str(err).replace("device", name, 1)) from None


def _check_int_list(value: object, name: str) -> None:
    from twinlearn.encoders.matryoshka import check_nesting_dims

    check_nesting_dims(value, sys.maxsize, name)


SEED = Check(_check_seed, "None, an int in [0, 2**63) or a numpy Generator")
DEVICE = Check(_check_device, "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device")
NESTING_DIMS = none_or(Check(_check_int_list, "a strictly increasing list of ints"))
PRECISION = Options(("auto", "fp32", "bf16", "fp16"))
VERBOSE = AnyOf((BOOLEAN, Integer(0)))
MEMORY_BUDGET = Check(parse_memory_budget, "None, a number of bytes or a string such as '4GB'")
MODULE = Instance((torch.nn.Module,), "a torch.nn.Module")
SEQUENCE = Instance((list, tuple), "a list")


def _check_callable(value: object, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be a callable, got {value!r}")


CALLABLE = Check(_check_callable, "a callable")


def validate_params(params: Mapping[str, Any], constraints: Mapping[str, Constraint], owner: str) -> None:
    """Check every parameter against its declared constraint.

    Raises
    ------
    TypeError, ValueError
        Naming the first parameter that does not satisfy its constraint.
    RuntimeError
        If a parameter has no declared constraint (a programming error in ``owner``).
    """
    missing = sorted(set(params) - set(constraints))
    if missing:
        raise RuntimeError(f"{owner} declares no constraint for {missing}")
    for name, value in params.items():
        constraints[name].check(value, name)

