"""Out-of-core input end to end: memory maps, ``.npy`` files opened with ``mmap_mode="r"``,
HDF5 datasets, zarr arrays and the dense ``X`` of a backed AnnData are validated, searched,
trained on and embedded a block of rows at a time, with the results of the same data in memory;
damaged or unsuitable files are refused, naming the file, before any work."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny

from twinlearn.data import disk
from twinlearn.data.arrays import validate_features
from twinlearn.data.disk import DiskArray
from twinlearn.estimators import _base
from twinlearn.neighbors import exact, faiss_index
from twinlearn.neighbors import index as knn_index

h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")

N, D = 120, 6  # D <= 4 * 2: scikit-learn's PCA (CNE's initialisation) then solves exactly too
KINDS = ("memmap", "npy", "hdf5", "zarr", "h5ad")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny fits on one thread: on a loaded machine two spinning threads made them 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def data(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) + 3 * rng.integers(0, 3, size=(n, 1))).astype(np.float32)


def on_disk(kind: str, X: np.ndarray, folder, chunk_rows: int = 16):
    """``X`` written to a file in ``folder`` and opened again, lazily, as ``kind``."""
    if kind == "memmap":
        X.tofile(folder / "x.dat")
        return np.memmap(folder / "x.dat", dtype=X.dtype, mode="r", shape=X.shape)
    if kind == "npy":
        np.save(folder / "x.npy", X)
        return np.load(folder / "x.npy", mmap_mode="r")
    if kind == "hdf5":
        with h5py.File(folder / "x.h5", "w") as fh:
            fh.create_dataset("x", data=X, chunks=(chunk_rows, X.shape[1]), compression="gzip")
        return h5py.File(folder / "x.h5", "r")["x"]
    if kind == "zarr":
        array = zarr.create_array(folder / "x.zarr", shape=X.shape, dtype=X.dtype,
                                  chunks=(chunk_rows, X.shape[1]))
        array[:] = X
        return zarr.open_array(folder / "x.zarr", mode="r")
    anndata = pytest.importorskip("anndata")
    anndata.AnnData(X).write_h5ad(folder / "x.h5ad")
    backed = anndata.read_h5ad(folder / "x.h5ad", backed="r")
    return backed.X


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["TLDR", "CNE", "CNE(parametric=True)"])
def test_fit_and_transform_from_disk_equal_those_in_memory(kind, key, tmp_path):
    X = data()
    stored = on_disk(kind, X, tmp_path)
    assert not isinstance(stored, np.ndarray) or isinstance(stored, np.memmap)
    in_memory = make_tiny(key, n_epochs=2).fit(X)
    from_disk = make_tiny(key, n_epochs=2).fit(stored)
    expected = in_memory.transform(X)
    if key == "CNE":  # PCA initialisation of a file: from its covariance, block by block
        extent = np.abs(in_memory.embedding_).max()  # UMAP's loss starts 10 wide
        # rounding of the start, grown by two epochs of SGD: up to 3.2e-4 of the extent on an
        # Intel AMX host (1 point of 120); a wrong row or a missed block moves points by ~extent
        np.testing.assert_allclose(from_disk.embedding_, in_memory.embedding_, atol=1e-3 * extent)
        # new points placed against training data that stays on disk
        np.testing.assert_allclose(from_disk.transform(stored), expected, atol=1e-3 * extent)
        return
    # TLDR's linear encoder starts at PCA, of a file from its covariance: equal to rounding
    np.testing.assert_allclose(from_disk.transform(stored), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(in_memory.transform(stored), expected)


def test_pin_memory_copies_a_file_to_the_device_block_by_block(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "BLOCK_VALUES", 16 * D)  # 16 rows per block, the kNN's too
    monkeypatch.setitem(exact.exact_knn.__kwdefaults__, "database_block", 16)
    monkeypatch.setitem(exact.exact_knn.__kwdefaults__, "query_block", 16)
    X = data(400)
    stored = on_disk("hdf5", X, tmp_path)
    sizes = spy_on_reads(monkeypatch)
    pinned = make_tiny("TLDR", pin_memory=True, batch_size=64).fit(stored)
    assert max(sizes) <= _base.PROBE_ROWS < len(X)  # the data fingerprint and the final check
    monkeypatch.undo()
    expected = make_tiny("TLDR", batch_size=64).fit(X).transform(X)
    # equal to rounding: the encoder's PCA start of a file comes from its covariance
    np.testing.assert_allclose(pinned.transform(X), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["hdf5", "zarr"])
def test_rows_of_a_disk_array_are_those_numpy_indexing_gives(kind, tmp_path):
    stored = DiskArray(on_disk(kind, data(), tmp_path))
    X = data()
    np.testing.assert_array_equal(stored[[5, 2, 2, 9]], X[[5, 2, 2, 9]])  # any order, repeats
    np.testing.assert_array_equal(stored[np.array([], dtype=np.int64)], X[:0])
    np.testing.assert_array_equal(stored[3], X[3])
    np.testing.assert_array_equal(stored[10:40:3, 1:], X[10:40:3, 1:])
    np.testing.assert_array_equal(stored[7, 2:], X[7, 2:])
    np.testing.assert_array_equal(stored[[4, 1], 0], X[[4, 1], 0])
    with pytest.raises(IndexError, match="out of range"):
        stored[[0, N]]


def spy_on_reads(monkeypatch) -> list[int]:
    """Record the rows of every read of a :class:`DiskArray`; fail any whole-array conversion
    (``np.asarray`` of a dataset, a zarr array or a DiskArray)."""
    sizes = []
    read = DiskArray._read

    def counted(self, key, what):
        block = read(self, key, what)
        sizes.append(len(block))
        return block

    def refuse(self, *args, **kwargs):
        raise AssertionError("the whole on-disk array was read into memory")

    monkeypatch.setattr(DiskArray, "_read", counted)
    for cls in (DiskArray, h5py.Dataset, zarr.Array):
        monkeypatch.setattr(cls, "__array__", refuse)
    return sizes


@pytest.mark.parametrize("kind", ["hdf5", "zarr", "h5ad"])
def test_fit_and_transform_never_read_the_whole_file(kind, tmp_path, monkeypatch):
    # every block of rows (checks, kNN, PCA, batches, transform) smaller than the data
    n, block_rows = 4000, 1024
    monkeypatch.setattr(disk, "BLOCK_VALUES", block_rows * D)
    monkeypatch.setitem(exact.exact_knn.__kwdefaults__, "database_block", block_rows)
    monkeypatch.setattr(_base, "TRANSFORM_CHUNK", block_rows)
    for faiss_step in (faiss_index.build_faiss_index, faiss_index.search_faiss):
        monkeypatch.setitem(faiss_step.__kwdefaults__, "chunk_rows", block_rows)
    X = data(n)
    stored = on_disk(kind, X, tmp_path, chunk_rows=256)
    sizes = spy_on_reads(monkeypatch)
    tldr = make_tiny("TLDR", batch_size=512).fit(stored)
    Z = tldr.transform(stored)
    # its PCA initialisation too, and a faiss index (added and searched in chunks)
    cne = make_tiny("CNE", batch_size=4096, knn_method="hnsw").fit(stored)
    assert Z.shape == (n, 2) and cne.embedding_.shape == (n, 2)
    assert sizes and max(sizes) <= block_rows < n
    monkeypatch.undo()
    np.testing.assert_array_equal(Z, tldr.transform(X))


def test_a_backed_anndata_is_embedded_from_disk(tmp_path, monkeypatch):
    anndata = pytest.importorskip("anndata")
    from twinlearn.anndata import tldr

    X = data()
    anndata.AnnData(X).write_h5ad(tmp_path / "x.h5ad")
    backed = anndata.read_h5ad(tmp_path / "x.h5ad", backed="r")
    sizes = spy_on_reads(monkeypatch)
    tldr(backed, use_rep="X", n_components=2, projector="mlp-1-16", n_epochs=1, batch_size=8,
         n_neighbors=3)
    assert sizes, "adata.X was not read from its file"
    monkeypatch.undo()
    expected = make_tiny("TLDR").fit(X).transform(X)
    # the encoder's PCA start of a file comes from its covariance: equal to rounding
    np.testing.assert_allclose(backed.obsm["X_tldr"], expected, rtol=1e-4, atol=1e-4)


# --- files that cannot be used, refused before any work -----------------------------------------
@pytest.fixture
def no_knn(monkeypatch):
    """Fail if a kNN index is built: the error must come before any work."""
    def refuse(self, X):
        raise AssertionError("work started on a bad input")

    monkeypatch.setattr(knn_index.KNNIndex, "build", refuse)


def _damage_chunk(path, dataset: str) -> None:
    """Flip bytes in the middle of one compressed chunk of an HDF5 dataset."""
    with h5py.File(path, "r") as fh:
        offset = fh[dataset].id.get_chunk_info(3).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 4)
        fh.write(bytes(b ^ 0xFF for b in fh.read(16)))


def test_a_damaged_hdf5_chunk_is_refused_naming_the_file(tmp_path, no_knn):
    stored = on_disk("hdf5", data(), tmp_path)
    path = stored.file.filename
    stored.file.close()
    _damage_chunk(path, "x")
    with pytest.raises(ValueError, match=r"x\.h5.*/x.*not readable \(rows 0\.\.119\).*filter"):
        make_tiny("TLDR").fit(h5py.File(path, "r")["x"])


def test_a_damaged_zarr_chunk_is_refused_naming_the_store(tmp_path, no_knn):
    on_disk("zarr", data(), tmp_path)
    chunk = tmp_path / "x.zarr" / "c" / "2" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-8])  # cut short
    with pytest.raises(ValueError, match=r"x\.zarr.*not readable"):
        make_tiny("CNE").fit(zarr.open_array(tmp_path / "x.zarr", mode="r"))


def test_what_is_on_disk_but_not_a_dense_array_is_refused(tmp_path, no_knn):
    X = data()
    with h5py.File(tmp_path / "f.h5", "w") as fh:
        fh["group/a"], fh["group/b"] = X, X
        fh["words"] = np.array([b"a", b"b"] * N).reshape(N, 2)
        fh["flat"] = X[:, 0]
        fh["with_nan"] = np.where(np.arange(N)[:, None] == 77, np.nan, X)
    fh = h5py.File(tmp_path / "f.h5", "r")
    with pytest.raises(TypeError, match=r"group of '.*f\.h5' \(/group\), not an array.*: a, b"):
        make_tiny("TLDR").fit(fh["group"])
    with pytest.raises(TypeError, match="dtype"):
        make_tiny("TLDR").fit(fh["words"])
    with pytest.raises(ValueError, match="Expected 2D array"):
        make_tiny("TLDR").fit(fh["flat"])
    with pytest.raises(ValueError, match=r"NaN or infinity \(row 77\)"):
        make_tiny("CNE(parametric=True)").fit(fh["with_nan"])


def test_a_backed_sparse_matrix_is_refused_with_a_way_out(tmp_path, no_knn):
    anndata = pytest.importorskip("anndata")
    import scipy.sparse

    anndata.AnnData(scipy.sparse.csr_matrix(data())).write_h5ad(tmp_path / "s.h5ad")
    backed = anndata.read_h5ad(tmp_path / "s.h5ad", backed="r")
    with pytest.raises(TypeError, match=r"sparse matrix in a backed AnnData.*to_memory\(\)"):
        make_tiny("TLDR").fit(backed.X)


def test_pca_of_a_file_by_blocks_matches_scikit_learn(tmp_path, monkeypatch):
    from sklearn.decomposition import PCA

    monkeypatch.setattr(disk, "BLOCK_VALUES", 10 * D)  # 10 rows per block
    X = data() + 1000  # a large common offset: the blocked covariance must not lose it
    stored = on_disk("hdf5", X, tmp_path)
    np.testing.assert_allclose(disk.pca_scores_by_blocks(DiskArray(stored), 3),
                               PCA(3, svd_solver="full").fit_transform(X.astype(np.float64)),
                               atol=1e-3)
    assert validate_features(stored).shape == (N, D)


# --- the command line -----------------------------------------------------------------------------
TINY_CLI = ["--n-components", "2", "--projector", "mlp-1-16", "--n-epochs", "1",
            "--batch-size", "16", "--n-neighbors", "3", "--random-state", "0", "-q"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """The same data as .npy, HDF5 (two datasets), zarr and .h5ad in the working folder."""
    anndata = pytest.importorskip("anndata")
    monkeypatch.chdir(tmp_path)
    X = data()
    np.save("x.npy", X)
    with h5py.File("x.h5", "w") as fh:
        fh["data/x"], fh["other"] = X, X[:, :2]
    on_disk("zarr", X, tmp_path)
    anndata.AnnData(X).write_h5ad("x.h5ad")
    return X


def test_the_command_reads_hdf5_zarr_and_h5ad_from_disk(files, capsys, monkeypatch):
    from test_cli_main import _run

    assert _run(["embed", "tldr", "x.npy", "-o", "ref.npy", *TINY_CLI], capsys) == (0, "")
    # an .h5ad output keeps the input's obs and X (copied from file to file)
    assert _run(["embed", "tldr", "x.h5ad", "-o", "out.h5ad", *TINY_CLI], capsys) == (0, "")
    out = pytest.importorskip("anndata").read_h5ad("out.h5ad")
    np.testing.assert_array_equal(out.obsm["X_tldr"], np.load("ref.npy"))
    np.testing.assert_array_equal(out.X, files)
    sizes = spy_on_reads(monkeypatch)
    for i, source in enumerate([["x.h5", "--key", "data/x"], ["x.zarr"], ["x.h5ad"]]):
        assert _run(["embed", "tldr", *source, "-o", f"{i}.npy", *TINY_CLI], capsys) == (0, "")
        np.testing.assert_array_equal(np.load(f"{i}.npy"), np.load("ref.npy"))
    assert sizes and max(sizes) <= N  # (the data is smaller than one block)


@pytest.mark.parametrize("argv, expected", [
    (["cut.h5"], "'cut.h5' is not a readable hdf5 file"),
    (["x.h5"], "x.h5 holds data/x, other: choose one with --key"),
    (["x.h5", "--key", "nope"], "x.h5 has no 'nope'"),
    (["x.zarr", "--key", "a"], "x.zarr is one array, not a group"),
    (["plain.zarr"], "'plain.zarr' is not a readable zarr file"),
    (["cut.h5ad"], "'cut.h5ad' is not a readable h5ad file"),
])
def test_a_file_that_cannot_be_read_is_one_line_before_any_work(files, argv, expected, capsys,
                                                                monkeypatch):
    from test_cli_main import _run

    import twinlearn

    monkeypatch.setattr(twinlearn.TLDR, "fit", lambda *a, **k: pytest.fail("training started"))
    for name in ("x.h5", "x.h5ad"):
        Path(f"cut{Path(name).suffix}").write_bytes(Path(name).read_bytes()[:3000])
    Path("plain.zarr").mkdir()
    status, err = _run(["embed", "tldr", *argv, "-o", "o.npy", *TINY_CLI], capsys)
    assert status == 2 and expected in err and err.count("\n") == 1, err
    assert not Path("o.npy").exists()
