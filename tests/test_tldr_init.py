"""TLDR's linear encoder starts as PCA by default (``encoder_init``)."""

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.decomposition import PCA

from twinlearn import TLDR
from twinlearn.encoders.initialization import init_linear_encoder
from twinlearn.metrics import knn_recall

# one epoch at a learning rate too small to move the weights: the fit returns its start
FROZEN = dict(projector="mlp-1-64", n_epochs=1, batch_size=64, learning_rate=1e-12, random_state=0)


@pytest.fixture
def stretched():
    """400 points in 12-D with decreasing variances and an offset (so the bias matters)."""
    rng = np.random.default_rng(0)
    return (rng.normal(size=(400, 12)) * np.linspace(5, 0.5, 12) + 3.0).astype(np.float32)


def subspace_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal-angle sine between the row spaces of ``a`` and ``b``."""
    qa, _ = np.linalg.qr(a.T)
    qb, _ = np.linalg.qr(b.T)
    return float(np.linalg.norm(qb - qa @ (qa.T @ qb), 2))


def test_default_linear_encoder_starts_as_pca(stretched):
    X = stretched
    assert TLDR().encoder_init == "auto"
    start = TLDR(n_components=4, **FROZEN).fit(X).transform(X)
    np.testing.assert_allclose(start, PCA(4).fit(X).transform(X), atol=2e-3)


def test_random_init_keeps_the_former_start(stretched):
    X = stretched
    start = TLDR(n_components=4, encoder_init="random", **FROZEN).fit(X).transform(X)
    assert not np.allclose(start, PCA(4).fit(X).transform(X), atol=0.1)
    with torch.random.fork_rng():
        torch.manual_seed(5)  # the estimator seeds its own generator: the global one is unused
        again = TLDR(n_components=4, encoder_init="random", **FROZEN).fit(X).transform(X)
    np.testing.assert_array_equal(start, again)


def test_init_fits_a_sample_of_large_data_and_leaves_extra_units_random(stretched):
    rng = np.random.default_rng(1)
    gapped = rng.normal(size=(2000, 12)) * np.r_[10.0, 8, 6, 4, np.full(8, 0.5)]
    layer = torch.nn.Linear(12, 4)
    init_linear_encoder(layer, gapped, seed=0, max_rows=300)
    sampled = layer.weight.detach().numpy().copy()
    assert subspace_gap(sampled, PCA(4).fit(gapped).components_) < 0.1
    init_linear_encoder(layer, gapped, seed=0)
    assert not np.allclose(layer.weight.detach().numpy(), sampled, atol=1e-3)  # the sample served
    wide = torch.nn.Linear(12, 20)  # more outputs than the data's 12 dimensions
    before = wide.weight.detach().clone()
    init_linear_encoder(wide, stretched, seed=0)
    np.testing.assert_allclose(wide.weight[:12].detach().numpy() @ wide.weight[:12].detach().numpy().T,
                               np.eye(12), atol=1e-5)
    assert torch.equal(wide.weight[12:], before[12:])


def test_sparse_and_tensor_inputs_start_at_the_same_pca(stretched):
    X = stretched
    dense = TLDR(n_components=3, **FROZEN).fit(X).transform(X)
    sparse = TLDR(n_components=3, **FROZEN).fit(scipy.sparse.csr_matrix(X)).transform(X)
    tensor = TLDR(n_components=3, **FROZEN).fit(torch.from_numpy(X)).transform(X)
    np.testing.assert_allclose(np.abs(sparse), np.abs(dense), atol=2e-3)  # ARPACK picks signs
    np.testing.assert_allclose(tensor, dense, atol=1e-5)


def test_pca_init_needs_a_linear_encoder(stretched):
    with pytest.raises(ValueError, match="encoder_init='pca' needs encoder='linear'"):
        TLDR(encoder="mlp-1-32", encoder_init="pca", **FROZEN).fit(stretched)
    with pytest.raises(ValueError, match="encoder_init"):
        TLDR(encoder_init="zeros", **FROZEN).fit(stretched)
    with pytest.raises(ValueError, match="features"):
        init_linear_encoder(torch.nn.Linear(5, 2), stretched, seed=0)
    # "auto" leaves a non-linear encoder at its random start, as before
    mlp = TLDR(encoder="mlp-1-32", n_components=3, **FROZEN).fit(stretched).transform(stretched)
    assert np.isfinite(mlp).all()


@pytest.mark.slow  # two 5-epoch fits on 3 000 digits: ~15 s idle, minutes on a loaded machine
def test_pca_start_keeps_more_true_neighbours_than_pca_and_the_random_start(mnist_small):
    x_train = mnist_small[0]
    fast = dict(n_components=16, projector="mlp-1-512", n_neighbors=20, learning_rate=1.6, n_epochs=5,
                batch_size=512, random_state=0)
    pca = knn_recall(x_train, PCA(16).fit_transform(x_train), sample_size=1000)
    new = knn_recall(x_train, TLDR(**fast).fit_transform(x_train), sample_size=1000)
    old = knn_recall(x_train, TLDR(encoder_init="random", **fast).fit_transform(x_train), sample_size=1000)
    assert new > pca and new > old, (new, pca, old)
