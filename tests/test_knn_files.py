"""kNN graph files (issue 11, item 9): ``save_knn``/``load_knn`` round trip ``.npy`` and ``.npz``
files, and a crafted header, a pickle, a damaged archive or out-of-range indices get a
``ValueError`` naming the file before any array larger than the file is allocated."""

from __future__ import annotations

import io as _io
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import damaged
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_bad_input import run_cases

from twinlearn.neighbors.files import load_knn, save_knn


def _graph(n: int = 30, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, (n, k)), rng.random((n, k))


def _npy_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = _io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def test_round_trips_and_the_files_earlier_versions_wrote(tmp_path):
    indices, distances = _graph()
    save_knn(tmp_path / "graph.npy", indices)
    got, none = load_knn(tmp_path / "graph.npy", n_samples=30)
    assert got.dtype == np.int32 and np.array_equal(got, indices) and none is None
    assert np.load(tmp_path / "graph.npy").dtype == np.int32  # plain NumPy reads it too
    save_knn(tmp_path / "graph.npz", indices, distances)
    got, dist = load_knn(tmp_path / "graph.npz")
    assert np.array_equal(got, indices) and dist.dtype == np.float32
    np.testing.assert_array_equal(dist, distances.astype(np.float32))
    # TLDR.save_knn wrote int64 .npy files; a transposed array is saved in Fortran order
    for legacy in (indices, np.asfortranarray(indices)):
        (tmp_path / "legacy.npy").write_bytes(_npy_bytes(legacy))
        assert np.array_equal(load_knn(tmp_path / "legacy.npy")[0], indices)


def _header_with(shape: object, descr: str = "<i8", fortran: bool = False) -> bytes:
    """A version 1.0 .npy header saying anything, as np.save lays it out."""
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def test_a_crafted_header_is_refused_before_allocating(tmp_path):
    # before: np.load of this 7 KB file asked for 74.5 GiB (TLDR.load_knn)
    path = tmp_path / "graph.npy"
    path.write_bytes(_header_with((10**9, 10)) + bytes(7000))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="header describes") as info:
            load_knn(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value) and peak < 1_000_000


descrs = st.sampled_from(["<i8", "<i4", ">i8", "|u1", "<u2", "<f4", "<f8", "|O", "<U4", "|b1",
                          "<c8", "[('a', '<i4')]", "(2,)<i4", "<m8[s]", "x"])
dims = st.one_of(st.integers(-3, 40), st.integers(0, 2**63), st.just(10**30))
shapes = st.lists(dims, max_size=3).map(tuple) | st.sampled_from(["'x'", "(1.5, 2)", "[3, 2]"])


@st.composite
def crafted_npy(draw) -> bytes:
    """An honest .npy of indices, the same cut short, or its data behind a header that says
    any shape and dtype (reinterpreting the bytes, or claiming far more than follows)."""
    n, k = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    dtype = np.dtype(draw(st.sampled_from(["<i8", "<i4", ">i8", "|u1", "<u2"])))
    indices = draw(hnp.arrays(dtype, (n, k), elements=st.integers(0, n - 1)))
    how = draw(st.sampled_from(["honest", "truncated", "crafted header", "reinterpreted"]))
    if how == "honest":
        return _npy_bytes(indices)
    if how == "truncated":
        honest = _npy_bytes(indices)
        return honest[: draw(st.integers(0, len(honest) - 1))]
    data = indices.tobytes()
    if how == "reinterpreted":
        descr = draw(st.sampled_from(["<i8", "<i4", "|u1", "<f4", "|b1"]))
        rows = len(data) // np.dtype(descr).itemsize
        header = _header_with(repr((rows, 1)), descr, draw(st.booleans()))
        return header + data[: rows * np.dtype(descr).itemsize]
    shape = draw(shapes)
    header = _header_with(shape if isinstance(shape, str) else repr(shape), draw(descrs),
                          draw(st.booleans()))
    return header + data[: draw(st.integers(0, len(data)))]


def test_crafted_npy_files_load_consistently_or_are_refused(tmp_path, record_property):
    path = tmp_path / "graph.npy"

    def check(content):
        path.write_bytes(content)
        tracemalloc.start()
        try:
            indices, distances = load_knn(path)
        except ValueError as err:
            assert str(path) in str(err), repr(err)
            return
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            # the file, the int32 copy, and a little room
            assert peak < 3 * len(content) + 100_000, f"{peak} bytes for a {len(content)}-byte file"
        n, k = indices.shape
        assert n >= 1 and k >= 1 and 0 <= indices.min() and indices.max() < n and distances is None

    run_cases(crafted_npy(), check, record_property)


damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                  st.integers(1, 255)), min_size=1, max_size=3)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
)


def test_a_damaged_npz_is_refused_never_read_differently(tmp_path, record_property):
    path = tmp_path / "graph.npz"
    indices, distances = _graph()
    save_knn(path, indices, distances)
    original = path.read_bytes()

    def check(case):
        path.write_bytes(damaged(original, case))
        try:
            got, dist = load_knn(path)
        except ValueError as err:
            assert str(path) in str(err), repr(err)
            return
        # a flip in a field zipfile ignores (a date, a version) leaves the same graph
        assert np.array_equal(got, indices) and np.array_equal(dist, distances.astype(np.float32))

    run_cases(damage, check, record_property)


def test_a_directory_entry_that_swallows_the_next_member_is_refused(tmp_path):
    # found by the test above: a larger comment length in the first central-directory entry
    # hides the distances' entry inside its comment, and the file loaded without distances
    import zipfile

    path = tmp_path / "graph.npz"
    save_knn(path, *_graph())
    content = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        first_entry = archive.start_dir
        assert len(archive.infolist()) == 2
    content[first_entry + 32] ^= 64  # its comment length
    path.write_bytes(bytes(content))
    with zipfile.ZipFile(path) as archive:
        assert [info.filename for info in archive.infolist()] == ["indices.npy"]  # what zipfile sees
    with pytest.raises(ValueError, match="hidden member") as info:
        load_knn(path)
    assert str(path) in str(info.value)


class _Boom:
    def __reduce__(self):
        return (exec, ("open('pwned', 'w').write('pwned')",))


def _bad_files(indices: np.ndarray, distances: np.ndarray) -> dict[str, bytes]:
    def npz(compress: bool = False, **arrays) -> bytes:
        buffer = _io.BytesIO()
        (np.savez_compressed if compress else np.savez)(buffer, **arrays)
        return buffer.getvalue()

    objects = np.empty(2, dtype=object)
    objects[:] = [_Boom(), 1]
    return {
        "a pickle": pickle.dumps(_Boom()),
        "an object array": _npy_bytes(objects, allow_pickle=True),
        "an index out of range": _npy_bytes(np.where(indices == 0, 30, indices)),
        "a negative index": _npy_bytes(-indices - 1),
        "float indices": _npy_bytes(indices.astype(np.float32)),
        "one dimension": _npy_bytes(indices[:, 0]),
        "no neighbours": _npy_bytes(indices[:, :0]),
        "NaN distances": npz(indices=indices, distances=np.where(indices == 0, np.nan, distances)),
        "distances of another shape": npz(indices=indices, distances=distances[:, :2]),
        "a compressed archive": npz(compress=True, indices=indices, distances=distances),
        "an unexpected member": npz(indices=indices, extra=distances),
        "no indices": npz(distances=distances),
        "not a kNN file": b"hello",
    }


@pytest.mark.parametrize("bad", list(_bad_files(*_graph())))
def test_bad_knn_files_are_refused_naming_the_file(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "graph.npy"
    path.write_bytes(_bad_files(*_graph())[bad])
    with pytest.raises(ValueError) as info:
        load_knn(path)
    assert str(path) in str(info.value)
    assert not (tmp_path / "pwned").exists(), "a pickle was executed"


def test_wrong_row_count_and_bad_arguments(tmp_path):
    indices, distances = _graph()
    save_knn(tmp_path / "graph.npy", indices)
    with pytest.raises(ValueError, match="30 rows, but n_samples=31"):
        load_knn(tmp_path / "graph.npy", n_samples=31)
    for n_samples in (0, -1, 2.5, True, "30"):
        with pytest.raises(ValueError, match="n_samples"):
            load_knn(tmp_path / "graph.npy", n_samples=n_samples)
    with pytest.raises(ValueError, match="^indices"):
        save_knn(tmp_path / "bad.npy", indices + 1)
    with pytest.raises(ValueError, match="^distances"):
        save_knn(tmp_path / "bad.npz", indices, distances[:-1])
    with pytest.raises(ValueError, match="^indices"):
        save_knn(tmp_path / "bad.npy", [[0, 1], [1]])
    assert not (tmp_path / "bad.npy").exists() and not (tmp_path / "bad.npz").exists()
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_knn(tmp_path / "missing.npy")
    assert zipfile.is_zipfile(tmp_path / "graph.npy") is False
