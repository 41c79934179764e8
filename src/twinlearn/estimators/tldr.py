"""TLDR: Twin Learning for Dimensionality Reduction (Kalantidis et al., TMLR 2022).

kNN pairs + an encoder and projector from spec strings + the Barlow Twins loss, trained with
LARS and a warm-up/cosine schedule. Names and defaults follow the original ``tldr`` package.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.utils.validation import check_is_fitted

from twinlearn._device import fork_torch_rng, make_generator
from twinlearn.data.arrays import ArrayLike, FeatureStore
from twinlearn.encoders import build_encoder, build_projector, check_projector_spec, parse_spec
from twinlearn.encoders.matryoshka import NestedHeads, check_nesting_dims
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    check_choice,
    check_float,
    check_int,
    keep_prefix,
    load_state_strict,
    output_like,
)
from twinlearn.io import split_prefix
from twinlearn.losses import BarlowTwinsLoss, MatryoshkaLoss
from twinlearn.neighbors import KNN_METHODS, check_knn_indices, check_n_neighbors, compute_knn
from twinlearn.pairs import KNNPairSource
from twinlearn.training import PRECISIONS, LARS, Trainer, lars_param_groups, warmup_cosine
from twinlearn.training.objectives import TwinObjective

logger = logging.getLogger("twinlearn")

KNN_APPROXIMATIONS = (None, "low", "medium", "high")


class TLDR(TwinlearnEstimator):
    """Twin Learning for Dimensionality Reduction.

    Parameters
    ----------
    n_components : int, default=32
        Output dimension.
    encoder : str, default="linear"
        Encoder spec: ``"linear"``, ``"flinear-L-H"`` or ``"mlp-L-H"``.
    projector : str or None, default="mlp-2-2048"
        Projector spec (training only); ``None`` trains on the encoder output directly.
        ``"mlp-1-512"`` is the documented fast setting (see Notes).
    n_neighbors : int, default=5
        Positives are drawn among each point's ``n_neighbors`` nearest neighbours.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
    pin_memory : bool, default=False
        Kept for compatibility. In-memory data always moves to ``device`` once; with
        ``pin_memory=True`` a ``numpy.memmap`` is moved too instead of being read per batch.
    random_state : int, numpy Generator or None, default=None
        Seeds local generators only (initialisation, pair sampling, index training).
    knn_approximation : {None, "low", "medium", "high"}, default=None
        ``None``: exact neighbours; otherwise faiss IVF-PQ with 32/16/8 sub-quantizers.
    knn_method : str, default="exact"
        Back-end when ``knn_approximation`` is None: ``"exact"`` (torch), ``"faiss"``,
        ``"hnsw"`` or ``"auto"``.
    metric : {"euclidean", "cosine"}, default="euclidean"
        Metric of the kNN graph. (The original searched by inner product on raw data.)
    verbose : int, default=0
        ``>= 1`` shows a progress bar.
    n_epochs : int, default=100
        Training epochs (``fit(X, epochs=...)`` overrides it for one call, as in TLDR).
    batch_size : int, default=1024
    learning_rate : float, default=0.2
        Base LR, scaled by ``batch_size / 256``.
    warmup_epochs : int, default=10
        Linear warm-up epochs, capped at a tenth of the run so short runs still decay.
    lambd : float, default=3.9e-3
        Barlow Twins off-diagonal weight.
    scale_loss : float, default=1/32
    norm_layer : {"BN", "LN"}, default="BN"
    weight_decay : float, default=1e-6
        LARS weight decay (matrices only).
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Autocast dtype of the training forward pass; ``"bf16"`` roughly doubles CPU speed on
        AVX-512-BF16 machines.
    nesting_dims : list of int, optional
        Train nested (Matryoshka Representation Learning, Kusupati et al., NeurIPS 2022): each
        prefix ``[:m]`` of the embedding gets its own projector and Barlow Twins loss, summed,
        so that ``transform(X, n_components=m)`` is a good ``m``-dim embedding on its own, e.g.
        ``[8, 16, 32, 64]`` with ``n_components=64``. Each nest costs one projector pass.

    Attributes
    ----------
    encoder_ : nn.Module
    projector_ : nn.Module or None
        Kept after ``fit(..., retain_projector=True)``.
    knn_indices_ : ndarray of shape (n_samples, n_neighbors)
    loss_history_ : list of float
        Mean loss per epoch.
    n_features_in_ : int

    Notes
    -----
    The defaults are the original's. The fast setting measured on MNIST (benchmarks/RESULTS.md,
    examples/tldr_mnist.py) is ``projector="mlp-1-512", precision="bf16", learning_rate=1.6,
    n_neighbors=20``, with ``n_epochs=5`` for an ``"mlp-1-512"`` encoder (20 from
    ``n_components=32`` on) or 20–50 for the linear one: about 25× less work per sample than
    ``mlp-2-2048``, and above PCA's 10-NN accuracy on MNIST.

    References
    ----------
    Y. Kalantidis, C. Lassance, J. Almazán, D. Larlus. "TLDR: Twin Learning for Dimensionality
    Reduction", TMLR 2022.
    """

    def __init__(
        self,
        n_components: int = 32,
        encoder: str = "linear",
        projector: str | None = "mlp-2-2048",
        n_neighbors: int = 5,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
        random_state: int | np.random.Generator | None = None,
        knn_approximation: str | None = None,
        knn_method: str = "exact",
        metric: str = "euclidean",
        verbose: int = 0,
        n_epochs: int = 100,
        batch_size: int = 1024,
        learning_rate: float = 0.2,
        warmup_epochs: int = 10,
        lambd: float = 3.9e-3,
        scale_loss: float = 1 / 32,
        norm_layer: str = "BN",
        weight_decay: float = 1e-6,
        precision: str = "fp32",
        nesting_dims: list[int] | None = None,
    ) -> None:
        self.n_components = n_components
        self.encoder = encoder
        self.projector = projector
        self.n_neighbors = n_neighbors
        self.device = device
        self.pin_memory = pin_memory
        self.random_state = random_state
        self.knn_approximation = knn_approximation
        self.knn_method = knn_method
        self.metric = metric
        self.verbose = verbose
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.warmup_epochs = warmup_epochs
        self.lambd = lambd
        self.scale_loss = scale_loss
        self.norm_layer = norm_layer
        self.weight_decay = weight_decay
        self.precision = precision
        self.nesting_dims = nesting_dims

    # --- parameter checks --------------------------------------------------------------------
    def _check_params(self) -> None:
        check_int(self.n_components, "n_components")
        check_int(self.n_neighbors, "n_neighbors")
        parse_spec(self.encoder, "encoder")
        if self.projector is not None:
            check_projector_spec(self.projector)
        check_choice(self.knn_approximation, "knn_approximation", KNN_APPROXIMATIONS)
        check_choice(self.knn_method, "knn_method", KNN_METHODS)
        check_choice(self.metric, "metric", ("euclidean", "cosine"))
        check_choice(self.norm_layer, "norm_layer", ("BN", "LN"))
        check_choice(self.precision, "precision", PRECISIONS)
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, self.n_components)
        check_int(self.n_epochs, "n_epochs")
        check_int(self.batch_size, "batch_size", minimum=2)
        check_int(self.warmup_epochs, "warmup_epochs", minimum=0)
        for name in ("learning_rate", "scale_loss"):
            check_float(getattr(self, name), name)
        for name in ("lambd", "weight_decay"):
            check_float(getattr(self, name), name, positive=False)
        self._device()
        self._seed()

    def _knn_backend(self) -> str:
        return f"ivfpq-{self.knn_approximation}" if self.knn_approximation else self.knn_method

    # --- kNN ---------------------------------------------------------------------------------
    def compute_knn(self, X: ArrayLike) -> "TLDR":
        """Compute and keep the kNN graph of ``X`` for the next ``fit`` on the same data."""
        self._check_params()
        X = self._validate_fit_data(X)
        check_n_neighbors(self.n_neighbors, X.shape[0])
        self.knn_indices_, _ = compute_knn(
            X, self.n_neighbors, method=self._knn_backend(), metric=self.metric,
            device=self._device(), seed=self._seed(),
        )
        return self

    def get_knn(self) -> np.ndarray:
        """The kNN index array of the last computed or loaded graph."""
        check_is_fitted(self, "knn_indices_")
        return self.knn_indices_

    def save_knn(self, path: str | os.PathLike) -> None:
        """Save the kNN index array as ``.npy`` (atomically)."""
        import io as _io

        from twinlearn.io import atomic_write_bytes

        buf = _io.BytesIO()
        np.save(buf, self.get_knn(), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())

    def load_knn(self, path: str | os.PathLike) -> "TLDR":
        """Load a kNN index array saved by :meth:`save_knn` (never unpickles)."""
        try:
            graph = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{path} is not a plain .npy index array: {err}") from err
        if graph.ndim != 2 or graph.dtype.kind not in "iu":
            raise ValueError(f"{path} holds a {graph.dtype} array of shape {graph.shape}, not (n, k) ints")
        self.knn_indices_ = graph.astype(np.int64)
        return self

    def _resolve_knn(self, X: ArrayLike, knn_graph: object) -> np.ndarray:
        n = X.shape[0]
        check_n_neighbors(self.n_neighbors, n)
        if knn_graph is not None:
            return check_knn_indices(knn_graph, n, self.n_neighbors)
        pending = getattr(self, "knn_indices_", None)
        if pending is not None and pending.shape[0] == n:
            return check_knn_indices(pending, n, self.n_neighbors)
        idx, _ = compute_knn(
            X, self.n_neighbors, method=self._knn_backend(), metric=self.metric,
            device=self._device(), seed=self._seed(),
        )
        return idx

    # --- model -------------------------------------------------------------------------------
    def _build_modules(self, n_features: int, seed: int) -> tuple[nn.Module, nn.Module]:
        with fork_torch_rng(seed):
            encoder = build_encoder(self.encoder, n_features, self.n_components, self.norm_layer)
            if self.nesting_dims is None:
                projector = build_projector(self.projector, self.n_components, self.norm_layer)
            else:
                projector = NestedHeads(
                    lambda m: build_projector(self.projector, m, self.norm_layer),
                    self.nesting_dims, shared=False,
                )
        return encoder, projector

    def _build_loss(self) -> nn.Module:
        loss = BarlowTwinsLoss(self.lambd, self.scale_loss)
        return loss if self.nesting_dims is None else MatryoshkaLoss(loss, self.nesting_dims)

    def fit(
        self,
        X: ArrayLike,
        y: object = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        knn_graph: object = None,
        output_folder: str | os.PathLike | None = None,
        snapshot_freq: int | None = None,
        print_every: int = 0,
        retain_projector: bool = False,
        resume: bool = False,
    ) -> "TLDR":
        """Learn the encoder from kNN pairs of ``X``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features), torch tensor or numpy.memmap
        y : ignored
        epochs, batch_size : int, optional
            Override ``n_epochs`` / ``batch_size`` for this call (the original's ``fit`` names).
        knn_graph : array of shape (n_samples, >= n_neighbors), optional
            Precomputed neighbour indices (self excluded); otherwise the graph from
            :meth:`compute_knn`/:meth:`load_knn` for data of this size, or a new one.
        output_folder : path, optional
            Where checkpoints go: ``latest_snapshot.safetensors`` each epoch,
            ``snapshot_{epoch}.safetensors`` every ``snapshot_freq`` epochs, and
            ``final_model.safetensors`` at the end.
        snapshot_freq : int, optional
        print_every : int
            Log the loss every this many steps.
        retain_projector : bool
            Keep the projector (to save it for further training).
        resume : bool
            Continue from ``output_folder/latest_snapshot.safetensors`` if it exists (weights,
            optimizer, RNG and step counter restored).

        Returns
        -------
        self
        """
        self._check_params()
        n_epochs = check_int(self.n_epochs if epochs is None else epochs, "epochs")
        batch = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", 2)
        if snapshot_freq is not None:
            check_int(snapshot_freq, "snapshot_freq", minimum=0)
        if resume and output_folder is None:
            raise ValueError("resume=True needs output_folder, where the snapshots are")
        X = self._validate_fit_data(X)
        n = X.shape[0]
        check_n_neighbors(self.n_neighbors, n)
        if batch > n:
            raise ValueError(f"batch_size={batch} is larger than the number of samples ({n})")
        device, seed = self._device(), self._seed()
        knn = self._resolve_knn(X, knn_graph)

        encoder, projector = self._build_modules(X.shape[1], seed)
        store = FeatureStore(X, device, force_on_device=self.pin_memory)
        objective = TwinObjective(encoder, projector, self._build_loss(), store)
        objective.to(device)
        pairs = KNNPairSource(knn, batch, device, make_generator(seed + 1, device))
        base_lr = self.learning_rate * batch / 256
        optimizer = LARS(lars_param_groups(objective), lr=base_lr, weight_decay=self.weight_decay)
        total = n_epochs * len(pairs)
        warmup_steps = int(min(self.warmup_epochs, n_epochs / 10) * len(pairs))
        trainer = Trainer(
            objective, pairs, optimizer, warmup_cosine(total, warmup_steps), n_epochs,
            precision=self.precision, checkpoint_dir=output_folder,
            snapshot_freq=snapshot_freq or 0, checkpoint_meta={"class": "TLDR"},
            verbose=self.verbose, print_every=print_every,
        )
        latest = Path(output_folder) / "latest_snapshot.safetensors" if output_folder else None
        if resume and latest is not None and latest.exists():
            trainer.load_checkpoint(latest)
            logger.info("resumed from %s at epoch %d", latest, trainer.epoch)
        trainer.fit()

        self.knn_indices_ = knn
        self.encoder_ = encoder.eval()
        self.projector_ = projector.eval() if retain_projector else None
        self.loss_history_ = trainer.loss_history
        self.n_epochs_trained_ = trainer.epoch
        if output_folder is not None:
            self.save(Path(output_folder) / "final_model.safetensors")
        return self

    def transform(self, X: ArrayLike, l2_norm: bool = False, n_components: int | None = None) -> ArrayLike:
        """Embed ``X`` with the encoder, in chunks (bounded memory for any N).

        Parameters
        ----------
        X : array of shape (n_samples, n_features_in_), tensor or memmap
        l2_norm : bool
            L2-normalise each output row (all-zero rows stay zero).
        n_components : int, optional
            Keep only the first ``n_components`` dimensions.

        Returns
        -------
        ndarray (for NumPy input) or tensor (for tensor input, on its device)
        """
        X = self._validate_transform_data(X)
        Z = keep_prefix(self._encode(self.encoder_, X, self._device()), n_components)
        if l2_norm:
            Z = torch.nn.functional.normalize(Z, dim=1)
        return output_like(Z, X)

    def fit_transform(self, X: ArrayLike, y: object = None, *, l2_norm: bool = False, **fit_params: Any) -> ArrayLike:
        """``fit(X, **fit_params)`` then ``transform(X, l2_norm)``."""
        return self.fit(X, y, **fit_params).transform(X, l2_norm=l2_norm)

    def remove_projector(self) -> "TLDR":
        """Drop the projector (needed only to continue training)."""
        self.projector_ = None
        return self

    # --- model files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model: safetensors weights + JSON hyperparameters (no pickle)."""
        check_is_fitted(self, "encoder_")
        modules = {"encoder": self.encoder_}
        if self.projector_ is not None:
            modules["projector"] = self.projector_
        self._save(path, modules, {"n_features_in_": self.n_features_in_,
                                   "has_projector": self.projector_ is not None})

    def load(self, path: str | os.PathLike, init: bool = False) -> "TLDR":
        """Load weights from :meth:`save`.

        Parameters
        ----------
        path : path-like
        init : bool
            Also take the hyperparameters stored in the file. Without it, the file's
            architecture must match this estimator's parameters.
        """
        tensors, meta = self._read_model_file(path)
        with self._restoring_from(path):
            stored = meta["params"]
            arch = ("n_components", "encoder", "projector", "norm_layer", "nesting_dims")
            if init:
                self._take_file_params(stored, path)
            else:
                mine = {k: list(v) if isinstance(v, tuple) else v
                        for k in arch for v in [getattr(self, k)]}
                mismatch = {k: (stored.get(k), mine[k]) for k in arch if stored.get(k) != mine[k]}
                if mismatch:
                    raise ValueError(
                        f"{path} was saved with a different architecture {mismatch} (file, this "
                        "estimator); use load(path, init=True) to take the file's parameters"
                    )
                self._check_params()
            fitted = meta["fitted"]
            n_features = check_int(fitted["n_features_in_"], "n_features_in_")
            has_projector = check_choice(fitted["has_projector"], "has_projector", (True, False))
            encoder, projector = build_on_meta(lambda: self._build_modules(n_features, 0))
            load_state_strict(encoder, split_prefix(tensors, "encoder"), path)
            if has_projector:
                load_state_strict(projector, split_prefix(tensors, "projector"), path)
        self.encoder_ = encoder.to(self._device()).eval()
        self.projector_ = projector.to(self._device()).eval() if has_projector else None
        self.n_features_in_ = n_features
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "encoder_")
