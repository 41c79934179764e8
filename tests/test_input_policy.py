"""One input policy for feature matrices (``validate_features``' docstring), the same for every
container: generated dtypes × containers × values checked against what the policy states, and
the red team's cases through the estimators' public ``fit``/``transform``."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny, tiny_vectors
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_bad_input import run_cases

from twinlearn.data import disk
from twinlearn.data.arrays import validate_features
from twinlearn.training import trainer as trainer_module

ACCEPTED = ("float16", "float32", "float64", "int8", "int64", "uint8", "uint16", "bool")
REFUSED = ("complex64", "complex128", "datetime64[s]", "timedelta64[ms]", "str", "object")
CONTAINERS = ("numpy", "memmap", "torch", "pandas", "list")
#: what each refused or bad case must raise, and a word its message must hold
EXPECTED = {
    "complex": (ValueError, "Complex"),
    "not numbers": (TypeError, r"dtype|numbers|strings"),
    "ragged": (ValueError, "not a rectangular array"),
    "nonfinite": (ValueError, "NaN or infinity"),
    "beyond float32": (ValueError, "beyond float32 range"),
    "overflowing norm": (ValueError, "squared norm"),
}


def _value_kinds(dtype: str) -> list[str]:
    """The bad values a dtype can hold (and "finite", which every dtype can)."""
    kinds = ["finite"]
    if dtype.startswith("float"):
        kinds.append("nonfinite")
    if dtype == "float64":
        kinds.append("beyond float32")
    if dtype in ("float32", "float64", "int64"):
        kinds.append("overflowing norm")
    return kinds


def _with_value(base: np.ndarray, dtype: str, kind: str, draw) -> np.ndarray:
    """``base`` (values in [-100, 100]) as ``dtype`` with one entry set to a value of ``kind``."""
    if dtype == "bool":
        return base > 0
    if dtype.startswith("uint"):
        base = np.abs(base)
    if dtype.startswith("complex"):
        return (base * (1 + 1j)).astype(dtype)
    X = base.astype(dtype)
    sign = draw(st.sampled_from([1, -1]))
    bad = {
        "finite": None,
        "nonfinite": st.sampled_from([np.nan, np.inf]),
        "beyond float32": st.floats(3.5e38, 1e300),  # finite in float64, infinite once cast
        # far above the documented limit (squared norm ~4e37), so float32 rounding cannot matter
        "overflowing norm": st.integers(7 * 10**18, 9 * 10**18) if dtype == "int64" else st.floats(1e19, 1e38),
    }[kind]
    if bad is not None:
        X[draw(st.integers(0, len(X) - 1)), draw(st.integers(0, X.shape[1] - 1))] = draw(bad) * sign
    return X


def _contain(X: np.ndarray, container: str, folder) -> object:
    if container == "memmap":
        path = folder / f"x{next(_COUNTER)}.dat"
        mm = np.memmap(path, dtype=X.dtype, mode="w+", shape=X.shape)
        mm[:] = X
        mm.flush()
        return np.memmap(path, dtype=X.dtype, mode="r", shape=X.shape)
    return {"numpy": lambda: X, "torch": lambda: torch.from_numpy(X), "pandas": lambda: pd.DataFrame(X),
            "list": X.tolist}[container]()


_COUNTER = itertools.count()


@st.composite
def policy_cases(draw, container: str):
    """``(container value, source array, expected)``; ``expected`` is "accepted" or a key of
    ``EXPECTED``."""
    dtypes = ACCEPTED + REFUSED
    if container == "torch":  # torch holds no dates, strings or objects
        dtypes = ACCEPTED + ("complex64", "complex128")
    if container == "memmap":  # a memmap holds no Python objects
        dtypes = tuple(d for d in dtypes if d != "object")
    dtype = draw(st.sampled_from(dtypes))
    n, d = draw(st.integers(2, 30)), draw(st.integers(1, 6))
    base = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-100, 100)))
    if dtype == "object":  # numbers as objects pass (as in scikit-learn); a missing one is NaN
        X = base.astype(object)
        filler = draw(st.sampled_from(["a", "1.5", b"2", {"k": 1}, [1], None]))
        X[draw(st.integers(0, n - 1)), 0] = filler
        if filler is None:
            return X, dtype, "nonfinite"
        # as a list of lists, a list in a cell makes the rows ragged
        return X, dtype, "ragged" if container == "list" and isinstance(filler, list) else "not numbers"
    kind = draw(st.sampled_from(_value_kinds(dtype)))
    X = _with_value(base, dtype, kind, draw)
    if dtype.startswith("complex"):
        kind = "complex"
    elif dtype in REFUSED:
        kind = "not numbers"
    return X, dtype, kind


@pytest.mark.parametrize("container", CONTAINERS)
def test_one_dtype_and_value_policy_for_every_container(container, tmp_path, record_property):
    def check(case):
        X, dtype, kind = case
        value = _contain(X, container, tmp_path)
        if kind == "finite":
            out = validate_features(value)
            assert np.asarray(out).dtype == np.float32 or isinstance(out, np.memmap)
            expected = torch.from_numpy(np.asarray(X).astype(np.float32)) if container == "torch" else X
            np.testing.assert_array_equal(np.asarray(out, dtype=np.float32), np.asarray(expected, dtype=np.float32))
            return
        error, words = EXPECTED[kind]
        with pytest.raises(error) as info:
            validate_features(value)
        message = str(info.value)
        assert re.search(words, message) and re.search(r"\bX\b", message), (dtype, kind, message)

    run_cases(policy_cases(container), check, record_property)


def test_memmap_is_read_once_and_a_bad_last_row_is_found(tmp_path, monkeypatch):
    """One pass over a memmap, block by block, each row read once; the float32 cast of a float64
    memmap is checked too (a value beyond float32 range in its very last row)."""
    reads: list[tuple[int, int]] = []

    class CountingMemmap(np.memmap):
        def __getitem__(self, key):
            if isinstance(key, slice):
                reads.append(key.indices(len(self))[:2])
            return super().__getitem__(key)

    monkeypatch.setattr(disk, "BLOCK_VALUES", 64 * 8)  # 64 rows per block: many blocks
    n, d = 1000, 8
    path = tmp_path / "x.dat"
    data = np.random.default_rng(0).normal(size=(n, d))
    data.tofile(path)
    X = CountingMemmap(path, dtype=np.float64, mode="r", shape=(n, d))
    assert validate_features(X) is X
    rows = sorted(reads)
    assert rows[0][0] == 0 and rows[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:])), "rows skipped or read twice"
    data[-1, -1] = 1e39
    data.tofile(path)
    reads.clear()
    with pytest.raises(ValueError, match=f"beyond float32 range .*row {n - 1}"):
        validate_features(CountingMemmap(path, dtype=np.float64, mode="r", shape=(n, d)))
    assert sum(stop - start for start, stop in reads) < n + 64  # the failing block at most twice


def test_bool_is_numbers_in_every_container():
    """Booleans are 0/1 whatever holds them: the same model as for the float 0/1 matrix."""
    mask = np.random.default_rng(0).random((40, 5)) > 0.5
    reference = make_tiny("TLDR").fit(mask.astype(np.float32)).transform(mask.astype(np.float32))
    for X in (mask, pd.DataFrame(mask), torch.from_numpy(mask), mask.tolist()):
        Z = np.asarray(make_tiny("TLDR").fit(X).transform(X))
        np.testing.assert_allclose(Z, reference, atol=1e-5, err_msg=type(X).__name__)


def test_estimators_refuse_values_beyond_float32(fitted_tiny):
    X = tiny_vectors(20).astype(np.float64)
    with pytest.raises(ValueError, match="beyond float32 range"):
        fitted_tiny["TLDR"].transform(X * 1e39)
    big = X.astype(np.float32) * np.float32(1e19)  # finite, but squared distances overflow
    with pytest.raises(ValueError, match="squared norm"):
        make_tiny("TLDR").fit(big)
    with pytest.raises(ValueError, match="squared norm"):
        make_tiny("CNE").fit(torch.from_numpy(big))


def test_sample_indices_out_of_range_name_the_index(fitted_tiny, record_property):
    model = fitted_tiny["CNE"]
    n = model.embedding_.shape[0]

    def check(case):
        bad, rest = case
        for value in (bad, [*rest, bad], np.asarray([*rest, bad]) if abs(bad) < 2**63 else [bad]):
            with pytest.raises(ValueError, match=rf"row {bad}\b.*{n} training samples"):
                model.transform(value)

    bad = st.one_of(st.integers(n, 10**30), st.integers(-(10**30), -1))
    run_cases(st.tuples(bad, st.lists(st.integers(0, n - 1), max_size=3)), check, record_property)
    np.testing.assert_array_equal(model.transform([0, n - 1]), model.embedding_[[0, n - 1]])


@pytest.mark.parametrize("estimator", ["TLDR", "CNE"])
def test_random_state_beyond_63_bits_is_refused_by_name(estimator, record_property):
    X = tiny_vectors(30)

    def check(seed):
        with pytest.raises(ValueError, match=r"random_state must be an int in \[0, 2\*\*63\)"):
            make_tiny(estimator, random_state=seed).fit(X)

    run_cases(st.one_of(st.integers(2**63, 2**200), st.integers(-(2**200), -1)), check, record_property)
    make_tiny(estimator, random_state=2**63 - 1).fit(X)  # the largest accepted seed works


def test_bf16_fallback_warning_is_seen_by_the_user(monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        make_tiny("TLDR", precision="bf16").fit(tiny_vectors())


def test_a_read_only_memory_map_trains_without_torch_warnings(tmp_path):
    import warnings

    np.save(tmp_path / "x.npy", tiny_vectors(60))
    X = np.load(tmp_path / "x.npy", mmap_mode="r")  # what `twinlearn fit` reads a .npy as
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "array is not writable" warning was shown per block
        Z = make_tiny("TLDR").fit(X).transform(X)
    assert Z.shape == (60, 2) and not X.flags.writeable
