import numpy as np
import pytest

from twinlearn.metrics import knn_accuracy, knn_recall, trustworthiness


def test_recall_is_one_for_identity_and_low_for_noise():
    X = np.random.default_rng(0).normal(size=(400, 10)).astype(np.float32)
    assert knn_recall(X, X, 10) == pytest.approx(1.0)
    noise = np.random.default_rng(1).normal(size=(400, 2)).astype(np.float32)
    assert knn_recall(X, noise, 10) < 0.1


def test_recall_on_a_sample_matches_full_when_sample_is_everything():
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    Y = X[:, :2]
    assert knn_recall(X, Y, 5, sample_size=300) == pytest.approx(knn_recall(X, Y, 5))
    part = knn_recall(X, Y, 5, sample_size=100, random_state=3)
    assert 0 < part < 1


def test_knn_accuracy_perfect_on_separable_data(blobs):
    X, y = blobs
    assert knn_accuracy(X[:200], y[:200], X[200:], y[200:], 5) == 1.0
    assert knn_accuracy(X[:200], np.zeros(200, int), X[200:], y[200:], 5) < 0.6


def test_trustworthiness_wraps_sklearn():
    X = np.random.default_rng(0).normal(size=(100, 5))
    assert trustworthiness(X, X) == pytest.approx(1.0)


def test_mismatched_rows_raise():
    with pytest.raises(ValueError, match="rows"):
        knn_recall(np.zeros((10, 2)), np.zeros((9, 2)), 3)
