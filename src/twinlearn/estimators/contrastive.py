"""The contrastive settings CNE shares, and :class:`ContrastiveEmbedding`: the same recipe on any
model and any source of positive pairs (two augmentations of each image make it SimCLR)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.exceptions import NotFittedError

from twinlearn._device import make_generator, resolve_device, resolve_precision, seed_from
from twinlearn.data.arrays import ArrayLike, FeatureStore, iter_row_chunks
from twinlearn.encoders.inference import run_in_chunks
from twinlearn.encoders.table import EmbeddingTable
from twinlearn.estimators._params import (
    BOOLEAN,
    DEVICE,
    MAX_EPOCHS,
    MAX_LEARNING_RATE,
    MODULE,
    NESTING_DIMS,
    PRECISION,
    SEED,
    VERBOSE,
    AnyOf,
    Check,
    Constraint,
    Integer,
    Options,
    Real,
    none_or,
    validate_params,
)
from twinlearn.losses import LOSS_MODES
from twinlearn.losses.spectrum import check_spectrum_args
from twinlearn.pairs import LoaderPairSource
from twinlearn.training.contrastive import ContrastiveRecipe, contrastive_run, loss_mode

#: most negatives per anchor that make sense (each costs ~20 ns per edge and epoch)
MAX_NEGATIVES = 100_000


def _check_callbacks(value: object, name: str) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of callables, got {value!r}")
    for callback in value:
        if not callable(callback):
            raise TypeError(f"{name} must hold callables callback(trainer, epoch, loss), got {callback!r}")


CALLBACKS = Check(_check_callbacks, "a list of callables")

#: what the loss / optimizer / schedule settings accept (CNE and ContrastiveEmbedding)
CONTRASTIVE_CONSTRAINTS: dict[str, Constraint] = {
    "loss_mode": Options((*LOSS_MODES, "neg_sample")),
    "metric": Options(("euclidean", "cosine")),
    "negative_samples": AnyOf((Integer(1, MAX_NEGATIVES), Options((-1, "full", "full-batch")))),
    "n_epochs": Integer(1, MAX_EPOCHS),
    "learning_rate": Real(0.0, MAX_LEARNING_RATE),
    "optimizer": Options(("sgd", "adam")),
    "momentum": Real(0.0, strict=False),
    "weight_decay": Real(0.0, strict=False),
    "anneal_lr": AnyOf((Options(("linear", "cosine", "none")), BOOLEAN)),
    "lr_min_factor": Real(0.0, strict=False),
    "warmup_epochs": Integer(0, MAX_EPOCHS),
    "temperature": Real(0.0, 1e3),
    "eps": Real(0.0, 1e6),
    "s": none_or(Real(-math.inf, strict=False)),
    "Z_bar": none_or(Real(0.0)),
    "neg_spec": none_or(Real(0.0)),
    "ince_spec": none_or(Real(0.0)),
    "early_exaggeration": BOOLEAN,
    "loss_aggregation": Options(("sum", "mean")),
    "clip_grad": none_or(Real(0.0)),
    "nesting_dims": NESTING_DIMS,
    "precision": PRECISION,
    "device": DEVICE,
    "random_state": SEED,
    "verbose": VERBOSE,
}


def check_contrastive_relations(params: dict[str, Any]) -> None:
    """The checks between contrastive settings that no single constraint can make."""
    mode, metric = loss_mode(params["loss_mode"]), params["metric"]
    if mode == "umap" and metric == "cosine":
        raise ValueError("loss_mode='umap' needs metric='euclidean': exp(cos/τ) exceeds 1, "
                         "so log(1 - q) is undefined (the original returned NaN)")
    if mode == "umap" and params["eps"] < 1.0:
        raise ValueError(f"loss_mode='umap' needs q = 1/(eps + d²) <= 1, i.e. eps >= 1; got eps={params['eps']}")
    if metric == "cosine" and params["temperature"] < 0.02:
        raise ValueError(f"temperature must be >= 0.02 with metric='cosine', got {params['temperature']}")
    check_spectrum_args(mode, **{k: params[k] for k in ("s", "Z_bar", "neg_spec", "ince_spec")})


class ContrastiveEmbedding:
    """Contrastive training of any model on any source of positive pairs.

    Parameters
    ----------
    model : nn.Module
        Maps a batch of items to embeddings: an :class:`~twinlearn.encoders.table.EmbeddingTable`
        (items are indices), a network over rows of ``store`` (items are indices), or any
        network over the loader's inputs (e.g. augmented images: SimCLR).
    loss_mode, metric, negative_samples, n_epochs, learning_rate, optimizer, momentum, \
weight_decay, anneal_lr, lr_min_factor, warmup_epochs, temperature, eps, Z, s, Z_bar, \
neg_spec, ince_spec, early_exaggeration, loss_aggregation, clip_grad, nesting_dims, precision
        As for :class:`~twinlearn.CNE` (here ``learning_rate=1e-3``, ``optimizer="sgd"`` and
        ``anneal_lr="none"`` by default).
    device : str or torch.device, default="cpu"
    random_state : int, numpy Generator or None
        Seeds the generator of the negatives (when the pair source has none of its own).
    callbacks : sequence of callables
        ``callback(trainer, epoch, mean_loss)`` after every epoch.
    verbose : int, default=0

    Attributes
    ----------
    trainer_ : Trainer
    loss_ : ContrastiveLoss
    spectrum_ : Spectrum
    loss_history_ : list of float
    embedding_ : ndarray or None
        The table after fitting when ``model`` is an ``EmbeddingTable``.
    precision_ : {"fp32", "bf16", "fp16"}
        The precision the model trained in: ``"auto"`` is bf16 where native for a network (as
        for a parametric CNE), fp32 for a table.
    """

    _parameter_constraints = {**CONTRASTIVE_CONSTRAINTS, "model": MODULE, "Z": Real(0.0, 1e30),
                              "callbacks": CALLBACKS}

    def __init__(self, model: nn.Module, *, loss_mode: str = "infonce", metric: str = "euclidean",
                 negative_samples: int | str = 5, n_epochs: int = 200, learning_rate: float = 1e-3,
                 optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                 anneal_lr: str | bool = "none", lr_min_factor: float = 0.0, warmup_epochs: int = 0,
                 temperature: float = 0.5, eps: float = 1.0, Z: float = 1.0, s: float | None = None,
                 Z_bar: float | None = None, neg_spec: float | None = None,
                 ince_spec: float | None = None, early_exaggeration: bool = True,
                 loss_aggregation: str = "sum", clip_grad: float | None = 4.0,
                 nesting_dims: Sequence[int] | None = None, precision: str = "auto",
                 device: str | torch.device = "cpu", random_state: int | np.random.Generator | None = None,
                 callbacks: Sequence[Any] = (), verbose: int = 0) -> None:
        self.params = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.model = model

    def fit(self, loader: Iterable, n: int | None = None, store: FeatureStore | None = None) -> "ContrastiveEmbedding":
        """Train on the positive pairs of ``loader``.

        Parameters
        ----------
        loader : pair source or re-iterable of ``(a, b)`` batches with ``len``
            A :class:`~twinlearn.pairs.EdgePairSource` (index pairs), or e.g. a ``DataLoader``
            yielding two views of each item.
        n : int, optional
            Number of points, for the NEG spectrum; defaults to the rows of an
            ``EmbeddingTable`` model or of ``store``.
        store : FeatureStore, optional
            Input rows looked up by index batches.
        """
        validate_params(self.params, self._parameter_constraints, type(self).__name__)
        check_contrastive_relations(self.params)
        device = resolve_device(self.params["device"])
        source = loader
        if not hasattr(loader, "epoch"):
            seed = seed_from(self.params["random_state"])
            source = LoaderPairSource(loader, device, make_generator(seed, device))
        if len(source) < 1:
            raise ValueError("the loader yields no batches")
        if n is None:
            n = self.model.weight.shape[0] if isinstance(self.model, EmbeddingTable) else getattr(store, "n_samples", None)
        self.model.to(device)
        table = isinstance(self.model, EmbeddingTable)
        precision = resolve_precision(self.params["precision"], device, method_supports_bf16=False)
        run = contrastive_run(ContrastiveRecipe.from_params(self.params, precision=precision), self.model,
                              source, n=n, store=store, callbacks=self.params["callbacks"],
                              verbose=self.params["verbose"])
        run.trainer.fit()
        self.trainer_, self.loss_, self.spectrum_ = run.trainer, run.loss, run.spectrum
        self.loss_history_, self.precision_ = run.trainer.loss_history, run.trainer.precision
        self.embedding_ = self.model.weight.detach().cpu().numpy().copy() if table else None
        return self

    def fit_transform(self, loader: Iterable, n: int | None = None) -> np.ndarray:
        """``fit`` then the learned table (an ``EmbeddingTable`` model only)."""
        if not isinstance(self.model, EmbeddingTable):
            raise TypeError("fit_transform needs an EmbeddingTable model; call fit(loader), then transform(X)")
        return self.fit(loader, n).embedding_

    def transform(self, X: ArrayLike, batch_size: int = 8192) -> np.ndarray:
        """Run the trained model (eval mode, no gradients) over ``X`` in chunks."""
        if not hasattr(self, "trainer_"):
            raise NotFittedError("this ContrastiveEmbedding is not fitted yet; call fit(loader)")
        device = resolve_device(self.params["device"])
        chunks = (torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).to(device)
                  for b in iter_row_chunks(X, batch_size))
        return run_in_chunks(self.model, chunks, X.shape[0]).cpu().numpy()
