"""kNN graph files: ``(n, k)`` neighbour indices, optionally with their distances, in NumPy's
formats, read without pickle and without trusting their headers.

:func:`save_knn` writes a ``.npy`` of int32 indices (as ``np.load`` reads it), or with
distances an uncompressed ``.npz`` holding ``indices.npy`` (int32) and ``distances.npy``
(float32); atomically either way. :func:`load_knn` reads both, and the int64 ``.npy`` files
that ``TLDR.save_knn`` wrote before: the file in one read, then each ``.npy`` header parsed
and its shape and dtype checked against the bytes that follow it before any array is made,
so a crafted header cannot make it ask for more memory than the file holds (one of 7 KB asked
for 74.5 GiB through ``np.load``). A ``.npz`` member's CRC is checked; a ``.npy`` has no
checksum, so a flipped bit that keeps an index in range goes unnoticed there.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile

import numpy as np
from numpy.typing import ArrayLike

from twinlearn.io import atomic_write_bytes, check_path, read_file_bytes

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_MEMBERS = {"indices.npy": "iu", "distances.npy": "fiu"}  # member -> accepted dtype kinds
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}
#: errors of a corrupt archive: zipfile raises all of these for one crafted file or another
_ZIP_ERRORS = (zipfile.BadZipFile, ValueError, EOFError, OSError, NotImplementedError,
               RuntimeError, KeyError, UnicodeDecodeError, struct.error)


def save_knn(
    path: str | os.PathLike, indices: ArrayLike, distances: ArrayLike | None = None
) -> None:
    """Save a kNN graph (atomically: a crash leaves the previous file).

    Parameters
    ----------
    path : path-like
        The file; it holds a ``.npy`` without distances and an ``.npz`` with them, whatever
        its name.
    indices : array of shape (n, k)
        Each row's neighbours, integers in [0, n) (stored as int32).
    distances : array of shape (n, k), optional
        Finite numbers (stored as float32).
    """
    path = check_path(path)
    idx = _checked_indices(_as_array(indices, "indices"), None, "indices")
    if idx.shape[0] > np.iinfo(np.int32).max:
        raise ValueError(f"indices has {idx.shape[0]} rows; int32 indices hold at most 2**31 - 1")
    buffer = io.BytesIO()
    if distances is None:
        np.save(buffer, idx.astype(np.int32), allow_pickle=False)
    else:
        dist = _checked_distances(_as_array(distances, "distances"), idx.shape, "distances")
        np.savez(buffer, indices=idx.astype(np.int32), distances=dist, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_knn(
    path: str | os.PathLike, n_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a kNN graph written by :func:`save_knn` (or a plain ``.npy`` of integer indices).

    Parameters
    ----------
    path : path-like
    n_samples : int, optional
        The number of points of the graph: the file must have as many rows. Without it, the
        number of rows. Every index must lie in [0, n_samples).

    Returns
    -------
    indices : int32 array of shape (n, k)
        int32, as :func:`~twinlearn.neighbors.compute_knn` returns them.
    distances : float32 array of shape (n, k), or None when the file has none

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError, OSError
        The file cannot be read; the message names it.
    ValueError
        Naming the file: not a ``.npy``/``.npz``, a corrupt or crafted header, a shape or dtype
        that does not fit the file's size, a pickled (object) array, compressed or unexpected
        ``.npz`` members, indices out of range, distances not finite or of another shape.
    """
    path = check_path(path)
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int)
                                  or n_samples < 1):
        raise ValueError(f"n_samples must be a positive int or None, got {n_samples!r}")
    data = read_file_bytes(path, "kNN file")
    if data.startswith(_NPY_MAGIC):
        arrays = {"indices.npy": _read_npy(data, f"{path}", _MEMBERS["indices.npy"])}
    elif data.startswith(_ZIP_MAGIC):
        arrays = _read_npz(data, path)
    else:
        raise ValueError(f"{path} is not a kNN file: a .npy or .npz expected")
    indices = _checked_indices(arrays["indices.npy"], n_samples, f"{path}")
    distances = arrays.get("distances.npy")
    if distances is not None:
        distances = _checked_distances(distances, indices.shape, f"{path}")
    return indices, distances


def _as_array(value: ArrayLike, name: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged lists, objects numpy cannot take
        raise ValueError(f"{name} is not an array: {err}") from err


def _checked_indices(idx: np.ndarray, n_samples: int | None, where: str) -> np.ndarray:
    """``idx`` as int32 (int64 from 2³¹ rows), checked: (n, k) integers, n and k >= 1, every
    value in [0, n)."""
    if idx.ndim != 2 or idx.dtype.kind not in "iu" or 0 in idx.shape:
        raise ValueError(f"{where}: an (n, k) integer array with n, k >= 1 expected, got "
                         f"{idx.dtype} of shape {idx.shape}")
    if n_samples is not None and idx.shape[0] != n_samples:
        raise ValueError(f"{where} has {idx.shape[0]} rows, but n_samples={n_samples}")
    n = idx.shape[0]
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{where} holds neighbour indices outside [0, {n})")
    return idx.astype(np.int32 if n <= np.iinfo(np.int32).max else np.int64)


def _checked_distances(dist: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``dist`` as float32, of the indices' ``shape`` and finite."""
    if dist.dtype.kind not in "fiu" or dist.shape != shape:
        raise ValueError(f"{where}: distances of shape {shape} (the indices') expected, got "
                         f"{dist.dtype} of shape {dist.shape}")
    dist = dist.astype(np.float32)  # a copy: the file's buffer is read-only
    if not np.isfinite(dist).all():
        raise ValueError(f"{where} holds distances that are NaN, infinite or beyond float32")
    return dist


def _read_npy(data: bytes, where: str, kinds: str) -> np.ndarray:
    """The (n, k) array in the ``.npy`` bytes ``data``, as a read-only view of them: the header
    is parsed and its shape and dtype checked against the bytes that follow first."""
    stream = io.BytesIO(data)
    try:
        read_header = _NPY_HEADERS.get(np.lib.format.read_magic(stream))
        if read_header is None:
            raise ValueError("an unsupported .npy version")
        shape, fortran_order, dtype = read_header(stream)
    # numpy parses the header with ast.literal_eval: nesting tricks give RecursionError
    except (ValueError, TypeError, SyntaxError, RecursionError) as err:
        raise ValueError(f"{where} has a corrupt .npy header: {err}") from err
    if dtype.hasobject or dtype.kind not in kinds or len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"{where} holds a {dtype} array of shape {shape}; an (n, k) array of "
                         f"{'integers' if kinds == 'iu' else 'numbers'} expected")
    count, offset = shape[0] * shape[1], stream.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise ValueError(f"{where}: its header describes {count * dtype.itemsize} bytes of data, "
                         f"but {len(data) - offset} follow (truncated or crafted)")
    flat = np.frombuffer(data, dtype, count, offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


def _check_members_fill_archive(data: bytes, infos: list[zipfile.ZipInfo], directory_start: int) -> None:
    """The listed members, header and data, fill the archive up to its central directory: a
    damaged directory entry (a comment length, say) can swallow the next entry, and the file
    would then load without that member instead of being refused."""
    covered = 0
    for info in infos:
        header = data[info.header_offset : info.header_offset + 30]
        if len(header) < 30:
            raise ValueError("a member's header lies outside the file")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        covered += 30 + name_length + extra_length + info.compress_size
    if covered != directory_start:
        raise ValueError(f"the central directory lists {covered} of the {directory_start} bytes "
                         "before it: a damaged or hidden member")


def _read_npz(data: bytes, path: object) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`save_knn`: ``indices.npy`` and optionally
    ``distances.npy``, stored uncompressed (a compressed member could expand without bound)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if ("indices.npy" not in names or len(set(names)) != len(names)
                    or not set(names) <= set(_MEMBERS)):
                raise ValueError(f"members {names[:5]}: indices.npy and optionally "
                                 "distances.npy expected")
            if any(info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data)
                   for info in infos):
                raise ValueError("a compressed or oversized member (save_knn stores them as is)")
            _check_members_fill_archive(data, infos, archive.start_dir)
            members = {info.filename: archive.read(info) for info in infos}  # checks each CRC
    except _ZIP_ERRORS as err:
        raise ValueError(f"{path} is not a readable .npz kNN file: {err}") from err
    return {name: _read_npy(content, f"{path} ({name})", _MEMBERS[name])
            for name, content in members.items()}
