"""CNE's model files: the embedding, the network (parametric) and, for placing new points,
the training data, with the resolved spectrum, in safetensors + JSON (no pickle)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from twinlearn._checks import check_choice, check_float, check_int, finite_or_none
from twinlearn.encoders.mlp import cne_network
from twinlearn.encoders.table import EmbeddingTable
from twinlearn.estimators._base import build_on_meta, check_tensor, load_state_strict
from twinlearn.io import split_prefix
from twinlearn.losses.spectrum import Spectrum


class CNEModelFile:
    """``save`` / ``load`` of :class:`~twinlearn.estimators.cne.CNE` (mixed into it)."""

    def save(self, path: str | os.PathLike, include_data: bool = True) -> None:
        """Write the fitted model (safetensors + JSON hyperparameters; no pickle).

        Parameters
        ----------
        path : path-like
        include_data : bool, default=True
            Non-parametric models also store the training data, which ``transform`` of new
            points needs (integer indices work without it).
        """
        self._check_is_fitted()
        tensors = {"embedding": torch.from_numpy(self.embedding_)}
        has_data = bool(include_data and self.training_data_ is not None)
        if has_data:
            tensors["data"] = torch.as_tensor(np.asarray(self.training_data_)).cpu()
        spectrum = self.spectrum_
        self._save(path, {"model": self.model_} if self.parametric else {}, {
            "n_features_in_": self.n_features_in_, "n_samples_fit_": self.n_samples_fit_,
            "has_data": has_data, "log_Z_": self.log_Z_,
            "spectrum_": [spectrum.s, spectrum.spec, spectrum.early_spec],
            "loss_history_": self.loss_history_,
        }, tensors)

    def load(self, path: str | os.PathLike, init: bool = False) -> "CNEModelFile":
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        path : path-like
        init : bool
            Also take the file's hyperparameters; otherwise the architecture (``parametric``,
            ``n_components``) must match this estimator's.
        """
        return self._load_file(path, init)

    _architecture = ("parametric", "n_components")

    def _params_from_file(self, params: dict[str, Any]) -> dict[str, Any]:
        # a file written with the original's name for the output width
        return {**params, "n_components": params.get("embd_dim") or params.get("n_components")}

    def _restore(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any], path: str | os.PathLike) -> dict:
        n_features = check_int(fitted["n_features_in_"], "n_features_in_")
        n_samples = check_int(fitted["n_samples_fit_"], "n_samples_fit_", minimum=2)
        embedding = check_tensor(tensors, "embedding", (n_samples, self._dim()), path).float().numpy().copy()
        has_data = check_choice(fitted["has_data"], "has_data", (True, False))
        data = check_tensor(tensors, "data", (n_samples, n_features), path).float().numpy() if has_data else None
        model = EmbeddingTable(embedding)
        if self.parametric:
            model = build_on_meta(lambda: cne_network(n_features, self._dim()))
            load_state_strict(model, split_prefix(tensors, "model"), path)
        s_value, spec, early_spec = fitted["spectrum_"]
        # losses without a spectrum (NCE, UMAP) store constants of 0
        spectrum = Spectrum(finite_or_none(s_value, "spectrum_"), check_float(spec, "spectrum_", positive=False),
                            check_float(early_spec, "spectrum_", positive=False))
        return {
            "embedding_": embedding, "n_features_in_": n_features, "n_samples_fit_": n_samples,
            "model_": model, "training_data_": data, "spectrum_": spectrum, "embedding_snapshots_": [],
            "log_Z_": finite_or_none(fitted["log_Z_"], "log_Z_"), "loss_mode_": self._loss_mode(),
            "loss_history_": [finite_or_none(v, "loss_history_") for v in fitted["loss_history_"]],
        }

