"""Embeddings out, by file extension: ``.npy``, ``.csv``, ``.parquet`` and ``.h5ad`` (the
embedding in ``obsm["X_<name>"]``, next to the input's ``obs`` and ``var`` when the input was
``.h5ad``). Writes are atomic, and an existing file is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path

import numpy as np

from twinlearn._optional import import_optional
from twinlearn.data.files import InputData

OUTPUT_SUFFIXES = (".npy", ".csv", ".parquet", ".h5ad")


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool = False,
    suffixes: tuple[str, ...] = OUTPUT_SUFFIXES,
    name: str = "output",
) -> Path:
    """``path`` if it has one of ``suffixes`` and is not an existing file (unless
    ``overwrite``): checked before any work, so that nothing is computed for nothing."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{name} {str(path)!r}: unsupported file type "
            f"{path.suffix or '(no extension)'}; use one of {', '.join(suffixes)}"
        )
    if path.is_dir():
        raise IsADirectoryError(f"{name} {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{name} {str(path)!r} exists; pass --overwrite (overwrite=True) to replace it"
        )
    return path


def write_output(
    path: str | os.PathLike,
    Y: np.ndarray,
    overwrite: bool = False,
    *,
    like: InputData | None = None,
    name: str = "embedding",
) -> Path:
    """Write the embedding ``Y`` ``(N, d)`` by extension, atomically.

    Parameters
    ----------
    path : path-like
        ``.npy``, ``.csv``/``.parquet`` (columns ``name0``, ``name1``, ...) or ``.h5ad``
        (``obsm["X_<name>"]``; with the ``obs``, ``var`` and ``X`` of ``like`` when that was
        read from ``.h5ad``, else with ``like``'s labels as ``obs["label"]``).
    Y : array (N, d)
    overwrite : bool
        Replace an existing file.
    like : InputData, optional
        The input the embedding was computed from.
    name : str
        The method name, for column and ``obsm`` names.
    """
    from twinlearn.io import atomic_write_bytes

    path = check_output_path(path, overwrite)
    Y = np.asarray(Y, dtype=np.float32)
    if Y.ndim != 2:
        raise ValueError(f"the embedding must be 2-D (N, d), got shape {Y.shape}")
    columns = [f"{name}{i}" for i in range(Y.shape[1])]
    suffix = path.suffix.lower()
    if suffix == ".h5ad":
        _write_h5ad(path, Y, like, name)
        return path
    buffer = _io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, Y)
    elif suffix == ".csv":
        np.savetxt(buffer, Y, delimiter=",", header=",".join(columns), comments="", fmt="%.8g")
    else:
        pa = import_optional("pyarrow")
        import_optional("pyarrow.parquet").write_table(
            pa.table({c: Y[:, i] for i, c in enumerate(columns)}), buffer
        )
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _write_h5ad(path: Path, Y: np.ndarray, like: InputData | None, name: str) -> None:
    anndata = import_optional("anndata")
    pd = import_optional("pandas")
    table = like.table if like is not None else None
    if isinstance(table, anndata.AnnData) and table.n_obs == len(Y):
        adata = table
    else:
        adata = anndata.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(Y))]))
        if like is not None and like.labels is not None and len(like.labels) == len(Y):
            names = like.class_names
            labels = np.asarray(names)[like.labels] if names is not None else like.labels
            adata.obs["label"] = pd.Categorical(labels)
    adata.obsm[f"X_{name}"] = Y
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
