"""Defects of the outside red-team pass (issue 11) that live in the estimators, each with the
class of cases behind it: every estimator × mode round-trips through a file, divergence in the
last step is caught, a refit or a resume never reuses another run's graph or checkpoint, a
folder has one writer, bad options fail before the work, defaults work on small data."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGE_ESTIMATORS, TINY_PARAMS, make_tiny, tiny_images, tiny_vectors

from twinlearn import CNE, TLDR
from twinlearn.training import Trainer, TrainingDiverged

CNE_MODES = ["infonce", "neg", "nce", "umap"]


def _data(key):
    return tiny_images() if key in IMAGE_ESTIMATORS else tiny_vectors()


def _round_trip(model, X, tmp_path):
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = type(model)(device="cpu")
    loaded = loaded.load(path, init=True) if isinstance(model, (TLDR, CNE)) else loaded.load(path)
    probe = X[:5] if not isinstance(model, CNE) or model.parametric else np.arange(5)
    np.testing.assert_allclose(loaded.transform(probe), model.transform(probe), atol=1e-6)


@pytest.mark.parametrize("mode", CNE_MODES)
@pytest.mark.parametrize("parametric", [False, True])
def test_every_cne_mode_round_trips_and_its_final_model_loads(mode, parametric, tmp_path):
    X = tiny_vectors()
    key = "CNE(parametric=True)" if parametric else "CNE"
    model = make_tiny(key, loss_mode=mode).fit(X, output_folder=tmp_path / "run")
    _round_trip(model, X, tmp_path)
    final = CNE().load(tmp_path / "run" / "final_model.safetensors", init=True)
    assert final.spectrum_ == model.spectrum_


@pytest.mark.parametrize("key", ["TLDR", "TSimCNE", "ReLIC"])
def test_other_estimators_round_trip(key, fitted_tiny, tmp_path):
    _round_trip(fitted_tiny[key], _data(key), tmp_path)


@pytest.mark.parametrize("key, params", [
    ("TLDR", dict(learning_rate=1e6, n_epochs=1)),
    ("CNE(parametric=True)", dict(learning_rate=1e6, optimizer="sgd", clip_grad=None)),
    ("TSimCNE", dict(lr=1e6)),
    ("ReLIC", dict(learning_rate=1e6)),
])
def test_divergence_in_the_last_steps_is_caught(key, params):
    """At a huge LR the loss may stay finite up to the last step while the weights (or the EMA
    target) it leaves are not: fit must not return such a model."""
    model = make_tiny(key, **params)
    try:
        model.fit(_data(key))
    except TrainingDiverged:
        return
    Z = model.transform(_data(key)[:4])
    assert np.isfinite(Z).all(), "fit returned a model whose output is not finite"


def test_final_weights_are_checked_even_when_every_loss_was_finite(monkeypatch):
    calls = []
    original = Trainer.check_weights
    monkeypatch.setattr(Trainer, "check_weights", lambda self: (calls.append(1), original(self))[1])
    make_tiny("TLDR").fit(tiny_vectors())
    assert calls == [1]


def test_tldr_refit_on_other_data_of_the_same_size_searches_a_new_graph():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(60, 5)).astype(np.float32)
    model = make_tiny("TLDR", n_neighbors=4)
    graph_a = model.fit(A).knn_indices_.copy()
    graph_b = model.fit(B).knn_indices_
    np.testing.assert_array_equal(graph_b, make_tiny("TLDR", n_neighbors=4).compute_knn(B).knn_indices_)
    assert not np.array_equal(graph_a, graph_b)


def test_tldr_compute_knn_serves_the_next_fit_of_the_same_data_only():
    X = tiny_vectors(60)
    model = make_tiny("TLDR", n_neighbors=4).compute_knn(X)
    model.knn_indices_ = np.roll(model.knn_indices_, 1, axis=1)  # mark the pending graph
    marked = model.knn_indices_.copy()
    model._pending_knn = (marked, model._pending_knn[1])
    np.testing.assert_array_equal(model.fit(X).knn_indices_, marked)
    assert not np.array_equal(model.fit(X).knn_indices_, marked)  # used once


@pytest.mark.parametrize("key", ["TLDR", "CNE", "CNE(parametric=True)", "ReLIC"])
@pytest.mark.parametrize("change", ["data", "learning_rate"])
def test_resume_refuses_a_checkpoint_of_another_run(key, change, tmp_path):
    X = _data(key)
    make_tiny(key, n_epochs=2).fit(X, output_folder=tmp_path)
    other = make_tiny(key, n_epochs=3)
    if change == "data":
        X = X[::-1].copy()
    else:
        other.set_params(learning_rate=0.123)
    with pytest.raises(ValueError, match="checkpoint of another run"):
        other.fit(X, output_folder=tmp_path, resume=True)
    # the same run resumes: one more epoch
    resumed = make_tiny(key, n_epochs=3).fit(_data(key), output_folder=tmp_path, resume=True)
    assert resumed.n_epochs_trained_ == 3


def test_a_folder_has_one_writer_at_a_time(tmp_path):
    X = tiny_vectors(200)
    started = threading.Event()

    def slow_epoch(trainer, epoch, loss):
        started.set()
        time.sleep(1.0)

    runner = threading.Thread(target=lambda: make_tiny("CNE", n_epochs=3).fit(
        X, output_folder=tmp_path, callbacks=[slow_epoch]))
    runner.start()
    assert started.wait(60)
    try:
        with pytest.raises(ValueError, match="in use by another training process"):
            make_tiny("CNE").fit(X, output_folder=tmp_path)
    finally:
        runner.join()
    make_tiny("CNE").fit(X, output_folder=tmp_path)  # free again afterwards


@pytest.mark.parametrize("call, error, match", [
    (lambda X, f: make_tiny("CNE").fit(X, output_folder=f), ValueError, "is a file"),
    (lambda X, f: make_tiny("TLDR").fit(X, output_folder=f), ValueError, "is a file"),
    (lambda X, f: make_tiny("CNE").fit(X, callbacks=[3]), TypeError, "callbacks"),
    (lambda X, f: make_tiny("CNE", random_state=2**64).fit(X), ValueError, "random_state"),
    (lambda X, f: make_tiny("CNE").fit(X, init="umap"), ValueError, "init="),
    (lambda X, f: make_tiny("TLDR").fit(X, resume=True), ValueError, "output_folder"),
])
def test_bad_options_fail_before_any_work(call, error, match, tmp_path, monkeypatch):
    from twinlearn.neighbors import KNNIndex

    def no_work(*args, **kwargs):
        raise AssertionError("the kNN search started before the bad option was refused")

    monkeypatch.setattr(KNNIndex, "build", no_work)
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    with pytest.raises(error, match=match):
        call(tiny_vectors(), a_file)


@pytest.mark.parametrize("init", ["pca", "spectral", "random"])
def test_cne_init_strings_of_umap_and_opentsne(init, blobs):
    X, y = blobs
    # from umap-learn's random start (±10) its loss needs ~100 epochs to gather the blobs (30: 0.85)
    model = CNE(n_epochs=100, batch_size=1024, random_state=0).fit(X, init=init)
    from twinlearn.metrics import knn_accuracy

    assert knn_accuracy(model.embedding_[:200], y[:200], model.embedding_[200:], y[200:]) > 0.95


def test_parametric_cne_refuses_init_coordinates():
    with pytest.raises(ValueError, match="non-parametric"):
        make_tiny("CNE(parametric=True)").fit(tiny_vectors(), init=np.zeros((40, 2)))


@pytest.mark.parametrize("key", ["TLDR", "CNE(parametric=True)"])
def test_dataframe_feature_names_are_kept_and_checked(key):
    X = pd.DataFrame(tiny_vectors(), columns=[f"g{i}" for i in range(5)])
    model = make_tiny(key).fit(X)
    assert list(model.feature_names_in_) == list(X.columns)
    assert model.transform(X).shape[0] == len(X)
    with pytest.raises(ValueError, match="feature names"):
        model.transform(X[X.columns[::-1]])


def test_defaults_work_on_small_data():
    X = np.random.default_rng(0).random((500, 10)).astype(np.float32)
    Z = TLDR(n_epochs=1, random_state=0).fit_transform(X)  # batch_size 1024 > 500 samples
    assert Z.shape == (500, 32) and np.isfinite(Z).all()
    with pytest.warns(UserWarning, match="n_neighbors=15 is not smaller"):
        Y = CNE(n_epochs=2, random_state=0).fit_transform(X[:12])
    assert Y.shape == (12, 2) and np.isfinite(Y).all()


def test_tiny_settings_cover_every_estimator():
    assert set(TINY_PARAMS) == {"TLDR", "CNE", "CNE(parametric=True)", "TSimCNE", "ReLIC"}
