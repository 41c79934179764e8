import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from twinlearn import TLDR
from twinlearn.metrics import knn_accuracy

FAST = dict(projector="mlp-1-128", n_epochs=3, batch_size=64, random_state=0)


def test_fit_transform_shapes_and_types(blobs):
    X, _ = blobs
    model = TLDR(n_components=4, **FAST).fit(X)
    Z = model.transform(X)
    assert isinstance(Z, np.ndarray) and Z.shape == (300, 4) and Z.dtype == np.float32
    Zt = model.transform(torch.from_numpy(X))
    assert isinstance(Zt, torch.Tensor) and np.allclose(Zt.numpy(), Z, atol=1e-6)
    assert len(model.loss_history_) == 3 and model.knn_indices_.shape == (300, 5)
    assert model.projector_ is None
    normed = model.transform(X, l2_norm=True)
    assert np.allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)


def test_memmap_input_trains_out_of_core_and_matches_in_memory(blobs, tmp_path):
    X, _ = blobs
    mm = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    a = TLDR(n_components=3, **FAST).fit(mm).transform(mm)
    b = TLDR(n_components=3, **FAST).fit(X).transform(X)
    assert np.allclose(a, b, atol=1e-4)


def test_random_state_repeats_and_leaves_global_rng_alone(blobs):
    X, _ = blobs
    torch.manual_seed(123)
    np.random.seed(7)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = TLDR(n_components=3, **FAST).fit_transform(X)
    b = TLDR(n_components=3, **FAST).fit_transform(X)
    assert np.array_equal(a, b)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    c = TLDR(n_components=3, **{**FAST, "random_state": 1}).fit_transform(X)
    assert not np.allclose(a, c)


def test_sklearn_api(blobs):
    X, _ = blobs
    model = TLDR(n_components=3, **FAST)
    assert clone(model).get_params() == model.get_params()
    model.set_params(n_components=2)
    assert model.n_components == 2
    pipe = make_pipeline(StandardScaler(), TLDR(n_components=2, **FAST))
    assert pipe.fit_transform(X).shape == (300, 2)
    assert model.fit(X, None) is model


def test_save_load_roundtrip(blobs, tmp_path):
    X, _ = blobs
    model = TLDR(n_components=3, **FAST).fit(X, retain_projector=True)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = TLDR().load(path, init=True)
    assert loaded.n_components == 3 and loaded.projector == "mlp-1-128"
    assert np.array_equal(loaded.transform(X), model.transform(X))
    assert loaded.projector_ is not None
    same_arch = TLDR(n_components=3, projector="mlp-1-128").load(path)
    assert np.array_equal(same_arch.transform(X), model.transform(X))
    with pytest.raises(ValueError, match="different architecture"):
        TLDR(n_components=5).load(path)


def test_load_rejects_a_file_whose_tensors_do_not_match(blobs, tmp_path):
    from twinlearn import io

    X, _ = blobs
    path = tmp_path / "m.safetensors"
    TLDR(n_components=3, **FAST).fit(X).save(path)
    tensors, meta = io.load_tensors(path)
    tensors["encoder.0.weight"] = torch.zeros(7, 7)
    io.save_tensors(path, tensors, {k: v for k, v in meta.items() if k not in ("format_version", "library_version")})
    with pytest.raises(ValueError, match="do not match"):
        TLDR().load(path, init=True)


def test_knn_save_load_and_precomputed_graph(blobs, tmp_path):
    X, _ = blobs
    model = TLDR(n_components=2, **FAST).compute_knn(X)
    model.save_knn(tmp_path / "knn.npy")
    other = TLDR(n_components=2, **FAST).load_knn(tmp_path / "knn.npy")
    assert np.array_equal(other.get_knn(), model.get_knn())
    a = other.fit(X).transform(X)
    b = TLDR(n_components=2, **FAST).fit(X, knn_graph=model.get_knn()).transform(X)
    assert np.array_equal(a, b)


def test_snapshots_and_resume_equal_uninterrupted_run(blobs, tmp_path):
    X, _ = blobs
    params = dict(FAST, n_epochs=4)
    full = TLDR(n_components=3, **params).fit(X)
    first = TLDR(n_components=3, **params).fit(X, epochs=4, output_folder=tmp_path, snapshot_freq=2)
    assert (tmp_path / "snapshot_2.safetensors").exists() and (tmp_path / "final_model.safetensors").exists()
    # simulate an interruption after epoch 2: put the epoch-2 snapshot back as the latest
    (tmp_path / "snapshot_2.safetensors").replace(tmp_path / "latest_snapshot.safetensors")
    resumed = TLDR(n_components=3, **params).fit(X, output_folder=tmp_path, resume=True)
    assert resumed.loss_history_[:2] == full.loss_history_[:2]
    assert np.allclose(resumed.transform(X), full.transform(X), atol=1e-5)
    assert np.allclose(first.transform(X), full.transform(X), atol=1e-5)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.full((20, 3), np.nan), ValueError, "NaN"),
        (np.zeros((20,)), ValueError, "2D"),
        (np.zeros((0, 3)), ValueError, "sample"),
        (np.zeros((20, 3), dtype=complex), ValueError, "Complex"),
        (np.array([["a", "b"]] * 20, dtype=object), TypeError, "numbers"),
    ],
)
def test_bad_input_raises_before_work(bad, error, match):
    with pytest.raises(error, match=match):
        TLDR(**FAST).fit(bad)


def test_bad_parameters():
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    # defaults work on small data (issue 11): too many neighbours or too large a batch are
    # clamped to the data, the neighbours with a warning (as umap-learn does)
    with pytest.warns(UserWarning, match="n_neighbors=30 is not smaller"):
        clamped = TLDR(n_neighbors=30, **FAST).fit(X)
    assert clamped.knn_indices_.shape == (30, 29)
    with pytest.raises(ValueError, match="not a valid spec"):
        TLDR(encoder="resnet", **FAST).fit(X)
    with pytest.raises(ValueError, match="knn_approximation"):
        TLDR(knn_approximation="extreme", **FAST).fit(X)
    assert np.isfinite(TLDR(**FAST).fit(X).transform(X)).all()  # batch_size=64 > 30 samples
    with pytest.raises(ValueError, match="device"):
        TLDR(device="tpu", **FAST).fit(X)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TLDR(**{**FAST, "batch_size": 8}).fit(X, epochs=0)
    model = TLDR(n_components=2, **{**FAST, "batch_size": 8}).fit(X)
    with pytest.raises(ValueError, match="4 features"):
        model.transform(X[:, :3])
    with pytest.raises(NotFittedError):
        TLDR().transform(X)


def test_missing_and_foreign_model_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        TLDR().load(tmp_path / "none.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="not a readable twinlearn model file"):
        TLDR().load(tmp_path / "junk.pth")


def test_beats_chance_by_far_and_is_near_pca_on_real_mnist(mnist_small):
    x_train, y_train, x_test, y_test = mnist_small
    model = TLDR(n_components=8, projector="mlp-1-512", n_epochs=30, batch_size=256,
                 learning_rate=0.8, random_state=0)
    model.fit(x_train)
    acc = knn_accuracy(model.transform(x_train), y_train, model.transform(x_test), y_test)
    pca = PCA(8).fit(x_train)
    pca_acc = knn_accuracy(pca.transform(x_train), y_train, pca.transform(x_test), y_test)
    assert acc > 0.80, acc
    assert acc > pca_acc - 0.04, (acc, pca_acc)
