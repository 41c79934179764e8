"""Validation of feature arrays and the stores that feed rows to the trainer.

Inputs may be NumPy arrays, torch tensors, pandas data frames or lists of lists, or stay on disk
(out of core): ``numpy.memmap`` files, HDF5 datasets, zarr arrays (:mod:`twinlearn.data.disk`);
:func:`validate_features` states the one policy for all of them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse
import torch

from twinlearn.data import disk
from twinlearn.data.disk import DiskArray, as_disk_array, is_out_of_core

ArrayLike = np.ndarray | torch.Tensor

#: largest squared row norm accepted: squared distances are computed as |x|² + |y|² - 2·x·y in
#: float32 (kNN, losses), whose terms then stay below float32's maximum with room to spare
_MAX_SQUARED_NORM = float(np.finfo(np.float32).max) / 8
_TORCH_INTS = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64} | {
    getattr(torch, f"uint{bits}") for bits in (16, 32, 64) if hasattr(torch, f"uint{bits}")
}


class SampleIndexError(ValueError, IndexError):
    """A row index outside the training data. A ``ValueError`` (bad argument) that is also an
    ``IndexError``, as NumPy's ``AxisError`` is, so code written for plain indexing still works."""


def _check_kind(kind: str, dtype: object, name: str) -> None:
    """Real numbers and booleans pass; everything else is refused with the dtype named."""
    if kind in "fiub":
        return
    if kind == "c":
        # ValueError with this wording: scikit-learn's estimator checks demand it
        raise ValueError(f"Complex data not supported: {name} has dtype {dtype}; pass its real "
                         "part or magnitude")
    hint = {"M": "; convert dates to numbers first", "m": "; convert durations to numbers first",
            "U": "; strings are not numbers", "S": "; bytes are not numbers"}.get(kind, "")
    raise TypeError(f"{name} has dtype {dtype}; a real numeric dtype (float, int, uint or bool) "
                    f"is expected{hint}")


def _check_tensor(X: torch.Tensor, name: str) -> None:
    if X.layout != torch.strided or X.is_nested:
        kind = "a nested tensor" if X.is_nested else f"a torch tensor with layout {X.layout}"
        raise TypeError(f"{name} is {kind}; pass a dense tensor (.to_dense())")
    if X.is_meta:
        raise TypeError(f"{name} is a meta tensor, which holds no values")
    if X.is_complex():
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if not (X.dtype.is_floating_point or X.dtype == torch.bool or X.dtype in _TORCH_INTS):
        raise TypeError(f"{name} has dtype {X.dtype}; a real numeric dtype (float, int, uint or "
                        "bool) is expected")


def _check_shape(shape: tuple[int, ...], name: str, min_samples: int) -> None:
    if len(shape) != 2:
        raise ValueError(
            f"Expected 2D array for {name}, got {len(shape)}D with shape {tuple(shape)}; "
            "Reshape your data (e.g. X.reshape(len(X), -1))"
        )
    n, d = shape
    if n < min_samples:
        raise ValueError(
            f"Found array with {n} sample(s) (shape={tuple(shape)}) while a minimum of "
            f"{min_samples} is required for {name}"
        )
    if d < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a minimum of 1 is "
            f"required for {name}"
        )


def _refuse_strings(values: np.ndarray, name: str) -> None:
    """Strings in an object array (or column) would be parsed as numbers by the conversion."""
    if values.size and np.frompyfunc(lambda v: isinstance(v, (str, bytes)), 1, 1)(values).any():
        raise TypeError(f"{name} holds strings; it must contain only numbers")


def _as_float(convert: Callable[[], np.ndarray], name: str) -> np.ndarray:
    """Run ``convert`` (object values to float64, element by element as scikit-learn does: its
    estimator checks demand that numbers stored as objects pass), naming ``name`` on failure."""
    try:
        return convert()
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must contain only numbers: {err}") from err


def _to_numpy(X: object, name: str) -> np.ndarray:
    """A list, pandas data frame or other array-like as a NumPy array of real numbers."""
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # a data frame: one dtype per column
        dtypes = X.dtypes
        for i, (column, dtype) in enumerate(dtypes.items()):
            where = f"{name} (column {column!r})"
            if dtype.kind == "O":
                _refuse_strings(X.iloc[:, i].to_numpy(), where)
            else:
                _check_kind(dtype.kind, dtype, where)
        if all(dtype == np.float32 for dtype in dtypes):
            return X.to_numpy()
        # pandas' missing values (nullable columns, None) become NaN, refused later
        return _as_float(lambda: X.to_numpy(dtype=np.float64, na_value=np.nan), name)
    try:
        values = np.asarray(X)
    except ValueError as err:
        raise ValueError(f"{name} is not a rectangular array: {err}") from err
    if values.dtype.kind == "O":
        _refuse_strings(values, name)
        values = _as_float(lambda: values.astype(np.float64), name)
    _check_kind(values.dtype.kind, values.dtype, name)
    return values


def _float32(block: ArrayLike) -> ArrayLike:
    if isinstance(block, torch.Tensor):
        return block.to(torch.float32)
    with np.errstate(over="ignore"):  # values beyond float32's range are reported by the caller
        return np.ascontiguousarray(block, dtype=np.float32)


def _squared_norms(block: ArrayLike) -> ArrayLike:
    """Row squared norms, accumulated in float32 as the kNN and losses do (so they overflow
    where those would)."""
    if isinstance(block, torch.Tensor) and block.device.type != "cpu":
        return torch.einsum("ij,ij->i", block, block)
    values = block.numpy() if isinstance(block, torch.Tensor) else block  # numpy's is faster
    with np.errstate(over="ignore", invalid="ignore"):
        return np.einsum("ij,ij->i", values, values)


def _first(mask: ArrayLike) -> int:
    """Index of the first true entry of a 1-D mask."""
    if isinstance(mask, torch.Tensor):
        return int(torch.nonzero(mask)[0, 0])
    return int(np.flatnonzero(mask)[0])


def _bad_rows(values: ArrayLike) -> ArrayLike:
    lib = torch if isinstance(values, torch.Tensor) else np
    return ~lib.isfinite(values).all(1)


def _explain(block: ArrayLike, source: ArrayLike, start: int, name: str) -> None:
    """Raise the error for a block whose squared norms failed the check, naming the first row
    at fault. ``source`` is the block before the cast to float32."""
    bad = _bad_rows(source)
    if bool(bad.any()):
        raise ValueError(f"Input {name} contains NaN or infinity (row {start + _first(bad)})")
    bad = _bad_rows(block)
    if bool(bad.any()):
        raise ValueError(
            f"Input {name} has values beyond float32 range (|x| > 3.4e38, row "
            f"{start + _first(bad)}); rescale it (e.g. divide it by its largest absolute value)"
        )
    row = start + _first(~(_squared_norms(block) <= _MAX_SQUARED_NORM))
    raise ValueError(
        f"Input {name} has rows whose squared norm exceeds {_MAX_SQUARED_NORM:.1e} (row {row}): "
        "squared distances between such rows overflow float32; rescale it (e.g. divide it by its "
        "largest absolute value)"
    )


def _check_values(values: ArrayLike, source: ArrayLike, name: str) -> None:
    """One pass over the rows, block by block (a memmap is read once, never whole): every
    value finite in float32 and every squared row norm at most ``_MAX_SQUARED_NORM``.
    ``source`` is ``values`` before the cast to float32, for the wording of the error."""
    rows = max(1, disk.BLOCK_VALUES // values.shape[1])
    for start in range(0, values.shape[0], rows):
        block = _float32(values[start : start + rows])
        # NaN compares false: one test finds non-finite values and overflowing norms alike
        if not bool((_squared_norms(block) <= _MAX_SQUARED_NORM).all()):
            _explain(block, source[start : start + rows], start, name)


def validate_features(X: object, *, name: str = "X", min_samples: int = 1) -> ArrayLike:
    """Check a feature matrix and return it as float32 without copying out-of-core data.

    The one input policy of twinlearn's vector estimators, kNN and metrics:

    - **containers**: NumPy arrays, dense (strided) torch tensors on any device, pandas data
      frames, lists of lists and other array-likes, and arrays that stay on disk: ``numpy.memmap``
      files (``np.load(path, mmap_mode="r")``), HDF5 datasets (h5py, the dense ``X`` of an AnnData
      read with ``backed="r"``) and zarr arrays. HDF5/zarr groups and backed sparse matrices
      raise ``TypeError``;
    - **dtypes**: real numbers (float, int, uint) and booleans, taken as 0/1 (as scikit-learn
      does), for every container alike. Object arrays and object columns of a data frame are
      converted element by element as scikit-learn does; strings or anything else that is not
      a number in them raise ``TypeError`` (pandas' missing values become NaN, refused below).
      Complex data raises ``ValueError`` (scikit-learn's contract); strings, bytes, dates and durations
      (``datetime64``/``timedelta64``, NumPy or pandas) raise ``TypeError``, as do torch sparse,
      nested and meta tensors and scipy.sparse matrices;
    - **values**, checked after the conversion to float32, in one pass (an on-disk array block
      by block; a block that cannot be read raises ``ValueError`` naming its file): NaN and
      ±inf raise ``ValueError``, and so do finite values beyond float32's range
      (float64 above 3.4e38) and rows whose squared norm exceeds ~4e37 (|x| ≳ 6.5e18), whose
      squared distances would overflow float32 and make the kNN graph and the losses
      meaningless; rescale such data.

    Parameters
    ----------
    X : array-like, torch.Tensor, numpy.memmap, h5py.Dataset or zarr.Array
        The data, of shape (n_samples, n_features). Memmaps stay on disk (returned unchanged), HDF5 and zarr arrays too (returned as
        a :class:`~twinlearn.data.disk.DiskArray`); tensors keep their device.
    name : str
        Argument name used in error messages.
    min_samples : int
        Minimum number of rows.

    Returns
    -------
    numpy.ndarray, DiskArray or torch.Tensor
        A float32 array (or an on-disk array of any real dtype) / float32 tensor.

    Raises
    ------
    TypeError
        For a dtype or container outside the policy above.
    ValueError
        For complex input, a wrong number of dimensions, too few rows, no columns, or values
        outside the policy above.
    """
    if scipy.sparse.issparse(X):
        raise TypeError(
            f"Sparse input is not supported for {name}: pass a dense array (X.toarray())"
        )
    X = as_disk_array(X, name) or X
    if isinstance(X, torch.Tensor):
        _check_tensor(X, name)
        _check_shape(tuple(X.shape), name, min_samples)
        source = X.detach()
        X = source.to(torch.float32)
    elif is_out_of_core(X):  # cast block by block when used: it stays on disk
        _check_kind(X.dtype.kind, X.dtype, name)
        _check_shape(X.shape, name, min_samples)
        source = X
    else:
        source = _to_numpy(X, name)
        _check_shape(source.shape, name, min_samples)
        X = _float32(source)
    _check_values(X, source, name)
    return X


def validate_sample_indices(idx: object, n_samples: int, name: str = "X") -> np.ndarray:
    """Check integer row indices against ``n_samples``: each must lie in ``[0, n_samples)``.

    Negative indices are refused rather than counted from the end: ``-1`` for a training point
    is more likely a bug than a wish for the last one. Raises ``TypeError`` for anything but an
    int or a 1-D array of ints, and :class:`SampleIndexError` (a ``ValueError``) naming the
    first index out of range.
    """
    # a list is read element by element: numpy would turn [0, 2**63] into floats
    idx = np.array(idx, dtype=object) if isinstance(idx, (list, tuple)) and len(idx) else np.asarray(idx)
    # a Python int beyond int64 arrives as an object array
    integral = idx.dtype.kind in "iu" or (
        idx.dtype.kind == "O"
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in idx.flat)
    )
    if idx.ndim > 1 or not integral:
        raise TypeError(f"{name} must be an int or a 1D array of ints when selecting rows")
    idx = idx.reshape(-1)
    outside = (idx < 0) | (idx >= n_samples)
    if outside.any():
        raise SampleIndexError(
            f"{name} selects row {idx[outside][0]}, but the model has {n_samples} training "
            f"samples: indices must lie in [0, {n_samples})"
        )
    return idx.astype(np.int64)


def iter_row_chunks(X: ArrayLike, chunk_rows: int) -> Iterator[ArrayLike]:
    """Yield consecutive row blocks of ``X`` (bounded memory for on-disk arrays)."""
    for start in range(0, X.shape[0], chunk_rows):
        yield X[start : start + chunk_rows]


def to_tensor(block: ArrayLike, device: torch.device) -> torch.Tensor:
    """Float32 tensor on ``device`` from a NumPy/memmap block or a tensor."""
    if isinstance(block, torch.Tensor):
        return block.to(device=device, dtype=torch.float32)
    array = np.ascontiguousarray(block, dtype=np.float32)
    if not array.flags.writeable:  # a read-only memory map (np.load(mmap_mode="r")): torch
        array = array.copy()  # would warn on every block, and must never write into it
    return torch.from_numpy(array).to(device)


def _whole_tensor(X: ArrayLike, device: torch.device) -> torch.Tensor:
    """All of ``X`` as one float32 tensor on ``device``; an on-disk array is copied into it a
    block at a time (no host copy of the whole file in its own dtype first)."""
    if not is_out_of_core(X):
        return to_tensor(X, device)
    out = torch.empty(tuple(X.shape), dtype=torch.float32, device=device)
    rows = max(1, disk.BLOCK_VALUES // max(1, X.shape[1]))
    for start, block in zip(range(0, X.shape[0], rows), iter_row_chunks(X, rows)):
        out[start : start + len(block)] = to_tensor(block, device)
    return out


def take_rows(X: ArrayLike, idx: np.ndarray) -> ArrayLike:
    """Rows ``idx`` (any order, repeats allowed) of an in-memory or on-disk array."""
    return X[idx] if isinstance(X, DiskArray) else np.take(X, idx, axis=0)


class FeatureStore:
    """Rows of the training data, gathered by index on the training device.

    In-memory data is moved to ``device`` once; an on-disk array (memmap, HDF5, zarr) stays on
    disk and only the rows of each batch are read (out-of-core training), unless
    ``force_on_device`` is set.
    """

    def __init__(self, X: ArrayLike, device: torch.device, force_on_device: bool = False):
        self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        self.device = device
        self.out_of_core = is_out_of_core(X) and not force_on_device
        if self.out_of_core:
            self._host = X
            self._data = None
        else:
            self._data = _whole_tensor(X, device)

    @property
    def on_device(self) -> torch.Tensor | None:
        """The whole data as one device tensor, or ``None`` when out of core."""
        return self._data

    def gather(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``idx`` as a float32 tensor on the store's device.

        ``out``: a ``(len(idx), n_features)`` tensor to write in-memory rows into. Reusing one
        matters on a CPU: a fresh 100 MB result costs more in page faults than the copy itself
        (56 vs 10 ms for 40 000 MNIST rows).
        """
        if self._data is not None:
            return self._data.index_select(0, idx) if out is None else torch.index_select(self._data, 0, idx, out=out)
        return to_tensor(take_rows(self._host, idx.cpu().numpy()), self.device)

    def chunks(self, chunk_rows: int) -> Iterator[torch.Tensor]:
        """Consecutive row blocks as device tensors."""
        source = self._data if self._data is not None else self._host
        for block in iter_row_chunks(source, chunk_rows):
            yield to_tensor(block, self.device)


def is_index_selection(X: object) -> bool:
    """An int, a list of ints or a 1-D integer array/tensor selects training rows (as CNE's
    original ``transform``); 2-D input is always features."""
    if isinstance(X, (numbers.Integral, np.integer)) and not isinstance(X, bool):
        return True
    if isinstance(X, torch.Tensor):
        return X.ndim <= 1 and not X.is_floating_point() and X.dtype != torch.bool
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in X)
    return isinstance(X, np.ndarray) and X.ndim <= 1 and X.dtype.kind in "iu"
