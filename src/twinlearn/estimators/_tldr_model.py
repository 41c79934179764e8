"""TLDR's networks, their initialisation and its loss, built from the estimator's parameters
(kept out of :mod:`twinlearn.estimators.tldr`, the facade)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from twinlearn._device import fork_torch_rng
from twinlearn.data.arrays import ArrayLike
from twinlearn.encoders import build_encoder, build_projector, parse_spec
from twinlearn.encoders.initialization import init_linear_encoder
from twinlearn.encoders.matryoshka import NestedHeads
from twinlearn.losses import BarlowTwinsLoss, MatryoshkaLoss

#: TLDR's ``encoder_init`` values
ENCODER_INITS = ("auto", "pca", "random")
#: TLDR's ``output_basis`` values
OUTPUT_BASES = ("auto", "orthonormal", "trained")


def check_encoder_init(encoder_init: str, encoder: str) -> None:
    """Only a ``"linear"`` encoder has a PCA form."""
    if encoder_init == "pca" and parse_spec(encoder, "encoder").kind != "linear":
        raise ValueError(f"encoder_init='pca' needs encoder='linear', not encoder={encoder!r}")


def check_output_basis(output_basis: str, encoder: str) -> None:
    """Only a ``"linear"`` encoder has an orthonormal form."""
    if output_basis == "orthonormal" and parse_spec(encoder, "encoder").kind != "linear":
        raise ValueError(f"output_basis='orthonormal' needs encoder='linear', not encoder={encoder!r}")


def resolve_output_basis(output_basis: str, encoder: str, n_components: int, n_features: int) -> str:
    """``"orthonormal"`` or ``"trained"``: ``"auto"`` is orthonormal where it exists (a
    ``"linear"`` encoder with ``n_components <= n_features``); asked for elsewhere, an error."""
    check_output_basis(output_basis, encoder)
    fits = n_components <= n_features
    if output_basis == "auto":
        return "orthonormal" if fits and parse_spec(encoder, "encoder").kind == "linear" else "trained"
    if output_basis == "orthonormal" and not fits:
        raise ValueError(f"output_basis='orthonormal' needs n_components <= n_features: "
                         f"{n_components} orthonormal rows do not fit in {n_features} dimensions")
    return output_basis


def orthonormalise_encoder(layer: nn.Linear, projector: nn.Module) -> None:
    """Replace the rows of ``W`` in ``y = W x + b`` by an orthonormal basis of their span,
    in order (QR of ``Wᵀ``, ``R``'s diagonal made positive): each prefix ``[:m]`` keeps its
    span, so Matryoshka nests stay nested. The output becomes ``y' = R⁻ᵀ y`` (``R⁻ᵀ`` lower
    triangular); the first linear layer of each projector head takes the inverse map, so
    ``projector(encoder(x))`` is unchanged for a projector kept after ``fit`` (but for
    ``projector=None``, a batch norm alone, which has no linear layer to take it)."""
    with torch.no_grad():
        weight = layer.weight.double()
        q, r = torch.linalg.qr(weight.T)
        signs = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(r)
        q, r = q * signs, r * signs[:, None]
        layer.weight.copy_(q.T)
        if layer.bias is not None:
            bias = torch.linalg.solve_triangular(r.T, layer.bias.double()[:, None], upper=False)
            layer.bias.copy_(bias[:, 0])
        heads = projector.heads if isinstance(projector, NestedHeads) else [projector]
        for head in heads:
            if isinstance(head[0], nn.Linear):
                m = head[0].in_features
                head[0].weight.copy_(head[0].weight.double() @ r.T[:m, :m])


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
