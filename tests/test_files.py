"""Data files in (twinlearn.data.files) and embeddings out (twinlearn.data.writers)."""

import tarfile
import warnings

import numpy as np
import pytest

from twinlearn.data.files import (
    as_images,
    as_vectors,
    check_input,
    read_input,
    read_labels,
    split_spec,
)
from twinlearn.data.writers import check_output_path, write_output


@pytest.fixture
def Y():
    return np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet", ".h5ad"])
def test_every_output_type_reads_back(tmp_path, Y, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    if suffix == ".h5ad":
        pytest.importorskip("anndata")
    path = write_output(tmp_path / f"emb{suffix}", Y, name="cne")
    back = read_input(path)
    np.testing.assert_allclose(back.X, Y, rtol=1e-6)
    if suffix in (".csv", ".parquet"):
        assert list(back.table.columns) == ["cne0", "cne1", "cne2"]
    if suffix == ".h5ad":
        assert list(back.table.obsm.keys()) == ["X_cne"]
    assert [p.name for p in tmp_path.iterdir()] == [f"emb{suffix}"]  # no temporary file left


def test_outputs_are_never_overwritten_unless_asked(tmp_path, Y):
    path = tmp_path / "emb.npy"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_output(path, Y)
    assert path.read_bytes() == b"mine"
    write_output(path, Y, overwrite=True)
    np.testing.assert_array_equal(np.load(path), Y)
    with pytest.raises(ValueError, match=r"\.xyz.*\.npy"):
        check_output_path(tmp_path / "emb.xyz")
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(IsADirectoryError):
        check_output_path(tmp_path / "folder.npy")


def test_h5ad_output_keeps_the_input_obs_and_adds_obsm(tmp_path, Y):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    source = anndata.AnnData(
        X=np.ones((30, 4), np.float32),
        obs=pd.DataFrame({"cell": list("ab") * 15}, index=[f"c{i}" for i in range(30)]),
    )
    source.obsm["X_pca"] = Y
    source.write_h5ad(tmp_path / "in.h5ad")
    data = read_input(tmp_path / "in.h5ad", use_rep="X_pca")
    np.testing.assert_allclose(data.X, Y)
    write_output(tmp_path / "out.h5ad", Y[:, :2] * 2, like=data, name="tldr")
    out = anndata.read_h5ad(tmp_path / "out.h5ad")
    assert (
        list(out.obs_names) == list(source.obs_names)
        and out.obs["cell"].tolist() == list("ab") * 15
    )
    np.testing.assert_allclose(out.obsm["X_tldr"], Y[:, :2] * 2)
    assert set(out.obsm.keys()) == {"X_pca", "X_tldr"}
    with pytest.raises(ValueError, match="X_umap.*X_pca"):
        read_input(tmp_path / "in.h5ad", use_rep="X_umap")
    # labels from an obs column of another file, or of the embedding's own table
    assert read_labels(f"{tmp_path / 'in.h5ad'}:cell", 30)[:2].tolist() == ["a", "b"]
    assert read_labels("cell", 30, read_input(tmp_path / "out.h5ad", use_rep="X_tldr"))[
        :2
    ].tolist() == ["a", "b"]


def test_npz_key_is_required_only_when_ambiguous(tmp_path):
    np.savez(tmp_path / "one.npz", a=np.zeros((4, 2)))
    np.savez(tmp_path / "two.npz", x_train=np.ones((4, 2)), y_train=np.arange(4))
    assert read_input(tmp_path / "one.npz").X.shape == (4, 2)
    with pytest.raises(ValueError, match="x_train, y_train: choose one with --key"):
        check_input(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="no 'x_test'.*x_train, y_train"):
        read_input(tmp_path / "two.npz", key="x_test")
    assert read_labels(f"{tmp_path / 'two.npz'}:y_train", 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="--use-rep applies to .h5ad"):
        check_input(tmp_path / "one.npz", use_rep="X_pca")


def test_unreadable_or_unknown_files_are_refused_by_name(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "data.xlsx").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, match in (
        ("junk.npy", "junk.npy"),
        ("junk.npz", "junk.npz"),
        ("objects.npy", "objects.npy"),
        ("data.xlsx", "unsupported file type .xlsx"),
        ("missing.npy", "no such file"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            read_input(tmp_path / name)
    with pytest.raises(ValueError, match="key"):
        check_input(tmp_path / "objects.npy", key="x")


def test_tables_take_numeric_columns_and_the_rest_can_be_labels(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,species\n1,2,x\n3,4,y\n5,6,x\n")
    (tmp_path / "t.tsv").write_text("a\tb\n1\t2\n3\t4\n5\t6\n")
    with pytest.warns(UserWarning, match="species"):
        data = read_input(tmp_path / "t.csv")
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4], [5, 6]])
    assert read_labels("species", 3, data).tolist() == ["x", "y", "x"]
    assert read_labels(f"{tmp_path / 't.csv'}:species", 3).tolist() == ["x", "y", "x"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_input(tmp_path / "t.tsv").X, [[1, 2], [3, 4], [5, 6]])
    (tmp_path / "words.csv").write_text("name\nx\ny\n")
    with pytest.raises(ValueError, match="no numeric columns"):
        read_input(tmp_path / "words.csv")


def test_labels_files_and_their_length(tmp_path):
    (tmp_path / "ints.txt").write_text("1\n0\n2\n")
    (tmp_path / "names.txt").write_text("cat\ndog\ncat\n")
    np.save(tmp_path / "y.npy", np.array([3, 1, 2]))
    assert read_labels(str(tmp_path / "ints.txt"), 3).tolist() == [1, 0, 2]
    assert read_labels(str(tmp_path / "names.txt"), 3).tolist() == ["cat", "dog", "cat"]
    assert read_labels(str(tmp_path / "y.npy"), 3).tolist() == [3, 1, 2]
    with pytest.raises(ValueError, match="3 entries for 4 points"):
        read_labels(str(tmp_path / "y.npy"), 4)
    with pytest.raises(ValueError, match="no such file.*no column"):
        read_labels("typo.npy", 3)
    assert split_spec(f"{tmp_path / 'y.npy'}:k") == (tmp_path / "y.npy", "k")
    assert split_spec("column") == (None, "column")


def _image_folder(root, sizes=((8, 8),) * 4):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_image_folders_give_images_labels_and_class_names(tmp_path, capsys):
    data = read_input(_image_folder(tmp_path / "img"), progress=True)
    assert data.X.shape == (4, 8, 8, 3) and data.X.dtype == np.uint8
    assert data.class_names == ["cats", "dogs"] and sorted(data.labels.tolist()) == [0, 0, 1, 1]
    assert "decoding images" in capsys.readouterr().err
    vectors = as_vectors(data)
    assert vectors.shape == (4, 192) and vectors.dtype == np.float32 and vectors.max() <= 1.0
    np.testing.assert_allclose(vectors[0], data.X[0].reshape(-1) / 255)
    assert sorted(read_labels(str(tmp_path / "img"), 4).tolist()) == [
        "cats",
        "cats",
        "dogs",
        "dogs",
    ]
    mixed = _image_folder(tmp_path / "mixed", sizes=[(8, 8), (8, 8), (6, 10), (8, 8)])
    with pytest.raises(ValueError, match="image_size"):
        read_input(mixed)
    assert read_input(mixed, image_size=(5, 5)).X.shape == (4, 5, 5, 3)


def test_vectors_are_not_images():
    from twinlearn.data.files import InputData

    with pytest.raises(ValueError, match=r"\(5, 4\).*image folder"):
        as_images(InputData(np.zeros((5, 4))))
    assert as_images(InputData(np.zeros((5, 4, 4), np.uint8))).shape == (5, 4, 4)


def test_cifar10_tarball_splits(tmp_path, monkeypatch):
    Image = pytest.importorskip("PIL.Image")
    monkeypatch.setenv("TWINLEARN_CACHE", str(tmp_path / "cache"))
    members = tmp_path / "cifar10"
    for split, classes in (("train", ("cat", "dog", "ship")), ("test", ("truck",))):
        for cls in classes:
            (members / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), 99, np.uint8)).save(
                members / split / cls / "0001.jpg"
            )
    with tarfile.open(tmp_path / "cifar10-jpg.tar.gz", "w:gz") as tar:
        tar.add(members, arcname="cifar10")
    train = read_input(tmp_path / "cifar10-jpg.tar.gz")
    assert train.X.shape == (3, 32, 32, 3) and train.labels.tolist() == [3, 5, 8]
    test = read_input(tmp_path / "cifar10-jpg.tar.gz", key="test")
    assert test.labels.tolist() == [9] and test.class_names[9] == "truck"
    with pytest.raises(ValueError, match="train"):
        check_input(tmp_path / "cifar10-jpg.tar.gz", key="validation")
