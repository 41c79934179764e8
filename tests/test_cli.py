"""The mrl_train command line: every mrl-pytorch flag parses, one tiny epoch runs."""

import sys
from pathlib import Path

import numpy as np
import pytest

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
    assert (args.dataset_path, args.dataset_name, args.encoder_model_name) == ("/data/x", "cifar10", "resnet50")
    assert (args.save_model_dir, args.num_epochs, args.batch_size) == ("/tmp/models", 7, 32)
    assert (args.learning_rate, args.weight_decay, args.fp16_precision) == (0.001, 0.0001, True)
    assert (args.proj_out_dim, args.proj_hidden_dim, args.log_every_n_steps) == (128, 256, 10)
    assert (args.gamma, args.alpha) == (0.99, 0.5)
    assert (args.update_gamma_after_step, args.update_gamma_every_n_steps) == (3, 2)
    assert args.ckpt_path == "c.safetensors"
    long_names = build_mrl_parser().parse_args(
        ["--encoder_model_name", "resnet18", "--batch_size", "8", "--learning_rate", "0.1",
         "--weight_decay", "0", "--save_model_dir", "m"]
    )
    assert (long_names.encoder_model_name, long_names.batch_size, long_names.save_model_dir) == ("resnet18", 8, "m")


def test_parser_defaults_are_mrl_pytorch_defaults():
    args = build_mrl_parser().parse_args([])
    assert (args.dataset_path, args.dataset_name, args.encoder_model_name) == ("./data", "stl10", "resnet18")
    assert (args.save_model_dir, args.num_epochs, args.batch_size) == ("./models", 100, 256)
    assert (args.learning_rate, args.weight_decay, args.fp16_precision) == (3e-4, 1e-5, False)
    assert (args.proj_out_dim, args.log_every_n_steps, args.gamma, args.alpha) == (64, 400, 0.995, 1.0)
    assert (args.update_gamma_after_step, args.update_gamma_every_n_steps, args.ckpt_path) == (1, 1, None)


def _image_folder(root: Path, n_per_class: int = 6) -> Path:
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_one_tiny_epoch_then_resume(tmp_path):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "not" / "yet" / "there"
    common = ["--dataset_name", "imagefolder", "--dataset_path", str(data), "-m", "small_cnn",
              "-save_model_dir", str(out), "-b", "6", "--proj_hidden_dim", "32",
              "--nesting_dims", "8", "128", "--log_every_n_steps", "1", "--device", "cpu"]
    assert mrl_main([*common, "--num_epochs", "1"]) == 0
    assert (out / "relic_model.safetensors").exists() and (out / "latest_snapshot.safetensors").exists()
    from twinlearn import ReLIC

    model = ReLIC().load(out / "relic_model.safetensors")
    assert model.nesting_dims_ == [8, 128] and model.backbone == "small_cnn"
    assert mrl_main([*common, "--num_epochs", "2", "--ckpt_path", str(out / "latest_snapshot.safetensors")]) == 0
    from twinlearn import io

    _, meta = io.load_tensors(out / "latest_snapshot.safetensors", kind="checkpoint")
    assert meta["epoch"] == 2 and meta["step"] == 4


def test_missing_or_download_only_datasets_fail_clearly(tmp_path):
    with pytest.raises(SystemExit, match="never downloads"):
        mrl_main(["--dataset_name", "food101", "--dataset_path", str(tmp_path)])
    with pytest.raises(SystemExit, match="stl10_binary"):
        mrl_main(["--dataset_name", "stl10", "--dataset_path", str(tmp_path)])
    with pytest.raises(SystemExit, match="CIFAR-10"):
        mrl_main(["--dataset_name", "cifar10", "--dataset_path", str(tmp_path)])


def test_console_scripts_are_declared():
    import importlib

    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.skip("py<3.11")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    for name in ("mrl_train", "twinlearn-mrl"):
        module, func = scripts[name].split(":")
        assert callable(getattr(importlib.import_module(module), func))


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
