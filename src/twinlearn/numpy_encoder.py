"""A NumPy-only ``transform`` from a model file: :class:`NumpyEncoder` reads a TLDR or
parametric-CNE model file written by ``save`` and embeds new rows with NumPy alone, so a fitted
reducer can serve where torch is not installed. This module imports only NumPy,
``safetensors.numpy``, ``hashlib`` and ``json``."""

from __future__ import annotations

import hashlib
import json
import os
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
READABLE_FORMAT_VERSION = 2
#: metadata entry of the checksum (``twinlearn.io._CHECKSUM_KEY``), and the first version with it
CHECKSUM_KEY, CHECKSUM_SINCE = "twinlearn_checksum", 2
#: numpy dtype -> the torch dtype name ``twinlearn.io.checksum`` hashes
_TORCH_DTYPE = {"float32": "torch.float32", "float64": "torch.float64", "float16": "torch.float16",
                "int64": "torch.int64", "int32": "torch.int32", "int16": "torch.int16",
                "int8": "torch.int8", "uint8": "torch.uint8", "bool": "torch.bool"}
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


def _checksum(meta_text: str, tensors: dict[str, np.ndarray]) -> str:
    """``twinlearn.io.checksum`` computed with NumPy: BLAKE2b of the metadata text and of every
    tensor's name, dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=32)
    encoded = meta_text.encode()
    digest.update(len(encoded).to_bytes(8, "little") + encoded)
    for name in sorted(tensors):
        value = tensors[name]
        digest.update(json.dumps([name, _TORCH_DTYPE.get(str(value.dtype), str(value.dtype)),
                                  list(value.shape)]).encode())
        # (np.ascontiguousarray would turn a 0-d array into shape (1,): shapes come first)
        digest.update(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
    return "blake2b:" + digest.hexdigest()


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
        metadata = json.loads(data[8 : 8 + n_header]).get("__metadata__", {})
        raw_meta, stored = metadata.get(META_KEY), metadata.get(CHECKSUM_KEY)
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
    if (stored is not None or version >= CHECKSUM_SINCE) and stored != _checksum(raw_meta, tensors):
        raise ValueError(f"{path} does not match its checksum: truncated, corrupt or mixed")
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
