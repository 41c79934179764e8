"""Model and checkpoint files: safetensors weights + JSON metadata in one file. Never pickle.

A file holds tensors and a ``"twinlearn"`` metadata entry: a JSON object with
``format_version``, ``library_version``, ``kind`` (``"model"`` or ``"checkpoint"``), the
estimator ``class`` and its ``config``. Writes go to a temporary file in the same folder that
is then renamed over the target, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

FORMAT_VERSION = 1
_META_KEY = "twinlearn"


def library_version() -> str:
    from twinlearn import __version__

    return __version__


def check_path(path: object, name: str = "path") -> Path:
    """``path`` as a :class:`~pathlib.Path`; ``TypeError``/``ValueError`` naming ``name`` for
    what no file system call should see (not a path, empty, a NUL character)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a text path, got {text!r}")
    if not text:
        raise ValueError(f"{name} is empty; give a file name")
    if "\0" in text:
        raise ValueError(f"{name}={text!r} contains a NUL character")
    return Path(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = check_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors and a JSON-serialisable ``meta`` dict atomically."""
    header = {"format_version": FORMAT_VERSION, "library_version": library_version(), **meta}
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(clean, metadata={_META_KEY: json.dumps(header)}))


def load_tensors(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; never executes code from the file.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    IsADirectoryError
        The path is a directory.
    TypeError
        ``path`` is not a path.
    ValueError
        The file is not a twinlearn safetensors file, is truncated or corrupt, has a newer
        format version, or is not of the expected ``kind``.
    """
    path = check_path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw_meta = (fh.metadata() or {}).get(_META_KEY)
            # copies: safetensors hands out views of a memory map of the file, so a model (or an
            # optimizer state) holding them would die of SIGBUS once the file is rewritten in place
            tensors = {name: fh.get_tensor(name).clone() for name in fh.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable twinlearn model file (safetensors expected; it may be "
            f"truncated, corrupt or a pickle, which is never loaded): {err}"
        ) from err
    if raw_meta is None:
        raise ValueError(f"{path} is a safetensors file but not a twinlearn one (no metadata)")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has corrupt twinlearn metadata: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path} has corrupt twinlearn metadata: a JSON object expected, got {type(meta).__name__}"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this twinlearn ({library_version()}) reads "
            f"up to version {FORMAT_VERSION}: upgrade twinlearn to load it"
        )
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, expected a {kind!r}")
    return tensors, meta


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


def add_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Prefix every key with ``prefix.``."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state dict into tensors plus a JSON-serialisable remainder."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Inverse of :func:`optimizer_to_tensors`: load the state into ``optimizer``."""
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
