r"""Contrastive neighbor embeddings (CNE): Damrich, Böhm, Hamprecht, Kobak, "From t-SNE to UMAP
with contrastive learning", ICLR 2023.

A facade over shared parts: the symmetrised kNN graph (:mod:`twinlearn.neighbors`) as an
:class:`~twinlearn.pairs.EdgePairSource` + an embedding table (non-parametric) or a network
D→100→100→100→d (parametric) + the contrastive recipe (:mod:`twinlearn.training.contrastive`:
Cauchy or cosine kernel, InfoNCE / NEG / NCE / UMAP loss, spectrum, early exaggeration, linear
LR annealing), run by the one :class:`~twinlearn.training.Trainer`. New points of a
non-parametric map are placed by :func:`~twinlearn.training.placement.place_points`.

Differences from the original ``contrastive-ne``, on purpose: negatives never include the
anchor or its own positive; early exaggeration applies whenever it is on (the NEG spectrum
convention ``Z_umap = n²/m`` is in :mod:`twinlearn.losses.spectrum`); a non-parametric
``transform`` places new points instead of returning the training embedding; the LR decays per
step; on CPU the table's Cauchy-kernel path runs a fused numba kernel with the same results;
NaN raises :class:`~twinlearn.training.TrainingDiverged`; no global RNG is touched. As the
original, the loss is *summed* over a batch's anchors, and InfoNCE is multiplied by
``temperature`` also for the Euclidean metric, so ``learning_rate`` means the same step size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from twinlearn._checks import one_of
from twinlearn._device import numpy_base_pages
from twinlearn.data.arrays import ArrayLike, is_index_selection, validate_sample_indices
from twinlearn.estimators._base import TwinlearnEstimator, keep_prefix, output_like
from twinlearn.estimators._cne_files import CNEModelFile
from twinlearn.estimators._cne_inputs import CNEInputs
from twinlearn.estimators._params import (
    BOOLEAN,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_WIDTH,
    MEMORY_BUDGET,
    AnyOf,
    Integer,
    Options,
    Real,
    none_or,
)
from twinlearn.estimators.contrastive import CALLBACKS, CONTRASTIVE_CONSTRAINTS
from twinlearn.neighbors import KNN_METHODS
from twinlearn.neighbors.index import KNN_METRICS
from twinlearn.training import distributed
from twinlearn.training.callbacks import EmbeddingSnapshots
from twinlearn.training.contrastive import contrastive_run
from twinlearn.training.full_repulsion import tsne_run

MAX_NEIGHBORS = 10_000


class CNE(CNEInputs, CNEModelFile, TwinlearnEstimator):
    """Contrastive neighbor embedding (Damrich et al., ICLR 2023): t-SNE-like to UMAP-like
    embeddings, non-parametric or parametric.

    Parameters
    ----------
    loss_mode : {"infonce", "neg", "nce", "umap"}, optional
        InfoNCE (t-SNE-like at ``s = 0``), negative sampling (UMAP-like at ``neg_spec = 1``),
        noise-contrastive estimation (learned normaliser) or UMAP's cross-entropy. Default
        (None): what the other settings call for — UMAP's loss for a Euclidean table with
        sampled negatives, NEG for the network, InfoNCE with ``s``/``ince_spec``, the cosine
        kernel, ``eps < 1``, ``negative_samples="all"``/``"full"`` or ``nesting_dims``, NEG
        with ``Z_bar``/``neg_spec`` (:func:`~twinlearn.estimators._cne_inputs.default_loss_mode`;
        the evidence is in benchmarks/RESULTS.md). ``loss_mode="infonce"``: the fixed default
        before.
    metric : {"euclidean", "cosine"}, default="euclidean"
        The *embedding* kernel (the original's name): Cauchy ``1/(1 + d²)`` or
        ``exp(cos/temperature)``. The metric of the input's kNN graph is ``knn_metric``.
    parametric : bool, default=False
        Learn a network D→100→100→100→d (``transform`` embeds new data with it) instead of a
        free table of coordinates.
    n_components : int, default=2
        Embedding dimension (the original's ``embd_dim`` is accepted too).
    n_neighbors : int, default=15
        Neighbours per point of the kNN graph before union symmetrisation (``k`` accepted too);
        at most ``n_samples - 1`` (smaller data uses all other points, with a warning).
    negative_samples : int, "full" or "all", optional
        Negatives per edge. Default (None): 5, and 15 for UMAP's loss (a table's default) on up
        to 10 000 points, where they lift 10-NN accuracy (``negative_samples=5``: the fixed
        default before; see benchmarks/RESULTS.md). ``"all"``: t-SNE, every point a negative
        by grid-interpolated repulsion (2-D table, InfoNCE; an epoch is one gradient step):
        :mod:`twinlearn.training.full_repulsion`.
    n_epochs : int, optional
        Passes over every directed edge of the graph. Default (None): for the table 500 up to
        10 000 points, 200 above, as umap-learn (750 steps with ``negative_samples="all"``, as
        openTSNE); 40 for the network (``n_epochs=200``: its default before).
    batch_size : int, optional
        Edges per step. Default (None): for the table about 16 steps per epoch, the power of
        two nearest ``edges per epoch / 16`` in [1024, 32768] (32 768 on MNIST-70k); 8 192 for
        the network (``batch_size=32768``: the fixed default before, one step per epoch
        below ~10 000 points). Small maps gain from both, see benchmarks/RESULTS.md.
    learning_rate : float, optional
        Default 1.0 (non-parametric, SGD: the original's) or 1e-2 (parametric, Adam; the
        original's ``learning_rate=1e-3`` was the default before). The network's previous
        defaults in full: ``loss_mode="infonce", n_epochs=200, batch_size=32768,
        learning_rate=1e-3``.
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
    a, b : float, optional
        umap-learn's kernel ``1/(eps + a·d^{2b})`` (``metric="euclidean"``; ``b > 0.5``).
        Default (None): umap-learn's ``a = 1.577, b = 0.8951`` (its ``min_dist=0.1``) with
        ``loss_mode="umap"``, where they lift 10-NN accuracy and recall (benchmarks/RESULTS.md),
        else ``a = b = 1``, the Cauchy kernel (``a=1, b=1``: the UMAP loss's kernel before).
    momentum, weight_decay : float, default=0
    anneal_lr : {"linear", "cosine", "none"} or bool, default="linear"
    lr_min_factor : float, default=0
    warmup_epochs : int, default=0
    clip_grad : float or None, default=4.0
        Clip gradient values.
    loss_aggregation : {"sum", "mean"}, default="sum"
    knn_method : str, default="auto"
        kNN back-end (:func:`~twinlearn.neighbors.compute_knn`): exact up to 20 000 points,
        faiss HNSW above, IVF-PQ when HNSW exceeds ``knn_memory_budget`` (sparse ``X``: always
        exact, by sparse products).
    knn_memory_budget : int, str or None, default=None
        Bytes the kNN index and graph may take (``"4GB"`` accepted); ``None``: half the free
        RAM. A budget below the smallest index is a ``ValueError`` before any work.
    knn_metric : {"euclidean", "cosine", "inner_product", "precomputed"}, default="euclidean"
        Metric of the *input* kNN graph. ``"precomputed"`` (non-parametric only): ``X`` is an
        ``(n, n)`` distance matrix, dense (the ``n_neighbors`` smallest off-diagonal entries
        per row are the neighbours) or a scipy sparse kNN graph of distances (each row's
        stored entries); ``init="pca"`` then means ``"spectral"``, and ``transform`` takes only
        training indices.
    target_weight : float in [0, 1], default=0.5
        With labels (``fit(X, y)``): how strongly they reshape the graph, as umap-learn's; 1
        removes every edge between different labels.
    edge_weights : {"fuzzy", "binary"}, default="fuzzy"
        ``"fuzzy"``: UMAP's membership strengths on the union-symmetrised kNN graph
        (:func:`~twinlearn.neighbors.fuzzy_union_edges`); an epoch draws each edge with
        probability ``w / max(w)``, so close neighbours are positives more often than far ones
        and an epoch is ~3× shorter (MNIST: 0.969 vs 0.962 10-NN accuracy for NEG, see
        benchmarks/RESULTS.md). ``"binary"``: every edge once per epoch, as the original
        ``contrastive-ne``. A sparse ``knn_graph`` keeps its own weights (``"fuzzy"``) or
        its pattern (``"binary"``).
    nesting_dims : list of int, optional
        Matryoshka: the loss is summed over these prefixes of the embedding, e.g.
        ``CNE(parametric=True, n_components=16, nesting_dims=[2, 4, 8, 16])``; then
        ``transform(X, n_components=2)`` is a 2-D embedding of its own.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Autocast of the network; ``"auto"`` is fp32 (on an AMX CPU bf16 trained the default
        network no faster and 0.006 lower in map accuracy, benchmarks/RESULTS.md); ``"bf16"``
        asks for it by name. The table (non-parametric) has no matrix product to autocast.
    init_scale : float, optional
        Standard deviation of the first coordinate of a computed start (``init="pca"``,
        ``"spectral"`` or ``"random"``; the others keep their ratio to it). Default (None): 1
        (random: openTSNE's 1e-4), and for UMAP's loss the start spread to a largest
        |coordinate| of 10, as umap-learn's (from std 1 its repulsion scatters whole clusters
        in the first epochs; ``init_scale=1``: the start before).
    transform_epochs : int, default=50
        Optimisation epochs that place new points in a non-parametric ``transform``.
    placement : {"fuzzy", "mean"}, default="fuzzy"
        A non-parametric ``transform``, as umap-learn's: the UMAP memberships of a new point's
        ``n_neighbors`` nearest training points weight its start (the weighted mean of their
        embeddings) and its edges (drawn ``w / max w`` as often), at half the training LR.
        ``"mean"``: plain mean, every edge every epoch, the training LR (before; see RESULTS).
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
    precision_, loss_mode_ : str
        The precision and the loss the map trained with (what ``"auto"`` and None resolved to).
    n_features_in_ : int

    Examples
    --------
    >>> from twinlearn import CNE
    >>> Y = CNE(random_state=0).fit_transform(X)            # doctest: +SKIP
    >>> Y_new = CNE(parametric=True).fit(X).transform(X_new)  # doctest: +SKIP
    """

    _accepts_sparse = True

    def __init__(
        self, loss_mode: str | None = None, metric: str = "euclidean", parametric: bool = False,
        n_components: int = 2, n_neighbors: int = 15, negative_samples: int | str | None = None,
        n_epochs: int | None = None, batch_size: int | None = None, learning_rate: float | None = None,
        optimizer: str | None = None, s: float | None = None, Z_bar: float | None = None,
        neg_spec: float | None = None, ince_spec: float | None = None,
        early_exaggeration: bool = True, temperature: float = 0.5, eps: float = 1.0,
        momentum: float = 0.0, weight_decay: float = 0.0, anneal_lr: str | bool = "linear",
        lr_min_factor: float = 0.0, warmup_epochs: int = 0, clip_grad: float | None = 4.0,
        loss_aggregation: str = "sum", knn_method: str = "auto", edge_weights: str = "fuzzy",
        nesting_dims: list[int] | None = None, precision: str = "auto", transform_epochs: int = 50,
        save_freq: int = 0, device: str | torch.device = "cpu",
        random_state: int | np.random.Generator | None = None, verbose: int = 0,
        embd_dim: int | None = None, k: int | None = None, knn_metric: str = "euclidean",
        target_weight: float = 0.5, knn_memory_budget: int | str | None = None,
        a: float | None = None, b: float | None = None, placement: str = "fuzzy",
        init_scale: float | None = None,
    ) -> None:
        self._store_init_args(locals())

    _parameter_constraints = {
        **CONTRASTIVE_CONSTRAINTS,
        "negative_samples": none_or(AnyOf((CONTRASTIVE_CONSTRAINTS["negative_samples"], Options(("all",))))),
        "parametric": BOOLEAN,
        "n_components": Integer(1, MAX_WIDTH),
        "n_neighbors": Integer(1, MAX_NEIGHBORS),
        "n_epochs": none_or(Integer(1, MAX_EPOCHS)),
        "batch_size": none_or(Integer(2, MAX_BATCH)),
        "learning_rate": none_or(CONTRASTIVE_CONSTRAINTS["learning_rate"]),
        "optimizer": none_or(CONTRASTIVE_CONSTRAINTS["optimizer"]),
        "knn_method": Options(KNN_METHODS),
        "knn_memory_budget": MEMORY_BUDGET,
        "edge_weights": Options(("fuzzy", "binary")),
        "transform_epochs": Integer(1, MAX_EPOCHS),
        "save_freq": Integer(0, MAX_EPOCHS),
        "embd_dim": none_or(Integer(1, MAX_WIDTH)),
        "k": none_or(Integer(1, MAX_NEIGHBORS)),
        "knn_metric": Options((*KNN_METRICS, "precomputed")),
        "target_weight": Real(0.0, 1.0, strict=False),
        "a": none_or(Real(0.0, 1e6)),
        "b": none_or(Real(0.5, 10.0)),
        "placement": Options(("fuzzy", "mean")),
        "loss_mode": none_or(CONTRASTIVE_CONSTRAINTS["loss_mode"]),
        "init_scale": none_or(Real(0.0, 1e6)),
    }

    # --- parameters --------------------------------------------------------------------------
    def _output_width(self) -> int:
        return self._dim()

    # --- fit ---------------------------------------------------------------------------------
    @numpy_base_pages()
    def fit(
        self,
        X: ArrayLike,
        y: object = None,
        *,
        init: ArrayLike | str = "pca",
        knn_graph: object = None,
        graph: object = None,
        callbacks: Sequence[Any] = (),
        output_folder: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> "CNE":
        """Learn the embedding of ``X``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features), tensor, or on disk (memmap, HDF5, zarr)
            Rows are flattened by the caller (images: ``X.reshape(len(X), -1)``).
        y : array of shape (n_samples,), optional
            Class labels (int, ``-1`` = unlabelled; or str, ``None`` = unlabelled): edges
            between different labels are weakened as in umap-learn (see ``target_weight`` and
            :mod:`twinlearn.neighbors.supervised`); needs ``edge_weights="fuzzy"``.
        init : {"pca", "spectral", "random"} or array of shape (n_samples, n_components)
            Initial coordinates (non-parametric), at the scale ``init_scale`` sets: PCA (default), a
            spectral embedding of the neighbour graph (UMAP's), random (openTSNE's std 1e-4),
            or given coordinates.
        knn_graph : scipy sparse matrix or int array of shape (n_samples, k), optional
            Positive pairs instead of a computed kNN graph: a weighted sparse matrix (e.g.
            scanpy's ``obsp["connectivities"]``; symmetrised as ``max(W, Wᵀ)``, its weights
            kept unless ``edge_weights="binary"``), an index array or ``load_knn``'s pair.
        graph : same as ``knn_graph`` (the original's name)
        callbacks : sequence of callables
            Extra ``callback(trainer, epoch, mean_loss)`` run after every epoch.
        output_folder : path, optional
            Where checkpoints go (as TLDR): ``latest_snapshot.safetensors`` after every epoch,
            written atomically, and ``final_model.safetensors`` at the end.
        resume : bool
            Continue from ``output_folder/latest_snapshot.safetensors`` if it exists (embedding
            or network, optimizer, random generator and step restored): with the same data and
            parameters the result equals an uninterrupted run; a checkpoint of other data or
            other parameters is refused. ``embedding_snapshots_`` then hold only the epochs
            trained in this call.

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_run_options(output_folder, resume)
        if not self.parametric:  # why: docs/distributed-cne.md
            distributed.refuse_under_process_group("CNE(parametric=False)", "its embedding table "
                                                   "is not split across processes; use parametric=True")
        CALLBACKS.check(callbacks, "callbacks")
        graph = one_of(knn_graph, graph, "knn_graph", "graph")
        X = self._validate_cne_data(X)
        codes = self._check_labels(y, X.shape[0])
        k = self._neighbors_for(self._k(), X.shape[0], "k" if self.k is not None else "n_neighbors")
        init = self._check_init(init, X.shape[0])
        seed, device = distributed.agreed_seed(X, self._seed()), self._device()  # before any work
        clock = time.perf_counter()
        pairs = self._edge_pairs(X, graph, k, codes, seed, device)  # sets neighbor_graph_
        self.timings_ = {"knn": time.perf_counter() - clock}
        clock = time.perf_counter()
        model, store = self._model(X, init, seed, device)
        snapshots = EmbeddingSnapshots(lambda: self._embed_training(model, X), self.save_freq) if self.save_freq else None
        self.timings_["init"] = time.perf_counter() - clock
        make_run = tsne_run if self.negative_samples == "all" else contrastive_run
        recipe = self._recipe(n_epochs=self._epochs(X.shape[0]), negative_samples=self._negatives(X.shape[0]))
        run = make_run(recipe, model, pairs, n=X.shape[0],
                       store=store, callbacks=[*([snapshots] if snapshots else []), *callbacks],
                       verbose=self.verbose, data_parallel=True)

        def keep(trainer: Any) -> None:
            self.timings_["optimisation"] = sum(trainer.epoch_seconds)
            self.model_ = model.eval()
            self.embedding_ = self._embed_training(model, X)
            self.spectrum_, self.log_Z_, self.loss_mode_ = run.spectrum, run.learned_log_z(), self._loss_mode()
            self.embedding_snapshots_ = snapshots.snapshots if snapshots is not None else []
            self.training_data_ = None if self.parametric or self.knn_metric == "precomputed" else X
            self.n_samples_fit_ = X.shape[0]

        self._run_training(run.trainer, X, keep, output_folder=output_folder, resume=resume)
        return self

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
            training points' embeddings (weighted as ``placement`` says), then
            ``transform_epochs`` of the same loss attract it to them while it is repelled from
            random training points.
        n_components : int, optional
            Keep only the first ``n_components`` dimensions (a nested model's smaller embedding).

        Returns
        -------
        ndarray (tensor for tensor input) of shape (n_new, n_components)
        """
        self._check_is_fitted()
        if is_index_selection(X):
            idx = validate_sample_indices(np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X),
                                          self.embedding_.shape[0])
            rows = keep_prefix(self.embedding_[idx], n_components)
            return rows[0] if np.ndim(X) == 0 else rows
        X = self._validate_transform_data(X)
        if self.parametric:
            Z = self._encode(self.model_, X, self._device())
        else:
            Z = torch.from_numpy(self._place(X))
        return output_like(keep_prefix(Z, n_components), X)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "embedding_")
