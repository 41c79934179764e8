"""Shared fixtures: real MNIST from ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from twinlearn.data import find_shared_data, load_mnist


@pytest.fixture(scope="session")
def mnist():
    """(x_train, y_train, x_test, y_test), float32 pixels in [0, 1]."""
    if find_shared_data("mnist.npz") is None:
        pytest.skip("real data not found: ../shared/data/mnist.npz (or set $TWINLEARN_DATA)")
    return load_mnist()


@pytest.fixture(scope="session")
def mnist_small(mnist):
    """A random (class-balanced in expectation) 3 000 / 1 000 train/test subset: the files are
    sorted by digit, so a prefix would hold only zeros."""
    x_train, y_train, x_test, y_test = mnist
    rng = np.random.default_rng(0)
    tr = rng.choice(len(x_train), 3000, replace=False)
    te = rng.choice(len(x_test), 1000, replace=False)
    return x_train[tr], y_train[tr], x_test[te], y_test[te]


@pytest.fixture
def blobs():
    """Small Gaussian blobs: 3 well separated clusters in 20-D."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(3, 20))
    labels = rng.integers(0, 3, size=300)
    X = centers[labels] + rng.normal(size=(300, 20))
    return X.astype(np.float32), labels


#: tiny settings under which each estimator trains in well under a second (contract tests)
TINY_PARAMS = {
    "TLDR": dict(n_components=2, projector="mlp-1-16", n_epochs=1, batch_size=8, n_neighbors=3, random_state=0),
    "CNE": dict(n_epochs=1, batch_size=16, n_neighbors=3, transform_epochs=1, random_state=0),
    "CNE(parametric=True)": dict(parametric=True, n_epochs=1, batch_size=16, n_neighbors=3, random_state=0),
    "TSimCNE": dict(backbone="small_cnn", total_epochs=[1], batch_size=4, device="cpu", random_state=0),
    "ReLIC": dict(backbone="small_cnn", n_epochs=1, batch_size=4, proj_hidden_dim=16, proj_out_dim=8,
                  random_state=0),
}
VECTOR_ESTIMATORS = ("TLDR", "CNE", "CNE(parametric=True)")
IMAGE_ESTIMATORS = ("TSimCNE", "ReLIC")


def make_tiny(key: str, **overrides):
    """A fresh estimator of ``key`` (a ``TINY_PARAMS`` key) with tiny settings."""
    import twinlearn

    cls = getattr(twinlearn, key.split("(")[0])
    return cls(**{**TINY_PARAMS[key], **overrides})


def tiny_vectors(n: int = 40, d: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


def tiny_images(n: int = 8, side: int = 8) -> np.ndarray:
    """uint8 images (N, H, W, 3)."""
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def fitted_tiny():
    """One tiny fitted model of every estimator, keyed as ``TINY_PARAMS`` (read-only use)."""
    return {
        key: make_tiny(key).fit(tiny_images() if key in IMAGE_ESTIMATORS else tiny_vectors())
        for key in TINY_PARAMS
    }


def damaged(original: bytes, case: tuple) -> bytes:
    """``original`` with a generated damage ``(kind, how)``: ``("flip", [(where, mask), ...])``
    XORs bytes at relative positions, ``("truncate", where)`` cuts the file there, and any other
    kind appends the bytes ``how``."""
    kind, how = case
    data = bytearray(original)
    if kind == "flip":
        for where, mask in how:
            data[int(where * len(data))] ^= mask
    elif kind == "truncate":
        del data[int(how * len(data)):]
    else:
        data += how
    return bytes(data)


def exit_status_and_stderr(entry, argv, capsys) -> tuple[object, str]:
    """A command-line entry point's exit status (returned, or raised by argparse) and stderr."""
    try:
        status = entry(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def loo_knn_accuracy(Z: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out k-NN majority vote within the map (each cell's neighbours exclude it)."""
    neighbours = NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(return_distance=False)
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    votes = np.zeros((len(codes), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(codes)), k), codes[neighbours].ravel()), 1)
    return float((votes.argmax(axis=1) == codes).mean())
