"""What every estimator shares: parameter checks, device/seed set-up, chunked transform and
the model-file round trip. Method classes only compose the engine's parts."""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn as nn
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from twinlearn import io
from twinlearn._device import resolve_device, seed_from
from twinlearn.data.arrays import ArrayLike, iter_row_chunks, to_tensor, validate_features

TRANSFORM_CHUNK = 8192
ModuleOrTuple = TypeVar("ModuleOrTuple")


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """An int ``>= minimum``; ``TypeError``/``ValueError`` naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(value: object, name: str, positive: bool = True) -> float:
    """A finite real number, ``> 0`` when ``positive``, else ``>= 0`` (weight decays, momenta,
    loss weights: no hyperparameter checked here means anything when negative)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a finite {kind} number, got {value}")
    return float(value)


def finite_or_none(value: object, name: str) -> float | None:
    """A finite number (any sign) or None, e.g. a value read from a model file."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number or null, got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: tuple) -> Any:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {choices}")
    return value


def json_safe_params(params: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as JSON: devices as strings; objects that are not plain data refused."""
    out = {}
    for key, value in params.items():
        if isinstance(value, torch.device):
            value = str(value)
        elif isinstance(value, np.random.Generator):
            value = None
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            value = float(value)
        if not isinstance(value, (str, int, float, bool, list, tuple, type(None))):
            raise TypeError(f"cannot save parameter {key}={value!r}: not plain data")
        out[key] = value
    return out


class TwinlearnEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class: the scikit-learn estimator conventions plus twinlearn's common plumbing."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # computation is float32 whatever comes in (as torch models do)
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = self.random_state is None
        return tags

    @property
    def _n_features_out(self) -> int:
        """Output width, for ``get_feature_names_out`` (``tldr0``, ``tldr1``, ...)."""
        return self.n_components

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _seed(self) -> int:
        return seed_from(self.random_state)

    def _validate_fit_data(self, X: object, min_samples: int = 2) -> ArrayLike:
        X = validate_features(X, min_samples=min_samples)
        self.n_features_in_ = int(X.shape[1])
        return X

    def _validate_transform_data(self, X: object) -> ArrayLike:
        check_is_fitted(self)
        X = validate_features(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return X

    @torch.no_grad()
    def _encode(self, module: nn.Module, X: ArrayLike, device: torch.device) -> torch.Tensor:
        """Run ``module`` in eval mode over ``X`` in chunks (bounded memory for any N)."""
        was_training = module.training
        module.eval()
        try:
            out = [module(to_tensor(b, device)).float() for b in iter_row_chunks(X, TRANSFORM_CHUNK)]
        finally:
            module.train(was_training)
        return torch.cat(out) if out else torch.empty((0, 0))

    # --- model files -------------------------------------------------------------------------
    def _save(self, path: str | os.PathLike, modules: dict[str, nn.Module], fitted: dict[str, Any]) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for name, module in modules.items():
            tensors.update(io.add_prefix(module.state_dict(), name))
        meta = {
            "kind": "model",
            "class": type(self).__name__,
            "params": json_safe_params(self.get_params(deep=False)),
            "fitted": fitted,
        }
        io.save_tensors(path, tensors, meta)

    def _read_model_file(self, path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = io.load_tensors(path, kind="model")
        if meta.get("class") != type(self).__name__:
            raise ValueError(f"{path} holds a {meta.get('class')} model, not a {type(self).__name__}")
        for key in ("params", "fitted"):
            if not isinstance(meta.get(key), dict):
                raise ValueError(f"{path} has an incomplete twinlearn config: no {key!r} object")
        return tensors, meta

    @contextlib.contextmanager
    def _restoring_from(self, path: str | os.PathLike) -> Iterator[None]:
        """Wrap a ``load``: a config or tensor that does not fit (a missing key, a value of the
        wrong type or shape) becomes a ``ValueError`` naming the file, and the estimator keeps
        its parameters, so a failed load never leaves it half replaced."""
        params = self.get_params(deep=False)
        try:
            yield
        # RuntimeError/OverflowError: torch refusing the sizes of a crafted config
        except (KeyError, TypeError, IndexError, ValueError, RuntimeError, OverflowError) as err:
            self.set_params(**params)
            if isinstance(err, ValueError) and str(path) in str(err):
                raise
            raise ValueError(
                f"{path} has an invalid twinlearn config or tensors ({type(err).__name__}: {err})"
            ) from err

    def _take_file_params(self, stored: dict[str, Any], path: str | os.PathLike) -> None:
        """``set_params`` with the file's hyperparameters (not ``device``: a file saved on a GPU
        loads on a CPU), then check them as ``fit`` would: the file is not trusted."""
        mine = self.get_params(deep=False)
        self.set_params(**{k: v for k, v in stored.items() if k in mine and k != "device"})
        self._check_params()


def check_tensor(
    tensors: dict[str, torch.Tensor], key: str, shape: tuple[int | None, ...], path: object
) -> torch.Tensor:
    """``tensors[key]``, a floating tensor of ``shape`` (``None`` = any size), or a ``ValueError``
    naming the file."""
    value = tensors.get(key)
    if value is None:
        raise ValueError(f"{path} has no {key!r} tensor")
    if (not value.is_floating_point() or value.ndim != len(shape)
            or any(want is not None and got != want for got, want in zip(value.shape, shape))):
        raise ValueError(
            f"the {key!r} tensor in {path} is {value.dtype} of shape {tuple(value.shape)}; "
            f"the config describes float of shape {tuple('any' if w is None else w for w in shape)}"
        )
    return value


def build_on_meta(build: Callable[[], ModuleOrTuple]) -> ModuleOrTuple:
    """Run ``build`` on PyTorch's meta device: the modules get shapes but no memory, and
    :func:`load_state_strict` then puts the file's tensors in. A crafted config (a width of
    10¹²) can therefore not make ``load`` allocate more than the file itself holds."""
    with torch.device("meta"):
        return build()


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], path: object) -> None:
    """Load a state dict into ``module`` (built by :func:`build_on_meta` or not): every
    parameter and buffer must be in ``state`` with its shape, or a ``ValueError`` naming the
    file is raised. Each tensor takes the dtype the module gives it, whatever the file stored
    (as copying into existing tensors would)."""
    dtypes = {name: t.dtype for name, t in module.state_dict().items()}
    state = {name: t.to(dtypes[name]) if name in dtypes else t for name, t in state.items()}
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"the tensors in {path} do not match the model they describe: {err}") from err
    empty = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if empty:
        raise ValueError(f"{path} does not hold {empty}")


def check_prefix_size(n_components: int | None, dim: int) -> None:
    """Refuse a prefix size that is not an int in ``[1, dim]`` (``None``: everything)."""
    if n_components is None:
        return
    check_int(n_components, "n_components")
    if n_components > dim:
        raise ValueError(f"n_components={n_components} exceeds the model's {dim} dims")


def keep_prefix(Z: ArrayLike, n_components: int | None) -> ArrayLike:
    """The first ``n_components`` columns of an embedding (all of them for ``None``): a nested
    (Matryoshka) model's smaller embedding."""
    check_prefix_size(n_components, Z.shape[-1])
    return Z if n_components is None else Z[..., :n_components]


def output_like(Z: torch.Tensor, X: object) -> ArrayLike:
    """NumPy out for NumPy in; a tensor on the input's device for tensor in."""
    if isinstance(X, torch.Tensor):
        return Z.to(X.device)
    return Z.cpu().numpy()
