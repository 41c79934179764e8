"""Encoders and projectors: spec-string networks and free embedding tables."""

from twinlearn.encoders.spec import NetSpec, build_encoder, build_projector, check_projector_spec, parse_spec

__all__ = ["NetSpec", "build_encoder", "build_projector", "check_projector_spec", "parse_spec"]
