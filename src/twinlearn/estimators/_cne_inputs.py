"""CNE's inputs and what it trains: the aliased parameters, the defaults that follow the data's
size (epochs, batch) and the other settings (the loss, the start's scale), the data (features
or precomputed distances), the labels of a supervised fit, the kNN index of the graph, the
model (network or table), and new points placed in the map."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse
import torch
import torch.nn as nn

from twinlearn._device import fork_torch_rng, make_generator
from twinlearn.data.arrays import ArrayLike, FeatureStore
from twinlearn.data.sparse import feature_store
from twinlearn.encoders.initialization import check_init, initial_coordinates, rescaled
from twinlearn.encoders.matryoshka import check_nesting_dims
from twinlearn.encoders.mlp import cne_network
from twinlearn.encoders.table import EmbeddingTable
from twinlearn.estimators.contrastive import check_contrastive_relations
from twinlearn.neighbors import KNNIndex
from twinlearn.neighbors.graph import membership_distances, membership_strengths
from twinlearn.neighbors.precomputed import PrecomputedIndex, check_precomputed
from twinlearn.neighbors.supervised import check_labels, labelled_positive_edges
from twinlearn.pairs import EdgePairSource
from twinlearn.training import distributed
from twinlearn.training.contrastive import ContrastiveRecipe, loss_mode, negatives
from twinlearn.training.full_repulsion import check_full_repulsion, placement_negatives
from twinlearn.training.placement import place_points

#: umap-learn's epochs by size: small data gets more passes (its edges are fewer, so an epoch
#: is cheap and a longer run is what lets a small map settle)
SMALL_DATA, SMALL_DATA_EPOCHS, LARGE_DATA_EPOCHS = 10_000, 500, 200
#: t-SNE's gradient steps (``negative_samples="all"``: one step per epoch), openTSNE's 250 + 500
TSNE_EPOCHS = 750
#: the default batch: about this many steps per epoch, powers of two, at most ``MAX_AUTO_BATCH``
STEPS_PER_EPOCH, MIN_AUTO_BATCH, MAX_AUTO_BATCH = 16, 1024, 32768
#: umap-learn's kernel ``1/(1 + a·d^{2b})`` at its defaults (``find_ab_params(spread=1,
#: min_dist=0.1)``), the UMAP loss's default kernel
UMAP_A, UMAP_B = 1.577, 0.8951
#: negatives per edge: the UMAP loss takes more on a small table (umap-learn's 10 000-point
#: line), where they lift 10-NN accuracy (MNIST-5k: 5 / 10 / 15 / 20 → 0.907 / 0.919 / 0.928 /
#: 0.927, two seeds; at 20 000 points 10 lower it)
DEFAULT_NEGATIVES, SMALL_DATA_UMAP_NEGATIVES = 5, 15
#: ``placement="fuzzy"`` moves new points at this fraction of the training LR
FUZZY_PLACEMENT_LR = 0.5
#: the network's defaults: Adam at 1e-2 on batches of 8 192 edges for 40 epochs reaches
#: 0.948 test 10-NN accuracy on MNIST where the original's 200 epochs of 32 768 at 1e-3 took
#: longer for less (benchmarks/RESULTS.md)
NETWORK_EPOCHS, NETWORK_BATCH, NETWORK_LR = 40, 8192, 1e-2
#: the UMAP loss's start, as umap-learn's: coordinates spread to a largest |value| of 10 (from
#: PC1 std 1 its repulsion scatters whole clusters in the first epochs)
UMAP_START_EXTENT = 10.0


def default_loss_mode(params: dict[str, Any]) -> str:
    """``loss_mode=None``: the loss the other settings call for. A spectrum argument names
    its loss (``Z_bar``/``neg_spec``: NEG; ``s``/``ince_spec``: InfoNCE); the cosine kernel,
    ``eps < 1``, every point as a negative and nested dimensions need InfoNCE; otherwise a
    network trains with NEG and a table with UMAP's loss, which beats umap-learn on its own
    metrics at its own scale (benchmarks/RESULTS.md)."""
    if params["Z_bar"] is not None or params["neg_spec"] is not None:
        return "neg"
    if params["s"] is not None or params["ince_spec"] is not None:
        return "infonce"
    sampled = params["negative_samples"] is None or negatives(params["negative_samples"]) not in ("full", "all")
    if params["metric"] == "cosine" or params["eps"] < 1.0 or params["nesting_dims"] is not None or not sampled:
        return "infonce"
    return "neg" if params["parametric"] else "umap"


def default_epochs(n_samples: int) -> int:
    """``n_epochs=None``: 500 up to 10 000 points, 200 above (umap-learn's rule)."""
    return SMALL_DATA_EPOCHS if n_samples <= SMALL_DATA else LARGE_DATA_EPOCHS


def default_batch_size(edges_per_epoch: float) -> int:
    """``batch_size=None``: the power of two nearest ``edges_per_epoch / 16``, in
    ``[1024, 32768]`` — about 16 steps per epoch whatever the size (MNIST-70k: 32 768, the
    old fixed default; 5 000 points: 2 048 instead of one step per epoch)."""
    target = max(edges_per_epoch / STEPS_PER_EPOCH, 1.0)
    return int(min(MAX_AUTO_BATCH, max(MIN_AUTO_BATCH, 2 ** round(math.log2(target)))))


def edges_per_epoch(n_edges: int, weights: np.ndarray | None) -> float:
    """Expected edges an epoch draws: all of them, or ``Σ w / max w`` of a weighted graph."""
    return float(n_edges if weights is None or n_edges == 0 else (weights / weights.max()).sum())


class CNEInputs:
    """Mixin of :class:`~twinlearn.CNE`: the aliased parameters and what ``fit`` and
    ``transform`` do with their inputs."""

    @staticmethod
    def _alias(value: int, alias: int | None, name: str, alias_name: str, default: int) -> int:
        if alias is None:
            return value
        if value != default and value != alias:
            raise ValueError(f"{name}={value} and {alias_name}={alias} disagree; give one of them")
        return alias

    def _dim(self) -> int:
        return self._alias(self.n_components, self.embd_dim, "n_components", "embd_dim", 2)

    def _k(self) -> int:
        return self._alias(self.n_neighbors, self.k, "n_neighbors", "k", 15)

    def _loss_mode(self) -> str:
        params = self.get_params(deep=False)
        return default_loss_mode(params) if self.loss_mode is None else loss_mode(self.loss_mode)

    def _resolved_params(self) -> dict[str, Any]:
        """The parameters with ``loss_mode`` resolved (what the shared recipe and checks see)."""
        return {**self.get_params(deep=False), "loss_mode": self._loss_mode()}

    def _check_param_relations(self) -> None:
        self._dim()
        self._k()
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, self._dim())
        if self.parametric and self.knn_metric == "precomputed":
            raise ValueError("knn_metric='precomputed' needs parametric=False: a network needs "
                             "features (pass knn_graph= for your own graph)")
        if self.metric == "cosine" and (self.a, self.b) != (None, None):
            raise ValueError("a and b shape the Euclidean kernel 1/(eps + a·d^(2b)); metric='cosine' has none")
        params = self._resolved_params()
        check_contrastive_relations(params)
        check_full_repulsion(params, self._dim())

    def _epochs(self, n_samples: int) -> int:
        if self.n_epochs is not None:
            return self.n_epochs
        if self.negative_samples == "all":
            return TSNE_EPOCHS
        # a network is not a table: the by-size rule was measured for the table only
        return NETWORK_EPOCHS if self.parametric else default_epochs(n_samples)

    def _negatives(self, n_samples: int) -> int | str:
        if self.negative_samples is not None:
            return self.negative_samples
        small_table = not self.parametric and n_samples <= SMALL_DATA
        return SMALL_DATA_UMAP_NEGATIVES if small_table and self._loss_mode() == "umap" else DEFAULT_NEGATIVES

    def _batch(self, n_edges: int, weights: np.ndarray | None) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return NETWORK_BATCH if self.parametric else default_batch_size(edges_per_epoch(n_edges, weights))

    def _recipe(self, **overrides: Any) -> ContrastiveRecipe:
        """The contrastive settings, with the original's defaults for the table (SGD, LR 1)
        and Adam at :data:`NETWORK_LR` for the network."""
        defaults = {"learning_rate": NETWORK_LR if self.parametric else 1.0,
                    "optimizer": "adam" if self.parametric else "sgd"}
        resolved = {k: v if getattr(self, k) is None else getattr(self, k) for k, v in defaults.items()}
        resolved["precision"] = self._precision()
        resolved["a"], resolved["b"] = self._kernel_ab()
        return ContrastiveRecipe.from_params(self._resolved_params(), **{**resolved, **overrides})

    def _kernel_ab(self) -> tuple[float, float]:
        """``(a, b)`` of the kernel ``1/(eps + a·d^{2b})``: umap-learn's for the UMAP loss,
        the Cauchy kernel's ``(1, 1)`` else, unless given."""
        umap = self._loss_mode() == "umap"
        return (float((UMAP_A if umap else 1.0) if self.a is None else self.a),
                float((UMAP_B if umap else 1.0) if self.b is None else self.b))

    def _check_init(self, init: object, n: int) -> np.ndarray | str:
        if self.parametric and not isinstance(init, str):
            raise ValueError("init sets the coordinates of the non-parametric table; "
                             "it has no meaning with parametric=True")
        return check_init(init, n, self._dim())

    def _model(self, X: ArrayLike, init: np.ndarray | str, seed: int,
               device: torch.device) -> tuple[nn.Module, FeatureStore | None]:
        """The network and its input rows, or the table initialised as ``init`` asks."""
        if self.parametric:
            with fork_torch_rng(seed):
                model: nn.Module = cne_network(X.shape[1], self._dim())
            return model.to(device), feature_store(X, device, precision=self._precision())
        if isinstance(init, str):
            init = "spectral" if init == "pca" and self.knn_metric == "precomputed" else init
            init = self._scaled_start(initial_coordinates(init, X, self.neighbor_graph_, self._dim(), seed))
        return EmbeddingTable(init).to(device), None

    def _scaled_start(self, Y: np.ndarray) -> np.ndarray:
        """A computed start (first coordinate of std 1, random: 1e-4) at the scale asked."""
        if self.init_scale is not None:
            return rescaled(Y, std=self.init_scale)
        return rescaled(Y, max_abs=UMAP_START_EXTENT) if self._loss_mode() == "umap" else Y

    def _embed_training(self, model: nn.Module, X: ArrayLike) -> np.ndarray:
        if isinstance(model, EmbeddingTable):
            return model.weight.detach().cpu().numpy().copy()
        return self._encode(model, X, self._device()).cpu().numpy()

    def _validate_cne_data(self, X: object) -> ArrayLike:
        if self.knn_metric != "precomputed":
            return self._validate_fit_data(X, min_samples=2)
        D = check_precomputed(X)
        self.n_features_in_ = D.shape[1]
        return D

    def _check_labels(self, y: object, n: int) -> np.ndarray | None:
        codes = check_labels(y, n)
        if codes is not None and self.edge_weights == "binary":
            raise ValueError("supervision (fit(X, y)) reweights the fuzzy graph; it needs edge_weights='fuzzy'")
        return codes

    def _edge_pairs(self, X: ArrayLike, graph: object, k: int, codes: np.ndarray | None, seed: int,
                    device: torch.device) -> EdgePairSource:
        """The positive pairs: the symmetrised (fuzzy, labelled) kNN graph of ``X`` or of
        ``graph``, kept as ``neighbor_graph_``, as a pair source. The edge arrays live only
        here: at 10⁶ points they are 0.3 GB the pair source holds again."""
        def make_index() -> distributed.ShardedIndex:
            return distributed.ShardedIndex(self._knn_index(X, device, seed), X)

        heads, tails, weights = labelled_positive_edges(
            X, graph, make_index=make_index if graph is None else None, n_neighbors=k,
            fuzzy=self.edge_weights == "fuzzy", codes=codes, target_weight=self.target_weight,
            show_progress=bool(self.verbose))
        self.neighbor_graph_ = scipy.sparse.csr_matrix(
            (np.ones(len(heads), dtype=np.float32) if weights is None else weights, (heads, tails)),
            shape=(X.shape[0],) * 2)
        return EdgePairSource(heads, tails, self._batch(len(heads), weights), device,
                              make_generator(seed + 1, device), weights=weights)

    def _knn_index(self, X: ArrayLike, device: torch.device, seed: int) -> KNNIndex | PrecomputedIndex:
        if self.knn_metric == "precomputed":
            return PrecomputedIndex(X)
        return KNNIndex(self.knn_method, self.knn_metric, device, seed, show_progress=bool(self.verbose),
                        memory_budget=self.knn_memory_budget).build(X)

    def _place(self, X_new: ArrayLike) -> np.ndarray:
        if self.training_data_ is None:
            raise ValueError("placing new points needs the training data, which this model was "
                             "saved without (save(path, include_data=True)); integer indices work")
        nbrs, dist = KNNIndex("faiss", self.knn_metric).build(self.training_data_).query(X_new, self._k())
        fuzzy = self.placement == "fuzzy"
        weights = membership_strengths(membership_distances(dist, self.knn_metric)) if fuzzy else None
        mode, spec = self._loss_mode(), self.spectrum_.spec
        lr = self._recipe().learning_rate * (FUZZY_PLACEMENT_LR if fuzzy else 1.0)
        recipe = self._recipe(
            n_epochs=self.transform_epochs, early_exaggeration=False, learning_rate=lr, s=None, Z_bar=None,
            neg_spec=spec if mode == "neg" else None, ince_spec=spec if mode == "infonce" else None,
            Z=math.exp(self.log_Z_) if self.log_Z_ is not None else 1.0,
            negative_samples=placement_negatives(self._negatives(self.n_samples_fit_)),
        )
        seed = 0 if isinstance(self.random_state, np.random.Generator) else self._seed()
        # the placement's own edges (both directions, plus as many random training pairs)
        batch = self._batch(4 * nbrs.size, None)
        return place_points(self.embedding_, nbrs, recipe, batch_size=batch,
                            device=self._device(), seed=seed, weights=weights)

