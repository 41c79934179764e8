"""What every estimator shares: parameter checks, device/seed set-up, chunked transform and
the model-file round trip. Method classes only compose the engine's parts."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn as nn
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import _check_feature_names, check_is_fitted

from twinlearn import io
from twinlearn._checks import check_choice, check_int
from twinlearn._device import resolve_device, resolve_precision, seed_from
from twinlearn.data.arrays import ArrayLike, iter_row_chunks
from twinlearn.data.sparse import dense_block, validate_input
from twinlearn.encoders.inference import run_in_chunks
from twinlearn.estimators._params import Constraint, validate_params
from twinlearn.training import distributed
from twinlearn.training.run_folder import data_fingerprint, folder_lock, settings_fingerprint
from twinlearn.training.trainer import PRECISIONS, Trainer, TrainingDiverged

logger = logging.getLogger("twinlearn")

TRANSFORM_CHUNK = 8192
LATEST_SNAPSHOT = "latest_snapshot.safetensors"
#: training rows whose embedding is checked for NaN / infinity at the end of a fit
PROBE_ROWS = 64
ModuleOrTuple = TypeVar("ModuleOrTuple")


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

    #: whether fit / transform take scipy sparse X (TLDR and CNE: :mod:`twinlearn.data.sparse`)
    _accepts_sparse = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # computation is float32 whatever comes in (as torch models do)
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.non_deterministic = self.random_state is None
        tags.input_tags.sparse = self._accepts_sparse
        return tags

    def _store_init_args(self, arguments: dict[str, Any]) -> None:
        """Keep ``__init__``'s arguments verbatim as attributes (the scikit-learn contract:
        no work, no validation in ``__init__``); call with ``locals()``."""
        for name, value in arguments.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    #: what each ``__init__`` argument accepts (see :mod:`twinlearn.estimators._params`)
    _parameter_constraints: dict[str, Constraint] = {}
    #: the model file ``fit(..., output_folder=)`` writes at the end
    _final_model_name = "final_model.safetensors"

    @property
    def _n_features_out(self) -> int:
        """Output width, for ``get_feature_names_out`` (``tldr0``, ``tldr1``, ...)."""
        check_is_fitted(self)
        return self._output_width()

    def _output_width(self) -> int:
        return self.n_components

    def _device(self) -> torch.device:
        return distributed.local_device(resolve_device(self.device))

    def _seed(self) -> int:
        return seed_from(self.random_state)

    #: whether ``precision="auto"`` may train this method in bf16 (on hardware that runs it
    #: natively): set only where bf16 was measured to keep fp32's quality (benchmarks/RESULTS.md)
    _auto_bf16 = False

    def _precision(self, device: torch.device | None = None) -> str:
        """``precision`` with ``"auto"`` resolved for this method on ``device`` (by default
        this estimator's)."""
        return resolve_precision(self.precision, device or self._device(), self._auto_bf16)

    # --- parameters --------------------------------------------------------------------------
    def _validate_params(self) -> None:
        """Check every parameter against its declared constraint, then their relations; before
        any work, with an error naming the parameter."""
        validate_params(self.get_params(deep=False), self._parameter_constraints, type(self).__name__)
        self._check_param_relations()

    def _check_param_relations(self) -> None:
        """Checks that involve several parameters (none by default)."""

    # --- training ----------------------------------------------------------------------------
    @staticmethod
    def _check_run_options(output_folder: object, resume: object, snapshot_freq: object = 0) -> None:
        """``fit``'s checkpoint options, checked before any work."""
        check_choice(resume, "resume", (True, False))
        check_int(snapshot_freq or 0, "snapshot_freq", minimum=0)
        if output_folder is None:
            if resume:
                raise ValueError("resume=True needs output_folder, where the snapshots are")
            return
        if not isinstance(output_folder, (str, os.PathLike)):
            raise TypeError(f"output_folder must be a path, got {type(output_folder).__name__}")
        if Path(output_folder).exists() and not Path(output_folder).is_dir():
            raise ValueError(f"output_folder={str(output_folder)!r} is a file, not a folder")

    def _run_training(
        self,
        trainer: Trainer,
        X: object,
        keep: Callable[[Trainer], None],
        *,
        output_folder: str | os.PathLike | None = None,
        resume: bool | str | os.PathLike = False,
        snapshot_freq: int = 0,
    ) -> None:
        """The set-up every estimator's ``fit`` shares: checkpoints of this run (tagged with
        the fingerprint of ``X`` and of the parameters) in ``output_folder``, a resume from its
        latest snapshot (or from the checkpoint file ``resume`` names), the training itself
        under the folder's lock, the loss history, ``keep(trainer)`` to take the fitted state,
        and the final model file. Under ``torch.distributed`` rank 0 alone holds the lock and
        writes; every process resumes from the same file (a file system they all share)."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "n_epochs"}
        trainer.checkpoint_dir = Path(output_folder) if output_folder is not None else None
        trainer.snapshot_freq = snapshot_freq or 0
        trainer.checkpoint_meta = {
            "class": type(self).__name__,
            "fingerprint": f"{data_fingerprint(X)}-{settings_fingerprint(params)}",
        }
        with folder_lock(output_folder if distributed.is_main_process() else None):
            start = Path(output_folder) / LATEST_SNAPSHOT if resume is True else resume or None
            found = distributed.same_everywhere(
                start is not None and Path(start).exists(),
                f"whether {start} exists (resume needs a folder every process can read)")
            if found:
                trainer.load_checkpoint(start)
                logger.info("resumed from %s at epoch %d", start, trainer.epoch)
            trainer.fit()
            self.loss_history_ = list(trainer.loss_history)
            self.n_epochs_trained_ = trainer.epoch
            self.precision_ = trainer.precision
            keep(trainer)
            self._check_output(X)
            if output_folder is not None and distributed.is_main_process():
                self.save(Path(output_folder) / self._final_model_name)

    def _check_output(self, X: object) -> None:
        """Raise :class:`TrainingDiverged` if the fitted model maps training rows to NaN or
        infinity (weights can be finite yet so large that the forward pass overflows); the
        training embedding itself where the estimator keeps one."""
        Z = getattr(self, "embedding_", None)
        if Z is None:
            with warnings.catch_warnings():  # the rows are validated already, without names
                warnings.simplefilter("ignore", UserWarning)
                Z = self.transform(X[:PROBE_ROWS])
        Z = Z.detach().cpu().numpy() if isinstance(Z, torch.Tensor) else np.asarray(Z, dtype=np.float32)
        if not np.isfinite(Z).all():
            raise TrainingDiverged("training diverged: the fitted model outputs NaN or infinity; "
                                   "lower the learning rate or use precision='fp32'")

    def _validate_fit_data(self, X: object, min_samples: int = 2) -> ArrayLike:
        # a DataFrame's column names become feature_names_in_ (scikit-learn's own bookkeeping)
        _check_feature_names(self, X, reset=True)
        X = validate_input(X, min_samples=min_samples, accept_sparse=self._accepts_sparse)
        self.n_features_in_ = int(X.shape[1])
        return X

    def _neighbors_for(self, n_neighbors: int, n_samples: int, name: str = "n_neighbors") -> int:
        """``n_neighbors``, or ``n_samples - 1`` with a warning when the data is smaller (as
        umap-learn does), so that the defaults work on small data."""
        if n_neighbors < n_samples:
            return n_neighbors
        warnings.warn(f"{name}={n_neighbors} is not smaller than the number of samples ({n_samples}); "
                      f"using {n_samples - 1}", UserWarning, stacklevel=3)
        return n_samples - 1

    def _validate_transform_data(self, X: object) -> ArrayLike:
        check_is_fitted(self)
        _check_feature_names(self, X, reset=False)  # reordered or renamed columns are refused
        X = validate_input(X, accept_sparse=self._accepts_sparse)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return X

    @torch.no_grad()
    def _encode(self, module: nn.Module, X: ArrayLike, device: torch.device) -> torch.Tensor:
        """Run ``module`` in eval mode over the rows of ``X`` in chunks (bounded memory)."""
        chunks = (dense_block(b, device) for b in iter_row_chunks(X, TRANSFORM_CHUNK))
        return run_in_chunks(module, chunks, X.shape[0])

    def export_onnx(self, path: str | os.PathLike, *, n_components: int | None = None,
                    opset: int = 17) -> Path:
        """Write the fitted encoder as an ONNX graph with a free batch size (see
        :func:`twinlearn.export.export_onnx`); a non-parametric CNE has none (``TypeError``)."""
        from twinlearn.export import export_onnx

        return export_onnx(self, path, n_components=n_components, opset=opset)

    # --- model files -------------------------------------------------------------------------
    def _save(self, path: str | os.PathLike, modules: dict[str, nn.Module], fitted: dict[str, Any],
              tensors: dict[str, torch.Tensor] | None = None) -> None:
        """Write ``modules``' weights (prefixed by their names), extra ``tensors`` and the
        parameters and ``fitted`` state as JSON metadata."""
        tensors = dict(tensors or {})
        for name, module in modules.items():
            tensors.update(io.add_prefix(module.state_dict(), name))
        meta = {
            "kind": "model",
            "class": type(self).__name__,
            "params": json_safe_params(self.get_params(deep=False)),
            "fitted": fitted,
            "precision": getattr(self, "precision_", None),  # what "auto" resolved to, for the record
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
        self._validate_params()

    def _take_or_match_params(self, stored: dict[str, Any], path: str | os.PathLike, init: bool,
                              architecture: dict[str, Any]) -> None:
        """With ``init``, take the file's hyperparameters; otherwise the file's values of the
        ``architecture`` parameters (name -> this estimator's value) must equal this
        estimator's, which are then validated."""
        if init:
            self._take_file_params(stored, path)
            return
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in architecture.items()}
        mismatch = {k: (stored.get(k), v) for k, v in plain.items() if stored.get(k) != v}
        if mismatch:
            raise ValueError(f"{path} was saved with a different architecture {mismatch} (file, this "
                             "estimator); use load(path, init=True) to take the file's parameters")
        self._validate_params()

    def _check_is_fitted(self) -> None:
        check_is_fitted(self)

    #: parameters the saved weights depend on: ``load(path, init=False)`` demands they match
    _architecture: tuple[str, ...] = ()
    #: fitted attributes only some models have: a load whose state lacks them removes them
    _optional_fitted: tuple[str, ...] = ()

    def _load_file(self, path: str | os.PathLike, init: bool) -> "TwinlearnEstimator":
        """The ``load`` every estimator shares: read and check the file, take (``init``) or
        match the hyperparameters, rebuild the fitted state with ``_restore`` — all before
        anything of this estimator changes — then move its modules to ``device`` in eval mode."""
        tensors, meta = self._read_model_file(path)
        with self._restoring_from(path):
            architecture = {k: getattr(self, k) for k in self._architecture}
            self._take_or_match_params(self._params_from_file(meta["params"]), path, init, architecture)
            state = self._restore(tensors, meta["fitted"], path)
            # the precision the model trained in (a file from before it was recorded: None)
            state["precision_"] = check_choice(meta.get("precision"), "precision", (*PRECISIONS, None))
        for name in self._optional_fitted:
            if name not in state and hasattr(self, name):
                delattr(self, name)
        for name, value in state.items():
            if isinstance(value, nn.Module):
                value = value.to(self._device()).eval()
                if getattr(self, "channels_last", False):
                    value = value.to(memory_format=torch.channels_last)
            setattr(self, name, value)
        return self

    def _params_from_file(self, params: dict[str, Any]) -> dict[str, Any]:
        """The file's hyperparameters as this estimator takes them (JSON has no tuples)."""
        return params

    def _restore(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any],
                 path: str | os.PathLike) -> dict[str, Any]:
        """The fitted attributes from a file's tensors and ``fitted`` metadata (checked; raises
        ``KeyError``/``ValueError``/... on anything that does not fit)."""
        raise NotImplementedError


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
