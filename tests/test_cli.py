"""The mrl_train command line: every mrl-pytorch flag parses, one tiny epoch runs."""

import contextlib
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import exit_status_and_stderr
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from twinlearn.cli import build_mrl_parser, mrl_main

ORIGINAL_FLAGS = [
    "--dataset_path", "/data/x", "--dataset_name", "cifar10", "-m", "resnet50",
    "-save_model_dir", "/tmp/models", "--num_epochs", "7", "-b", "32", "-lr", "0.001",
    "-wd", "0.0001", "--fp16_precision", "--proj_out_dim", "128", "--proj_hidden_dim", "256",
    "--log_every_n_steps", "10", "--gamma", "0.99", "--alpha", "0.5",
    "--update_gamma_after_step", "3", "--update_gamma_every_n_steps", "2", "--ckpt_path", "c.safetensors",
]  # fmt: skip


def test_parser_accepts_every_original_flag():
    args = build_mrl_parser().parse_args(ORIGINAL_FLAGS)
    assert (args.dataset_path, args.dataset_name, args.encoder_model_name) == (
        "/data/x",
        "cifar10",
        "resnet50",
    )
    assert (args.save_model_dir, args.num_epochs, args.batch_size) == ("/tmp/models", 7, 32)
    assert (args.learning_rate, args.weight_decay, args.fp16_precision) == (0.001, 0.0001, True)
    assert (args.proj_out_dim, args.proj_hidden_dim, args.log_every_n_steps) == (128, 256, 10)
    assert (args.gamma, args.alpha) == (0.99, 0.5)
    assert (args.update_gamma_after_step, args.update_gamma_every_n_steps) == (3, 2)
    assert args.ckpt_path == "c.safetensors"
    long_names = build_mrl_parser().parse_args(
        [
            "--encoder_model_name",
            "resnet18",
            "--batch_size",
            "8",
            "--learning_rate",
            "0.1",
            "--weight_decay",
            "0",
            "--save_model_dir",
            "m",
        ]
    )
    assert (long_names.encoder_model_name, long_names.batch_size, long_names.save_model_dir) == (
        "resnet18",
        8,
        "m",
    )


def test_parser_defaults_are_mrl_pytorch_defaults():
    args = build_mrl_parser().parse_args([])
    assert (args.dataset_path, args.dataset_name, args.encoder_model_name) == (
        "./data",
        "stl10",
        "resnet18",
    )
    assert (args.save_model_dir, args.num_epochs, args.batch_size) == ("./models", 100, 256)
    assert (args.learning_rate, args.weight_decay, args.fp16_precision) == (3e-4, 1e-5, False)
    assert (args.proj_out_dim, args.log_every_n_steps, args.gamma, args.alpha) == (
        64,
        400,
        0.995,
        1.0,
    )
    assert (args.update_gamma_after_step, args.update_gamma_every_n_steps, args.ckpt_path) == (
        1,
        1,
        None,
    )


def _image_folder(root: Path, n_per_class: int = 6) -> Path:
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
    return root


def test_one_tiny_epoch_then_resume(tmp_path):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "not" / "yet" / "there"
    common = [
        "--dataset_name",
        "imagefolder",
        "--dataset_path",
        str(data),
        "-m",
        "small_cnn",
        "-save_model_dir",
        str(out),
        "-b",
        "6",
        "--proj_hidden_dim",
        "32",
        "--nesting_dims",
        "8",
        "128",
        "--log_every_n_steps",
        "1",
        "--device",
        "cpu",
    ]
    assert mrl_main([*common, "--num_epochs", "1"]) == 0
    assert (out / "relic_model.safetensors").exists() and (
        out / "latest_snapshot.safetensors"
    ).exists()
    from twinlearn import ReLIC

    model = ReLIC().load(out / "relic_model.safetensors")
    assert model.nesting_dims_ == [8, 128] and model.backbone == "small_cnn"
    assert (
        mrl_main(
            [*common, "--num_epochs", "2", "--ckpt_path", str(out / "latest_snapshot.safetensors")]
        )
        == 0
    )
    from twinlearn import io

    _, meta = io.load_tensors(out / "latest_snapshot.safetensors", kind="checkpoint")
    assert meta["epoch"] == 2 and meta["step"] == 4


def _exit_status_and_stderr(argv, capsys):
    """``mrl_main``'s exit status (returned or raised) and its stderr."""
    return exit_status_and_stderr(mrl_main, argv, capsys)


def test_missing_or_download_only_datasets_fail_clearly(tmp_path, capsys):
    status, err = _exit_status_and_stderr(
        ["--dataset_name", "food101", "--dataset_path", str(tmp_path)], capsys
    )
    assert status == 2 and "never downloads" in err
    for name, expected in (
        ("stl10", "stl10_binary"),
        ("cifar10", "CIFAR-10"),
        ("imagefolder", "class subfolders"),
    ):
        status, err = _exit_status_and_stderr(
            ["--dataset_name", name, "--dataset_path", str(tmp_path)], capsys
        )
        assert status == 2 and expected in err and "Traceback" not in err, (name, err)
        assert err.count("\n") == 1, err  # one line
    # documented: 2, as for every bad argument (it was 1)
    status, err = _exit_status_and_stderr(["--dataset_path", str(tmp_path / "missing")], capsys)
    assert status == 2 and "--dataset_path" in err and err.count("\n") == 1


def test_help_lists_only_datasets_that_can_work_and_is_fast():
    import subprocess
    import time

    code = (
        "import sys\nfrom twinlearn.cli import mrl_main\ntry:\n    mrl_main(['--help'])\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    best = math.inf
    for _ in range(3):  # the best of three: the machine may be busy with other work
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        best = min(best, time.perf_counter() - start)
    assert out.stdout.strip().endswith("False"), "mrl_train --help imported torch"
    assert best < 1.0, f"mrl_train --help took {best:.2f} s"
    choices = out.stdout.split("--dataset_name")[1].split("}")[0]
    assert "cifar10" in choices and not any(name in choices for name in ("food101", "imagenet1k"))


def test_bad_values_stop_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    """A nest larger than the backbone's features, a seed torch cannot take and a corrupt
    checkpoint are usage errors (status 2, one line) found before the data set is read."""
    from twinlearn.cli import mrl

    def never(*args, **kwargs):
        raise AssertionError("the data set was read before the flags were checked")

    monkeypatch.setattr(mrl, "load_dataset", never)
    corrupt = tmp_path / "latest_snapshot.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}" + bytes(64))
    base = ["--dataset_name", "imagefolder", "--dataset_path", str(tmp_path), "-m", "small_cnn"]
    for tail, flag in (
        (["--nesting_dims", "8", "999"], "--nesting_dims"),
        (["--seed", str(2**64)], "--seed"),
        (["--ckpt_path", str(corrupt)], "--ckpt_path"),
    ):
        status, err = _exit_status_and_stderr([*base, *tail], capsys)
        assert status == 2 and flag in err and "Traceback" not in err, (tail, err)
        assert err.startswith("mrl_train: error:") and err.count("\n") == 1, err


def test_console_scripts_are_declared():
    import importlib
    import inspect

    tomllib = (
        pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.skip("py<3.11")
    )
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    importlib.import_module("twinlearn.cli.app")  # loaded, as in a real run, before the lookup
    for name in ("twinlearn", "mrl_train", "twinlearn-mrl"):
        module, func = scripts[name].split(":")
        # a function: a submodule of the same name would shadow it once imported
        assert inspect.isfunction(getattr(importlib.import_module(module), func)), name


def test_stl10_binary_layout_is_decoded(tmp_path):
    from twinlearn.data.stl10 import load_stl10

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    # the official files hold each image as 3 column-major 96×96 planes
    images.transpose(0, 3, 2, 1).tofile(folder / "train_X.bin")
    np.array([1, 10, 5], dtype=np.uint8).tofile(folder / "train_y.bin")
    x, y = load_stl10(tmp_path, "train")
    assert np.array_equal(x, images) and y.tolist() == [0, 9, 4]
    with pytest.raises(FileNotFoundError, match="unlabeled_X.bin"):
        load_stl10(tmp_path)


# --- bad flags and values: argparse's usage error (status 2) naming the flag, no traceback ----
INT_FLAGS = {"--num_epochs": 1, "-b": 2, "--proj_out_dim": 1, "--proj_hidden_dim": 0,
             "--log_every_n_steps": 0, "--update_gamma_after_step": 0,
             "--update_gamma_every_n_steps": 1, "--max_images": 2, "--image_size": 1, "--seed": 0,
             "--nesting_dims": 1}  # fmt: skip
#: (low, high, low included, high included)
FLOAT_FLAGS = {"-lr": (0, math.inf, False, False), "-wd": (0, math.inf, True, False),
               "--gamma": (0, 1, True, False), "--alpha": (0, math.inf, True, False)}  # fmt: skip
CHOICE_FLAGS = {"--dataset_name": ("stl10", "cifar10", "imagefolder"),
                "-m": ("resnet18", "resnet50", "resnet18_simclr", "resnet34", "small_cnn"),
                "--device": ("cpu", "auto")}  # fmt: skip
BASE = ["--dataset_name", "imagefolder", "--dataset_path", "/no/such/images"]


def _parses(text: str, kind: type) -> float | None:
    try:
        return kind(text)
    except ValueError:
        return None


def _valid_int(text: str, minimum: int) -> bool:
    value = _parses(text, int)
    return value is not None and value >= minimum


def _valid_float(text: str, low: float, high: float, low_in: bool, high_in: bool) -> bool:
    v = _parses(text, float)
    return (
        v is not None
        and math.isfinite(v)
        and (low <= v if low_in else low < v)
        and (v <= high if high_in else v < high)
    )


numberish = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "-inf", "1e400", "1.5", "0x10", "two", "-"]),
)


@st.composite
def bad_flag(draw):
    """``(argv tail, the flag the error must name)``."""
    kind = draw(st.sampled_from(["int", "float", "choice", "nesting_order", "unknown"]))
    if kind == "int":
        flag = draw(st.sampled_from(sorted(INT_FLAGS)))
        return [flag, draw(numberish.filter(lambda t: not _valid_int(t, INT_FLAGS[flag])))], flag
    if kind == "float":
        flag = draw(st.sampled_from(sorted(FLOAT_FLAGS)))
        return [
            flag,
            draw(numberish.filter(lambda t: not _valid_float(t, *FLOAT_FLAGS[flag]))),
        ], flag
    if kind == "choice":
        flag = draw(st.sampled_from(sorted(CHOICE_FLAGS)))
        value = draw(
            st.text(max_size=10).filter(
                lambda t: t not in CHOICE_FLAGS[flag] and not t.startswith("cpu")
            )
        )
        return [flag, value], flag
    if kind == "nesting_order":
        dims = draw(
            st.lists(st.integers(1, 512), min_size=2, max_size=4).filter(
                lambda d: sorted(set(d)) != d
            )
        )
        return ["--nesting_dims", *map(str, dims)], "nesting_dims"
    known = build_mrl_parser()._option_string_actions
    name = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
    flag = "--" + name
    # argparse accepts unambiguous prefixes of long options; those are not unknown
    assume(not any(option.startswith(flag) for option in known))
    return [flag], flag


def test_bad_flags_exit_with_a_usage_error_naming_the_flag(record_property):
    seen = []

    @settings(max_examples=150, deadline=None)
    @given(case=bad_flag())
    def run(case):
        tail, flag = case
        seen.append(flag)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
            mrl_main([*BASE, *tail])
        message = err.getvalue()
        assert info.value.code == 2, (tail, info.value.code, message)
        assert "mrl_train: error:" in message and flag in message, (tail, message)
        assert "Traceback" not in message

    run()
    record_property("hypothesis_examples", len(seen))
    assert len(seen) >= 100
