"""A training run's folder: which run a checkpoint belongs to, and one writer at a time.

A checkpoint stores a *fingerprint* of the data (shape, dtype and a hash of sampled rows) and
of the settings that shape the result; ``resume`` refuses a checkpoint whose fingerprint is not
this fit's, so a run on new data never silently continues (or returns) an old model. A lock
file held while training keeps a second process from writing into the same folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: rows hashed for the data fingerprint (evenly spaced, first and last included)
SAMPLED_ROWS = 64
#: parameters that do not change what is trained
NEUTRAL_PARAMS = frozenset({"verbose", "device", "pin_memory", "callbacks", "data_transform"})


def _row_bytes(X: Any, rows: np.ndarray) -> bytes:
    if hasattr(X, "toarray"):  # scipy sparse
        return np.ascontiguousarray(X[rows].toarray()).tobytes()
    if isinstance(X, torch.Tensor):
        return X[torch.from_numpy(rows)].detach().cpu().contiguous().numpy().tobytes()
    return np.ascontiguousarray(np.asarray(X[rows])).tobytes()


def data_fingerprint(X: Any) -> str:
    """Shape, dtype and a hash of up to ``SAMPLED_ROWS`` rows of ``X``: cheap for any N, and
    different for other data of the same shape unless every sampled row agrees."""
    n = int(X.shape[0])
    rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLED_ROWS)).astype(np.int64))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(X.shape), str(X.dtype))).encode())
    digest.update(_row_bytes(X, rows))
    return digest.hexdigest()


def settings_fingerprint(params: Mapping[str, Any]) -> str:
    """A hash of the parameters that shape the result (not ``verbose``, ``device``, ...)."""
    # a numpy Generator's repr holds its address: the same seed object would never match
    plain = {k: type(v).__name__ if isinstance(v, np.random.Generator) else repr(v)
             for k, v in sorted(params.items()) if k not in NEUTRAL_PARAMS}
    return hashlib.blake2b(json.dumps(plain).encode(), digest_size=16).hexdigest()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike | None) -> Iterator[None]:
    """Hold ``folder/.twinlearn.lock`` (an exclusive ``flock``) for the block; another process
    training into the same folder gets a clear error at once instead of mixed checkpoints.
    The lock dies with its process, so a killed run never leaves the folder locked."""
    if folder is None:
        yield
        return
    import fcntl

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output_folder={str(folder)!r} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".twinlearn.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"output_folder={str(folder)!r} is in use by another training process; "
                "give each run its own folder"
            ) from None
        yield
    finally:
        os.close(fd)
