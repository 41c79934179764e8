"""Shared fixtures: real MNIST from ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import numpy as np
import pytest

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
