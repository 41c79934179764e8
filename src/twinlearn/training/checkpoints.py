"""Checks of a checkpoint's parts before the trainer loads them: a crafted or foreign file is
refused with a ``ValueError`` naming it, never half loaded."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from twinlearn import io


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_objective_state(
    objective: nn.Module, tensors: dict[str, torch.Tensor], path: object
) -> dict[str, torch.Tensor]:
    """The objective's state from a checkpoint: this model's keys, shapes and dtypes, finite."""
    state, mine = io.split_prefix(tensors, "objective"), objective.state_dict()
    if set(state) != set(mine):
        raise ValueError(
            f"checkpoint {path} does not match this model: missing "
            f"{sorted(set(mine) - set(state))[:5]}, unexpected {sorted(set(state) - set(mine))[:5]}"
        )
    for key, value in state.items():
        want = mine[key]
        if (value.shape != want.shape or value.dtype != want.dtype
                or (value.is_floating_point() and not bool(torch.isfinite(value).all()))):
            raise ValueError(
                f"checkpoint {path} does not match this model: {key!r} is {value.dtype} of shape "
                f"{tuple(value.shape)}, expected finite {want.dtype} of shape {tuple(want.shape)}"
            )
    return state


def checked_rng_state(generator: torch.Generator, value: object, path: object) -> torch.Tensor:
    """A generator state that ``generator`` accepts (tried on a scratch generator first)."""
    want = generator.get_state()
    if (not isinstance(value, torch.Tensor) or value.dtype != torch.uint8
            or value.shape != want.shape):
        raise ValueError(f"{path} has no valid random generator state "
                         f"(uint8 of shape {tuple(want.shape)} expected)")
    try:
        torch.Generator(device=generator.device).set_state(value)
    except RuntimeError as err:
        raise ValueError(f"{path} has an invalid random generator state: {err}") from err
    return value


def checked_scaler_state(
    scaler: torch.amp.GradScaler, saved: object, path: object
) -> dict[str, Any] | None:
    """The fp16 loss scaler's state to load, or ``None``: a disabled scaler (an fp16 run resumed
    in fp32) has nothing to load, and an fp32 checkpoint leaves an fp16 run's scaler fresh."""
    if not scaler.is_enabled() or saved is None:
        return None
    mine = scaler.state_dict()
    if not (isinstance(saved, dict) and set(saved) == set(mine)
            and all(io.fits_like(saved[k], mine[k]) for k in mine) and saved["scale"] > 0
            and all(is_int(saved[k]) for k in ("growth_interval", "_growth_tracker"))):
        raise ValueError(f"{path} has an invalid fp16 gradient scaler state: {saved!r:.200}")
    return saved
