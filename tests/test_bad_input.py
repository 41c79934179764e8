"""Property-based bad input: every public entry point answers a clear ValueError/TypeError
naming what was wrong — never an IndexError or RuntimeError from deep inside torch, never a hang."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from twinlearn import TLDR
from twinlearn.metrics import knn_accuracy, knn_recall, trustworthiness
from twinlearn.neighbors import compute_knn

TINY = {"n_epochs": 1, "batch_size": 8, "n_neighbors": 3, "random_state": 0, "projector": "mlp-1-16"}
N_EXAMPLES = 150
SETTINGS = settings(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: what an error about the data must talk about
DATA_WORDS = re.compile(r"NaN|infinity|2D|sample|feature|dtype|Sparse|Complex|numbers|string|float", re.I)


@pytest.fixture(scope="module")
def fitted_tldr():
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    return TLDR(n_components=2, **TINY).fit(X)


def _finite_base(draw, n_min=10, d=5):
    n = draw(st.integers(n_min, 40))
    return draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3)))


@st.composite
def bad_arrays(draw, d=5):
    """Arrays every entry point must refuse."""
    kind = draw(st.sampled_from(["nonfinite", "ndim", "empty", "object", "complex", "bool", "sparse"]))
    if kind == "nonfinite":
        X = _finite_base(draw, d=d)
        i, j = draw(st.integers(0, X.shape[0] - 1)), draw(st.integers(0, d - 1))
        X[i, j] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return X
    if kind == "ndim":
        ndim = draw(st.sampled_from([0, 1, 3]))
        shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=6)) if ndim else ()
        return draw(hnp.arrays(np.float64, shape, elements=st.floats(-1, 1)))
    if kind == "empty":
        return np.zeros(draw(st.sampled_from([(0, d), (12, 0), (0, 0)])))
    if kind == "object":
        X = _finite_base(draw, d=d).astype(object)
        X[0, 0] = draw(st.sampled_from(["a", None, {"k": 1}, [1, 2]]))
        return X
    if kind == "complex":
        return _finite_base(draw, d=d) * (1 + 1j)
    if kind == "bool":
        return _finite_base(draw, d=d) > 0
    return scipy.sparse.random(draw(st.integers(10, 30)), d, density=0.3, format="csr")


def assert_clear_error(call, words=DATA_WORDS):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert type(info.value) in (ValueError, TypeError) or issubclass(type(info.value), (ValueError, TypeError))
    assert words.search(str(info.value)), f"unclear message: {info.value!r}"


ENTRY_POINTS = {
    "TLDR.fit": lambda est, X: TLDR(n_components=2, **TINY).fit(X),
    "TLDR.transform": lambda est, X: est.transform(X),
    "TLDR.compute_knn": lambda est, X: TLDR(**TINY).compute_knn(X),
    "compute_knn": lambda est, X: compute_knn(X, 3),
    "knn_recall(high)": lambda est, X: knn_recall(X, np.zeros((len(X) if np.ndim(X) else 1, 2)), 3),
    "knn_accuracy(train)": lambda est, X: knn_accuracy(X, np.zeros(len(X) if np.ndim(X) else 1), np.zeros((3, 5)), np.zeros(3)),
    "trustworthiness(low)": lambda est, X: trustworthiness(np.zeros((len(X) if np.ndim(X) else 1, 5)), X),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_bad_arrays_get_a_clear_error(entry, fitted_tldr):
    @SETTINGS
    @given(X=bad_arrays())
    def run(X):
        assert_clear_error(lambda: ENTRY_POINTS[entry](fitted_tldr, X))

    run()


def _valid(n=30, d=5):
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


not_a_spec = st.text(max_size=12).filter(lambda s: not re.fullmatch(r"(linear|flinear|mlp)(-\d+(-\d+)*)?", s.strip().lower()))


@st.composite
def bad_tldr_params(draw):
    """(parameter overrides, the name the error message must contain)."""
    n = 30
    name = draw(st.sampled_from(
        ["n_neighbors", "batch_size", "n_epochs", "n_components", "encoder", "projector", "metric",
         "knn_method", "knn_approximation", "device", "precision", "norm_layer", "learning_rate"]
    ))
    if name == "n_neighbors":
        value = draw(st.one_of(st.integers(n, 10**6), st.integers(-10, 0), st.floats(1, 5)))
    elif name == "batch_size":
        value = draw(st.one_of(st.integers(n + 1, 10**6), st.integers(-5, 1)))
    elif name in ("n_epochs", "n_components"):
        value = draw(st.one_of(st.integers(-100, 0), st.floats(0.5, 3), st.none()))
    elif name == "learning_rate":
        value = draw(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), "fast"]))
    elif name in ("encoder", "projector"):
        value = draw(not_a_spec)
    else:
        valid = {"metric": ("euclidean", "cosine"), "knn_method": ("auto", "exact", "faiss", "hnsw"),
                 "knn_approximation": (None, "low", "medium", "high"), "precision": ("fp32", "bf16", "fp16"),
                 "norm_layer": ("BN", "LN"), "device": ("cpu", "auto")}[name]
        value = draw(st.text(max_size=10).filter(lambda s: s not in valid and not s.startswith("cpu")))
    return {name: value}, name


@SETTINGS
@given(case=bad_tldr_params())
def test_bad_tldr_parameters_name_the_argument(case):
    overrides, name = case
    params = {**TINY, **overrides}
    expected = "epochs" if name == "n_epochs" else name
    with pytest.raises((ValueError, TypeError)) as info:
        TLDR(**params).fit(_valid())
    message = str(info.value)
    assert expected in message or (name in ("encoder", "projector") and "spec" in message), message


@SETTINGS
@given(d=st.integers(1, 12).filter(lambda d: d != 5))
def test_wrong_feature_count_at_transform(fitted_tldr, d):
    with pytest.raises(ValueError, match=f"{d} features, but TLDR is expecting 5"):
        fitted_tldr.transform(_valid(7, d))


def test_degenerate_but_valid_data_works():
    rng = np.random.default_rng(0)
    dup = np.repeat(rng.normal(size=(10, 4)), 3, axis=0).astype(np.float32)
    const = np.hstack([rng.normal(size=(30, 3)), np.ones((30, 2))]).astype(np.float32)
    barely = rng.normal(size=(9, 4)).astype(np.float32)
    for X in (dup, const, barely, np.zeros((12, 3), np.float32)):
        Z = TLDR(n_components=2, **{**TINY, "batch_size": min(8, len(X))}).fit_transform(X)
        assert Z.shape == (len(X), 2) and np.isfinite(Z).all()
