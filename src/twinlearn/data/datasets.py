"""Loaders for the real data sets used by examples, tests and benchmarks (never downloads)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from twinlearn._device import seed_from

_ENV_VAR = "TWINLEARN_DATA"


def find_shared_data(required: str | None = None) -> Path | None:
    """Locate the data folder.

    Looks at ``$TWINLEARN_DATA`` first, then at ``../shared/data`` relative to the working
    directory and to the source checkout. Returns ``None`` when no folder (or no ``required``
    file in it) exists.
    """
    candidates = []
    if os.environ.get(_ENV_VAR):
        candidates.append(Path(os.environ[_ENV_VAR]))
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    for folder in candidates:
        if folder.is_dir() and (required is None or (folder / required).exists()):
            return folder
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {shape}, found {data.size} values")
    return data.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def load_mnist(
    path: str | os.PathLike | None = None,
    *,
    flatten: bool = True,
    scale: bool = True,
    shuffle: bool = False,
    random_state: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST from ``mnist.npz`` or the standard IDX files (``train-images-idx3-ubyte[.gz]``).

    The rows come in the file's order, and the shared ``mnist.npz`` is **sorted by digit**:
    take random subsets (or ``shuffle=True``), never a prefix, which would hold only zeros.

    Parameters
    ----------
    path : path-like, optional
        An ``.npz`` file or a folder holding ``mnist.npz`` or the four IDX files. Defaults to the
        shared data folder (see :func:`find_shared_data`).
    flatten : bool
        Return images as 784-d rows.
    scale : bool
        Return float32 pixels in [0, 1] instead of uint8.
    shuffle : bool
        Permute the training and the test set (each with its labels) at random.
    random_state : int, numpy Generator or None
        Seed of the permutation when ``shuffle``.

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray
    """
    if path is None:
        folder = find_shared_data("mnist.npz")
        if folder is None:
            raise FileNotFoundError(
                "MNIST not found: pass path= or set $TWINLEARN_DATA to a folder with mnist.npz"
            )
        path = folder / "mnist.npz"
    path = Path(path)
    if path.is_dir() and (path / "mnist.npz").exists():
        path = path / "mnist.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            arrays = [f["x_train"], f["y_train"], f["x_test"], f["y_test"]]
    elif path.is_dir():
        stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        files = [_idx_file(path, s) for s in stems]
        if any(f is None for f in files):
            raise FileNotFoundError(f"{path} holds neither mnist.npz nor the four MNIST IDX files")
        arrays = [_read_idx(f) for f in files]
    else:
        raise FileNotFoundError(f"{path} does not exist")
    x_train, y_train, x_test, y_test = arrays
    if shuffle:
        rng = np.random.default_rng(seed_from(random_state))
        train, test = rng.permutation(len(x_train)), rng.permutation(len(x_test))
        x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_test[test], y_test[test]
    if flatten:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    if scale:
        x_train = x_train.astype(np.float32) / 255.0
        x_test = x_test.astype(np.float32) / 255.0
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)
