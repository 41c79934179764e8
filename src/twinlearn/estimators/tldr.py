"""TLDR: Twin Learning for Dimensionality Reduction (Kalantidis et al., TMLR 2022).

kNN pairs + an encoder and projector from spec strings + the Barlow Twins loss, trained with
LARS and a warm-up/cosine schedule. Names and defaults follow the original ``tldr`` package.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from twinlearn._checks import check_choice, check_int
from twinlearn._device import make_generator
from twinlearn.data.arrays import ArrayLike
from twinlearn.data.sparse import feature_store
from twinlearn.encoders import check_projector_spec, parse_spec
from twinlearn.encoders.matryoshka import check_nesting_dims
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    keep_prefix,
    load_state_strict,
    output_like,
)
from twinlearn.estimators._params import (
    BOOLEAN,
    DEVICE,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_LEARNING_RATE,
    MAX_WIDTH,
    MEMORY_BUDGET,
    NESTING_DIMS,
    PRECISION,
    SEED,
    VERBOSE,
    Check,
    Integer,
    Options,
    Real,
    none_or,
)
from twinlearn.estimators._tldr_knn import TLDRKNN
from twinlearn.estimators._tldr_model import (
    ENCODER_INITS,
    OUTPUT_BASES,
    build_loss,
    build_modules,
    check_encoder_init,
    check_output_basis,
    initialise_encoder,
    orthonormalise_encoder,
    resolve_output_basis,
)
from twinlearn.io import split_prefix
from twinlearn.neighbors import KNN_METHODS
from twinlearn.neighbors.index import KNN_METRICS
from twinlearn.neighbors.supervised import check_labels
from twinlearn.pairs import KNNPairSource, LabelAwarePairSource
from twinlearn.training import LARS, Trainer, distributed, lars_param_groups, warmup_cosine
from twinlearn.training.objectives import TwinObjective

KNN_APPROXIMATIONS = (None, "low", "medium", "high")
MAX_NEIGHBORS = 10_000


class TLDR(TLDRKNN, TwinlearnEstimator):
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
        Positives are drawn among each point's ``n_neighbors`` nearest neighbours (at most
        ``n_samples - 1``: smaller data uses all other points, with a warning).
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
    pin_memory : bool, default=False
        Kept for compatibility. In-memory data always moves to ``device`` once; with
        ``pin_memory=True`` a ``numpy.memmap`` is moved too instead of being read per batch.
    random_state : int, numpy Generator or None, default=None
        Seeds local generators only (initialisation, pair sampling, index training).
    knn_approximation : {None, "low", "medium", "high"}, default=None
        ``None``: exact neighbours; otherwise faiss IVF-PQ with 32/16/8 sub-quantizers.
    knn_method : str, default="auto"
        Back-end when ``knn_approximation`` is None: ``"exact"`` (torch; the former
        default), ``"faiss"``, ``"hnsw"`` or ``"auto"`` (exact up to 20 000 points, HNSW above,
        IVF-PQ when HNSW exceeds ``knn_memory_budget``: :class:`~twinlearn.neighbors.KNNIndex`).
    knn_memory_budget : int, str or None, default=None
        Bytes the kNN index and graph may take (``"4GB"`` accepted); ``None``: half the free
        RAM. A budget below the smallest index is a ``ValueError`` before any work.
    metric : {"euclidean", "cosine", "inner_product"}, optional
        Alias of ``knn_metric`` (this estimator's former name); give one of them.
    verbose : int, default=0
        ``>= 1`` shows a progress bar.
    n_epochs : int, default=100
        Training epochs (``fit(X, epochs=...)`` overrides it for one call, as in TLDR).
    batch_size : int, default=1024
        Anchors per step; clamped to the number of samples (small data: one batch per epoch).
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
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Training autocast; ``"auto"``: bf16 where native (AMX/AVX512-BF16 CPU, GPU), else fp32.
    nesting_dims : list of int, optional
        Train nested (Matryoshka Representation Learning, Kusupati et al., NeurIPS 2022): each
        prefix ``[:m]`` of the embedding gets its own projector and Barlow Twins loss, summed,
        so that ``transform(X, n_components=m)`` is a good ``m``-dim embedding on its own, e.g.
        ``[8, 16, 32, 64]`` with ``n_components=64``. Each nest costs one projector pass.
    knn_metric : {"euclidean", "cosine", "inner_product"}, default="euclidean"
        Metric of the input kNN graph (the original: inner product). Own graph: ``knn_graph=``.
    target_weight : float in [0, 1], default=0.5
        With labels (``fit(X, y)``): probability that a labelled anchor's positive shares its label.
    encoder_init : {"auto", "pca", "random"}, default="auto"
        ``"pca"``: a ``"linear"`` encoder starts as PCA (weights: the leading principal axes;
        see :func:`~twinlearn.encoders.initialization.init_linear_encoder`); ``"random"``:
        PyTorch's initialisation (the original's); ``"auto"``: PCA for a linear encoder.
    output_basis : {"auto", "orthonormal", "trained"}, default="auto"
        The output axes of a ``"linear"`` encoder after ``fit``. ``"orthonormal"``: its weight
        rows are replaced by an orthonormal basis of their span, taken in order (QR), so the
        output is an orthogonal projection onto the learned directions, as PCA's is onto its
        axes, and each prefix ``[:m]`` spans what the trained prefix spanned (``nesting_dims``
        stay nested). ``"trained"``: the weights as trained (the original's; Barlow Twins is
        blind to a linear mixing of the encoder's outputs, so training stretches and mixes
        them). ``"auto"``: ``"orthonormal"`` for a linear encoder with ``n_components <=
        n_features``, else ``"trained"``.

    Attributes
    ----------
    encoder_ : nn.Module
    projector_ : nn.Module or None
        Kept after ``fit(..., retain_projector=True)``.
    knn_indices_ : int32 ndarray of shape (n_samples, n_neighbors)
    loss_history_ : list of float
        Mean loss per epoch.
    precision_ : {"fp32", "bf16", "fp16"}
        The precision the model trained in (what ``"auto"`` resolved to).
    n_features_in_ : int

    Notes
    -----
    The defaults are the original's but for ``encoder_init``, ``output_basis``, ``knn_method``
    and ``precision``. From a random start the linear encoder keeps far fewer true neighbours
    than PCA; from PCA with the trained basis, more on token vectors but fewer on CIFAR features
    and MNIST (training stretches the output axes, to which Barlow Twins is blind); with the
    orthonormal basis it is within 0.015 recall@10 of PCA there and ahead on token vectors (see
    benchmarks/RESULTS.md, benchmarks/tldr_descriptors.py). ``knn_method="auto"`` searches an
    approximate index above the exact search's size; ``precision="auto"`` is fp32 unless the
    device runs bf16 natively (the original's: ``precision="fp32"``). The fast setting measured
    on MNIST (benchmarks/RESULTS.md, examples/tldr_mnist.py) is ``projector="mlp-1-512",
    learning_rate=1.6, n_neighbors=20``, with ``n_epochs=5`` for an ``"mlp-1-512"`` encoder (20
    from ``n_components=32`` on) or 20–50 for the linear one.

    References
    ----------
    Y. Kalantidis, C. Lassance, J. Almazán, D. Larlus. "TLDR: Twin Learning for Dimensionality
    Reduction", TMLR 2022.
    """

    #: bf16 kept fp32's quality at equal epochs (benchmarks/RESULTS.md, bf16_quality.py)
    _auto_bf16 = True
    _accepts_sparse = True

    def __init__(
        self, n_components: int = 32, encoder: str = "linear",
        projector: str | None = "mlp-2-2048", n_neighbors: int = 5,
        device: str | torch.device = "cpu", pin_memory: bool = False,
        random_state: int | np.random.Generator | None = None,
        knn_approximation: str | None = None, knn_method: str = "auto", metric: str | None = None,
        verbose: int = 0, n_epochs: int = 100, batch_size: int = 1024, learning_rate: float = 0.2,
        warmup_epochs: int = 10, lambd: float = 3.9e-3, scale_loss: float = 1 / 32,
        norm_layer: str = "BN", weight_decay: float = 1e-6, precision: str = "auto",
        nesting_dims: list[int] | None = None, knn_metric: str | None = None,
        target_weight: float = 0.5, knn_memory_budget: int | str | None = None,
        encoder_init: str = "auto", output_basis: str = "auto",
    ) -> None:
        self._store_init_args(locals())

    _parameter_constraints = {
        "n_components": Integer(1, MAX_WIDTH),
        "encoder": Check(parse_spec, "a spec 'linear', 'flinear-L-H' or 'mlp-L-H'"),
        "projector": none_or(Check(lambda v, name: check_projector_spec(v), "a spec such as 'mlp-2-2048'")),
        "n_neighbors": Integer(1, MAX_NEIGHBORS),
        "device": DEVICE,
        "pin_memory": BOOLEAN,
        "random_state": SEED,
        "knn_approximation": Options(KNN_APPROXIMATIONS),
        "knn_method": Options(KNN_METHODS),
        "knn_memory_budget": MEMORY_BUDGET,
        "metric": none_or(Options(KNN_METRICS)),
        "knn_metric": none_or(Options(KNN_METRICS)),
        "target_weight": Real(0.0, 1.0, strict=False),
        "verbose": VERBOSE,
        "n_epochs": Integer(1, MAX_EPOCHS),
        "batch_size": Integer(2, MAX_BATCH),
        "learning_rate": Real(0.0, MAX_LEARNING_RATE),
        "warmup_epochs": Integer(0, MAX_EPOCHS),
        "lambd": Real(0.0, strict=False),
        "scale_loss": Real(0.0),
        "norm_layer": Options(("BN", "LN")),
        "weight_decay": Real(0.0, strict=False),
        "precision": PRECISION,
        "nesting_dims": NESTING_DIMS,
        "encoder_init": Options(ENCODER_INITS),
        "output_basis": Options(OUTPUT_BASES),
    }

    def _check_param_relations(self) -> None:
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, self.n_components)
        check_encoder_init(self.encoder_init, self.encoder)
        check_output_basis(self.output_basis, self.encoder)
        self._knn_metric()

    # --- model -------------------------------------------------------------------------------
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
        X : array of shape (n_samples, n_features), tensor, or on disk (memmap, HDF5, zarr)
        y : array of shape (n_samples,), optional
            Labels (int, ``-1`` unlabelled; str, ``None`` unlabelled): see ``target_weight``
            and :class:`~twinlearn.pairs.LabelAwarePairSource`.
        epochs, batch_size : int, optional
            Override ``n_epochs`` / ``batch_size`` for this call (the original's ``fit`` names).
        knn_graph : array of shape (n_samples, >= n_neighbors), optional
            Precomputed neighbour indices (self excluded), a ``load_knn`` pair, or a sparse
            ``(n_samples, n_samples)`` distance graph (scanpy's ``obsp["distances"]``);
            otherwise the graph from :meth:`compute_knn`/:meth:`load_knn`, or a new one.
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
        self._validate_params()
        n_epochs = check_int(self.n_epochs if epochs is None else epochs, "epochs")
        batch = check_int(self.batch_size if batch_size is None else batch_size, "batch_size", 2)
        self._check_run_options(output_folder, resume, snapshot_freq)
        X = self._validate_fit_data(X)
        basis = resolve_output_basis(self.output_basis, self.encoder, self.n_components, X.shape[1])
        codes = check_labels(y, X.shape[0])
        k = self._neighbors_for(self.n_neighbors, X.shape[0])
        batch = min(batch, X.shape[0])  # small data trains in one batch per epoch
        seed, device = distributed.agreed_seed(X, self._seed()), self._device()  # before any work
        precision = self._precision()
        knn = self._resolve_knn(X, knn_graph, k, device, seed)
        encoder, projector = build_modules(self, X.shape[1], seed)
        initialise_encoder(self, encoder, X, seed)
        store = feature_store(X, device, force_on_device=self.pin_memory, precision=precision)
        objective = TwinObjective(encoder, projector, build_loss(self), store).to(device)
        generator = make_generator(seed + 1, device)
        pairs = (KNNPairSource(knn, batch, device, generator) if codes is None else LabelAwarePairSource(
            knn, batch, device, generator, codes=codes, target_weight=self.target_weight))
        optimizer = LARS(lars_param_groups(objective), lr=self.learning_rate * batch / 256,
                         weight_decay=self.weight_decay)
        warmup_steps = int(min(self.warmup_epochs, n_epochs / 10) * len(pairs))
        trainer = Trainer(objective, pairs, optimizer, warmup_cosine(n_epochs * len(pairs), warmup_steps), n_epochs,
                          precision=precision, verbose=self.verbose, print_every=print_every, data_parallel=True)

        def keep(trainer: Trainer) -> None:
            if basis == "orthonormal":
                orthonormalise_encoder(encoder[0], projector)
            self.knn_indices_ = knn.cpu().numpy()
            self.encoder_ = encoder.eval()
            self.projector_ = projector.eval() if retain_projector else None

        self._run_training(trainer, X, keep, output_folder=output_folder, resume=resume,
                           snapshot_freq=snapshot_freq)
        return self

    def transform(self, X: ArrayLike, l2_norm: bool = False, n_components: int | None = None) -> ArrayLike:
        """Embed ``X`` with the encoder, in chunks (bounded memory for any N).

        Parameters
        ----------
        X : array of shape (n_samples, n_features_in_), tensor, or on disk (memmap, HDF5, zarr)
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
        return self._load_file(path, init)

    _architecture = ("n_components", "encoder", "projector", "norm_layer", "nesting_dims")

    def _restore(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any], path: str | os.PathLike) -> dict:
        n_features = check_int(fitted["n_features_in_"], "n_features_in_")
        has_projector = check_choice(fitted["has_projector"], "has_projector", (True, False))
        encoder, projector = build_on_meta(lambda: build_modules(self, n_features, 0))
        load_state_strict(encoder, split_prefix(tensors, "encoder"), path)
        if has_projector:
            load_state_strict(projector, split_prefix(tensors, "projector"), path)
        return {"encoder_": encoder, "projector_": projector if has_projector else None,
                "n_features_in_": n_features}

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "encoder_")
