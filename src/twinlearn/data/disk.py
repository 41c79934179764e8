"""Arrays that stay on disk: HDF5 datasets (h5py, AnnData's backed mode), zarr arrays and
memory maps, read a block of rows at a time.

:class:`DiskArray` gives every such array the little the estimators use of a NumPy array —
``shape``, ``dtype``, row slices and row gathers by index — and reads only the rows asked for.
HDF5 takes only increasing, distinct indices, so a gather reads the sorted distinct rows and
puts them back in the order asked (duplicates included). A read that fails (a damaged chunk, a
file cut short) raises a ``ValueError`` naming the file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from twinlearn._optional import import_optional

#: values per block of rows read from an on-disk array (or a tensor checked or cast): 16 MB
#: in float32
BLOCK_VALUES = 2**22
#: errors h5py and zarr raise for data they cannot read (a damaged or missing chunk, a bad codec)
_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError)


def _module(name: str) -> Any:
    """``name`` if it is imported already: an object of its types cannot exist otherwise."""
    return sys.modules.get(name)


def _describe(store: Any) -> str:
    """The file (and dataset) an on-disk array lives in, for error messages."""
    h5py = _module("h5py")
    if h5py is not None and isinstance(store, (h5py.Dataset, h5py.Group)):
        return f"{store.file.filename!r} ({store.name})"
    if isinstance(store, np.memmap):
        return repr(str(store.filename))
    zarr_store = getattr(store, "store", None)
    path = getattr(zarr_store, "root", zarr_store)
    return f"{str(path)!r} ({getattr(store, 'path', '') or '/'})"


def _refuse_non_arrays(X: Any, name: str) -> None:
    """Groups and backed sparse matrices are on disk but are not dense arrays."""
    h5py, zarr = _module("h5py"), _module("zarr")
    groups = tuple(module.Group for module in (h5py, zarr) if module is not None)
    if groups and isinstance(X, groups):
        raise TypeError(f"{name} is a group of {_describe(X)}, not an array; pass one of its "
                        f"arrays: {', '.join(X.keys()) or '(it holds none)'}")
    if is_backed_sparse(X):
        raise TypeError(f"{name} is a sparse matrix in a backed AnnData file; out-of-core input "
                        "must be dense: load it with X.to_memory() (a scipy sparse matrix, which "
                        "TLDR and CNE take) or embed a dense representation (use_rep='X_pca')")


def is_backed_sparse(X: object) -> bool:
    """Whether ``X`` is the sparse ``X`` of an AnnData read with ``backed="r"``."""
    # by class name: the module of anndata's backed sparse matrices moved between releases
    return any(c.__name__ == "BaseCompressedSparseDataset" for c in type(X).__mro__)


def is_disk_array(X: object) -> bool:
    """Whether ``X`` is an HDF5 dataset or a zarr array (or already a :class:`DiskArray`)."""
    if isinstance(X, DiskArray):
        return True
    h5py, zarr = _module("h5py"), _module("zarr")
    return (h5py is not None and isinstance(X, h5py.Dataset)) or (
        zarr is not None and isinstance(X, zarr.Array))


def is_out_of_core(X: object) -> bool:
    """Whether rows of ``X`` are read from disk when used: a memory map or a :class:`DiskArray`."""
    return isinstance(X, (np.memmap, DiskArray))


def as_disk_array(X: object, name: str = "X") -> DiskArray | None:
    """``X`` wrapped as a :class:`DiskArray` when it is an on-disk array, else ``None``;
    ``TypeError`` for what is on disk but is not a dense array (an HDF5 or zarr group, a backed
    sparse matrix)."""
    _refuse_non_arrays(X, name)
    if isinstance(X, DiskArray):
        return X
    return DiskArray(X) if is_disk_array(X) else None


class DiskArray:
    """Rows of an on-disk array, read only when asked for.

    Parameters
    ----------
    store : h5py.Dataset, zarr.Array or numpy.memmap
        The array; it stays open (and on disk) as long as this object lives.
    divisor : float, optional
        Divide every value read by it, in float32 (e.g. 255 for uint8 pixels): the rows come
        out as ``block.astype(float32) / divisor``, without a scaled copy of the file.
    """

    def __init__(self, store: Any, divisor: float | None = None) -> None:
        self.store = store
        self.divisor = divisor
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(np.float32) if divisor is not None else np.dtype(store.dtype)
        self.ndim = len(self.shape)
        self.where = _describe(store)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DiskArray({self.where}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole array in memory (what ``np.asarray`` asks for; the estimators never do)."""
        values = self[:]
        return values if dtype is None else values.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows by an int, a slice or 1-D integer indices (any order, repeats allowed); a tuple
        selects rows first, then the rest of the key from them."""
        if isinstance(key, tuple):
            rows = self[key[0]]
            return rows[key[1:]] if rows.ndim < self.ndim else rows[(slice(None), *key[1:])]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            return self._read(slice(start, max(start, stop), step) if step > 0 else key,
                              f"rows {start}..{stop - 1}")
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        return self._gather(np.asarray(key))

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        if idx.dtype.kind not in "iu" or idx.ndim != 1:
            raise IndexError(f"rows of {self.where} are selected by a slice or 1-D integer indices")
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"row index out of range for {self.where} with {self.shape[0]} rows")
        if not idx.size:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        if (np.diff(idx) > 0).all():
            return self._read(idx, f"rows {idx[0]}..{idx[-1]}")
        distinct, position = np.unique(idx, return_inverse=True)  # sorted, as HDF5 demands
        return self._read(distinct, f"rows {distinct[0]}..{distinct[-1]}")[position]

    def _read(self, key: slice | np.ndarray, what: str) -> np.ndarray:
        try:
            if isinstance(key, np.ndarray):
                oindex = getattr(self.store, "oindex", None)  # zarr: orthogonal selection
                block = oindex[key] if oindex is not None else self.store[key]
            else:
                block = self.store[key]
        except _READ_ERRORS as err:
            raise ValueError(f"{self.where} is not readable ({what}): "
                             f"{type(err).__name__}: {err}") from err
        block = np.asarray(block)
        if self.divisor is not None:
            block = block.astype(np.float32) / np.float32(self.divisor)
        return block


def _float64_rows(X: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a NumPy, sparse, CPU-tensor or on-disk ``X`` as dense float64."""
    block = X[start:stop]
    if hasattr(block, "toarray"):  # scipy sparse
        block = block.toarray()
    return np.asarray(block, dtype=np.float64)


def pca_axes_by_blocks(X: Any, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact principal axes and mean of the rows of ``X`` (on disk, in memory, sparse or a CPU
    tensor), read once a block at a time: the mean and covariance are accumulated in float64
    (memory ``d²`` plus one block, never ``X`` whole), the axes are the covariance's leading
    eigenvectors with scikit-learn's signs (the largest entry of each positive). The same
    rows give the same axes whatever holds them.

    Returns
    -------
    components : ndarray of shape (n_components, n_features), float64, largest variance first
    mean : ndarray of shape (n_features,), float64
    """
    n, d = X.shape
    rows = max(1, BLOCK_VALUES // d)
    # sums around a provisional centre (the first row): a large common offset would otherwise
    # cancel catastrophically in E[x xᵀ] - E[x] E[x]ᵀ
    shift = _float64_rows(X, 0, 1)[0]
    total, gram = np.zeros(d), np.zeros((d, d))
    for start in range(0, n, rows):
        block = _float64_rows(X, start, start + rows) - shift
        total += block.sum(0)
        gram += block.T @ block
    offset = total / n
    _, vectors = np.linalg.eigh(gram / n - np.outer(offset, offset))
    components = vectors[:, ::-1][:, :n_components].T  # largest eigenvalue first
    largest = np.argmax(np.abs(components), axis=1)
    components *= np.sign(components[np.arange(len(components)), largest])[:, None]
    # a copy: a contiguous-looking 1 × 1 view can keep its negative stride, which torch refuses
    return components.copy(), shift + offset


def pca_scores_by_blocks(X: Any, n_components: int) -> np.ndarray:
    """Exact PCA scores of the rows of an on-disk ``X`` (:func:`pca_axes_by_blocks`, then a
    second pass a block at a time), equal to ``PCA(n_components).fit_transform(X)`` to float32
    rounding.

    Returns
    -------
    ndarray of shape (n_samples, n_components), float32
    """
    components, mean = pca_axes_by_blocks(X, n_components)
    n, d = X.shape
    rows = max(1, BLOCK_VALUES // d)
    scores = np.empty((n, len(components)), dtype=np.float32)
    for start in range(0, n, rows):
        block = np.asarray(X[start : start + rows], dtype=np.float64)
        scores[start : start + rows] = (block - mean) @ components.T
    return scores


def array_names(path: str | os.PathLike, kind: str) -> list[str]:
    """The arrays an HDF5 file (``kind="hdf5"``) or a zarr store (``"zarr"``) holds, as paths
    inside it; none for a store that is one array itself. Opens only the metadata."""
    if kind == "hdf5":
        h5py = import_optional("h5py")
        names: list[str] = []
        with h5py.File(path, "r") as fh:
            fh.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset)
                          else None)
        return names
    zarr = import_optional("zarr")
    node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        return []
    return [name for name, member in node.members(max_depth=None) if isinstance(member, zarr.Array)]


def open_array(path: str | os.PathLike, kind: str, name: str | None) -> DiskArray:
    """Array ``name`` of an HDF5 file or zarr store (``None``: a zarr store that is one array),
    opened lazily: nothing but its metadata is read."""
    if kind == "hdf5":
        store = import_optional("h5py").File(path, "r")[name]  # open while the array lives
    else:
        node = import_optional("zarr").open(path, mode="r")
        store = node if name is None else node[name]
    return DiskArray(store)
