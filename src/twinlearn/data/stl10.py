"""STL-10 from the official binary files already on disk (``stl10_binary/*.bin``); never
downloads (mrl-pytorch downloaded ~2.6 GB into a hard-coded folder, even for CIFAR runs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

STL10_SPLITS = ("unlabeled", "train", "test")


def _find_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / "stl10_binary" / name):
        if candidate.is_file():
            return candidate
    return None


def load_stl10(
    path: str | os.PathLike, split: str = "unlabeled"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``(N, 96, 96, 3)`` uint8 and labels (0-based; ``None`` for ``"unlabeled"``).

    Parameters
    ----------
    path : folder holding ``stl10_binary/`` or its ``*_X.bin`` files
    split : {"unlabeled", "train", "test"}
    """
    if split not in STL10_SPLITS:
        raise ValueError(f"split={split!r}: choose one of {STL10_SPLITS}")
    root = Path(path)
    images_file = _find_file(root, f"{split}_X.bin")
    if images_file is None:
        raise FileNotFoundError(
            f"no {split}_X.bin under {root} or {root / 'stl10_binary'}: STL-10 is read from disk "
            "only; extract stl10_binary.tar.gz there first"
        )
    raw = np.fromfile(images_file, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise ValueError(f"{images_file} is not a whole number of 3×96×96 images")
    # the files store each channel column-major
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    labels = None
    labels_file = _find_file(root, f"{split}_y.bin")
    if split != "unlabeled" and labels_file is not None:
        labels = np.fromfile(labels_file, dtype=np.uint8).astype(np.int64) - 1
    return np.ascontiguousarray(images), labels
