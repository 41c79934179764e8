r"""Contrastive neighbor embeddings (CNE): Damrich, Böhm, Hamprecht, Kobak, "From t-SNE to UMAP
with contrastive learning", ICLR 2023.

A composition of the shared engine: the symmetrised kNN graph as an
:class:`~twinlearn.pairs.EdgePairSource` (every directed edge once per epoch) + an embedding
table (non-parametric) or a network D→100→100→100→d (parametric) + a similarity kernel
(Cauchy ``1/(1+d²)`` or ``exp(cos/τ)``) + :class:`~twinlearn.losses.ContrastiveLoss`
(InfoNCE, NEG, NCE, UMAP) + linear LR annealing and an early-exaggeration phase, all run by the
one :class:`~twinlearn.training.Trainer`.

:class:`ContrastiveEmbedding` is the generic engine underneath (any model, any loader of
pairs: two augmentations of each image make it SimCLR); :class:`CNE` is the estimator.

Differences from the original ``contrastive-ne`` package, on purpose:

* negatives never include the anchor or its own positive;
* early exaggeration applies whenever it is on (see :mod:`twinlearn.losses.spectrum`, which
  also documents the NEG spectrum convention ``Z_umap = n²/m``);
* non-parametric ``transform`` of new points optimises them against the frozen training
  embedding instead of returning the training embedding;
* the loss is *summed* over the anchors of a batch by default (``loss_aggregation="sum"``, as
  the original), so a step's gradient on a point does not depend on the batch size; InfoNCE
  is multiplied by ``temperature`` (0.5) also for the Euclidean metric, as the original did,
  so that ``learning_rate`` means the same step size as there;
* the learning rate decays linearly per step instead of per epoch;
* on CPU the non-parametric Cauchy-kernel path runs a fused numba kernel
  (:mod:`twinlearn.losses.fused_table`) with the same results as the torch path;
* NaN raises :class:`~twinlearn.training.TrainingDiverged`; no global RNG is touched.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
import torch.nn as nn
from sklearn.utils.validation import check_is_fitted

from twinlearn._device import fork_torch_rng, make_generator, resolve_device, seed_from, torch_threads
from twinlearn.data.arrays import (
    ArrayLike,
    FeatureStore,
    iter_row_chunks,
    validate_features,
    validate_sample_indices,
)
from twinlearn.encoders.table import EmbeddingTable, IndexRows, pca_init
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    check_choice,
    check_float,
    check_int,
    check_tensor,
    finite_or_none,
    json_safe_params,
    keep_prefix,
    load_state_strict,
    output_like,
)
from twinlearn.io import save_tensors, split_prefix
from twinlearn.kernels import CauchyKernel, CosineKernel
from twinlearn.encoders.matryoshka import check_nesting_dims
from twinlearn.losses import LOSS_MODES, ContrastiveLoss, MatryoshkaLoss
from twinlearn.losses.fused_table import FusedTableObjective, fused_supported
from twinlearn.losses.spectrum import Spectrum, check_spectrum_args, resolve_spectrum
from twinlearn.neighbors import (
    KNN_METHODS,
    check_knn_indices,
    check_n_neighbors,
    compute_knn,
    fuzzy_union_edges,
    neighbor_distances,
    symmetric_edges,
)
from twinlearn.pairs import EdgePairSource
from twinlearn.training import PRECISIONS, Trainer, linear_decay, warmup_cosine
from twinlearn.training.callbacks import EmbeddingSnapshots, SpectrumPhases

logger = logging.getLogger("twinlearn")

METRICS = ("euclidean", "cosine")
OPTIMIZERS = ("sgd", "adam")
ANNEAL_LR = ("linear", "cosine", "none")
AGGREGATIONS = ("sum", "mean")
EDGE_WEIGHTS = ("fuzzy", "binary")
_MODE_ALIASES = {"neg_sample": "neg"}
#: NCE's ``log Z`` has its own parameter group with this LR, as in the original.
_LOG_Z_LR = 1e-3


def _mode(loss_mode: object) -> str:
    mode = _MODE_ALIASES.get(loss_mode, loss_mode) if isinstance(loss_mode, str) else loss_mode
    return check_choice(mode, "loss_mode", LOSS_MODES)


class LoaderPairSource:
    """Any re-iterable of ``(a, b)`` batches (e.g. a ``torch.utils.data.DataLoader``) as a pair
    source: batches are moved to ``device``; ``generator`` feeds the loss's negative draws."""

    def __init__(self, loader: Iterable, device: torch.device, generator: torch.Generator) -> None:
        self.loader, self.device, self.generator = loader, device, generator
        self.batch_size = getattr(loader, "batch_size", None)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self) -> Iterator[tuple[Any, Any]]:
        for a, b in self.loader:
            yield (a.to(self.device, non_blocking=True), b.to(self.device, non_blocking=True))


class PairObjective(nn.Module):
    """``loss(model(a), model(b))``.

    Integer index batches (kNN edges) go through the model once per distinct index: rows are
    gathered from ``store`` (or the indices themselves are the input, for a table), embedded,
    and scattered back — an edge batch repeats many points, so this saves forward work.
    Other inputs (two augmented views) go through the model as one concatenated batch.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, store: FeatureStore | None = None) -> None:
        super().__init__()
        self.encoder = model
        self.loss = loss
        self.store = store if store is not None else IndexRows()
        self._rows: torch.Tensor | None = None

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The store's rows ``idx``, written into one reused buffer for in-memory data (the
        trainer runs backward before the next forward, so the rows saved for the gradient are
        never overwritten while needed; a second forward first raises autograd's in-place
        error)."""
        data = self.store.on_device if isinstance(self.store, FeatureStore) else None
        if data is None:
            return self.store.gather(idx)
        if self._rows is None or self._rows.shape[0] < idx.shape[0]:
            self._rows = data.new_empty((idx.shape[0], data.shape[1]))
        return self.store.gather(idx, out=self._rows[: idx.shape[0]])

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        a, b = batch
        both = torch.cat([a, b])
        if both.ndim == 1 and not both.is_floating_point():
            uniq, inverse = torch.unique(both, return_inverse=True)
            z = self.encoder(self._gather(uniq))[inverse]
        else:
            z = self.encoder(both)
        return self.loss(z[: a.shape[0]], z[a.shape[0] :])


class ContrastiveEmbedding:
    """The generic contrastive engine: trains ``model`` on any source of positive pairs.

    Parameters
    ----------
    model : nn.Module
        Maps a batch of items to embeddings: an :class:`~twinlearn.encoders.table.EmbeddingTable`
        (items are indices), a network over rows of ``store`` (items are indices), or any
        network over the loader's inputs (e.g. augmented images: SimCLR).
    loss_mode : {"infonce", "neg", "nce", "umap"}, default="infonce"
        ``"neg_sample"`` is accepted for ``"neg"``.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Similarity in the embedding: Cauchy ``1/(eps + d²)`` or ``exp(cos/temperature)``.
    negative_samples : int or "full", default=5
        Negatives per anchor, drawn from the batch (never the anchor or its positive);
        ``"full"`` (or ``-1``, ``"full-batch"``) uses all ``2B − 2`` other batch points.
    n_epochs : int, default=200
    learning_rate : float, default=1e-3
    optimizer : {"sgd", "adam"}, default="sgd"
    momentum, weight_decay : float, default=0
    anneal_lr : {"linear", "cosine", "none"} or bool, default="none"
        Per-step decay of the LR to ``lr_min_factor·learning_rate`` (``True`` = linear).
    lr_min_factor : float, default=0
    warmup_epochs : int, default=0
        Linear warm-up epochs.
    temperature : float, default=0.5
        τ of the cosine kernel; InfoNCE is multiplied by it (also for Euclidean), as CNE does.
    eps : float, default=1.0
        Cauchy kernel ``1/(eps + d²)``; ``eps → 0`` gives CNE's UMAP-like ``1/d²``.
    Z : float, default=1.0
        Initial NCE normaliser (learned as ``log Z`` in its own group at LR 1e-3).
    s, Z_bar, neg_spec, ince_spec : float, optional
        Spectrum (:func:`~twinlearn.losses.spectrum.resolve_spectrum`); at most one.
    early_exaggeration : bool, default=True
        First ``n_epochs // 3`` epochs at ``s_early = max(s, 1)`` (InfoNCE and NEG; NCE and
        UMAP have no spectrum, so the flag does not change them).
    loss_aggregation : {"sum", "mean"}, default="sum"
        Sum or mean of the per-anchor losses of a batch.
    clip_grad : float or None, default=4.0
        Clip gradient values to ±clip_grad.
    nesting_dims : list of int, optional
        Matryoshka: the loss is summed over these prefixes of the embedding
        (:class:`~twinlearn.losses.MatryoshkaLoss`), so each prefix is an embedding of its own.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
    device : str or torch.device, default="cpu"
    random_state : int, numpy Generator or None
        Seeds the local generator of the negatives (and of the pair source if it has none).
    callbacks : sequence of callables
        ``callback(trainer, epoch, mean_loss)`` after every epoch (see
        :mod:`twinlearn.training.callbacks`).
    verbose : int, default=0

    Attributes
    ----------
    trainer_ : Trainer
    loss_ : ContrastiveLoss
    spectrum_ : Spectrum
    loss_history_ : list of float
        Mean loss per epoch.
    embedding_ : ndarray or None
        The table after fitting when ``model`` is an ``EmbeddingTable``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        loss_mode: str = "infonce",
        metric: str = "euclidean",
        negative_samples: int | str = 5,
        n_epochs: int = 200,
        learning_rate: float = 1e-3,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        anneal_lr: str | bool = "none",
        lr_min_factor: float = 0.0,
        warmup_epochs: int = 0,
        temperature: float = 0.5,
        eps: float = 1.0,
        Z: float = 1.0,
        s: float | None = None,
        Z_bar: float | None = None,
        neg_spec: float | None = None,
        ince_spec: float | None = None,
        early_exaggeration: bool = True,
        loss_aggregation: str = "sum",
        clip_grad: float | None = 4.0,
        nesting_dims: Sequence[int] | None = None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        random_state: int | np.random.Generator | None = None,
        callbacks: Sequence[Any] = (),
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.loss_mode = loss_mode
        self.metric = metric
        self.negative_samples = negative_samples
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.anneal_lr = anneal_lr
        self.lr_min_factor = lr_min_factor
        self.warmup_epochs = warmup_epochs
        self.temperature = temperature
        self.eps = eps
        self.Z = Z
        self.s = s
        self.Z_bar = Z_bar
        self.neg_spec = neg_spec
        self.ince_spec = ince_spec
        self.early_exaggeration = early_exaggeration
        self.loss_aggregation = loss_aggregation
        self.clip_grad = clip_grad
        self.nesting_dims = nesting_dims
        self.precision = precision
        self.device = device
        self.random_state = random_state
        self.callbacks = callbacks
        self.verbose = verbose

    # --- checks ------------------------------------------------------------------------------
    def _negatives(self) -> int | str:
        m = self.negative_samples
        if m in (-1, "full", "full-batch"):
            return "full"
        return check_int(m, "negative_samples")

    def _check_params(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        mode = _mode(self.loss_mode)
        check_choice(self.metric, "metric", METRICS)
        if mode == "umap" and self.metric == "cosine":
            raise ValueError("loss_mode='umap' needs metric='euclidean': exp(cos/τ) exceeds 1, "
                             "so log(1 - q) is undefined (the original returned NaN)")
        self._negatives()
        if mode == "umap" and self.metric == "euclidean" and check_float(self.eps, "eps") < 1.0:
            raise ValueError(f"loss_mode='umap' needs q = 1/(eps + d²) <= 1, i.e. eps >= 1; got eps={self.eps}")
        check_int(self.n_epochs, "n_epochs")
        check_float(self.learning_rate, "learning_rate")
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        for name in ("momentum", "weight_decay", "lr_min_factor"):
            check_float(getattr(self, name), name, positive=False)
        check_choice(self._anneal(), "anneal_lr", ANNEAL_LR)
        check_int(self.warmup_epochs, "warmup_epochs", minimum=0)
        if check_float(self.temperature, "temperature") < 0.02 and self.metric == "cosine":
            raise ValueError(f"temperature must be >= 0.02 with metric='cosine', got {self.temperature}")
        check_float(self.eps, "eps")
        check_float(self.Z, "Z")
        check_spectrum_args(mode, s=self.s, Z_bar=self.Z_bar, neg_spec=self.neg_spec, ince_spec=self.ince_spec)
        check_choice(self.loss_aggregation, "loss_aggregation", AGGREGATIONS)
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, max(list(self.nesting_dims) or [1]))
        if self.clip_grad is not None:
            check_float(self.clip_grad, "clip_grad")
        check_choice(self.precision, "precision", PRECISIONS)
        resolve_device(self.device)
        if not isinstance(self.random_state, np.random.Generator):  # a Generator would be consumed
            seed_from(self.random_state)

    def _anneal(self) -> str:
        if isinstance(self.anneal_lr, bool):
            return "linear" if self.anneal_lr else "none"
        return self.anneal_lr

    # --- parts -------------------------------------------------------------------------------
    def _build_loss(self, mode: str, spectrum: Spectrum, generator: torch.Generator) -> ContrastiveLoss:
        kernel = CauchyKernel(eps=self.eps) if self.metric == "euclidean" else CosineKernel(self.temperature)
        return ContrastiveLoss(
            mode, kernel, self._negatives(),
            ince_spec=spectrum.early_spec if mode == "infonce" else 1.0,
            neg_spec=spectrum.early_spec if mode == "neg" else 1.0,
            log_Z=math.log(self.Z),
            reduction=self.loss_aggregation,
            loss_scale=self.temperature if mode == "infonce" else 1.0,
            generator=generator,
        )

    def _schedule(self, steps_per_epoch: int):
        total = self.n_epochs * steps_per_epoch
        warmup = self.warmup_epochs * steps_per_epoch
        anneal = self._anneal()
        if anneal == "cosine":
            return warmup_cosine(total, warmup, final_factor=self.lr_min_factor)
        return linear_decay(total, self.lr_min_factor if anneal == "linear" else 1.0, warmup)

    def _optimizer(self, objective: nn.Module) -> torch.optim.Optimizer:
        groups = [{"params": [p for p in objective.encoder.parameters() if p.requires_grad]}]
        loss = getattr(objective.loss, "base_loss", objective.loss)  # through a MatryoshkaLoss
        log_z = getattr(loss, "log_Z", None)
        if log_z is not None:
            groups.append({"params": [log_z], "lr": _LOG_Z_LR})
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.learning_rate, momentum=self.momentum,
                                   weight_decay=self.weight_decay)
        return torch.optim.Adam(groups, lr=self.learning_rate, weight_decay=self.weight_decay)

    # --- training ----------------------------------------------------------------------------
    def fit(
        self,
        loader: Iterable,
        n: int | None = None,
        store: FeatureStore | None = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
    ) -> "ContrastiveEmbedding":
        """Train on the positive pairs of ``loader``.

        Parameters
        ----------
        loader : pair source or iterable of ``(a, b)`` batches
            A :class:`~twinlearn.pairs.EdgePairSource` (index pairs), or e.g. a ``DataLoader``
            yielding two views of each item. It must support ``len``.
        n : int, optional
            Number of points, for the NEG spectrum (``s``, ``Z_bar``, exaggeration). Defaults
            to the rows of an ``EmbeddingTable`` model or of ``store``. (The original took the
            number of batches here.)
        store : FeatureStore, optional
            Input rows looked up by index batches (parametric CNE).
        checkpoint_dir : path, optional
            ``latest_snapshot.safetensors`` is written there (atomically) after every epoch.
        resume_from : path, optional
            A checkpoint of the same model and pairs: weights, optimizer, random generator,
            step and loss history are restored and training continues from its epoch.

        Returns
        -------
        self
        """
        self._check_params()
        if resume_from is not None and not Path(resume_from).is_file():
            raise ValueError(f"resume_from={str(resume_from)!r} is not a checkpoint file")
        mode = _mode(self.loss_mode)
        device = resolve_device(self.device)
        seed = seed_from(self.random_state)
        source = loader if hasattr(loader, "epoch") else LoaderPairSource(loader, device, make_generator(seed, device))
        if len(source) < 1:
            raise ValueError("the loader yields no batches")
        spectrum = self._resolve_spectrum(mode, n, store, source)
        self.model.to(device)
        loss = self._build_loss(mode, spectrum, source.generator)
        fused = (isinstance(self.model, EmbeddingTable) and store is None and self.nesting_dims is None
                 and fused_supported(loss, device))
        if fused:
            objective: nn.Module = FusedTableObjective(self.model, loss, n_threads=torch.get_num_threads())
        else:
            pair_loss = loss if self.nesting_dims is None else MatryoshkaLoss(loss, self.nesting_dims)
            objective = PairObjective(self.model, pair_loss, store)
        objective.to(device)
        callbacks = list(self.callbacks)
        if spectrum.s is not None:
            attr = "ince_spec" if mode == "infonce" else "neg_spec"
            n_early = self.n_epochs // 3 if self.early_exaggeration else 0
            callbacks.insert(0, SpectrumPhases(loss, attr, spectrum.early_spec, spectrum.spec, n_early))
        trainer = Trainer(
            objective, source, self._optimizer(objective), self._schedule(len(source)), self.n_epochs,
            precision=self.precision, clip_grad_value=self.clip_grad, callbacks=callbacks,
            checkpoint_dir=checkpoint_dir, checkpoint_meta={"class": type(self).__name__},
            verbose=self.verbose,
        )
        if resume_from is not None:
            trainer.load_checkpoint(resume_from)
            logger.info("resumed from %s at epoch %d", resume_from, trainer.epoch)
        # the fused kernel threads itself; torch's own threads only hand off the tiny table
        # ops (n × 2), which cost more than they save (6 ms vs 0.1 ms per op on 2 cores)
        with torch_threads(1) if fused else contextlib.nullcontext():
            trainer.fit()
        self.trainer_ = trainer
        self.loss_ = loss
        self.spectrum_ = spectrum
        self.loss_history_ = trainer.loss_history
        self.embedding_ = (
            self.model.weight.detach().cpu().numpy().copy() if isinstance(self.model, EmbeddingTable) else None
        )
        return self

    def _resolve_spectrum(self, mode: str, n: int | None, store: FeatureStore | None, source: Any) -> Spectrum:
        if n is None:
            if isinstance(self.model, EmbeddingTable):
                n = self.model.weight.shape[0]
            elif store is not None:
                n = store.n_samples
        m = self._negatives()
        if m == "full":
            batch = getattr(source, "batch_size", None)
            m = 2 * batch - 2 if batch else None
        needs_n = mode == "neg" and (self.s is not None or self.Z_bar is not None or self.early_exaggeration)
        if needs_n and (n is None or m is None):
            raise ValueError(
                "the NEG spectrum (s, Z_bar, early exaggeration) needs the number of points: pass "
                "fit(loader, n=...) (and a loader with a batch_size for negative_samples='full'), "
                "or early_exaggeration=False with neg_spec"
            )
        return resolve_spectrum(
            mode, n or 1, m or 1, s=self.s, Z_bar=self.Z_bar, neg_spec=self.neg_spec,
            ince_spec=self.ince_spec, early_exaggeration=self.early_exaggeration,
        )

    def fit_transform(self, loader: Iterable, n: int | None = None) -> np.ndarray:
        """``fit`` then the learned table (only for an ``EmbeddingTable`` model; for a network,
        run :meth:`transform` on the data you want embedded)."""
        if not isinstance(self.model, EmbeddingTable):
            raise TypeError("fit_transform needs an EmbeddingTable model; call fit(loader), then transform(X)")
        return self.fit(loader, n).embedding_

    @torch.no_grad()
    def transform(self, X: ArrayLike, batch_size: int = 8192) -> np.ndarray:
        """Run the trained model (eval mode, no gradients) over ``X`` in chunks."""
        if not hasattr(self, "trainer_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this ContrastiveEmbedding is not fitted yet; call fit(loader)")
        device = resolve_device(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            out = [
                self.model(_as_tensor(b).to(device)).float().cpu() for b in iter_row_chunks(X, batch_size)
            ]
        finally:
            self.model.train(was_training)
        return torch.cat(out).numpy()


def _as_tensor(block: Any) -> torch.Tensor:
    """Keeps the dtype (index batches stay integers, unlike ``to_tensor``)."""
    return block if isinstance(block, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(block))


def fc_network(in_dim: int, out_dim: int, hidden: Sequence[int] = (100, 100, 100)) -> nn.Sequential:
    """CNE's parametric network: Linear layers with ReLU between, default PyTorch init."""
    widths = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _is_index_selection(X: object) -> bool:
    """An int, a list of ints or a 1-D integer array/tensor selects training rows (as in the
    original); 2-D input is always features."""
    if isinstance(X, (numbers.Integral, np.integer)) and not isinstance(X, bool):
        return True
    if isinstance(X, torch.Tensor):
        return X.ndim <= 1 and not X.is_floating_point() and X.dtype != torch.bool
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in X)
    return isinstance(X, np.ndarray) and X.ndim <= 1 and X.dtype.kind in "iu"


def _query_knn(database: ArrayLike, queries: ArrayLike, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest database rows of each query row (exact, faiss flat)."""
    import faiss

    def host(block: ArrayLike) -> np.ndarray:
        block = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else block
        return np.ascontiguousarray(block, dtype=np.float32)

    index = faiss.IndexFlatL2(database.shape[1])
    for block in iter_row_chunks(database, 16384):
        index.add(host(block))
    return np.concatenate([index.search(host(block), k)[1] for block in iter_row_chunks(queries, 16384)])


class CNE(TwinlearnEstimator):
    """Contrastive neighbor embedding (Damrich et al., ICLR 2023): t-SNE-like to UMAP-like
    embeddings, non-parametric or parametric.

    Parameters
    ----------
    loss_mode : {"infonce", "neg", "nce", "umap"}, default="infonce"
        InfoNCE (t-SNE-like at ``s = 0``), negative sampling (UMAP-like at ``neg_spec = 1``),
        noise-contrastive estimation (learned normaliser) or UMAP's cross-entropy.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Embedding similarity: Cauchy ``1/(1 + d²)`` or ``exp(cos/temperature)``. The kNN graph
        of the input is always Euclidean.
    parametric : bool, default=False
        Learn a network D→100→100→100→d (``transform`` embeds new data with it) instead of a
        free table of coordinates.
    n_components : int, default=2
        Embedding dimension (the original's ``embd_dim`` is accepted too).
    n_neighbors : int, default=15
        Neighbours per point of the kNN graph before union symmetrisation (``k`` accepted too).
    negative_samples : int or "full", default=5
    n_epochs : int, default=200
        Passes over every directed edge of the graph.
    batch_size : int, default=32768
        Edges per step.
    learning_rate : float, optional
        Default 1.0 (non-parametric, SGD) or 1e-3 (parametric), the original's defaults.
    optimizer : {"sgd", "adam"}, optional
        Default SGD for the table and Adam for the network (the original README's advice).
    s : float, optional
        Spectrum position: 0 t-SNE-like, 1 UMAP-like (InfoNCE default 0, NEG default 1).
    Z_bar, neg_spec : float, optional
        NEG's fixed normaliser or its constant ``ξ = m·Z̄/n²`` (default ``ξ = 1``).
    ince_spec : float, optional
        InfoNCE's constant ``4^s``. Give at most one of ``s``, ``Z_bar``, ``neg_spec``,
        ``ince_spec``; see :mod:`twinlearn.losses.spectrum` for the convention.
    early_exaggeration : bool, default=True
        First third of the epochs at ``s = max(s, 1)``.
    temperature : float, default=0.5
    eps : float, default=1.0
        Cauchy kernel ``1/(eps + d²)``.
    momentum, weight_decay : float, default=0
    anneal_lr : {"linear", "cosine", "none"} or bool, default="linear"
    lr_min_factor : float, default=0
    warmup_epochs : int, default=0
    clip_grad : float or None, default=4.0
        Clip gradient values.
    loss_aggregation : {"sum", "mean"}, default="sum"
    knn_method : str, default="auto"
        kNN back-end (:func:`~twinlearn.neighbors.compute_knn`): exact up to 20 000 points,
        faiss HNSW above.
    edge_weights : {"fuzzy", "binary"}, default="fuzzy"
        ``"fuzzy"``: UMAP's membership strengths on the union-symmetrised kNN graph
        (:func:`~twinlearn.neighbors.fuzzy_union_edges`); an epoch draws each edge with
        probability ``w / max(w)``, so close neighbours are positives more often than far ones
        and an epoch is ~3× shorter (MNIST: 0.969 vs 0.962 10-NN accuracy for NEG, see
        benchmarks/RESULTS.md). ``"binary"``: every edge once per epoch, as the original
        ``contrastive-ne``. A sparse ``knn_graph`` is always used as given (binary pattern).
    nesting_dims : list of int, optional
        Matryoshka: the loss is summed over these prefixes of the embedding, e.g.
        ``CNE(parametric=True, n_components=16, nesting_dims=[2, 4, 8, 16])``; then
        ``transform(X, n_components=2)`` is a 2-D embedding of its own.
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Autocast for the parametric network (``"bf16"`` is ~2× faster on AVX-512-BF16 CPUs).
    transform_epochs : int, default=50
        Optimisation epochs that place new points in a non-parametric ``transform``.
    save_freq : int, default=0
        Keep a snapshot of the embedding every this many epochs (0: none), in
        ``embedding_snapshots_``.
    device : str or torch.device, default="cpu"
    random_state : int, numpy Generator or None
    verbose : int, default=0
    embd_dim, k : int, optional
        The original's names for ``n_components`` and ``n_neighbors``.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components)
    model_ : EmbeddingTable or nn.Sequential
    neighbor_graph_ : scipy.sparse.csr_matrix
        The symmetric kNN graph whose edges were the positive pairs, with their weights (ones
        for ``edge_weights="binary"``).
    loss_history_ : list of float
    spectrum_ : Spectrum
        Resolved ``s`` and the loss constants of both phases.
    log_Z_ : float or None
        Learned NCE normaliser.
    embedding_snapshots_ : list of (epoch, ndarray)
    timings_ : dict
        Seconds spent on the kNN graph (``"knn"``), the initialisation (``"init"``) and the
        training epochs (``"optimisation"``).
    n_epochs_trained_ : int
        Epochs trained, those of a resumed run included.
    n_features_in_ : int

    Examples
    --------
    >>> from twinlearn import CNE
    >>> Y = CNE(random_state=0).fit_transform(X)            # doctest: +SKIP
    >>> Y_new = CNE(parametric=True).fit(X).transform(X_new)  # doctest: +SKIP
    """

    def __init__(
        self,
        loss_mode: str = "infonce",
        metric: str = "euclidean",
        parametric: bool = False,
        n_components: int = 2,
        n_neighbors: int = 15,
        negative_samples: int | str = 5,
        n_epochs: int = 200,
        batch_size: int = 32768,
        learning_rate: float | None = None,
        optimizer: str | None = None,
        s: float | None = None,
        Z_bar: float | None = None,
        neg_spec: float | None = None,
        ince_spec: float | None = None,
        early_exaggeration: bool = True,
        temperature: float = 0.5,
        eps: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        anneal_lr: str | bool = "linear",
        lr_min_factor: float = 0.0,
        warmup_epochs: int = 0,
        clip_grad: float | None = 4.0,
        loss_aggregation: str = "sum",
        knn_method: str = "auto",
        edge_weights: str = "fuzzy",
        nesting_dims: list[int] | None = None,
        precision: str = "fp32",
        transform_epochs: int = 50,
        save_freq: int = 0,
        device: str | torch.device = "cpu",
        random_state: int | np.random.Generator | None = None,
        verbose: int = 0,
        embd_dim: int | None = None,
        k: int | None = None,
    ) -> None:
        self.loss_mode = loss_mode
        self.metric = metric
        self.parametric = parametric
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.negative_samples = negative_samples
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.s = s
        self.Z_bar = Z_bar
        self.neg_spec = neg_spec
        self.ince_spec = ince_spec
        self.early_exaggeration = early_exaggeration
        self.temperature = temperature
        self.eps = eps
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.anneal_lr = anneal_lr
        self.lr_min_factor = lr_min_factor
        self.warmup_epochs = warmup_epochs
        self.clip_grad = clip_grad
        self.loss_aggregation = loss_aggregation
        self.knn_method = knn_method
        self.edge_weights = edge_weights
        self.nesting_dims = nesting_dims
        self.precision = precision
        self.transform_epochs = transform_epochs
        self.save_freq = save_freq
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.embd_dim = embd_dim
        self.k = k

    # --- parameters --------------------------------------------------------------------------
    @staticmethod
    def _alias(value: object, alias: object, name: str, alias_name: str, default: int) -> int:
        if alias is None:
            return check_int(value, name)
        alias = check_int(alias, alias_name)
        if value != default and value != alias:
            raise ValueError(f"{name}={value} and {alias_name}={alias} disagree; give one of them")
        return alias

    def _dim(self) -> int:
        return self._alias(self.n_components, self.embd_dim, "n_components", "embd_dim", 2)

    def _k(self) -> int:
        return self._alias(self.n_neighbors, self.k, "n_neighbors", "k", 15)

    def _engine(self, model: nn.Module, **overrides: Any) -> ContrastiveEmbedding:
        params = dict(
            loss_mode=self.loss_mode, metric=self.metric, negative_samples=self.negative_samples,
            n_epochs=self.n_epochs,
            learning_rate=self.learning_rate if self.learning_rate is not None else (1e-3 if self.parametric else 1.0),
            optimizer=self.optimizer or ("adam" if self.parametric else "sgd"),
            momentum=self.momentum, weight_decay=self.weight_decay, anneal_lr=self.anneal_lr,
            lr_min_factor=self.lr_min_factor, warmup_epochs=self.warmup_epochs,
            temperature=self.temperature, eps=self.eps, s=self.s, Z_bar=self.Z_bar,
            neg_spec=self.neg_spec, ince_spec=self.ince_spec,
            early_exaggeration=self.early_exaggeration, loss_aggregation=self.loss_aggregation,
            clip_grad=self.clip_grad, nesting_dims=self.nesting_dims, precision=self.precision,
            device=self.device,
            verbose=self.verbose,
        )
        params.update(overrides)
        return ContrastiveEmbedding(model, **params)

    def _check_params(self) -> None:
        self._dim()
        self._k()
        if not isinstance(self.parametric, (bool, np.bool_)):
            raise TypeError(f"parametric must be True or False, got {self.parametric!r}")
        check_int(self.batch_size, "batch_size", minimum=2)
        check_choice(self.knn_method, "knn_method", KNN_METHODS)
        check_choice(self.edge_weights, "edge_weights", EDGE_WEIGHTS)
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, self._dim())
        check_int(self.transform_epochs, "transform_epochs")
        check_int(self.save_freq, "save_freq", minimum=0)
        if self.optimizer is not None:  # checked here: a falsy value would pick the default
            check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        self._seed_ = self._seed()
        self._engine(nn.Identity())._check_params()

    # --- fit ---------------------------------------------------------------------------------
    def _edges(
        self, X: ArrayLike, graph: object, device: torch.device
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Directed edges ``(heads, tails)`` of the symmetrised graph and their weights (or
        ``None`` for binary)."""
        n = X.shape[0]
        if scipy.sparse.issparse(graph):
            return (*symmetric_edges(graph, n), None)
        if graph is None:
            idx, dist = compute_knn(X, self._k(), method=self.knn_method, metric="euclidean",
                                    device=device, seed=self._seed_)
            dist = np.sqrt(np.maximum(dist, 0))
        else:
            idx = check_knn_indices(graph, n)
            dist = neighbor_distances(X, idx) if self.edge_weights == "fuzzy" else None
        if self.edge_weights == "fuzzy":
            return fuzzy_union_edges(idx, dist)
        return (*symmetric_edges(idx, n), None)

    def _check_init(self, init: object, n: int) -> np.ndarray | None:
        if init is None:
            return None
        if self.parametric:
            raise ValueError("init sets the coordinates of the non-parametric table; "
                             "it has no meaning with parametric=True")
        init = validate_features(init, name="init")
        init = init.cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init)
        if init.shape != (n, self._dim()):
            raise ValueError(f"init has shape {init.shape}, expected (n_samples, n_components) = "
                             f"({n}, {self._dim()})")
        return init

    def fit(
        self,
        X: ArrayLike,
        y: object = None,
        *,
        init: ArrayLike | None = None,
        knn_graph: object = None,
        graph: object = None,
        callbacks: Sequence[Any] = (),
        output_folder: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> "CNE":
        """Learn the embedding of ``X``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features), tensor or memmap
            Rows are flattened by the caller (images: ``X.reshape(len(X), -1)``).
        y : ignored
        init : array of shape (n_samples, n_components), optional
            Initial coordinates (non-parametric); default: PCA scaled so PC1 has std 1.
        knn_graph : scipy sparse matrix or int array of shape (n_samples, k), optional
            Positive pairs instead of a computed kNN graph: the nonzero pattern of a sparse
            matrix, or an index array (all its columns). Union-symmetrised, weights ignored.
        graph : same as ``knn_graph`` (the original's name)
        callbacks : sequence of callables
            Extra ``callback(trainer, epoch, mean_loss)`` run after every epoch.
        output_folder : path, optional
            Where checkpoints go (as TLDR): ``latest_snapshot.safetensors`` after every epoch,
            written atomically, and ``final_model.safetensors`` at the end.
        resume : bool
            Continue from ``output_folder/latest_snapshot.safetensors`` if it exists (embedding
            or network, optimizer, random generator and step restored): with the same data and
            parameters the result equals an uninterrupted run. ``embedding_snapshots_`` then
            hold only the epochs trained in this call.

        Returns
        -------
        self
        """
        self._check_params()
        if resume and output_folder is None:
            raise ValueError("resume=True needs output_folder, where the snapshots are")
        if knn_graph is not None and graph is not None:
            raise ValueError("give knn_graph or graph (its alias), not both")
        graph = knn_graph if knn_graph is not None else graph
        X = self._validate_fit_data(X, min_samples=2)
        n = X.shape[0]
        if graph is None:
            check_n_neighbors(self._k(), n, "k" if self.k is not None else "n_neighbors")
        init = self._check_init(init, n)
        device = resolve_device(self.device)
        seed = self._seed_
        clock = time.perf_counter()
        heads, tails, weights = self._edges(X, graph, device)
        timings = {"knn": time.perf_counter() - clock}

        clock = time.perf_counter()
        if self.parametric:
            with fork_torch_rng(seed):
                model: nn.Module = fc_network(X.shape[1], self._dim())
            store = FeatureStore(X, device)
        else:
            model = EmbeddingTable(init if init is not None else pca_init(X, self._dim(), seed))
            store = None
        model.to(device)
        pairs = EdgePairSource(heads, tails, self.batch_size, device, make_generator(seed + 1, device),
                               weights=weights)
        extra = list(callbacks)
        snapshots = None
        if self.save_freq:
            snapshots = EmbeddingSnapshots(lambda: self._embed_training(model, X, device), self.save_freq)
            extra.insert(0, snapshots)
        timings["init"] = time.perf_counter() - clock
        latest = Path(output_folder) / "latest_snapshot.safetensors" if output_folder else None
        engine = self._engine(model, callbacks=extra, random_state=seed).fit(
            pairs, n=n, store=store, checkpoint_dir=output_folder,
            resume_from=latest if resume and latest.exists() else None,
        )
        timings["optimisation"] = sum(engine.trainer_.epoch_seconds)

        self.model_ = model.eval()
        self.embedding_ = self._embed_training(model, X, device)
        self.neighbor_graph_ = scipy.sparse.csr_matrix(
            (np.ones(len(heads), dtype=np.float32) if weights is None else weights, (heads, tails)),
            shape=(n, n),
        )
        self.loss_history_ = engine.loss_history_
        self.spectrum_ = engine.spectrum_
        self.log_Z_ = float(engine.loss_.log_Z.detach()) if engine.loss_.log_Z is not None else None
        self.embedding_snapshots_ = snapshots.snapshots if snapshots is not None else []
        self.training_data_ = None if self.parametric else X
        self.n_samples_fit_ = n
        self.timings_ = timings
        self.n_epochs_trained_ = engine.trainer_.epoch
        logger.info("CNE fit: kNN graph %.1f s, initialisation %.1f s, %d epochs %.1f s",
                    timings["knn"], timings["init"], self.n_epochs, timings["optimisation"])
        if output_folder is not None:
            self.save(Path(output_folder) / "final_model.safetensors")
        return self

    def _embed_training(self, model: nn.Module, X: ArrayLike, device: torch.device) -> np.ndarray:
        if isinstance(model, EmbeddingTable):
            return model.weight.detach().cpu().numpy().copy()
        return self._encode(model, X, device).cpu().numpy()

    def fit_transform(self, X: ArrayLike, y: object = None, **fit_params: Any) -> ArrayLike:
        """``fit(X, **fit_params)`` and return the training embedding (no extra pass)."""
        self.fit(X, y, **fit_params)
        return output_like(torch.from_numpy(self.embedding_.copy()), X)

    # --- transform ---------------------------------------------------------------------------
    def transform(self, X: ArrayLike | int | Sequence[int], n_components: int | None = None) -> ArrayLike:
        """Embed ``X``.

        Parameters
        ----------
        X : array of shape (n_new, n_features_in_), or int / 1-D ints
            Integer indices return those rows of the training embedding. New data runs through
            the network (parametric) or is placed against the frozen training embedding
            (non-parametric): each point starts at the mean of its ``n_neighbors`` nearest
            training points' embeddings, then ``transform_epochs`` of the same loss attract it to
            them while it is repelled from random training points.
        n_components : int, optional
            Keep only the first ``n_components`` dimensions (a nested model's smaller embedding).

        Returns
        -------
        ndarray (tensor for tensor input) of shape (n_new, n_components)
        """
        check_is_fitted(self)
        if _is_index_selection(X):
            idx = validate_sample_indices(np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X),
                                          self.embedding_.shape[0])
            rows = keep_prefix(self.embedding_[idx], n_components)
            return rows[0] if np.ndim(X) == 0 else rows
        X = self._validate_transform_data(X)
        device = resolve_device(self.device)
        if self.parametric:
            Z = self._encode(self.model_, X, device)
        else:
            Z = torch.from_numpy(self._place(X, device))
        return output_like(keep_prefix(Z, n_components), X)

    def _place(self, X_new: ArrayLike, device: torch.device) -> np.ndarray:
        if self.training_data_ is None:
            raise ValueError("placing new points needs the training data, which this model was "
                             "saved without (save(path, include_data=True)); integer indices work")
        Y = self.embedding_
        n_train, n_new = Y.shape[0], X_new.shape[0]
        k = min(self._k(), n_train)
        nbrs = _query_knn(self.training_data_, X_new, k)
        table = EmbeddingTable(np.vstack([Y, Y[nbrs].mean(axis=1)]))
        # the training embedding stays frozen: only the new rows receive gradient
        frozen = torch.zeros((table.weight.shape[0], 1), dtype=torch.float32)
        frozen[n_train:] = 1.0
        table.weight.register_hook(lambda g: g * frozen.to(g.device))
        new_ids = np.repeat(np.arange(n_train, n_train + n_new), k)
        heads, tails = np.concatenate([new_ids, nbrs.ravel()]), np.concatenate([nbrs.ravel(), new_ids])
        # random training pairs fill each batch so that the sampled negatives are mostly random
        # training points, however few points are placed
        seed = seed_from(self.random_state) if not isinstance(self.random_state, np.random.Generator) else 0
        rng = np.random.default_rng(seed)
        n_fill = max(len(heads), 2048)
        fill = rng.integers(0, n_train, size=(2, n_fill))
        heads, tails = np.concatenate([heads, fill[0]]), np.concatenate([tails, fill[1]])
        generator = make_generator(seed + 2, device)
        pairs = EdgePairSource(heads, tails, self.batch_size, device, generator)
        spec = self.spectrum_.spec
        mode = _mode(self.loss_mode)
        self._engine(
            table, n_epochs=self.transform_epochs, early_exaggeration=False, s=None, Z_bar=None,
            neg_spec=spec if mode == "neg" else None, ince_spec=spec if mode == "infonce" else None,
            Z=math.exp(self.log_Z_) if self.log_Z_ is not None else 1.0,
            optimizer=self.optimizer or "sgd",
            learning_rate=self.learning_rate if self.learning_rate is not None else 1.0,
            random_state=seed,
        ).fit(pairs, n=n_train)
        return table.weight[n_train:].detach().cpu().numpy()

    # --- model files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, include_data: bool = True) -> None:
        """Write the fitted model (safetensors + JSON hyperparameters; no pickle).

        Parameters
        ----------
        path : path-like
        include_data : bool, default=True
            Non-parametric models also store the training data, which ``transform`` of new
            points needs (integer indices work without it).
        """
        check_is_fitted(self)
        tensors = {"embedding": torch.from_numpy(self.embedding_)}
        if self.parametric:
            tensors.update({f"model.{k}": v for k, v in self.model_.state_dict().items()})
        has_data = bool(include_data and self.training_data_ is not None)
        if has_data:
            data = self.training_data_
            tensors["data"] = data.detach().cpu() if isinstance(data, torch.Tensor) else torch.from_numpy(np.asarray(data))
        spectrum = self.spectrum_
        fitted = {
            "n_features_in_": self.n_features_in_,
            "n_samples_fit_": self.n_samples_fit_,
            "has_data": has_data,
            "log_Z_": self.log_Z_,
            "spectrum_": [spectrum.s, spectrum.spec, spectrum.early_spec],
            "loss_history_": self.loss_history_,
        }
        meta = {"kind": "model", "class": type(self).__name__,
                "params": json_safe_params(self.get_params(deep=False)), "fitted": fitted}
        save_tensors(path, tensors, meta)

    def load(self, path: str | os.PathLike, init: bool = False) -> "CNE":
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : path-like
        init : bool
            Also take the file's hyperparameters; otherwise the architecture (``parametric``,
            ``n_components``) must match this estimator's.
        """
        tensors, meta = self._read_model_file(path)
        with self._restoring_from(path):
            stored = meta["params"]
            if init:
                self._take_file_params(stored, path)
            else:
                stored_dim = stored.get("embd_dim") or stored.get("n_components")
                arch = {"parametric": (stored.get("parametric"), self.parametric),
                        "n_components": (stored_dim, self._dim())}
                mismatch = {k: v for k, v in arch.items() if v[0] != v[1]}
                if mismatch:
                    raise ValueError(f"{path} was saved with {mismatch} (file, this estimator); use "
                                     "load(path, init=True) to take the file's parameters")
                self._check_params()
            fitted = meta["fitted"]
            n_features = check_int(fitted["n_features_in_"], "n_features_in_")
            n_samples = check_int(fitted["n_samples_fit_"], "n_samples_fit_", minimum=2)
            dim = self._dim()
            embedding = check_tensor(tensors, "embedding", (n_samples, dim), path).float().numpy().copy()
            has_data = check_choice(fitted["has_data"], "has_data", (True, False))
            data = (check_tensor(tensors, "data", (n_samples, n_features), path).float().numpy()
                    if has_data else None)
            if self.parametric:
                model: nn.Module = build_on_meta(lambda: fc_network(n_features, dim))
                load_state_strict(model, split_prefix(tensors, "model"), path)
            else:
                model = EmbeddingTable(embedding)
            log_Z = finite_or_none(fitted["log_Z_"], "log_Z_")
            s_value, spec, early_spec = fitted["spectrum_"]
            spectrum = Spectrum(finite_or_none(s_value, "spectrum_"), check_float(spec, "spectrum_"),
                                check_float(early_spec, "spectrum_"))
            loss_history = [finite_or_none(v, "loss_history_") for v in fitted["loss_history_"]]
        self.embedding_ = embedding
        self.n_features_in_ = n_features
        self.model_ = model.to(resolve_device(self.device)).eval()
        self.training_data_ = data
        self.n_samples_fit_ = n_samples
        self.log_Z_ = log_Z
        self.spectrum_ = spectrum
        self.loss_history_ = loss_history
        self.embedding_snapshots_ = []
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "embedding_")
