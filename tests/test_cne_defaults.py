"""CNE's defaults that follow the data's size: epochs (umap-learn's rule) and the batch (about
16 steps per epoch); the UMAP loss's kernel and the placement of new points, as umap-learn's;
the old values stay reachable by passing them."""

import numpy as np
import pytest

import twinlearn.estimators._cne_inputs as cne_inputs
from twinlearn import CNE
from twinlearn.estimators._cne_inputs import (
    UMAP_A,
    UMAP_B,
    default_batch_size,
    default_epochs,
    edges_per_epoch,
)


class _Stop(Exception):
    pass


def _first_epoch_settings(model: CNE, X: np.ndarray) -> dict:
    """The epochs and batch a fit chose, read after its first epoch (the fit stops there)."""
    seen = {}

    def spy(trainer, epoch, loss):
        seen.update(n_epochs=trainer.n_epochs, batch=getattr(trainer.pair_source, "batch_size", None),
                    steps=len(trainer.pair_source),
                    negatives=getattr(getattr(trainer.objective, "loss", None), "negative_samples", None))
        raise _Stop

    with pytest.raises(_Stop):
        model.fit(X, callbacks=[spy])
    return seen


def test_epochs_follow_umap_learns_rule():
    assert default_epochs(5_000) == default_epochs(10_000) == 500
    assert default_epochs(10_001) == default_epochs(70_000) == 200


def test_batch_gives_about_sixteen_steps_per_epoch():
    # MNIST-70k draws ~470 000 edges per epoch: the old fixed 32 768 stays its default
    assert default_batch_size(470_000) == 32768
    assert default_batch_size(33_000) == 2048
    assert default_batch_size(10) == 1024 and default_batch_size(1e9) == 32768
    for edges in (20_000, 60_000, 150_000):
        assert 8 <= edges / default_batch_size(edges) <= 32


def test_edges_per_epoch_of_weighted_and_binary_graphs():
    assert edges_per_epoch(6, None) == 6.0
    assert edges_per_epoch(3, np.array([0.5, 1.0, 0.25])) == pytest.approx(1.75)


def test_fit_uses_the_size_defaults_and_the_old_ones_when_given():
    X = np.random.default_rng(0).normal(size=(600, 5)).astype(np.float32)
    auto = _first_epoch_settings(CNE(random_state=0), X)
    graph = CNE(n_epochs=1, random_state=0).fit(X).neighbor_graph_
    assert auto["n_epochs"] == 500
    assert auto["batch"] == default_batch_size(graph.data.sum() / graph.data.max())
    assert auto["steps"] > 1
    old = _first_epoch_settings(CNE(n_epochs=200, batch_size=32768, random_state=0), X)
    assert old == {"n_epochs": 200, "batch": 32768, "steps": 1, "negatives": 5}


def test_the_network_keeps_the_fixed_defaults():
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    seen = _first_epoch_settings(CNE(parametric=True, random_state=0), X)
    assert seen["n_epochs"] == 200 and seen["batch"] == 32768


def test_the_t_sne_end_takes_openTSNEs_750_steps_unless_told():
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    seen = _first_epoch_settings(CNE(negative_samples="all", random_state=0), X)
    assert seen["n_epochs"] == 750 and seen["steps"] == 1  # one full gradient step per epoch
    told = _first_epoch_settings(CNE(negative_samples="all", n_epochs=20, random_state=0), X)
    assert told["n_epochs"] == 20


def test_the_umap_loss_takes_umap_learns_kernel_unless_told():
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    def fit(**kw):
        return CNE(n_epochs=3, random_state=0, **kw).fit(X).embedding_

    default = fit(loss_mode="umap")
    np.testing.assert_array_equal(default, fit(loss_mode="umap", a=UMAP_A, b=UMAP_B))
    assert np.abs(default - fit(loss_mode="umap", a=1, b=1)).max() > 1e-3  # the Cauchy kernel before
    np.testing.assert_array_equal(fit(loss_mode="neg"), fit(loss_mode="neg", a=1, b=1))
    with pytest.raises(ValueError, match="cosine"):
        CNE(metric="cosine", a=2.0).fit(X)
    with pytest.raises(ValueError, match="a, b"):
        CNE(negative_samples="all", b=0.9).fit(X)


def test_transform_places_by_fuzzy_memberships_unless_told(monkeypatch):
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    seen = []

    def spy(embedding, neighbors, recipe, **kw):
        seen.append((kw["weights"], recipe.learning_rate))
        return np.zeros((len(neighbors), embedding.shape[1]), np.float32)

    monkeypatch.setattr(cne_inputs, "place_points", spy)
    for placement in ("fuzzy", "mean"):
        model = CNE(n_epochs=2, random_state=0, placement=placement).fit(X)
        model.transform(X[:7] + 0.01)
    (fuzzy, fuzzy_lr), (mean, mean_lr) = seen
    assert CNE().placement == "fuzzy"
    assert fuzzy.shape == (7, 15) and np.allclose(fuzzy.max(axis=1), 1.0) and fuzzy.min() < 0.5
    assert mean is None and fuzzy_lr == pytest.approx(0.5 * mean_lr)


def test_the_umap_loss_takes_fifteen_negatives_on_small_tables_unless_told(monkeypatch):
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    assert CNE().negative_samples is None
    assert _first_epoch_settings(CNE(loss_mode="umap", random_state=0), X)["negatives"] == 15
    assert _first_epoch_settings(CNE(loss_mode="umap", negative_samples=5, random_state=0), X)["negatives"] == 5
    assert _first_epoch_settings(CNE(loss_mode="neg", random_state=0), X)["negatives"] == 5
    assert _first_epoch_settings(CNE(loss_mode="umap", parametric=True, random_state=0), X)["negatives"] == 5
    monkeypatch.setattr(cne_inputs, "SMALL_DATA", 299)  # the same data counted as large
    assert _first_epoch_settings(CNE(loss_mode="umap", random_state=0), X)["negatives"] == 5
