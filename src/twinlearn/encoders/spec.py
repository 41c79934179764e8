"""Network spec strings (TLDR's format): ``linear``, ``flinear-L-H``, ``mlp-L-H``.

``TYPE[-L[-H1[-H2...]]]``: TYPE is ``linear``, ``flinear`` or ``mlp``; L the number of hidden
layers; H the hidden width(s). One width is used for every hidden layer; several widths must
number exactly L (``mlp-2-512-256`` → hidden widths [512, 256]; the original repeated the list
L times, which nobody expects).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from twinlearn.encoders.mlp import mlp

SPEC_TYPES = ("linear", "flinear", "mlp")
NORM_LAYERS = ("BN", "LN")
#: bounds of a spec (it may come from a model file): a width of 2**16 is 8x Barlow Twins'
#: projector, and "mlp-999999999-1" once built a 999999999-tuple (8 GB) before any check
MAX_LAYERS = 64
MAX_WIDTH = 2**16
_MAX_SPEC_CHARS = 512  # "flinear-64" and 64 widths of MAX_WIDTH take 395
_SPEC_RE = re.compile(r"^(linear|flinear|mlp)(?:-(\d+)((?:-\d+)*))?$")


@dataclass(frozen=True)
class NetSpec:
    """A parsed spec string."""

    kind: str
    hidden: tuple[int, ...]
    width: int | None


def parse_spec(spec: str, name: str = "spec") -> NetSpec:
    """Parse a spec string, raising ``ValueError`` with the accepted format on any mistake, or
    naming the bound for over ``MAX_LAYERS`` hidden layers or a width over ``MAX_WIDTH``."""
    if not isinstance(spec, str):
        raise TypeError(f"{name} must be a spec string such as 'linear' or 'mlp-2-2048', got {spec!r}")
    if len(spec) > _MAX_SPEC_CHARS:
        raise ValueError(f"{name} is a spec of {len(spec)} characters: too long for {MAX_LAYERS} "
                         f"layers of width <= {MAX_WIDTH} (e.g. 'mlp-2-2048')")
    shown = repr(spec) if len(spec) <= 60 else repr(spec[:50]) + "..."  # no 500-digit errors
    match = _SPEC_RE.match(spec.strip().lower())
    if match is None:
        raise ValueError(
            f"{name}={shown} is not a valid spec: expected TYPE[-LAYERS-WIDTH], TYPE one of "
            f"{', '.join(SPEC_TYPES)} (e.g. 'linear', 'flinear-1-512', 'mlp-2-2048')"
        )
    kind, layers, widths = match.group(1), match.group(2), match.group(3)
    n_layers = int(layers) if layers is not None else 0
    hidden = tuple(int(w) for w in widths.split("-")[1:]) if widths else ()
    if n_layers > MAX_LAYERS:
        raise ValueError(f"{name}={shown} has over {MAX_LAYERS} hidden layers, the most allowed")
    if layers is not None and not hidden:
        raise ValueError(f"{name}={shown} gives no width, e.g. '{kind}-{max(n_layers, 1)}-512'")
    if any(w < 1 or w > MAX_WIDTH for w in hidden):
        raise ValueError(f"{name}={shown}: widths must be in [1, {MAX_WIDTH}]")
    width = hidden[-1] if hidden else None
    if len(hidden) == 1:
        hidden = hidden * n_layers
    elif len(hidden) != n_layers:
        raise ValueError(f"{name}={shown}: give one width or exactly {n_layers} widths for "
                         f"{n_layers} hidden layers")
    return NetSpec(kind, hidden, width)


def check_choice_norm(norm_layer: str) -> None:
    if norm_layer not in NORM_LAYERS:
        raise ValueError(f"norm_layer={norm_layer!r}: use 'BN' (BatchNorm) or 'LN' (LayerNorm)")


def _norm(norm_layer: str, width: int) -> nn.Module:
    check_choice_norm(norm_layer)
    return nn.BatchNorm1d(width) if norm_layer == "BN" else nn.LayerNorm(width)


def build_stack(spec: NetSpec, widths: list[int], norm_layer: str) -> nn.Sequential:
    """Linear layers through ``widths`` with TLDR's semantics.

    ``linear``/``flinear``: Linear (with bias) → Norm for each hidden layer, then Linear (bias).
    ``mlp``: Linear (no bias) → Norm → ReLU for each hidden layer, then Linear (no bias).
    """
    return mlp(widths, bias=spec.kind != "mlp", norm=lambda width: _norm(norm_layer, width),
               activation=spec.kind == "mlp")


def build_encoder(spec: str, in_dim: int, out_dim: int, norm_layer: str = "BN") -> nn.Sequential:
    """Encoder ``in_dim → hidden... → out_dim`` from a spec string."""
    parsed = parse_spec(spec, "encoder")
    check_choice_norm(norm_layer)
    return build_stack(parsed, [in_dim, *parsed.hidden, out_dim], norm_layer)


def check_projector_spec(spec: str) -> NetSpec:
    """Parse a projector spec, which unlike an encoder spec must name an output width."""
    parsed = parse_spec(spec, "projector")
    if parsed.width is None:
        raise ValueError(
            f"projector={spec!r} gives no output width: a projector needs one, e.g. "
            f"'{parsed.kind}-0-2048' or 'mlp-1-2048'"
        )
    return parsed


def build_projector(spec: str | None, in_dim: int, norm_layer: str = "BN") -> nn.Sequential:
    """Projector ``in_dim → H → ... → H`` (L + 1 linear layers), then ``BatchNorm1d(affine=False)``.

    As in TLDR, ``mlp-2-2048`` is Linear(d, 2048) → BN → ReLU → Linear(2048, 2048) → BN → ReLU →
    Linear(2048, 2048), all without bias; ``linear-0-H`` is one Linear(d, H). ``None`` means no
    projector: only the non-affine BatchNorm on the encoder output.
    """
    if spec is None:
        return nn.Sequential(nn.BatchNorm1d(in_dim, affine=False))
    parsed = check_projector_spec(spec)
    stack = build_stack(parsed, [in_dim, *parsed.hidden, parsed.width], norm_layer)
    return nn.Sequential(*stack, nn.BatchNorm1d(parsed.width, affine=False))
