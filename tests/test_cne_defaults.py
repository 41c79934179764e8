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
    old = _first_epoch_settings(CNE(loss_mode="infonce", n_epochs=200, batch_size=32768, random_state=0), X)
    assert old == {"n_epochs": 200, "batch": 32768, "steps": 1, "negatives": 5}


def test_the_network_trains_forty_epochs_of_8192_at_1e_2_unless_told():
    X = np.random.default_rng(0).normal(size=(300, 5)).astype(np.float32)
    model = CNE(parametric=True, random_state=0)
    seen = _first_epoch_settings(model, X)
    assert seen["n_epochs"] == 40 and seen["batch"] == 8192
    assert model._recipe().learning_rate == 1e-2 and model._recipe().optimizer == "adam"
    old = CNE(parametric=True, loss_mode="infonce", n_epochs=200, batch_size=32768, learning_rate=1e-3,
              random_state=0)
    assert _first_epoch_settings(old, X) == {"n_epochs": 200, "batch": 32768, "steps": 1, "negatives": 5}
    assert old._recipe().learning_rate == 1e-3 and old._recipe().mode == "infonce"


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


@pytest.mark.parametrize("params, expected", [
    ({}, "umap"),
    ({"parametric": True}, "neg"),
    ({"s": 0.0}, "infonce"), ({"ince_spec": 2.0}, "infonce"),
    ({"neg_spec": 1.0}, "neg"), ({"Z_bar": 100.0}, "neg"), ({"parametric": True, "s": 1.0}, "infonce"),
    ({"metric": "cosine"}, "infonce"), ({"eps": 0.5}, "infonce"),
    ({"negative_samples": "all"}, "infonce"), ({"negative_samples": "full"}, "infonce"),
    ({"negative_samples": 10}, "umap"),
    ({"parametric": True, "n_components": 8, "nesting_dims": [2, 8]}, "infonce"),
    ({"loss_mode": "nce"}, "nce"), ({"loss_mode": "neg_sample"}, "neg"),
])
def test_the_default_loss_is_the_one_the_settings_call_for(params, expected):
    assert CNE().loss_mode is None
    assert CNE(**params)._loss_mode() == expected


def test_a_default_fit_trains_the_umap_loss_from_umap_learns_scale():
    X = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32)

    def start(init="pca", **kw):  # a learning rate of ~0 leaves the start where it was
        model = CNE(n_epochs=1, learning_rate=1e-12, random_state=0, **kw).fit(X, init=init)
        return model, model.embedding_

    model, umap_start = start()
    assert model.loss_mode_ == "umap" and model.spectrum_.spec == 0  # UMAP's loss has no spectrum
    assert np.abs(umap_start).max() == pytest.approx(10.0, rel=1e-4)
    _, unit = start(init_scale=1.0)
    assert unit[:, 0].std() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(umap_start, unit * (10.0 / np.abs(unit).max()), rtol=1e-4, atol=1e-6)
    model, infonce = start(loss_mode="infonce")
    assert model.loss_mode_ == "infonce"
    np.testing.assert_allclose(infonce, unit, rtol=1e-5, atol=1e-6)  # InfoNCE keeps PC1's std 1
    _, spread = start(loss_mode="infonce", init_scale=3.0, init="random")
    assert spread[:, 0].std() == pytest.approx(3.0, rel=1e-4)
    with pytest.raises(ValueError, match="init_scale"):
        CNE(init_scale=0.0).fit(X)


def test_a_saved_default_model_keeps_the_loss_it_trained_with(tmp_path):
    X = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    model = CNE(n_epochs=2, random_state=0).fit(X)
    model.save(tmp_path / "cne.safetensors")
    loaded = CNE().load(tmp_path / "cne.safetensors", init=True)
    assert loaded.loss_mode is None and loaded.loss_mode_ == model.loss_mode_ == "umap"
    np.testing.assert_array_equal(loaded.embedding_, model.embedding_)
    assert loaded.transform(X[:5] + 0.01).shape == (5, 2)  # placed with the UMAP loss again
