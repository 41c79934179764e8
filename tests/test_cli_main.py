"""The ``twinlearn`` command: options generated from the estimators, fast help, one-line errors
before any work, and real runs on MNIST and PBMC files."""

import inspect
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import exit_status_and_stderr

from twinlearn.cli.app import build_parser, main, normalise_argv
from twinlearn.cli.options import DEST_PREFIX, METHODS, estimator_params
from twinlearn.data import find_shared_data

CLASSES = list(METHODS.values())


def _run(argv, capsys):
    """``main``'s exit status (returned, or raised by argparse) and its stderr."""
    return exit_status_and_stderr(main, argv, capsys)


def _parse(*argv):
    return build_parser().parse_args(normalise_argv(list(argv)))


# --- options are the estimators' parameters ----------------------------------------------------
@pytest.mark.parametrize("class_name", CLASSES)
def test_options_are_the_live_signature_with_documented_help(class_name):
    import twinlearn

    live = inspect.signature(getattr(twinlearn, class_name).__init__).parameters
    generated = {p.name: p for p in estimator_params(class_name)}
    assert list(generated) == [name for name in live if name != "self"]
    for name, param in generated.items():
        assert param.default == live[name].default, name
        assert param.help, f"{class_name}.{name} is not documented in the class docstring"
    method = {v: k for k, v in METHODS.items()}[class_name]
    sub = build_parser()._subparsers._group_actions[0].choices["fit"]
    dests = {a.dest for a in sub._subparsers._group_actions[0].choices[method]._actions}
    offered = {d[len(DEST_PREFIX) :] for d in dests if d.startswith(DEST_PREFIX)}
    # everything but Python-only objects (modules, callables) and verbose (--quiet sets it)
    python_only = {n for n, p in generated.items() if not p.kinds - {"none"}}
    assert offered == set(generated) - python_only - {"verbose"}
    assert python_only <= {"model", "data_transform"}


def test_values_are_parsed_by_type():
    args = _parse(
        "fit",
        "CNE",
        "x.npy",
        "-o",
        "m.safetensors",
        "--n_epochs",
        "5",
        "--nesting-dims",
        "2,4",
        "--no-early-exaggeration",
        "--optimizer",
        "none",
        "--anneal-lr",
        "false",
        "--negative-samples",
        "full",
        "--s",
        "0.5",
    )
    given = {k[len(DEST_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(DEST_PREFIX)}
    assert given == {
        "n_epochs": 5,
        "nesting_dims": [2, 4],
        "early_exaggeration": False,
        "optimizer": None,
        "anneal_lr": False,
        "negative_samples": "full",
        "s": 0.5,
    }
    assert args.method == "cne"
    tsimcne = _parse(
        "fit",
        "tsimcne",
        "imgs",
        "-o",
        "m.safetensors",
        "--total-epochs",
        "10,1,5",
        "--lr",
        "auto_batch",
        "--image-size",
        "32",
        "--warmup",
        "2,0,2",
    )
    assert vars(tsimcne)[DEST_PREFIX + "total_epochs"] == [10, 1, 5]
    assert vars(tsimcne)[DEST_PREFIX + "lr"] == "auto_batch"
    assert vars(tsimcne)[DEST_PREFIX + "image_size"] == 32
    for text, value in (("30", 30), ("30,", [30])):  # a number, or a one-stage list
        parsed = _parse("fit", "tsimcne", "i", "-o", "m.safetensors", "--total-epochs", text)
        assert vars(parsed)[DEST_PREFIX + "total_epochs"] == value


@pytest.mark.parametrize(
    "argv, flag",
    [
        (
            ["fit", "tldr", "x.npy", "-o", "m.safetensors", "--n-components", "two"],
            "--n-components",
        ),
        (["fit", "tldr", "x.npy", "-o", "m.safetensors", "--precision", "fp8"], "--precision"),
        (["fit", "cne", "x.npy", "-o", "m.safetensors", "--nesting-dims", "2,x"], "--nesting-dims"),
        (["fit", "umap", "x.npy", "-o", "m.safetensors"], "umap"),
        (
            ["fit", "cne", "x.npy", "--no-such-option", "1", "-o", "m.safetensors"],
            "--no-such-option",
        ),
        (["fit", "cne", "x.npy"], "-o"),
    ],
)
def test_bad_arguments_are_one_line_with_status_2(argv, flag, capsys):
    status, err = _run(argv, capsys)
    assert status == 2 and flag in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys\nfrom twinlearn.cli.app import main\nfor argv in (['--help'], ['fit', "
        "'--help'], ['fit', 'cne', '--help'], ['embed', 'relic', '--help']):\n    try:\n"
        "        main(argv)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False"), "twinlearn --help imported torch"
    assert "--n-components" in out.stdout and "--loss-mode {infonce,neg,nce,umap,none}" in out.stdout
    best = np.inf
    for _ in range(3):  # the best of three: the machine may be busy with other work
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "twinlearn", "fit", "cne", "--help"],
            capture_output=True,
            check=True,
        )
        best = min(best, time.perf_counter() - start)
    assert best < 1.0, f"twinlearn fit cne --help took {best:.2f} s"


# --- real runs --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_slice(tmp_path_factory):
    """2 000 random MNIST training digits (uint8, as stored) and their labels."""
    folder = find_shared_data("mnist.npz")
    if folder is None:
        pytest.skip("real data not found: ../shared/data/mnist.npz (or set $TWINLEARN_DATA)")
    with np.load(folder / "mnist.npz") as f:
        x, y = f["x_train"], f["y_train"]
    keep = np.sort(np.random.default_rng(0).choice(len(x), 2000, replace=False))
    root = tmp_path_factory.mktemp("mnist")
    np.save(root / "x.npy", x[keep])
    np.save(root / "y.npy", y[keep])
    return root


def test_embed_evaluate_plot_on_real_mnist(mnist_slice, tmp_path, capsys):
    x, y = mnist_slice / "x.npy", mnist_slice / "y.npy"
    out = tmp_path / "cne.npy"
    assert (
        main(["embed", "cne", str(x), "-o", str(out), "--n-epochs", "5", "--random-state", "0"])
        == 0
    )
    err = capsys.readouterr().err
    assert "training" in err and "wrote" in err  # the epoch bar and the messages
    Y = np.load(out)
    assert Y.shape == (2000, 2) and np.isfinite(Y).all()
    assert (
        main(
            [
                "evaluate",
                str(out),
                "--labels",
                str(y),
                "--reference",
                str(x),
                "--format",
                "json",
                "-q",
            ]
        )
        == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {
        "n_samples",
        "n_neighbors",
        "knn_accuracy",
        "knn_recall",
        "trustworthiness",
    }
    assert scores["knn_accuracy"] > 0.3  # ten classes: chance is 0.1
    assert 0 < scores["knn_recall"] <= 1 and 0.5 < scores["trustworthiness"] <= 1
    assert main(["plot", str(out), "--labels", str(y), "-o", str(tmp_path / "map.png"), "-q"]) == 0
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_parametric_model_file_transforms_like_the_fit(mnist_slice, tmp_path):
    x = mnist_slice / "x.npy"
    model, out, again = tmp_path / "m.safetensors", tmp_path / "fit.csv", tmp_path / "again.parquet"
    assert (
        main(
            [
                "embed",
                "cne",
                str(x),
                "-o",
                str(out),
                "--save-model",
                str(model),
                "--parametric",
                "--n-epochs",
                "2",
                "--batch-size",
                "4096",
                "--random-state",
                "0",
                "-q",
            ]
        )
        == 0
    )
    assert main(["transform", str(model), str(x), "-o", str(again), "-q"]) == 0
    from twinlearn.data.files import read_input

    fitted, transformed = read_input(out), read_input(again)
    assert list(transformed.table.columns) == ["cne0", "cne1"]
    np.testing.assert_allclose(transformed.X, fitted.X, rtol=1e-4, atol=1e-5)


def test_h5ad_in_and_out_on_real_pbmc(tmp_path):
    anndata = pytest.importorskip("anndata")
    folder = find_shared_data("pbmc68k_reduced.h5ad")
    if folder is None:
        pytest.skip("real data not found: ../shared/data/pbmc68k_reduced.h5ad")
    source, out = folder / "pbmc68k_reduced.h5ad", tmp_path / "pbmc.h5ad"
    assert (
        main(
            [
                "embed",
                "tldr",
                str(source),
                "--use-rep",
                "X_pca",
                "-o",
                str(out),
                "-q",
                "--n-components",
                "8",
                "--projector",
                "mlp-1-64",
                "--batch-size",
                "128",
                "--n-epochs",
                "3",
                "--random-state",
                "0",
            ]
        )
        == 0
    )
    adata = anndata.read_h5ad(out)
    with warnings.catch_warnings():  # the shared file is in an old anndata layout
        warnings.simplefilter("ignore")
        original = anndata.read_h5ad(source)
    assert adata.obsm["X_tldr"].shape == (original.n_obs, 8)
    assert list(adata.obs_names) == list(original.obs_names)
    assert adata.obs["bulk_labels"].tolist() == original.obs["bulk_labels"].tolist()
    np.testing.assert_array_equal(adata.obsm["X_pca"], original.obsm["X_pca"])
    assert (
        main(
            [
                "evaluate",
                str(out),
                "--use-rep",
                "X_tldr",
                "--labels",
                "bulk_labels",
                "--reference",
                f"{source}:X_pca",
                "-q",
            ]
        )
        == 0
    )


def _image_folder(root: Path) -> Path:
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    return root


def test_image_methods_embed_an_image_folder(tmp_path):
    anndata = pytest.importorskip("anndata")
    images = _image_folder(tmp_path / "images")
    assert (
        main(
            [
                "embed",
                "tsimcne",
                str(images),
                "-o",
                str(tmp_path / "t.npy"),
                "-q",
                "--backbone",
                "small_cnn",
                "--total-epochs",
                "1,",
                "--batch-size",
                "4",
                "--device",
                "cpu",
                "--random-state",
                "0",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "t.npy").shape == (12, 2)
    assert (
        main(
            [
                "embed",
                "ReLIC",
                str(images),
                "-o",
                str(tmp_path / "r.h5ad"),
                "-q",
                "--backbone",
                "small_cnn",
                "--n-epochs",
                "1",
                "--batch-size",
                "6",
                "--proj-hidden-dim",
                "16",
                "--n-components",
                "8",
                "--random-state",
                "0",
                "--output-folder",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    adata = anndata.read_h5ad(tmp_path / "r.h5ad")
    assert adata.obsm["X_relic"].shape == (12, 8)
    assert sorted(set(adata.obs["label"])) == ["ants", "bees"]
    assert (tmp_path / "runs" / "latest_snapshot.safetensors").exists()


def test_python_dash_m_twinlearn_runs():
    out = subprocess.run(
        [sys.executable, "-m", "twinlearn", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("twinlearn ")


def test_fit_checkpoints_and_resumes(tmp_path, capsys):
    from twinlearn import io

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32))
    runs, common = tmp_path / "runs", ["--projector", "mlp-1-16", "--batch-size", "16", "-q"]
    argv = ["fit", "tldr", str(tmp_path / "x.npy"), "--output-folder", str(runs), *common]
    assert main([*argv, "-o", str(tmp_path / "a.safetensors"), "--n-epochs", "1"]) == 0
    _, meta = io.load_tensors(runs / "latest_snapshot.safetensors", kind="checkpoint")
    assert meta["epoch"] == 1
    status = main([*argv, "-o", str(tmp_path / "b.safetensors"), "--n-epochs", "3", "--resume"])
    _, meta = io.load_tensors(runs / "latest_snapshot.safetensors", kind="checkpoint")
    assert status == 0 and meta["epoch"] == 3 and meta["step"] == 3 * 4  # 64 rows / batch 16
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    assert main([*argv[:3], "--output-folder", str(fresh), *common, "--resume", "-o",
                 str(tmp_path / "c.safetensors"), "--n-epochs", "1"]) == 0  # fmt: skip
    assert (fresh / "final_model.safetensors").exists()
    err = capsys.readouterr().err  # --quiet keeps warnings, as one short line
    assert err == f"twinlearn: warning: no checkpoint in {fresh}: training starts from scratch\n"
