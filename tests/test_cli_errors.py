"""Bad input to the ``twinlearn`` command: one line on stderr, exit status 2, before any data
is read or any training starts, and nothing the user had on disk overwritten."""

from pathlib import Path

import numpy as np
import pytest
from test_cli_main import _run

from twinlearn.cli.options import METHODS


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save("x.npy", rng.normal(size=(60, 5)).astype(np.float32))
    np.save("y.npy", rng.integers(0, 3, 60))
    np.save("short.npy", rng.integers(0, 3, 59))
    np.save("emb.npy", rng.normal(size=(60, 2)).astype(np.float32))
    np.savez("two.npz", a=np.zeros((60, 5)), b=np.ones((60, 5)))
    Path("junk.npy").write_bytes(b"junk")
    Path("x.xlsx").write_bytes(b"")
    Path("taken.npy").write_bytes(b"mine")
    return tmp_path


BAD_INPUT = [
    (["embed", "cne", "missing.npy", "-o", "o.npy"], "no such file"),
    (["embed", "cne", "x.xlsx", "-o", "o.npy"], "unsupported file type .xlsx"),
    (["embed", "cne", "junk.npy", "-o", "o.npy"], "junk.npy"),
    (["embed", "cne", "two.npz", "-o", "o.npy"], "--key"),
    (["embed", "cne", "two.npz", "--key", "c", "-o", "o.npy"], "no 'c'"),
    (["embed", "cne", "x.npy", "--use-rep", "X_pca", "-o", "o.npy"], "--use-rep"),
    (["embed", "cne", "x.npy", "-o", "taken.npy"], "--overwrite"),
    (["embed", "cne", "x.npy", "-o", "o.txt"], "unsupported file type .txt"),
    (["fit", "cne", "x.npy", "-o", "model.npy"], ".safetensors"),
    (["fit", "cne", "x.npy", "-o", "m.safetensors", "--n-components", "0"], "n_components"),
    (["fit", "cne", "x.npy", "-o", "m.safetensors", "--random-state", str(2**64)], "random_state"),
    (["fit", "tldr", "x.npy", "-o", "m.safetensors", "--nesting-dims", "8,64"], "nesting_dims"),
    (["fit", "tldr", "x.npy", "-o", "m.safetensors", "--resume"], "--output-folder"),
    (
        ["embed", "tsimcne", "x.npy", "-o", "o.npy", "--backbone", "small_cnn", "--device", "cpu"],
        "image",
    ),
    (["transform", "missing.safetensors", "x.npy", "-o", "o.npy"], "no such file"),
    (["transform", "junk.npy", "x.npy", "-o", "o.npy"], "not a readable twinlearn model"),
    (["evaluate", "emb.npy", "--labels", "y.npy:c"], "key"),
    (["evaluate", "emb.npy", "--labels", "x.npy"], "one label per point"),
    (["evaluate", "emb.npy", "--labels", "short.npy"], "59 entries for 60 points"),
    (
        [
            "evaluate",
            "emb.npy",
            "--labels",
            "y.npy",
            "--reference",
            "two.npz:a",
            "--n-neighbors",
            "0",
        ],
        "--n-neighbors",
    ),
    (["evaluate", "emb.npy"], "--labels"),
    (["plot", "emb.npy", "--labels", "two.npz:a", "-o", "map.png"], "one label per point"),
    (["plot", "x.npy", "-o", "map.png"], "needs 2"),
    (["plot", "emb.npy", "-o", "map.jpg"], "unsupported file type .jpg"),
    (["plot", "emb.npy", "-o", "taken.npy"], "unsupported"),
]


@pytest.mark.parametrize("argv, expected", BAD_INPUT, ids=[" ".join(a[:3]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_before_any_work(workdir, argv, expected, capsys, monkeypatch):
    import twinlearn

    for name in METHODS.values():  # no estimator may start training
        monkeypatch.setattr(getattr(twinlearn, name), "fit", _never)
    status, err = _run(argv, capsys)
    assert status == 2 and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert Path("taken.npy").read_bytes() == b"mine"
    assert not any(
        Path(name).exists() for name in ("o.npy", "m.safetensors", "map.png", "model.npy")
    )


def _never(*args, **kwargs):
    raise AssertionError("training started before the arguments were checked")
