"""Initial coordinates of a non-parametric embedding (openTSNE's ``initialization`` module):
PCA (the default), a spectral embedding of the neighbour graph (UMAP's default), or random;
and the PCA initialisation of a linear encoder (TLDR's default, :func:`init_linear_encoder`)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse
import torch

from twinlearn.data.disk import is_out_of_core, pca_axes_by_blocks, pca_scores_by_blocks

INITS = ("pca", "spectral", "random")
#: standard deviation of random initial coordinates (openTSNE's)
RANDOM_STD = 1e-4


#: rows a linear encoder's PCA initialisation is fitted on (a random sample of larger data):
#: the leading axes of 50 000 rows are those of the whole set for any practical purpose
PCA_INIT_ROWS = 50_000
#: widest data whose encoder start comes from the exact covariance (8 192² float64 = 512 MiB)
COVARIANCE_MAX_FEATURES = 8192


def _pca(X: np.ndarray | torch.Tensor | scipy.sparse.spmatrix, k: int, seed: int):
    """An unfitted scikit-learn PCA of ``k <= min(X.shape)`` components with the solver that
    suits ``X``, and ``X`` as float32 (NumPy or sparse) to fit it on."""
    from sklearn.decomposition import PCA

    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    solver = "randomized" if min(X.shape) > 4 * k else "full"
    if scipy.sparse.issparse(X):  # sklearn's PCA centres sparse data implicitly with ARPACK
        solver = "arpack" if k < min(X.shape) else "covariance_eigh"
    X = X.astype(np.float32) if scipy.sparse.issparse(X) else np.asarray(X, dtype=np.float32)
    return PCA(k, svd_solver=solver, random_state=seed % 2**32), X


def pca_init(X: np.ndarray | torch.Tensor, n_components: int, seed: int) -> np.ndarray:
    """PCA scores scaled so the first component has standard deviation 1 (CNE's default
    initialisation; later components keep their relative scale)."""
    k = min(n_components, X.shape[0], X.shape[1])
    # data without variance (all rows equal) is valid: its scores are 0, and sklearn's
    # explained-variance ratio 0/0 would only warn about an attribute not used here
    with np.errstate(invalid="ignore", divide="ignore"):
        if is_out_of_core(X):  # a file on disk (memmap, HDF5, zarr) is never read whole
            scores = pca_scores_by_blocks(X, k)
        else:
            pca, X_in = _pca(X, k, seed)
            scores = pca.fit_transform(X_in)
    std = scores[:, 0].std()
    scores = scores / (std if std > 0 else 1.0)
    if k < n_components:
        # more output dims than the data has: a zero column would get no gradient ever
        noise = np.random.default_rng(seed).normal(scale=1e-4, size=(X.shape[0], n_components - k))
        scores = np.hstack([scores, noise])
    return scores.astype(np.float32)


def spectral_init(graph: scipy.sparse.spmatrix, n_components: int, seed: int) -> np.ndarray:
    """Laplacian eigenmaps of the symmetric neighbour graph, scaled as :func:`pca_init` (the
    first coordinate has standard deviation 1). A graph whose eigenproblem does not converge
    (disconnected pieces can stall it) falls back to random coordinates with a warning."""
    from sklearn.manifold import spectral_embedding

    try:
        Y = spectral_embedding(graph, n_components=n_components, random_state=seed % 2**32, drop_first=True)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as err:
        warnings.warn(f"spectral initialisation failed ({err}); using random coordinates", stacklevel=3)
        return random_init(graph.shape[0], n_components, seed)
    std = Y[:, 0].std()
    return (Y / (std if std > 0 else 1.0)).astype(np.float32)


def random_init(n_samples: int, n_components: int, seed: int) -> np.ndarray:
    """Gaussian coordinates with standard deviation ``RANDOM_STD``."""
    return (np.random.default_rng(seed).normal(size=(n_samples, n_components)) * RANDOM_STD).astype(np.float32)


def rescaled(Y: np.ndarray, *, std: float | None = None, max_abs: float | None = None) -> np.ndarray:
    """``Y`` scaled as a whole (its coordinates keep their ratios) so that its first coordinate
    has standard deviation ``std``, or else its largest |coordinate| is ``max_abs``; a start
    without spread (all points equal) is returned as it is."""
    current = float(Y[:, 0].std()) if std is not None else float(np.abs(Y).max(initial=0.0))
    target = std if std is not None else max_abs
    if target is None or current == 0.0:
        return Y
    return (Y * np.float32(target / current)).astype(np.float32)


def check_init(init: object, n_samples: int, n_components: int) -> np.ndarray | str:
    """``init`` as one of :data:`INITS` or as an ``(n_samples, n_components)`` float array."""
    from twinlearn.data.arrays import validate_features

    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init={init!r} is not supported; give one of {INITS} or an array")
        return init
    init = validate_features(init, name="init")
    init = init.cpu().numpy() if isinstance(init, torch.Tensor) else np.asarray(init)
    if init.shape != (n_samples, n_components):
        raise ValueError(f"init has shape {init.shape}, expected (n_samples, n_components) = "
                         f"({n_samples}, {n_components})")
    return init


def initial_coordinates(
    kind: str, X: np.ndarray | torch.Tensor, graph: scipy.sparse.spmatrix, n_components: int, seed: int
) -> np.ndarray:
    """``"pca"``, ``"spectral"`` (of ``graph``) or ``"random"`` coordinates for the rows of ``X``."""
    if kind == "pca":
        return pca_init(X, n_components, seed)
    if kind == "spectral":
        return spectral_init(graph, n_components, seed)
    return random_init(X.shape[0], n_components, seed)


def _principal_axes(X: np.ndarray | torch.Tensor | scipy.sparse.spmatrix, k: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` leading principal axes of the rows of ``X`` and their mean, from the exact
    covariance a block at a time: dense, sparse, tensor and on-disk inputs holding the same
    rows start the encoder at the same axes (solvers that differ by input type would not).
    Wider in-memory data than :data:`COVARIANCE_MAX_FEATURES` goes to scikit-learn's PCA."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu()
    if X.shape[1] <= COVARIANCE_MAX_FEATURES or is_out_of_core(X):
        return pca_axes_by_blocks(X, k)
    pca, X = _pca(X, k, seed)  # wide data: a d × d covariance would not fit
    with np.errstate(invalid="ignore", divide="ignore"):  # as in pca_init: constant data is valid
        pca.fit(X)
    # ARPACK (sparse input) returns its axes as a reversed view, which torch cannot wrap
    return np.ascontiguousarray(pca.components_), np.ascontiguousarray(pca.mean_).ravel()


def init_linear_encoder(
    layer: torch.nn.Linear, X: np.ndarray | torch.Tensor | scipy.sparse.spmatrix, seed: int,
    max_rows: int = PCA_INIT_ROWS,
) -> None:
    """Set a linear encoder ``y = W x + b`` to PCA: the rows of ``W`` are the leading principal
    axes of ``X`` (unit length, by decreasing variance) and ``b = −W·mean``, so that before any
    training ``y`` is exactly PCA's ``transform``. The axes are fitted on at most ``max_rows``
    random rows. Output units beyond the data's rank keep their random initialisation.
    """
    n, n_features = X.shape
    if layer.in_features != n_features:
        raise ValueError(f"the encoder takes {layer.in_features} features but X has {n_features}")
    if n > max_rows:  # sorted: a memory map is read front to back
        X = X[np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))]
    components, mean = _principal_axes(X, min(layer.out_features, X.shape[0], n_features), seed)
    k = components.shape[0]
    like = {"dtype": layer.weight.dtype, "device": layer.weight.device}
    axes, mean = torch.tensor(components, **like), torch.tensor(mean, **like)
    with torch.no_grad():
        layer.weight[:k] = axes
        if layer.bias is not None:
            layer.bias[:k] = -(axes @ mean)
