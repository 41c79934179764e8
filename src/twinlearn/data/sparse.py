"""Sparse feature matrices (scipy CSR/CSC: TF-IDF, counts) for TLDR and CNE.

The kNN graph of sparse rows is searched on the sparse matrix itself
(:mod:`twinlearn.neighbors.sparse`); a network sees dense batches: :class:`SparseFeatureStore`
densifies only the rows of each batch (``batch × n_features × 4`` bytes, e.g. 1024 rows of
100 000 TF-IDF terms: 400 MB), and chunked inference does the same per chunk.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import scipy.sparse
import torch

from twinlearn.data.arrays import ArrayLike, to_tensor, validate_features


def validate_sparse_features(X: scipy.sparse.spmatrix, *, name: str = "X", min_samples: int = 1) -> scipy.sparse.csr_matrix:
    """Check a scipy sparse matrix (2-D, real dtype, finite stored values, enough rows, at
    least one column) and return it as float32 CSR."""
    if X.ndim != 2:
        raise ValueError(f"Expected 2D sparse matrix for {name}, got shape {X.shape}")
    if X.dtype.kind not in "fiub":  # booleans are 0/1, as in dense input
        raise TypeError(f"{name} has dtype {X.dtype}; a real numeric dtype (float, int, uint or "
                        "bool) is expected")
    n, d = X.shape
    if n < min_samples or d < 1:
        raise ValueError(f"{name} has shape {X.shape}; at least {min_samples} row(s) and 1 column are required")
    X = scipy.sparse.csr_matrix(X, dtype=np.float32)
    if not np.isfinite(X.data).all():
        raise ValueError(f"Input {name} contains NaN or infinity (or values beyond float32 range)")
    return X


def validate_input(X: object, *, name: str = "X", min_samples: int = 1, accept_sparse: bool = False):
    """:func:`~twinlearn.data.arrays.validate_features`, or with ``accept_sparse`` a scipy
    sparse matrix through :func:`validate_sparse_features`."""
    if accept_sparse and scipy.sparse.issparse(X):
        return validate_sparse_features(X, name=name, min_samples=min_samples)
    return validate_features(X, name=name, min_samples=min_samples)


def dense_block(block: ArrayLike | scipy.sparse.spmatrix, device: torch.device) -> torch.Tensor:
    """:func:`~twinlearn.data.arrays.to_tensor`, densifying a sparse block first."""
    if scipy.sparse.issparse(block):
        block = block.toarray()
    return to_tensor(block, device)


def sparse_block(block: scipy.sparse.spmatrix, device: torch.device) -> torch.Tensor:
    """Rows of a scipy matrix as a float32 torch sparse CSR tensor on ``device``: an
    ``nn.Linear`` takes it as its input (``F.linear`` of a CSR batch, gradients included), so
    the first layer of a network multiplies only the stored values."""
    block = scipy.sparse.csr_matrix(block, dtype=np.float32)
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta" notice, each batch
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(block.indptr.astype(np.int64)),
            torch.from_numpy(block.indices.astype(np.int64)),
            torch.from_numpy(block.data), size=block.shape, device=device,
        )


class SparseFeatureStore:
    """Rows of a CSR matrix gathered by index (the interface of
    :class:`~twinlearn.data.arrays.FeatureStore`; the matrix stays sparse), as torch sparse CSR
    batches with ``sparse_batches`` (the network's first linear layer takes them), else as
    dense float32 batches (bf16/fp16 autocast has no sparse matrix product on a CPU)."""

    out_of_core = False
    on_device = None  # never one dense device tensor

    def __init__(self, X: scipy.sparse.csr_matrix, device: torch.device, sparse_batches: bool = True) -> None:
        self.n_samples, self.n_features = int(X.shape[0]), int(X.shape[1])
        self.device = device
        self.sparse_batches = sparse_batches
        self._host = X

    def gather(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = self._host[idx.cpu().numpy()]
        return sparse_block(rows, self.device) if self.sparse_batches else dense_block(rows, self.device)

    def chunks(self, chunk_rows: int) -> Iterator[torch.Tensor]:
        for start in range(0, self.n_samples, chunk_rows):
            yield dense_block(self._host[start : start + chunk_rows], self.device)


def feature_store(X: object, device: torch.device, force_on_device: bool = False, precision: str = "fp32"):
    """A :class:`SparseFeatureStore` for sparse ``X`` (sparse batches in fp32), else a
    ``FeatureStore``."""
    from twinlearn.data.arrays import FeatureStore

    if scipy.sparse.issparse(X):
        return SparseFeatureStore(X, device, sparse_batches=precision == "fp32")
    return FeatureStore(X, device, force_on_device=force_on_device)
