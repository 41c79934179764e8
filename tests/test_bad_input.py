"""Property-based bad input: every public entry point answers a clear ValueError/TypeError
naming what was wrong — never an IndexError or RuntimeError from deep inside torch, never a hang."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch
from conftest import IMAGE_ESTIMATORS, TINY_PARAMS, VECTOR_ESTIMATORS, make_tiny, tiny_images, tiny_vectors
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_io import load_into, read_raw, write_raw

from twinlearn.metrics import knn_accuracy, knn_recall, trustworthiness
from twinlearn.neighbors import compute_knn

TINY = TINY_PARAMS["TLDR"]
N_EXAMPLES = 150
MIN_EXAMPLES = 100
SETTINGS = settings(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: what an error about the data must talk about
DATA_WORDS = re.compile(r"NaN|infinity|2D|sample|feature|dtype|Sparse|Complex|numbers|string|float|meta", re.I)
#: an error about images must name the argument or the image it is about
IMAGE_WORDS = re.compile(r"\bX\b|image", re.I)


def _finite_base(draw, n_min=10, d=5):
    n = draw(st.integers(n_min, 40))
    return draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3)))


@st.composite
def bad_arrays(draw, d=5, sparse=True):
    """Arrays every entry point must refuse (booleans are accepted as 0/1: not among them;
    scipy sparse ones only with ``sparse``: the entry points of SPARSE_ENTRY_POINTS take them)."""
    kind = draw(st.sampled_from([
        "nonfinite", "beyond float32", "overflowing norms", "ndim", "empty", "object", "complex",
        "dates or strings", *(["sparse"] if sparse else []), "torch sparse or meta",
    ]))
    if kind in ("nonfinite", "beyond float32", "overflowing norms"):
        X = _finite_base(draw, d=d)
        i, j = draw(st.integers(0, X.shape[0] - 1)), draw(st.integers(0, d - 1))
        if kind == "nonfinite":
            X[i, j] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            return X
        if kind == "beyond float32":  # finite in float64, infinite once cast
            X[i, j] = draw(st.floats(3.5e38, 1e300)) * draw(st.sampled_from([1, -1]))
            return X
        # finite in float32, but squared distances overflow
        X[i, j] = draw(st.floats(7e18, 1.8e38)) * draw(st.sampled_from([1, -1]))
        return X.astype(draw(st.sampled_from([np.float32, np.float64])))
    if kind == "dates or strings":
        return _finite_base(draw, d=d).astype(draw(st.sampled_from(["datetime64[s]", "timedelta64[ms]", str, bytes])))
    if kind == "torch sparse or meta":
        X = torch.from_numpy(_finite_base(draw, d=d))
        return draw(st.sampled_from([X.to_sparse(), X.to_sparse_csr(), X.to("meta")]))
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
    return scipy.sparse.random(draw(st.integers(10, 30)), d, density=0.3, format="csr")


@st.composite
def bad_images(draw):
    """Image inputs (for uint8 ``(N, H, W, C)`` arrays and the other accepted kinds) that the
    image estimators must refuse."""
    kind = draw(st.sampled_from(
        ["ndim", "channels", "empty", "dtype", "nonfinite", "range", "sparse", "not_images"]
    ))
    n, h, w = draw(st.integers(2, 6)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    if kind == "ndim":
        ndim = draw(st.sampled_from([0, 1, 2, 5]))
        shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=5)) if ndim else ()
        return draw(hnp.arrays(np.uint8, shape))
    if kind == "channels":
        return np.zeros((n, h, w, draw(st.sampled_from([2, 4, 5]))), np.uint8)
    if kind == "empty":
        return np.zeros(draw(st.sampled_from([(0, h, w, 3), (n, 0, w, 3), (n, h, 0, 3), (0, h, w)])), np.uint8)
    if kind == "dtype":
        dtype = draw(st.sampled_from([object, np.complex64, np.bool_, np.int16, np.int64, np.uint16]))
        return np.zeros((n, h, w, 3)).astype(dtype)
    if kind in ("nonfinite", "range"):
        X = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float64])), (n, h, w, 3),
                            elements=st.floats(0, 1, width=32)))
        index = tuple(draw(st.integers(0, s - 1)) for s in X.shape)
        bad = [np.nan, np.inf, -np.inf] if kind == "nonfinite" else [-1.0, 1.5, 255.0, -0.01]
        X[index] = draw(st.sampled_from(bad))
        return X
    if kind == "sparse":
        return scipy.sparse.random(n, 12, density=0.5, format=draw(st.sampled_from(["csr", "coo"])))
    return draw(st.sampled_from([None, 3.0, 7, "/no/such/folder", {"a": 1}, ["a", "b"], [None]]))


def run_cases(strategy: st.SearchStrategy, check, record) -> int:
    """Run ``check`` on ``N_EXAMPLES`` generated values; return how many ran (recorded as the
    test's ``hypothesis_examples`` property, and at least ``MIN_EXAMPLES`` are demanded: the
    counts in docs/reliability.md come from here)."""
    seen = []

    @SETTINGS
    @given(value=strategy)
    def run(value):
        check(value)
        seen.append(value)  # after the check: a case that assume() discards does not count

    run()
    record("hypothesis_examples", len(seen))
    assert len(seen) >= MIN_EXAMPLES, f"only {len(seen)} generated cases"
    return len(seen)


def assert_clear_error(call, words=DATA_WORDS):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert words.search(str(info.value)), f"unclear message: {info.value!r}"


ENTRY_POINTS = {
    "TLDR.fit": lambda fitted, X: make_tiny("TLDR").fit(X),
    "TLDR.transform": lambda fitted, X: fitted["TLDR"].transform(X),
    "TLDR.compute_knn": lambda fitted, X: make_tiny("TLDR").compute_knn(X),
    "CNE.fit": lambda fitted, X: make_tiny("CNE").fit(X),
    "CNE.transform": lambda fitted, X: fitted["CNE"].transform(X),
    "CNE(parametric=True).fit": lambda fitted, X: make_tiny("CNE(parametric=True)").fit(X),
    "CNE(parametric=True).transform": lambda fitted, X: fitted["CNE(parametric=True)"].transform(X),
    "compute_knn": lambda fitted, X: compute_knn(X, 3),
    "knn_recall(high)": lambda fitted, X: knn_recall(X, np.zeros((len(X) if np.ndim(X) else 1, 2)), 3),
    "knn_accuracy(train)": lambda fitted, X: knn_accuracy(X, np.zeros(len(X) if np.ndim(X) else 1), np.zeros((3, 5)), np.zeros(3)),
    "trustworthiness(low)": lambda fitted, X: trustworthiness(np.zeros((len(X) if np.ndim(X) else 1, 5)), X),
}
#: entry points that take scipy sparse X (issue 12 item 3)
SPARSE_ENTRY_POINTS = sorted(name for name in ENTRY_POINTS if name.startswith(("TLDR.", "CNE")))
IMAGE_ENTRY_POINTS = {
    "TSimCNE.fit": lambda fitted, X: make_tiny("TSimCNE").fit(X),
    "TSimCNE.transform": lambda fitted, X: fitted["TSimCNE"].transform(X),
    "ReLIC.fit": lambda fitted, X: make_tiny("ReLIC").fit(X),
    "ReLIC.transform": lambda fitted, X: fitted["ReLIC"].transform(X),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_bad_arrays_get_a_clear_error(entry, fitted_tiny, record_property):
    run_cases(bad_arrays(sparse=entry not in SPARSE_ENTRY_POINTS),
              lambda X: assert_clear_error(lambda: ENTRY_POINTS[entry](fitted_tiny, X)), record_property)


@pytest.mark.parametrize("entry", SPARSE_ENTRY_POINTS)
def test_sparse_input_is_accepted_where_supported(entry, fitted_tiny):
    X = scipy.sparse.random(20, 5, density=0.5, format="csr", random_state=0, dtype=np.float64)
    ENTRY_POINTS[entry](fitted_tiny, X)
    ENTRY_POINTS[entry](fitted_tiny, X.tocsc())
    ENTRY_POINTS[entry](fitted_tiny, X.astype(bool))  # 0/1, as dense booleans
    X.data[0] = np.nan
    assert_clear_error(lambda: ENTRY_POINTS[entry](fitted_tiny, X))


@pytest.mark.parametrize("entry", list(IMAGE_ENTRY_POINTS))
def test_bad_images_get_a_clear_error(entry, fitted_tiny, record_property):
    run_cases(bad_images(), lambda X: assert_clear_error(lambda: IMAGE_ENTRY_POINTS[entry](fitted_tiny, X), IMAGE_WORDS),
              record_property)


# --- bad hyperparameters -----------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")


def not_one_of(valid: tuple, prefix_ok: tuple = ()) -> st.SearchStrategy:
    """Strings (and a few non-strings) that are not in ``valid``; ``prefix_ok`` excludes strings
    that are valid by prefix (``"cpu:0"``)."""
    junk = st.one_of(
        st.text(max_size=10),
        st.sampled_from(["mps", "cuda", "cuda:1", "gpu", "meta", "xla", "", " ", "CPU", "Sgd"]),
        st.sampled_from([0, 1.5, b"sgd", ["sgd"]]),
    )
    return junk.filter(
        lambda v: v not in valid and not (isinstance(v, str) and prefix_ok and v.startswith(prefix_ok))
    )


not_a_spec = st.text(max_size=12).filter(lambda s: not re.fullmatch(r"(linear|flinear|mlp)(-\d+(-\d+)*)?", s.strip().lower()))
#: not an int >= 1 (``none_ok`` when None means "default")
bad_count = st.one_of(st.integers(-100, 0), st.floats(0.5, 3), st.none(), st.sampled_from(["3", True, [2]]))
bad_count_or_none_ok = bad_count.filter(lambda v: v is not None)
#: not a finite positive number
bad_positive = st.sampled_from([0.0, -1.0, NAN, INF, -INF, "fast", None, True, [0.1]])
bad_nonnegative = st.sampled_from([-1e-3, -1.0, NAN, INF, "fast", None, [0.1]])
DEVICES = ("cpu", "auto")
PRECISIONS = ("fp32", "bf16", "fp16")

#: every estimator's bad values per parameter: ``{name: (strategy, extra fixed params)}``
N_SAMPLES = 30  # rows of the vector data the parameter tests fit on
BAD_PARAMS: dict[str, dict[str, st.SearchStrategy]] = {
    "TLDR": {
        # more neighbours than samples is clamped with a warning (defaults work on small data);
        # beyond any plausible graph it is an error
        "n_neighbors": st.one_of(st.integers(10**4 + 1, 10**9), st.integers(-10, 0), st.floats(1, 5)),
        "batch_size": st.one_of(st.integers(2**24 + 1, 10**12), st.integers(-5, 1)),
        "n_epochs": bad_count,
        "n_components": bad_count,
        "learning_rate": bad_positive,
        "encoder": not_a_spec,
        "projector": not_a_spec,
        "metric": not_one_of(("euclidean", "cosine")),
        "knn_method": not_one_of(("auto", "exact", "faiss", "hnsw")),
        "knn_approximation": not_one_of((None, "low", "medium", "high")),
        "precision": not_one_of(PRECISIONS),
        "norm_layer": not_one_of(("BN", "LN")),
        "device": not_one_of(DEVICES, prefix_ok=("cpu",)),
    },
    "CNE": {
        "loss_mode": not_one_of(("infonce", "neg", "neg_sample", "nce", "umap")),
        "metric": not_one_of(("euclidean", "cosine")),
        # more neighbours than samples is clamped with a warning (defaults work on small data);
        # beyond any plausible graph it is an error
        "n_neighbors": st.one_of(st.integers(10**4 + 1, 10**9), st.integers(-10, 0), st.floats(1, 5)),
        "k": st.one_of(st.integers(N_SAMPLES, 10**6), st.integers(-10, 0), st.floats(1, 5)),
        "n_components": bad_count,
        "negative_samples": st.one_of(st.integers(-100, 0).filter(lambda m: m != -1), st.floats(0.5, 3),
                                      not_one_of(("full", "full-batch", "all"))),
        # None: chosen by the data's size
        "batch_size": st.one_of(st.integers(-5, 1), st.floats(2, 100)),
        "n_epochs": bad_count_or_none_ok,
        "transform_epochs": bad_count,
        "save_freq": st.one_of(st.integers(-10, -1), st.floats(0.5, 3), st.none()),
        "learning_rate": bad_positive.filter(lambda v: v is not None),
        "temperature": bad_positive,
        "eps": bad_positive,
        "clip_grad": bad_positive.filter(lambda v: v is not None),
        "momentum": bad_nonnegative,
        "weight_decay": bad_nonnegative,
        "optimizer": not_one_of((None, "sgd", "adam")),
        "anneal_lr": not_one_of((True, False, "linear", "cosine", "none")),
        "loss_aggregation": not_one_of(("sum", "mean")),
        "knn_method": not_one_of(("auto", "exact", "faiss", "hnsw")),
        "precision": not_one_of(PRECISIONS),
        "device": not_one_of(DEVICES, prefix_ok=("cpu",)),
        "parametric": st.sampled_from(["yes", 1, None, 0.0]),
        "random_state": st.sampled_from([-1, "0", 1.5]),
        "s": st.sampled_from([NAN, INF, -INF, "0.5", True]),
        "ince_spec": bad_positive.filter(lambda v: v is not None),
        # the NEG spectrum constants only mean something for loss_mode="neg": fixed below
        "neg_spec": bad_positive.filter(lambda v: v is not None),
        "Z_bar": bad_positive.filter(lambda v: v is not None),
    },
    "TSimCNE": {
        "backbone": not_one_of(("resnet18_simclr", "resnet18_cifar", "resnet18", "resnet34", "resnet50", "small_cnn")),
        "projection_head": not_one_of(("mlp", "linear")),
        "total_epochs": st.one_of(st.integers(-5, 2), st.lists(st.integers(-3, 0), min_size=1, max_size=3),
                                  st.lists(st.integers(1, 3), min_size=2, max_size=2),
                                  st.lists(st.integers(1, 3), min_size=4, max_size=6),
                                  st.sampled_from(["100", 10.0, None, [1.5]])),
        "batch_size": st.one_of(st.integers(-5, 1), st.floats(2, 100), st.none()),
        "out_dim": bad_count,
        "pretrain_out_dim": bad_count,
        # (one stage in the tiny settings, so a one-element list would be valid)
        "lr": st.one_of(bad_positive.filter(lambda v: v is not None and v != [0.1]), st.just("auto"),
                        st.lists(st.floats(0.1, 1), min_size=2, max_size=3), st.just([-0.1])),
        "warmup": st.sampled_from(["none", -1, [1, 2], [-1]]),
        "optimizer": not_one_of(("sgd",)),
        "lr_scheduler": not_one_of(("cos_annealing",)),
        "freeze_schedule": not_one_of(("only_linear",)),
        "loss": not_one_of(("infonce",)),
        "metric": not_one_of((None, "euclidean", "cauchy", "cosine", "gauss", "gaussian")),
        "image_size": st.one_of(st.integers(-5, 0), st.sampled_from(["big", 2.5, (0, 4), (4, 4, 4), [4], True])),
        "devices": st.one_of(st.integers(-3, 0), st.floats(1, 2), st.integers(2, 8)),
        "data_transform": st.sampled_from(["flip", 3, [None]]),
        "channels_last": st.sampled_from(["yes", 2, None]),
        "precision": not_one_of(PRECISIONS),
        "device": not_one_of(DEVICES, prefix_ok=("cpu",)),
        "random_state": st.sampled_from([-1, "0", 1.5]),
    },
    "ReLIC": {
        "backbone": not_one_of(("resnet18", "resnet50", "resnet18_simclr", "resnet34", "small_cnn")),
        "cifar_stem": st.sampled_from(["yes", 2, 0.5]),
        "n_components": bad_count_or_none_ok,
        "n_epochs": bad_count,
        "batch_size": st.one_of(st.integers(-5, 1), st.integers(9, 10**6), st.floats(2, 100), st.none()),
        "learning_rate": bad_positive,
        "weight_decay": bad_nonnegative,
        "proj_out_dim": bad_count,
        "proj_hidden_dim": bad_count_or_none_ok,
        "nesting_dims": st.one_of(st.just([]), st.lists(st.integers(-5, 0), min_size=1, max_size=3),
                                  st.lists(st.integers(129, 10**4), min_size=1, max_size=2),
                                  st.sampled_from([[16, 8], [8, 8], "8,16", 8, [8.0]])),
        "shared_head": st.sampled_from(["yes", 2, None]),
        "gamma": st.one_of(st.floats(1, 10), st.floats(-10, -1e-3), st.sampled_from([NAN, "0.9", None])),
        "alpha": bad_nonnegative,
        "max_inverse_temperature": bad_positive,
        "update_gamma_after_step": st.one_of(st.integers(-10, -1), st.floats(0.5, 3), st.none()),
        "update_gamma_every_n_steps": bad_count,
        "image_size": st.one_of(st.integers(-5, 0), st.sampled_from(["big", 2.5, True])),
        "channels_last": st.sampled_from(["yes", 2, None]),
        "precision": not_one_of(PRECISIONS),
        "device": not_one_of(DEVICES, prefix_ok=("cpu",)),
        "random_state": st.sampled_from([-1, "0", 1.5]),
    },
}
#: parameters a bad value is only bad together with (a NEG constant needs the NEG loss)
CONTEXT = {("CNE", "neg_spec"): {"loss_mode": "neg"}, ("CNE", "Z_bar"): {"loss_mode": "neg"}}
#: the word the message must contain, where it is not the parameter's own name
MESSAGE_NAME = {("TLDR", "encoder"): "spec|encoder", ("TLDR", "projector"): "spec|projector"}


def _data_for(estimator: str) -> np.ndarray:
    return tiny_images() if estimator in IMAGE_ESTIMATORS else tiny_vectors(N_SAMPLES)


@pytest.mark.parametrize("estimator", list(BAD_PARAMS))
def test_bad_parameters_name_the_argument(estimator, record_property):
    table = BAD_PARAMS[estimator]
    X = _data_for(estimator)

    def check(case):
        name, value = case
        overrides = {**CONTEXT.get((estimator, name), {}), name: value}
        with pytest.raises((ValueError, TypeError)) as info:
            make_tiny(estimator, **overrides).fit(X)
        expected = MESSAGE_NAME.get((estimator, name), re.escape(name))
        assert re.search(expected, str(info.value)), f"{name}={value!r}: {info.value!r}"

    cases = st.sampled_from(sorted(table)).flatmap(lambda name: st.tuples(st.just(name), table[name]))
    run_cases(cases, check, record_property)


@pytest.mark.parametrize("estimator", VECTOR_ESTIMATORS)
def test_wrong_feature_count_at_transform(fitted_tiny, estimator, record_property):
    model = fitted_tiny[estimator]
    name = type(model).__name__

    def check(shape):
        n, d = shape
        with pytest.raises(ValueError, match=f"{d} features, but {name} is expecting 5"):
            model.transform(tiny_vectors(n, d))

    run_cases(st.tuples(st.integers(1, 30), st.integers(1, 12).filter(lambda d: d != 5)), check, record_property)


# --- degenerate but valid data -----------------------------------------------------------------
def _degenerate(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    return {
        "duplicate rows": np.repeat(rng.normal(size=(10, 4)), 3, axis=0),
        "constant features": np.hstack([rng.normal(size=(30, 3)), np.ones((30, 2))]),
        "n barely above k": rng.normal(size=(5, 4)),  # k = 3 neighbours + the point itself + 1
        "all rows equal": np.zeros((12, 3)),
        "one class": rng.normal(size=(30, 4)) * 0.01 + 5.0,
    }[kind].astype(np.float32)


@pytest.mark.parametrize("kind", ["duplicate rows", "constant features", "n barely above k", "all rows equal", "one class"])
@pytest.mark.parametrize("estimator", VECTOR_ESTIMATORS)
def test_degenerate_but_valid_data_works(estimator, kind):
    X = _degenerate(kind)
    overrides = {"batch_size": min(8, len(X))} if estimator == "TLDR" else {}
    model = make_tiny(estimator, **overrides)
    Z = model.fit_transform(X, np.zeros(len(X)))  # one class in y too (ignored, but accepted)
    assert Z.shape == (len(X), 2) and np.isfinite(Z).all()
    new = model.transform(X[:3] + 0.5)
    assert new.shape == (3, 2) and np.isfinite(new).all()


# --- model files and paths (the crafted-file cases of every kind are in test_io.py) ------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def corrupted(draw, tensors: dict, meta: dict) -> bytes | tuple[dict, object]:
    """Raw bytes, or a valid model's ``(tensors, meta)`` with one part of the config or one
    tensor replaced, deleted or added."""
    kind = draw(st.sampled_from(["bytes", "config", "tensors"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    tensors, meta = dict(tensors), copy.deepcopy(meta)
    if kind == "config":
        section = draw(st.sampled_from(["params", "fitted", None]))
        target = meta if section is None else meta[section]
        key = draw(st.sampled_from(sorted(target)) | st.text(max_size=6))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
        return tensors, meta
    key = draw(st.sampled_from(sorted(tensors)))
    action = draw(st.sampled_from(["delete", "reshape", "dtype", "extra"]))
    if action == "delete":
        del tensors[key]
    elif action == "reshape":
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        tensors[key] = torch.zeros(shape)
    elif action == "dtype":
        tensors[key] = tensors[key].to(draw(st.sampled_from([torch.int64, torch.uint8, torch.float64, torch.bool])))
    else:
        tensors[draw(st.text(min_size=1, max_size=6))] = torch.ones(2)
    return tensors, meta


def _data_of(estimator: str):
    """A little input for ``transform``; indices for non-parametric CNE, whose transform of new
    points would run as many epochs as a (crafted) ``transform_epochs`` says."""
    if estimator == "CNE":
        return [0, 1]
    return tiny_images(2) if estimator in IMAGE_ESTIMATORS else tiny_vectors(3)


def _names_the_path(err: BaseException, path) -> bool:
    message = str(err)
    return "path" in message or str(path) in message or path.name in message


@pytest.mark.parametrize("estimator", list(TINY_PARAMS))
def test_crafted_model_files_load_or_fail_clearly(estimator, fitted_tiny, tmp_path, record_property):
    path = tmp_path / "model.safetensors"
    fitted_tiny[estimator].save(path)
    tensors, meta = read_raw(path)

    def check(content):
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_raw(path, *content)
        model = make_tiny(estimator)
        try:
            load_into(model, path)
        except (ValueError, TypeError, OSError) as err:
            assert _names_the_path(err, path), repr(err)
            return
        # a harmless change (a hyperparameter training alone uses): the model must work
        try:
            out = model.transform(_data_of(estimator))
        except (ValueError, TypeError) as err:
            assert DATA_WORDS.search(str(err)) or "n_components" in str(err), repr(err)
            return
        assert np.isfinite(out).all()

    run_cases(corrupted(tensors, meta), check, record_property)


path_names = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.text("ab/._\0 ", max_size=12),
    st.integers(240, 400).map(lambda n: "x" * n),  # longer than a file name may be
)


@pytest.mark.parametrize("estimator", list(TINY_PARAMS))
def test_save_to_any_path_round_trips_or_fails_clearly(estimator, fitted_tiny, tmp_path, record_property):
    model = fitted_tiny[estimator]
    root = tmp_path / "saves"
    root.mkdir()
    expected = model.transform(_data_of(estimator))

    def check(name):
        if isinstance(name, str):
            full = f"{root}/{name}"
            # never write outside the test's folder
            assume("\0" in name or os.path.normpath(full).startswith(str(root)))
            path = full
        else:
            path = name
        try:
            model.save(path)
        except (ValueError, TypeError, OSError) as err:
            assert _names_the_path(err, Path(str(path))), repr(err)
            return
        again = load_into(make_tiny(estimator), path)
        np.testing.assert_array_equal(again.transform(_data_of(estimator)), expected)

    values = st.one_of(path_names, st.sampled_from([None, 3, 2.5, b"model", ["m"], object()]))
    run_cases(values, check, record_property)
