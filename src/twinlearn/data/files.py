"""Data files in and embeddings out, by file type (the ``twinlearn`` command's readers).

Inputs: ``.npy`` (memory-mapped), ``.npz`` (``key``: the array), ``.h5``/``.hdf5`` and ``.zarr``
(``key``: the array, needed when there are several), ``.csv``/``.tsv``/``.parquet`` (the numeric
columns), ``.h5ad`` (read backed; ``use_rep``: an ``obsm`` entry, default ``X``), an image
folder ``root/<class>/<image>`` and the CIFAR-10 JPEG tarball (``key``: ``train`` or
``test``); ``.txt`` holds whitespace-separated numbers, or labels (one a line). ``.npy``,
HDF5, zarr and the dense ``X`` of an ``.h5ad`` stay on disk (out of core: read a block of rows
at a time, see :mod:`twinlearn.data.disk`). Embeddings are written by
:mod:`twinlearn.data.writers`.

Tables need ``pip install 'twinlearn[tables]'``, ``.h5ad`` files
``'twinlearn[anndata]'``, HDF5 files ``'twinlearn[hdf5]'``, zarr stores ``'twinlearn[zarr]'``.
"""

from __future__ import annotations

import logging
import os
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinlearn._optional import import_optional
from twinlearn.data.disk import DiskArray, array_names, is_disk_array, is_out_of_core, open_array

logger = logging.getLogger("twinlearn")

INPUT_TYPES = {".npy": "npy", ".npz": "npz", ".csv": "table", ".tsv": "table", ".txt": "text",
               ".parquet": "table", ".h5ad": "h5ad", ".tar.gz": "tarball", ".tgz": "tarball",
               ".tar": "tarball", ".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr"}  # fmt: skip
_KEYED = ("npz", "hdf5", "zarr")  # kinds whose ``key`` names an array in the file
_TARBALL_SPLITS = ("train", "test")


@dataclass
class InputData:
    """What :func:`read_input` found.

    Attributes
    ----------
    X : ndarray or DiskArray
        Vectors ``(N, D)`` (or an ``(N, ...)`` array as stored; a memory map or a
        :class:`~twinlearn.data.disk.DiskArray` for files read out of core), or uint8 images
        ``(N, H, W, 3)``.
    labels : ndarray or None
        Class labels the input carries itself (image folders, the CIFAR-10 tarball).
    class_names : list of str or None
        Names of the integer ``labels``.
    table : AnnData, DataFrame or None
        The table read (its columns can serve as labels; a ``.h5ad`` output keeps its ``obs``).
    """

    X: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    table: Any = None


def input_type(path: str | os.PathLike, name: str = "input") -> str:
    """The kind of ``path`` (``"npy"``, ``"npz"``, ``"hdf5"``, ``"zarr"``, ``"table"``,
    ``"text"``, ``"h5ad"``, ``"folder"``, ``"tarball"``), from its name alone;
    ``FileNotFoundError`` or ``ValueError`` naming ``name`` for a missing path or an unsupported
    type."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name} {str(path)!r}: no such file or folder")
    if path.is_dir():
        return "zarr" if path.suffix.lower() == ".zarr" else "folder"
    lower = path.name.lower()
    suffix = ".tar.gz" if lower.endswith(".tar.gz") else path.suffix.lower()
    if suffix not in INPUT_TYPES:
        known = ", ".join(INPUT_TYPES)
        raise ValueError(
            f"{name} {str(path)!r}: unsupported file type {suffix or '(no extension)'}; "
            f"use one of {known} or an image folder"
        )
    return INPUT_TYPES[suffix]


def check_input(
    path: str | os.PathLike, key: str | None = None, use_rep: str | None = None, name: str = "input"
) -> str:
    """Cheap checks before any work: the path exists, its type is supported, it opens, and
    ``key`` / ``use_rep`` name something in it. Returns :func:`input_type`."""
    kind = input_type(path, name)
    if use_rep is not None and kind != "h5ad":
        raise ValueError(f"--use-rep applies to .h5ad input, not to {path}")
    if key is not None and kind not in (*_KEYED, "tarball"):
        raise ValueError(
            f"a key ({key!r}) applies to .npz, HDF5 and zarr files and the CIFAR-10 tarball, "
            f"not to {path}"
        )
    if kind == "tarball" and key not in (None, *_TARBALL_SPLITS):
        raise ValueError(f"{path}: the key of the CIFAR-10 tarball is one of {_TARBALL_SPLITS}")
    try:
        names = _contents(path, kind)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as err:
        # ValueError: among others, an object array, which only a pickle could restore
        raise ValueError(f"{name} {str(path)!r} is not a readable {kind} file: {err}") from err
    if kind in _KEYED:
        _array_key(names, key, path, kind)
    if kind == "h5ad" and use_rep not in (None, "X"):
        _pick_key(names, use_rep, path, "--use-rep")
    return kind


def _contents(path: str | os.PathLike, kind: str) -> list[str]:
    """Open ``path`` just enough to know it is readable; the names it holds (the arrays of an
    ``.npz``, the ``obsm`` entries of an ``.h5ad``)."""
    if kind == "npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive.files
    if kind in ("hdf5", "zarr"):
        return array_names(path, kind)
    if kind == "npy":
        np.load(path, mmap_mode="r", allow_pickle=False)
    elif kind == "h5ad":
        h5py = import_optional("h5py")
        with h5py.File(path, "r") as fh:
            obsm = fh.get("obsm")
            if isinstance(obsm, h5py.Group):
                return list(obsm.keys())
            # files of anndata < 0.7 store obsm as one structured array
            return list(obsm.dtype.names or []) if obsm is not None else []
    elif kind == "tarball":
        with tarfile.open(path) as tar:
            tar.next()
    return []


def _array_key(names: list[str], key: str | None, path: object, kind: str) -> str | None:
    """The array ``key`` names (or the only one); ``None`` for a zarr store that is one array."""
    if kind == "zarr" and not names:  # a store that is one array itself
        if key is None:
            return None
        raise ValueError(f"{path} is one array, not a group: give no --key")
    if not names:
        raise ValueError(f"{path} holds no arrays")
    return _pick_key(names, key, path, "--key")


def _pick_key(keys: list[str], key: str | None, path: object, option: str) -> str:
    if key is None:
        if len(keys) == 1:
            return keys[0]
        raise ValueError(f"{path} holds {', '.join(keys)}: choose one with {option}")
    if key not in keys:
        raise ValueError(
            f"{path} has no {key!r} ({option}); it holds {', '.join(keys) or 'nothing'}"
        )
    return key


def read_input(
    path: str | os.PathLike,
    key: str | None = None,
    use_rep: str | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
    progress: bool = False,
) -> InputData:
    """Read a data file or image folder (see the module docstring).

    Parameters
    ----------
    path : path-like
    key : str, optional
        The array of an ``.npz`` (needed when it holds several), or the tarball split.
    use_rep : str, optional
        The ``obsm`` entry of an ``.h5ad`` file (default: ``X``).
    image_size : int or (height, width), optional
        Resize the images of a folder to this size (needed when they differ).
    progress : bool
        Show a progress bar while images are decoded.

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing path, an unsupported or unreadable file, or a missing key; the message
        names the file.
    """
    kind = check_input(path, key, use_rep)
    path = Path(path)
    if kind in ("npy", "npz"):
        return InputData(_read_array(path, key))
    if kind in ("hdf5", "zarr"):  # stays on disk
        name = _array_key(array_names(path, kind), key, path, kind)
        return InputData(open_array(path, kind, name))
    if kind == "text":
        return InputData(np.loadtxt(path, dtype=np.float32, ndmin=2))
    if kind == "table":
        return _read_table(path)
    if kind == "h5ad":
        return _read_h5ad(path, use_rep)
    if kind == "folder":
        return _read_folder(path, image_size, progress)
    return _read_tarball(path, key or "train", progress)


def _read_array(path: Path, key: str | None) -> np.ndarray:
    """An ``.npy`` file (memory-mapped: it stays out of core) or one array of an ``.npz``."""
    if path.suffix.lower() == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)  # check_input opened it already
    with np.load(path, allow_pickle=False) as archive:
        name = _pick_key(archive.files, key, path, "--key")
        try:
            return archive[name]
        except (zipfile.BadZipFile, EOFError, ValueError) as err:  # ValueError: an object array
            raise ValueError(f"{path}: array {name!r} is not readable: {err}") from err


def _read_table(path: Path) -> InputData:
    """The numeric columns of a table; other columns are skipped with a warning (they can
    still be labels)."""
    pd = import_optional("pandas")
    if path.suffix.lower() == ".parquet":
        import_optional("pyarrow")
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    numeric = frame.select_dtypes("number")
    skipped = [str(c) for c in frame.columns if c not in numeric.columns]
    if numeric.shape[1] == 0:
        raise ValueError(f"{path} has no numeric columns")
    if skipped:
        warnings.warn(f"{path}: non-numeric columns {skipped} are not features", stacklevel=3)
    return InputData(numeric.to_numpy(np.float32), table=frame)


def _anndata(path: Path, backed: str | None = None) -> Any:
    with warnings.catch_warnings():  # anndata's notes on old file layouts: nothing to act on
        warnings.filterwarnings("ignore", module="anndata")
        return import_optional("anndata").read_h5ad(path, backed=backed)


def _read_h5ad(path: Path, use_rep: str | None) -> InputData:
    """An ``obsm`` entry (in memory) or ``X`` (read backed: a dense ``X`` stays on disk)."""
    adata = _anndata(path, backed="r")
    has_x = "X" in adata.file  # backed, a missing X raises instead of reading as None
    if use_rep in (None, "X") and not has_x and len(adata.obsm) == 1:
        use_rep = next(iter(adata.obsm.keys()))  # an embedding file: its one representation
    if use_rep in (None, "X"):
        if not has_x:
            raise ValueError(f"{path} has no X; choose an obsm entry with --use-rep: "
                             f"{', '.join(adata.obsm.keys())}")
        # a dense X is an HDF5 dataset; a sparse one is loaded densified (as before)
        X = DiskArray(adata.X) if is_disk_array(adata.X) else adata.X.to_memory().toarray()
    else:
        X = np.asarray(adata.obsm[use_rep])
    return InputData(X, table=adata)


def _read_folder(root: Path, image_size: object, progress: bool) -> InputData:
    from tqdm.auto import tqdm

    from twinlearn.data.images import _folder_items, _pil, load_images

    paths, labels, classes = _folder_items(root)
    with tqdm(total=len(paths), desc="decoding images", unit="img", disable=not progress) as bar:
        images, _ = load_images(_ImageFiles(paths, _pil(), bar), image_size, name=str(root))
    return InputData(images.permute(0, 2, 3, 1).numpy(), labels, classes)


class _ImageFiles:
    """A folder's image files as a sequence :func:`~twinlearn.data.images.load_images` decodes
    one by one, so a progress bar can follow."""

    def __init__(self, paths: list[Path], image_module: Any, bar: Any) -> None:
        self.paths, self.image_module, self.bar = paths, image_module, bar

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        with self.image_module.open(self.paths[i]) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
        self.bar.update(1)
        return pixels


def _read_tarball(path: Path, split: str, progress: bool) -> InputData:
    from twinlearn.data.images import CIFAR10_CLASSES, load_cifar10

    logger.info("reading %s (decoded once, then cached)", path)
    x_train, y_train, x_test, y_test = load_cifar10(path, show_progress=progress)
    X, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    if len(X) == 0:
        raise ValueError(f"{path} holds no CIFAR-10 {split} images (cifar10/{split}/<class>/*.jpg)")
    return InputData(X, y, list(CIFAR10_CLASSES))


def as_vectors(data: InputData, name: str = "input") -> np.ndarray:
    """``(N, D)`` rows: images and other ``(N, ...)`` arrays flattened, uint8 scaled to [0, 1]
    (as :func:`~twinlearn.data.load_mnist` does); float arrays are passed on as stored (a
    memory map stays one, and a file read out of core stays on disk, uint8 scaled as read)."""
    X = data.X
    if X.ndim < 2:
        raise ValueError(f"{name} is a 1-D array of {X.shape[0]} values; expected rows (N, D)")
    if X.ndim > 2:
        if isinstance(X, DiskArray):
            raise ValueError(f"{name} {X.where} has shape {X.shape}; store it as rows (N, D)")
        X = X.reshape(len(X), -1)
    if X.dtype == np.uint8:
        if is_out_of_core(X):
            return DiskArray(X.store if isinstance(X, DiskArray) else X, divisor=255)
        return X.astype(np.float32) / 255.0
    return X


def as_images(data: InputData, name: str = "input") -> np.ndarray:
    """Images ``(N, H, W[, C])``; a table of vectors is refused with a clear message."""
    if data.X.ndim not in (3, 4):
        raise ValueError(
            f"{name} holds an array of shape {data.X.shape}; image methods need images: an image "
            "folder, the CIFAR-10 tarball or an (N, H, W[, C]) array"
        )
    return data.X


def split_spec(spec: str) -> tuple[Path | None, str | None]:
    """``FILE``, ``FILE:KEY`` or a bare ``KEY`` (``(None, KEY)``): how ``--labels`` and
    ``--reference`` name a file and, optionally, an array, column or ``obsm`` entry in it."""
    if Path(spec).exists():
        return Path(spec), None
    head, sep, key = spec.rpartition(":")
    if sep and head and Path(head).exists():
        return Path(head), key
    return None, spec


def read_labels(spec: str, n: int, embedding: InputData | None = None) -> np.ndarray:
    """Labels from ``spec`` (see :func:`split_spec`): a ``.npy``/``.txt`` file, an ``.npz``
    array, a table column, an ``.h5ad`` ``obs`` column, the classes of an image folder or the
    CIFAR-10 tarball, or a bare column name of ``embedding``'s own table. ``ValueError`` when
    there are not exactly ``n`` of them."""
    path, key = split_spec(spec)
    if path is None:
        values = _column(embedding.table if embedding is not None else None, key)
        if values is None:
            raise ValueError(
                f"labels {spec!r}: no such file, and the embedding file has no column {spec!r}"
            )
    else:
        values = _labels_from(path, key)
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"labels {spec!r} must be one label per point, shape (N,); got {values.shape}"
        )
    if len(values) != n:
        raise ValueError(f"labels {spec!r} hold {len(values)} entries for {n} points")
    return values


def _column(table: Any, key: str | None) -> np.ndarray | None:
    frame = getattr(table, "obs", table)  # AnnData: its obs; DataFrame: itself
    if key is None or frame is None or key not in getattr(frame, "columns", ()):
        return None
    return frame[key].to_numpy()


def _labels_from(path: Path, key: str | None) -> np.ndarray:
    kind = input_type(path, "labels")
    if kind == "folder":
        from twinlearn.data.images import _folder_items

        _, labels, classes = _folder_items(path)
        return np.asarray(classes)[labels]
    if kind == "tarball":
        data = _read_tarball(path, key or "train")
        return np.asarray(data.class_names)[data.labels]
    if kind == "text":  # one label per line
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        try:
            return np.asarray(lines, dtype=np.int64)
        except ValueError:
            return np.asarray(lines)
    if kind == "h5ad":
        obs = _anndata(path, backed="r").obs
        return obs[_pick_key(list(obs.columns), key, path, "FILE:COLUMN")].to_numpy()
    if kind == "table":
        frame = _read_table_quietly(path)
        return frame[
            _pick_key([str(c) for c in frame.columns], key, path, "FILE:COLUMN")
        ].to_numpy()
    return read_input(path, key=key).X


def _read_table_quietly(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_table(path).table
