"""TLDR's networks, their initialisation and its loss, built from the estimator's parameters
(kept out of :mod:`twinlearn.estimators.tldr`, the facade)."""

from __future__ import annotations

from typing import Any

from torch import nn

from twinlearn._device import fork_torch_rng
from twinlearn.data.arrays import ArrayLike
from twinlearn.encoders import build_encoder, build_projector, parse_spec
from twinlearn.encoders.initialization import init_linear_encoder
from twinlearn.encoders.matryoshka import NestedHeads
from twinlearn.losses import BarlowTwinsLoss, MatryoshkaLoss

#: TLDR's ``encoder_init`` values
ENCODER_INITS = ("auto", "pca", "random")


def check_encoder_init(encoder_init: str, encoder: str) -> None:
    """Only a ``"linear"`` encoder has a PCA form."""
    if encoder_init == "pca" and parse_spec(encoder, "encoder").kind != "linear":
        raise ValueError(f"encoder_init='pca' needs encoder='linear', not encoder={encoder!r}")


def build_modules(params: Any, n_features: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """Encoder and projector (one per nest with ``nesting_dims``), randomly initialised from
    ``seed``; ``params`` is the estimator."""
    with fork_torch_rng(seed):
        encoder = build_encoder(params.encoder, n_features, params.n_components, params.norm_layer)
        if params.nesting_dims is None:
            projector = build_projector(params.projector, params.n_components, params.norm_layer)
        else:
            projector = NestedHeads(
                lambda m: build_projector(params.projector, m, params.norm_layer),
                params.nesting_dims, shared=False,
            )
    return encoder, projector


def initialise_encoder(params: Any, encoder: nn.Module, X: ArrayLike, seed: int) -> None:
    """Set a linear encoder to PCA of ``X`` unless ``encoder_init="random"`` (or the encoder
    is not linear: ``"auto"`` then keeps the random start)."""
    if params.encoder_init != "random" and parse_spec(params.encoder, "encoder").kind == "linear":
        init_linear_encoder(encoder[0], X, seed)


def build_loss(params: Any) -> nn.Module:
    """Barlow Twins, summed over the nests with ``nesting_dims``."""
    loss = BarlowTwinsLoss(params.lambd, params.scale_loss)
    return loss if params.nesting_dims is None else MatryoshkaLoss(loss, params.nesting_dims)
