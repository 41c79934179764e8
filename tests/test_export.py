"""Serving: ONNX export of every parametric encoder checked with onnxruntime against
``transform`` on real data, and the NumPy-only transform run where torch cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_io import CORRUPTIONS, rewrite

import twinlearn
from twinlearn import CNE, TLDR, ReLIC, TSimCNE, io
from twinlearn.export import export_onnx
from twinlearn.numpy_encoder import META_KEY, READABLE_FORMAT_VERSION, NumpyEncoder

VECTOR_MODELS = {
    "TLDR linear": lambda: TLDR(n_components=8, projector="mlp-1-16", n_epochs=2, batch_size=64,
                                n_neighbors=3, random_state=0),
    "TLDR mlp BN": lambda: TLDR(n_components=8, encoder="mlp-1-32", projector="mlp-1-16", n_epochs=2,
                                batch_size=64, n_neighbors=3, random_state=0),
    "TLDR flinear LN": lambda: TLDR(n_components=8, encoder="flinear-2-32", norm_layer="LN",
                                    projector="mlp-1-16", n_epochs=2, batch_size=64, n_neighbors=3,
                                    random_state=0),
    "CNE parametric": lambda: CNE(parametric=True, n_epochs=2, batch_size=256, n_neighbors=5,
                                  random_state=0),
}
IMAGE_MODELS = {
    "TSimCNE": lambda: TSimCNE(backbone="small_cnn", total_epochs=[1, 1, 1], batch_size=8,
                               device="cpu", random_state=0),
    "ReLIC": lambda: ReLIC(backbone="small_cnn", n_epochs=1, batch_size=8, proj_hidden_dim=16,
                           proj_out_dim=8, n_components=32, random_state=0),
}


@pytest.fixture(scope="module")
def mnist_rows(mnist_small):
    """300 training and 200 test rows of real MNIST, flattened."""
    x_train, _, x_test, _ = mnist_small
    return x_train[:300].reshape(300, -1), x_test[:200].reshape(200, -1)


@pytest.fixture(scope="module")
def vector_models(mnist_rows):
    return {name: make().fit(mnist_rows[0]) for name, make in VECTOR_MODELS.items()}


@pytest.fixture(scope="module")
def cifar_crops():
    """24 real CIFAR-10 test images, centre 16×16 crops (uint8, N×H×W×3): 32×32 trains ~10× slower."""
    from twinlearn.data.images import load_cifar10

    try:
        _, _, x_test, _ = load_cifar10()
    except FileNotFoundError:
        pytest.skip("real data not found: ../shared/data/cifar10-jpg.tar.gz")
    idx = np.random.default_rng(0).choice(len(x_test), 24, replace=False)
    return np.ascontiguousarray(x_test[idx, 8:24, 8:24])


def run_onnx(path: Path, X: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to check the ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["embedding"], {"input": X.astype(np.float32)})[0]


# --- ONNX --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", VECTOR_MODELS)
def test_onnx_matches_transform_on_mnist(name, vector_models, mnist_rows, tmp_path):
    pytest.importorskip("onnx", reason="onnx is needed for the ONNX export")
    model, X = vector_models[name], mnist_rows[1]
    path = export_onnx(model, tmp_path / "m.onnx")
    expected = model.transform(X)
    for rows in (X, X[:1]):  # the batch axis is free
        diff = np.abs(run_onnx(path, rows) - expected[: len(rows)]).max()
        print(f"{name}: ONNX max abs diff {diff:.2e}")
        assert diff <= 1e-4


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_onnx_matches_transform_on_cifar(name, cifar_crops, tmp_path):
    pytest.importorskip("onnx", reason="onnx is needed for the ONNX export")
    model = IMAGE_MODELS[name]().fit(cifar_crops)
    path = export_onnx(model, tmp_path / "m.onnx")
    expected = model.transform(cifar_crops)
    # the graph takes float pixels in [0, 1], channels first, as transform feeds the network
    pixels = cifar_crops.transpose(0, 3, 1, 2) / 255.0
    got = run_onnx(path, pixels)
    assert got.shape == expected.shape == (24, 2 if name == "TSimCNE" else 32)
    diff = np.abs(got - expected).max()
    print(f"{name}: ONNX max abs diff {diff:.2e}")
    assert diff <= 1e-4
    if name == "ReLIC":  # a prefix as transform(n_components=...)
        small = export_onnx(model, tmp_path / "p.onnx", n_components=8)
        assert np.abs(run_onnx(small, pixels) - model.transform(cifar_crops, n_components=8)).max() <= 1e-4


def test_export_onnx_refuses_what_has_no_encoder(vector_models, tmp_path):
    pytest.importorskip("onnx", reason="onnx is needed for the ONNX export")
    table = CNE(n_epochs=1, batch_size=16, n_neighbors=3, random_state=0).fit(
        np.random.default_rng(0).normal(size=(30, 4)))
    with pytest.raises(TypeError, match="non-parametric CNE"):
        export_onnx(table, tmp_path / "a.onnx")
    with pytest.raises(TypeError, match="export_onnx takes"):
        export_onnx(object(), tmp_path / "b.onnx")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(vector_models["TLDR linear"], tmp_path / "c.onnx", opset=99)
    with pytest.raises(ValueError, match="n_components"):
        export_onnx(vector_models["TLDR linear"], tmp_path / "d.onnx", n_components=9)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        export_onnx(TLDR(), tmp_path / "e.onnx")
    assert not list(tmp_path.iterdir())


def test_export_onnx_without_onnx_names_the_package(vector_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match="'onnx' is needed.*pip install"):
        export_onnx(vector_models["TLDR linear"], tmp_path / "m.onnx")


# --- NumPy transform ---------------------------------------------------------------------------
NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any import of torch now fails
    import numpy as np
    from twinlearn.numpy_encoder import numpy_transform
    folder = sys.argv[1]
    X = np.load(folder + "/X.npy")
    for name in sys.argv[2:]:
        path = f"{folder}/{name}.safetensors"
        np.save(f"{folder}/{name}.npy", numpy_transform(path, X))
        np.save(f"{folder}/{name}.prefix.npy", numpy_transform(path, X, n_components=2, l2_norm=True))
    assert not [m for m in sys.modules if m.startswith("torch") and sys.modules[m] is not None]
    """
)


def test_numpy_transform_without_torch_equals_transform(vector_models, mnist_rows, tmp_path):
    X = mnist_rows[1]
    np.save(tmp_path / "X.npy", X)
    names = [name.replace(" ", "_") for name in vector_models]
    for name, model in zip(names, vector_models.values()):
        model.save(tmp_path / f"{name}.safetensors")
    src = str(Path(twinlearn.__file__).parents[1])  # this checkout's twinlearn
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, str(tmp_path), *names],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, model in zip(names, vector_models.values()):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, model.transform(X), rtol=0, atol=1e-5, err_msg=name)
        prefix = np.load(tmp_path / f"{name}.prefix.npy")
        expected = model.transform(X, n_components=2)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(prefix, expected, rtol=0, atol=1e-5, err_msg=name)


def test_numpy_reader_speaks_the_io_format():
    # fails when twinlearn.io changes its metadata key or format version: adjust export.py then
    assert META_KEY == io._META_KEY
    assert READABLE_FORMAT_VERSION == io.FORMAT_VERSION


NUMPY_CORRUPTIONS = ("pickle renamed to the model file", "truncated", "future format version",
                     "another estimator's file", "a checkpoint, not a model", "tensor of the wrong shape",
                     "tensor missing", "metadata not an object")


@pytest.mark.parametrize("corruption", NUMPY_CORRUPTIONS)
@pytest.mark.parametrize("name", ["TLDR mlp BN", "CNE parametric"])
def test_numpy_reader_refuses_bad_files_naming_them(corruption, name, vector_models, tmp_path):
    path = tmp_path / "model.safetensors"
    vector_models[name].save(path)
    CORRUPTIONS[corruption][0](path)
    with pytest.raises(ValueError, match=str(path)):
        NumpyEncoder.from_file(path)
    assert not (tmp_path / "pwned").exists()


def test_numpy_reader_refuses_models_without_a_feed_forward_encoder(cifar_crops, tmp_path):
    table = CNE(n_epochs=1, batch_size=16, n_neighbors=3, random_state=0).fit(
        np.random.default_rng(0).normal(size=(30, 4)))
    table.save(tmp_path / "table.safetensors")
    with pytest.raises(ValueError, match="non-parametric CNE"):
        NumpyEncoder.from_file(tmp_path / "table.safetensors")
    relic = IMAGE_MODELS["ReLIC"]().fit(cifar_crops[:8])
    relic.save(tmp_path / "relic.safetensors")
    with pytest.raises(ValueError, match="only TLDR and parametric CNE"):
        NumpyEncoder.from_file(tmp_path / "relic.safetensors")


def test_numpy_reader_checks_architecture_size_and_input(vector_models, mnist_rows, tmp_path):
    path = tmp_path / "m.safetensors"
    vector_models["TLDR mlp BN"].save(path)
    encoder = NumpyEncoder.from_file(path)
    assert (encoder.n_features_in, encoder.n_components) == (784, 8)
    with pytest.raises(ValueError, match="max_bytes"):
        NumpyEncoder.from_file(path, max_bytes=100)
    with pytest.raises(ValueError, match=r"\(n_samples, 784\)"):
        encoder.transform(mnist_rows[1][:, :10])
    with pytest.raises(ValueError, match="NaN"):
        encoder.transform(np.full((2, 784), np.nan))
    with pytest.raises(ValueError, match="n_components"):
        encoder.transform(mnist_rows[1], n_components=9)
    rewrite(path, lambda tensors, meta: meta["params"].update(n_components=7))
    with pytest.raises(ValueError, match="gives 8 outputs, the config says 7"):
        NumpyEncoder.from_file(path)
    # the config says a linear encoder, the tensors hold an MLP (ReLUs, no biases)
    rewrite(path, lambda tensors, meta: meta["params"].update(encoder="linear"))
    with pytest.raises(ValueError, match="not the TLDR network"):
        NumpyEncoder.from_file(path)
    with pytest.raises(FileNotFoundError):
        NumpyEncoder.from_file(tmp_path / "absent.safetensors")
