"""Serving fitted encoders: ONNX export, and a NumPy-only ``transform`` from a model file.

:func:`export_onnx` writes the network of a fitted TLDR, parametric CNE, TSimCNE or ReLIC as an
ONNX graph (batch size free) that onnxruntime, or any ONNX runtime, serves without PyTorch.

:class:`NumpyEncoder` reads a TLDR or parametric-CNE model file written by ``save`` and embeds
new rows with NumPy alone, so a fitted reducer can serve where torch is not installed. This
module imports only NumPy, ``safetensors.numpy`` and ``json`` at import time; torch is imported
inside :func:`export_onnx` only.
"""

from __future__ import annotations

import io as _bytes_io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _load_safetensors

#: the metadata entry of twinlearn model files (``twinlearn.io._META_KEY``; not imported from
#: there because twinlearn.io imports torch)
META_KEY = "twinlearn"
#: the newest ``format_version`` (``twinlearn.io.FORMAT_VERSION``) this reader understands
READABLE_FORMAT_VERSION = 1
#: ONNX opset written by default: LayerNormalization is native from 17; the TorchScript exporter
#: writes up to 20, and onnxruntime 1.17+ runs 17
DEFAULT_OPSET = 17
_MAX_TORCHSCRIPT_OPSET = 20
#: PyTorch's default ``eps`` of BatchNorm1d and LayerNorm, which the encoders keep
_NORM_EPS = 1e-5
_ROW_CHUNK = 4096


# --- NumPy encoder -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layer:
    """One layer of an encoder: ``kind`` in linear/bn/ln/relu and its arrays (float64)."""

    kind: str
    arrays: tuple[np.ndarray, ...] = ()


def _apply(layer: _Layer, x: np.ndarray) -> np.ndarray:
    if layer.kind == "linear":
        weight, *bias = layer.arrays
        out = x @ weight.T
        return out + bias[0] if bias else out
    if layer.kind == "bn":  # eval mode: the running statistics
        mean, var, weight, bias = layer.arrays
        return (x - mean) / np.sqrt(var + _NORM_EPS) * weight + bias
    if layer.kind == "ln":  # biased variance, as torch.nn.LayerNorm
        weight, bias = layer.arrays
        centred = x - x.mean(axis=1, keepdims=True)
        return centred / np.sqrt((centred**2).mean(axis=1, keepdims=True) + _NORM_EPS) * weight + bias
    return np.maximum(x, 0.0)


def _float_array(value: np.ndarray, key: str, ndim: int, path: Path) -> np.ndarray:
    if value.dtype.kind != "f" or value.ndim != ndim:
        raise ValueError(f"the {key!r} tensor in {path} is {value.dtype} of shape {value.shape}; "
                         f"a {ndim}-D float tensor was expected")
    return value.astype(np.float64)


def _decode_layer(group: dict[str, np.ndarray], key: str, path: Path) -> _Layer:
    """The layer whose state dict is ``group``; a module without tensors is the ReLU of these
    networks (Linear, BatchNorm1d, LayerNorm and ReLU are all they hold)."""
    names = set(group)
    if not names:
        return _Layer("relu")
    if names == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}:
        return _Layer("bn", tuple(_float_array(group[n], f"{key}.{n}", 1, path)
                                  for n in ("running_mean", "running_var", "weight", "bias")))
    weight = group.get("weight")
    if names in ({"weight"}, {"weight", "bias"}) and weight is not None and weight.ndim == 2:
        arrays = [_float_array(weight, f"{key}.weight", 2, path)]
        if "bias" in names:
            arrays.append(_float_array(group["bias"], f"{key}.bias", 1, path))
        return _Layer("linear", tuple(arrays))
    if names == {"weight", "bias"}:
        return _Layer("ln", tuple(_float_array(group[n], f"{key}.{n}", 1, path) for n in ("weight", "bias")))
    raise ValueError(f"{path}: layer {key!r} holds tensors {sorted(names)}, which no encoder layer has")


def _decode_layers(tensors: dict[str, np.ndarray], prefix: str, path: Path) -> list[_Layer]:
    """The ``nn.Sequential`` stored under ``prefix.<index>.<name>``, in index order."""
    groups: dict[int, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, name = key[len(prefix) + 1 :].partition(".")
        if not index.isdigit() or not name or "." in name:
            raise ValueError(f"{path}: tensor {key!r} is not part of a sequential {prefix!r} network")
        groups.setdefault(int(index), {})[name] = value
    if not groups:
        raise ValueError(f"{path} holds no {prefix!r} network")
    return [_decode_layer(groups.get(i, {}), f"{prefix}.{i}", path) for i in range(max(groups) + 1)]


def _check_widths(layers: list[_Layer], n_features: int, n_components: int, path: Path) -> None:
    """Every layer must take the width the previous one gives: in ``n_features``, out
    ``n_components``."""
    width = n_features
    for i, layer in enumerate(layers):
        if layer.kind == "linear":
            if layer.arrays[0].shape[1] != width or (len(layer.arrays) == 2
                                                     and layer.arrays[1].shape != (layer.arrays[0].shape[0],)):
                raise ValueError(f"{path}: layer {i} does not take the {width} inputs given to it")
            width = layer.arrays[0].shape[0]
        elif any(a.shape != (width,) for a in layer.arrays):
            raise ValueError(f"{path}: normalisation layer {i} does not have width {width}")
    if width != n_components:
        raise ValueError(f"{path}: the network gives {width} outputs, the config says {n_components}")


def _expected_kinds(meta: dict[str, Any], n_linear: int, path: Path) -> tuple[list[str], bool]:
    """The layer sequence the file's class and config describe, and whether Linear layers
    carry a bias (``TLDR``: encoders/spec.py's ``build_stack``; ``CNE``: ``fc_network``)."""
    params, hidden = meta["params"], n_linear - 1
    if meta["class"] == "CNE":
        return ["linear", "relu"] * hidden + ["linear"], True
    kind = str(params.get("encoder", "")).strip().lower().split("-")[0]
    norm = {"BN": "bn", "LN": "ln"}.get(params.get("norm_layer"))
    if kind not in ("linear", "flinear", "mlp") or norm is None:
        raise ValueError(f"{path}: encoder={params.get('encoder')!r}, norm_layer="
                         f"{params.get('norm_layer')!r} is not an encoder this reader knows")
    block = ["linear", norm] + (["relu"] if kind == "mlp" else [])
    return block * hidden + ["linear"], kind != "mlp"


def _read_model_file(path: Path, max_bytes: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors and twinlearn metadata of a model file, read with one bounded read."""
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path} is {size} bytes, more than max_bytes={max_bytes}")
    with open(path, "rb") as fh:
        data = fh.read(size + 1)
    n_header = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if len(data) != size or not 0 < n_header <= len(data) - 8:
        raise ValueError(f"{path} is not a safetensors file (bad or truncated header)")
    try:
        raw_meta = json.loads(data[8 : 8 + n_header]).get("__metadata__", {}).get(META_KEY)
        meta = json.loads(raw_meta) if isinstance(raw_meta, str) else None
        tensors = _load_safetensors(data)
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable twinlearn model file: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is a safetensors file without twinlearn metadata")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > READABLE_FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version!r}; this reader knows up to "
                         f"{READABLE_FORMAT_VERSION}")
    if meta.get("kind") != "model" or meta.get("class") not in ("TLDR", "CNE"):
        raise ValueError(f"{path} holds a {meta.get('kind')!r} of class {meta.get('class')!r}; "
                         "only TLDR and parametric CNE models have a NumPy encoder")
    if not isinstance(meta.get("params"), dict) or not isinstance(meta.get("fitted"), dict):
        raise ValueError(f"{path} has an incomplete twinlearn config")
    return tensors, meta


def _check_rows(X: object, n_features: int) -> np.ndarray:
    """A finite real 2-D array of ``n_features`` columns (``twinlearn.data.arrays`` does this
    for the estimators, but imports torch)."""
    X = np.asarray(X)
    if X.dtype.kind not in "fiu":
        raise TypeError(f"X has dtype {X.dtype}; a real numeric dtype is expected")
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X has shape {X.shape}; the encoder expects (n_samples, {n_features})")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    return X


@dataclass(frozen=True)
class NumpyEncoder:
    """A TLDR or parametric-CNE encoder that runs on NumPy alone.

    Build it with :meth:`from_file` from a file written by ``TLDR.save`` or
    ``CNE(parametric=True).save``; :meth:`transform` gives what the estimator's ``transform``
    gives (to float32 rounding), without importing torch.
    """

    layers: tuple[_Layer, ...]
    n_features_in: int
    n_components: int
    source: str

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, max_bytes: int = 1 << 31) -> NumpyEncoder:
        """Read a model file (one read of at most ``max_bytes``; nothing in it is executed).

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            Naming the file: not a twinlearn safetensors model, a newer format version, a model
            without a feed-forward encoder (non-parametric CNE, image models), or tensors that
            do not form the network its config describes.
        """
        path = Path(os.fspath(path))
        tensors, meta = _read_model_file(path, max_bytes)
        if meta["class"] == "CNE" and meta["params"].get("parametric") is not True:
            raise ValueError(f"{path} holds a non-parametric CNE: it has no encoder to transform with")
        layers = _decode_layers(tensors, "encoder" if meta["class"] == "TLDR" else "model", path)
        linears = [layer for layer in layers if layer.kind == "linear"]
        kinds, bias = _expected_kinds(meta, len(linears), path)
        with_bias = [len(layer.arrays) == 2 for layer in linears]
        if [layer.kind for layer in layers] != kinds or with_bias != [bias] * len(linears):
            raise ValueError(f"{path}: its layers {[layer.kind for layer in layers]} are not the "
                             f"{meta['class']} network its config describes")
        # CNE's original name of n_components is embd_dim (as CNE.load reads it)
        n_components = meta["params"].get("embd_dim") or meta["params"].get("n_components")
        n_features = meta["fitted"].get("n_features_in_")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n_features, n_components)):
            raise ValueError(f"{path}: its config gives no n_features_in_ or n_components")
        _check_widths(layers, n_features, n_components, path)
        return cls(tuple(layers), n_features, n_components, meta["class"])

    def transform(self, X: object, *, n_components: int | None = None, l2_norm: bool = False) -> np.ndarray:
        """Embed rows of ``X`` (float32 out; computed in float64, in chunks of rows).

        Parameters
        ----------
        X : array of shape (n_samples, n_features_in)
        n_components : int, optional
            Keep the first ``n_components`` dimensions (a nested model's smaller embedding).
        l2_norm : bool
            L2-normalise each output row (all-zero rows stay zero), as ``TLDR.transform``.
        """
        X = _check_rows(X, self.n_features_in)
        m = self.n_components if n_components is None else n_components
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= self.n_components:
            raise ValueError(f"n_components must be an int in [1, {self.n_components}], got {n_components!r}")
        out = np.empty((X.shape[0], m), dtype=np.float32)
        for start in range(0, X.shape[0], _ROW_CHUNK):
            z = X[start : start + _ROW_CHUNK].astype(np.float64)
            for layer in self.layers:
                z = _apply(layer, z)
            z = z[:, :m]
            if l2_norm:
                z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            out[start : start + len(z)] = z
        return out


def numpy_transform(path: str | os.PathLike, X: object, **kwargs: Any) -> np.ndarray:
    """``NumpyEncoder.from_file(path).transform(X, **kwargs)``: embed ``X`` without torch."""
    return NumpyEncoder.from_file(path).transform(X, **kwargs)


# --- ONNX ----------------------------------------------------------------------------------------
def _onnx_network(estimator: Any) -> tuple[Any, tuple[int, ...], int | None]:
    """The fitted network of ``estimator``, one input row's shape, and the default prefix size
    of its ``transform`` (``None``: every output)."""
    from sklearn.utils.validation import check_is_fitted

    import twinlearn

    if isinstance(estimator, twinlearn.TLDR):
        check_is_fitted(estimator, "encoder_")
        return estimator.encoder_, (estimator.n_features_in_,), None
    if isinstance(estimator, twinlearn.CNE):
        if not estimator.parametric:
            raise TypeError("a non-parametric CNE has no encoder to export: it places new points "
                            "by optimisation against the training embedding; use parametric=True")
        check_is_fitted(estimator, "model_")
        return estimator.model_, (estimator.n_features_in_,), None
    if isinstance(estimator, twinlearn.TSimCNE):
        check_is_fitted(estimator, "model_")
        return estimator.model_, (3, *estimator.image_size_), None
    if isinstance(estimator, twinlearn.ReLIC):
        check_is_fitted(estimator, "backbone_")
        return estimator.backbone_, (3, *estimator.image_size_), estimator.n_components
    raise TypeError(f"export_onnx takes a fitted TLDR, CNE(parametric=True), TSimCNE or ReLIC, "
                    f"got {type(estimator).__name__}")


def _with_prefix(network: Any, n_components: int | None) -> Any:
    """``network`` followed by keeping the first ``n_components`` outputs (as ``transform``)."""
    from torch import nn

    class FirstColumns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x):
            return self.network(x)[:, :n_components]

    return network if n_components is None else FirstColumns()


def export_onnx(
    estimator: Any, path: str | os.PathLike, *, n_components: int | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """Write the network of a fitted estimator as an ONNX model with a free batch size.

    The graph maps input ``"input"`` to output ``"embedding"``, as the estimator's
    ``transform``: feature rows ``(n, n_features_in_)`` float32 for TLDR and parametric CNE;
    images ``(n, 3, H, W)`` float32 in [0, 1] (``H, W = image_size_``; uint8 pixels divided by
    255, no other normalisation) for TSimCNE and ReLIC. Normalisation layers run in eval mode.

    Parameters
    ----------
    estimator : fitted TLDR, CNE(parametric=True), TSimCNE or ReLIC
    path : path-like
        Written atomically.
    n_components : int, optional
        Keep the first ``n_components`` outputs; default as ``transform`` (ReLIC: its
        ``n_components`` parameter; the others: everything).
    opset : int, default=17
        ONNX opset, 13 to 20 (PyTorch's TorchScript exporter, used because the newer one needs
        onnxscript).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        Not one of these estimators, or a non-parametric CNE (no encoder).
    ValueError
        ``opset`` or ``n_components`` out of range.
    sklearn.exceptions.NotFittedError
        The estimator is not fitted.
    ImportError
        The ``onnx`` package is missing.
    """
    from twinlearn._optional import import_optional
    from twinlearn.estimators._base import check_int
    from twinlearn.io import atomic_write_bytes, check_path

    path = check_path(path)
    if check_int(opset, "opset", minimum=13) > _MAX_TORCHSCRIPT_OPSET:
        raise ValueError(f"opset={opset}: PyTorch's TorchScript exporter writes opsets up to "
                         f"{_MAX_TORCHSCRIPT_OPSET}")
    network, row_shape, default_prefix = _onnx_network(estimator)
    import_optional("onnx")  # torch.onnx.export needs it; the hint says how to install it
    prefix = default_prefix if n_components is None else n_components
    atomic_write_bytes(path, _trace(network, row_shape, prefix, opset))
    return path


def _trace(network: Any, row_shape: tuple[int, ...], prefix: int | None, opset: int) -> bytes:
    """The ONNX bytes of ``network`` (eval mode, its training flag restored) whose output keeps
    the first ``prefix`` columns."""
    import torch

    from twinlearn.estimators._base import check_prefix_size

    example = torch.zeros((2, *row_shape), device=next(network.parameters()).device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            check_prefix_size(prefix, network(example).shape[1])
        buffer = _bytes_io.BytesIO()
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated, but the dynamo one needs onnxscript
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
            torch.onnx.export(
                _with_prefix(network, prefix), (example,), buffer, dynamo=False,
                opset_version=opset, input_names=["input"], output_names=["embedding"],
                dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                training=torch.onnx.TrainingMode.EVAL,
            )
    finally:
        network.train(was_training)
    return buffer.getvalue()
