"""CNE's inputs: the aliased parameters, the data (features or precomputed distances), the
labels of a supervised fit, the kNN index of the graph, and new points placed in the map."""

from __future__ import annotations

import math

import numpy as np
import torch

from twinlearn.data.arrays import ArrayLike
from twinlearn.neighbors import KNNIndex
from twinlearn.neighbors.precomputed import PrecomputedIndex, check_precomputed
from twinlearn.neighbors.supervised import check_labels
from twinlearn.training.contrastive import loss_mode
from twinlearn.training.full_repulsion import placement_negatives
from twinlearn.training.placement import place_points


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

    def _knn_index(self, X: ArrayLike, device: torch.device, seed: int) -> KNNIndex | PrecomputedIndex:
        if self.knn_metric == "precomputed":
            return PrecomputedIndex(X)
        return KNNIndex(self.knn_method, self.knn_metric, device, seed,
                        show_progress=bool(self.verbose)).build(X)

    def _place(self, X_new: ArrayLike) -> np.ndarray:
        if self.training_data_ is None:
            raise ValueError("placing new points needs the training data, which this model was "
                             "saved without (save(path, include_data=True)); integer indices work")
        nbrs, _ = KNNIndex("faiss", self.knn_metric).build(self.training_data_).query(X_new, self._k())
        mode, spec = loss_mode(self.loss_mode), self.spectrum_.spec
        recipe = self._recipe(
            n_epochs=self.transform_epochs, early_exaggeration=False, s=None, Z_bar=None,
            neg_spec=spec if mode == "neg" else None, ince_spec=spec if mode == "infonce" else None,
            Z=math.exp(self.log_Z_) if self.log_Z_ is not None else 1.0,
            negative_samples=placement_negatives(self.negative_samples),
        )
        seed = 0 if isinstance(self.random_state, np.random.Generator) else self._seed()
        return place_points(self.embedding_, nbrs, recipe, batch_size=self.batch_size,
                            device=self._device(), seed=seed)

