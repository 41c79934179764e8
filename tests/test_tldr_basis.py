"""TLDR's linear encoder ends with orthonormal rows by default (``output_basis``)."""

import numpy as np
import pytest
import torch

from twinlearn import TLDR, io

# three epochs at the fast setting's LR: enough for training to stretch the output axes
MOVED = {"n_components": 4, "projector": "mlp-1-64", "n_epochs": 3, "batch_size": 64,
         "learning_rate": 1.6, "random_state": 0}


@pytest.fixture
def stretched():
    """400 points in 12-D with decreasing variances and an offset (so the bias matters)."""
    rng = np.random.default_rng(0)
    return (rng.normal(size=(400, 12)) * np.linspace(5, 0.5, 12) + 3.0).astype(np.float32)


def weights(model: TLDR) -> np.ndarray:
    return model.encoder_[0].weight.detach().double().numpy()


def prefix_gap(a: np.ndarray, b: np.ndarray, m: int) -> float:
    """Largest principal-angle sine between the spans of the first ``m`` rows of ``a`` and ``b``."""
    qa, _ = np.linalg.qr(a[:m].T)
    qb, _ = np.linalg.qr(b[:m].T)
    return float(np.linalg.norm(qb - qa @ (qa.T @ qb), 2))


def test_default_is_orthonormal_and_spans_the_trained_prefixes(stretched):
    assert TLDR().output_basis == "auto"
    ortho = TLDR(**MOVED).fit(stretched)
    trained = TLDR(output_basis="trained", **MOVED).fit(stretched)
    w, raw = weights(ortho), weights(trained)
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-6)
    assert np.abs(raw @ raw.T - np.eye(4)).max() > 1e-3  # training did stretch the axes
    for m in range(1, 5):  # each prefix spans the trained prefix: nesting kept
        assert prefix_gap(w, raw, m) < 1e-5
    # row j points along the trained row j (R's diagonal positive: deterministic signs)
    assert (np.einsum("ij,ij->i", w, raw) > 0).all()
    # the output is a fixed lower-triangular map of the trained output (prefixes nested)
    z, z_raw = ortho.transform(stretched), trained.transform(stretched)
    lower = np.linalg.lstsq(z_raw, z, rcond=None)[0].T
    np.testing.assert_allclose(np.triu(lower, 1), 0, atol=1e-4)
    np.testing.assert_allclose(z_raw @ lower.T, z, atol=1e-4)


def test_nesting_dims_stay_nested_and_a_kept_projector_sees_the_same_input(stretched):
    nested = dict(MOVED, nesting_dims=[2, 4])
    ortho = TLDR(**nested).fit(stretched, retain_projector=True)
    trained = TLDR(output_basis="trained", **nested).fit(stretched, retain_projector=True)
    w, raw = weights(ortho), weights(trained)
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-6)
    assert prefix_gap(w, raw, 2) < 1e-5
    x = torch.from_numpy(stretched[:50])
    with torch.no_grad():
        for a, b in zip(ortho.projector_(ortho.encoder_(x)), trained.projector_(trained.encoder_(x))):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-3)


def test_output_basis_is_checked_before_any_work(stretched):
    with pytest.raises(ValueError, match="output_basis='qr' is not supported"):
        TLDR(output_basis="qr").fit(None)  # refused before the data is even looked at
    with pytest.raises(ValueError, match="output_basis='orthonormal' needs encoder='linear'"):
        TLDR(encoder="mlp-1-32", output_basis="orthonormal").fit(None)
    with pytest.raises(ValueError, match="output_basis='orthonormal' needs n_components <= n_features"):
        TLDR(output_basis="orthonormal", **{**MOVED, "n_components": 20}).fit(stretched)


def test_auto_keeps_the_trained_basis_where_no_orthonormal_one_exists(stretched):
    wide = TLDR(**{**MOVED, "n_components": 16}).fit(stretched)  # 16 outputs from 12 features
    assert np.abs(weights(wide) @ weights(wide).T - np.eye(16)).max() > 0.1
    mlp = TLDR(**{**MOVED, "encoder": "mlp-1-32"}).fit(stretched)
    assert np.isfinite(mlp.transform(stretched)).all()


def test_orthonormal_model_file_round_trips(stretched, tmp_path):
    model = TLDR(**MOVED).fit(stretched)
    path = tmp_path / "model.safetensors"
    model.save(path)
    _, meta = io.load_tensors(path)
    assert meta["params"]["output_basis"] == "auto"
    loaded = TLDR().load(path, init=True)
    assert loaded.output_basis == "auto"
    np.testing.assert_array_equal(loaded.transform(stretched), model.transform(stretched))
    np.testing.assert_allclose(weights(loaded) @ weights(loaded).T, np.eye(4), atol=1e-6)
    # transform agrees with the weights: an orthogonal projection of the input, plus the bias
    w, b = weights(model), model.encoder_[0].bias.detach().double().numpy()
    np.testing.assert_allclose(model.transform(stretched), stretched @ w.T + b, atol=1e-4)
