"""Encoders and projectors: spec-string networks, nested (Matryoshka) heads."""

from twinlearn.encoders.matryoshka import NestedHeads, NestedMLPProjector, default_nesting_dims
from twinlearn.encoders.mlp import mlp
from twinlearn.encoders.spec import (
    NetSpec,
    build_encoder,
    build_projector,
    check_projector_spec,
    parse_spec,
)

__all__ = [
    "NestedHeads",
    "NestedMLPProjector",
    "NetSpec",
    "build_encoder",
    "build_projector",
    "check_projector_spec",
    "default_nesting_dims",
    "mlp",
    "parse_spec",
]
