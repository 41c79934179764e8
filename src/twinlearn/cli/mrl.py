"""``mrl_train`` / ``twinlearn-mrl``: Matryoshka ReLIC training with mrl-pytorch's flags
(``run_training.py``), on :class:`twinlearn.ReLIC`. Datasets come from disk only: CIFAR-10
from its JPEG tarball (or an extracted folder), STL-10 from ``stl10_binary``, or any folder of
``<class>/<image>`` files.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twinlearn.cli.options import SEED_MAX, OneLineErrorParser, validate_params

if TYPE_CHECKING:
    from twinlearn.estimators.matryoshka import ReLIC

logger = logging.getLogger("twinlearn")

DATASETS = ("stl10", "cifar10", "imagefolder")
OFFLINE_ONLY = ("tiny_imagenet", "food101", "imagenet1k")


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an int ``>= minimum`` (and ``<= maximum``; argparse names the flag
    in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an int >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def _float_in(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in the interval from ``low`` to ``high``."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number in {interval}, got {text!r}"
            ) from None
        above = low < value if low_open else low <= value
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        return value

    return parse


def _dataset_name(text: str) -> str:
    """An argparse ``type`` that explains the download-only names instead of listing them as
    choices that always fail (argparse then checks the real choices)."""
    if text in OFFLINE_ONLY:
        raise argparse.ArgumentTypeError(_offline_only_message(text))
    return text


def _device(text: str) -> str:
    """An argparse ``type``: a device this machine has (checked before any data is read)."""
    from twinlearn._device import resolve_device

    try:
        resolve_device(text)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_mrl_parser() -> argparse.ArgumentParser:
    """The argument parser: every mrl-pytorch flag (same names and defaults) plus a few of
    twinlearn's (subset, device, seed, nesting)."""
    p = OneLineErrorParser(
        prog="mrl_train",
        description="Matryoshka representation learning with ReLIC (twinlearn).",
    )
    p.add_argument(
        "--dataset_path",
        default="./data",
        help="CIFAR-10 tarball or folder, STL-10 folder (with stl10_binary/), or image folder",
    )
    p.add_argument("--dataset_name", default="stl10", type=_dataset_name, choices=DATASETS)
    # checked against the backbone list after parsing: listing it here would import torch and
    # make --help take seconds
    p.add_argument(
        "-m",
        "--encoder_model_name",
        default="resnet18",
        help="resnet18, resnet50 or another twinlearn backbone (small_cnn for CPUs)",
    )
    p.add_argument(
        "-save_model_dir",
        "--save_model_dir",
        dest="save_model_dir",
        default="./models",
        help="checkpoint folder (created if missing)",
    )
    # every value is checked here, so a bad one stops the run before the data set is read
    p.add_argument("--num_epochs", type=_int_at_least(1), default=100)
    p.add_argument("-b", "--batch_size", type=_int_at_least(2), default=256)
    p.add_argument("-lr", "--learning_rate", type=_float_in(0, low_open=True), default=3e-4)
    p.add_argument("-wd", "--weight_decay", type=_float_in(0), default=1e-5)
    p.add_argument(
        "--fp16_precision",
        action="store_true",
        help="mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPU",
    )
    p.add_argument("--proj_out_dim", type=_int_at_least(1), default=64)
    p.add_argument(
        "--proj_hidden_dim", type=_int_at_least(0), default=512, help="0: no hidden layer"
    )
    p.add_argument("--log_every_n_steps", type=_int_at_least(0), default=400)
    p.add_argument("--gamma", type=_float_in(0, 1, high_open=True), default=0.995)
    p.add_argument("--alpha", type=_float_in(0), default=1.0)
    p.add_argument("--update_gamma_after_step", type=_int_at_least(0), default=1)
    p.add_argument("--update_gamma_every_n_steps", type=_int_at_least(1), default=1)
    p.add_argument(
        "--ckpt_path",
        default=None,
        help="resume from a latest_snapshot.safetensors (weights, optimizer, step, γ)",
    )
    _add_twinlearn_options(p.add_argument_group("twinlearn options"))
    return p


def _add_twinlearn_options(extra: argparse._ArgumentGroup) -> None:
    """The flags mrl-pytorch does not have."""
    extra.add_argument(
        "--max_images", type=_int_at_least(2), default=None, help="train on a random subset"
    )
    extra.add_argument("--image_size", type=_int_at_least(1), default=None)
    extra.add_argument("--nesting_dims", type=_int_at_least(1), nargs="+", default=None)
    extra.add_argument("--full_mrl", action="store_true", help="one projector per nest (not MRL-E)")
    extra.add_argument("--channels_last", action="store_true")
    extra.add_argument("--device", type=_device, default="auto")
    extra.add_argument("--seed", type=_int_at_least(0, SEED_MAX), default=42)


def _offline_only_message(name: str) -> str:
    return (
        f"--dataset_name {name}: twinlearn never downloads data; extract it as "
        "<root>/<class>/<image> files and pass --dataset_name imagefolder --dataset_path <root>"
    )


def load_dataset(name: str, path: str | Path) -> np.ndarray:
    """Training images ``(N, H, W, 3)`` uint8 of a dataset on disk.

    Raises
    ------
    FileNotFoundError
        No such dataset at ``path``.
    ValueError
        ``name`` is a dataset that exists only as a download.
    """
    from twinlearn.data.files import read_input
    from twinlearn.data.images import load_cifar10

    path = Path(path)
    if name in OFFLINE_ONLY:
        raise ValueError(_offline_only_message(name))
    if name == "cifar10":
        tarball = path if path.is_file() else path / "cifar10-jpg.tar.gz"
        if tarball.is_file():
            return load_cifar10(tarball)[0]
        for folder in (path / "cifar10" / "train", path / "train"):
            if folder.is_dir():
                return read_input(folder, progress=True).X
        raise FileNotFoundError(
            f"no CIFAR-10 at {path}: expected cifar10-jpg.tar.gz or a cifar10/train folder"
        )
    if name == "stl10":
        from twinlearn.data.stl10 import load_stl10

        return load_stl10(path, "unlabeled")[0]
    if not path.is_dir():
        raise FileNotFoundError(f"--dataset_path {path} is not a folder of <class>/<image> files")
    return read_input(path, progress=True).X  # decoded under a progress bar


def _check_before_reading(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ReLIC:
    """Every check that needs no data, so that a bad value stops the run before the data set
    is read; returns the estimator the flags describe."""
    from twinlearn.estimators.matryoshka import RELIC_BACKBONES

    if args.encoder_model_name not in RELIC_BACKBONES:
        parser.error(
            f"argument -m/--encoder_model_name: invalid choice: "
            f"{args.encoder_model_name!r} (choose from {', '.join(RELIC_BACKBONES)})"
        )
    model = _make_relic(args, args.batch_size)
    try:
        validate_params(model)  # what no single flag's type can check (nesting_dims order)
        if args.nesting_dims is not None:
            _check_nesting_fits(model, args.nesting_dims)
    except (TypeError, ValueError) as err:
        parser.error(f"argument --nesting_dims: {err}" if "nesting_dims" in str(err) else str(err))
    if args.ckpt_path is not None:
        _check_checkpoint(parser, args.ckpt_path)
    if not Path(args.dataset_path).exists():
        parser.error(f"argument --dataset_path: {args.dataset_path!r} does not exist")
    return model


def _check_checkpoint(parser: argparse.ArgumentParser, path: str) -> None:
    """A readable ReLIC training checkpoint, or a one-line usage error."""
    from twinlearn import io

    try:
        _, meta = io.load_tensors(path, kind="checkpoint")
    except (OSError, ValueError, TypeError) as err:
        parser.error(f"argument --ckpt_path: {err}")
    if meta.get("class") != "ReLIC":
        parser.error(
            f"argument --ckpt_path: {path} is a {meta.get('class')} checkpoint, not ReLIC's"
        )


def _check_nesting_fits(model: ReLIC, nesting_dims: list[int]) -> None:
    """The largest nest must fit the backbone's features: the backbone is built on PyTorch's
    meta device (shapes, no memory), so this costs no time."""
    from twinlearn.encoders.matryoshka import check_nesting_dims
    from twinlearn.estimators._base import build_on_meta

    _, feature_dim = build_on_meta(lambda: model._make_backbone(32))
    check_nesting_dims(nesting_dims, feature_dim)


def mrl_main(argv: Sequence[str] | None = None) -> int:
    """``mrl_train`` console script.

    Bad flags or values (a missing dataset path or an unreadable checkpoint included) exit with
    argparse's usage error (status 2) before any data is read; errors found once the data is
    known (e.g. too few images) print ``mrl_train: error: ...`` and return 2.
    """
    parser = build_mrl_parser()
    args = parser.parse_args(argv)
    model = _check_before_reading(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        images = load_dataset(args.dataset_name, args.dataset_path)
    except (OSError, ValueError) as err:
        sys.stderr.write(f"mrl_train: error: {err}\n")
        return 2
    if args.max_images is not None and args.max_images < len(images):
        rng = np.random.default_rng(args.seed)
        keep = np.sort(rng.choice(len(images), args.max_images, replace=False))
        images = images[keep]
    model.set_params(batch_size=min(args.batch_size, len(images)))
    logger.info(
        "training ReLIC (%s) on %d %s images, %s, %s",
        args.encoder_model_name,
        len(images),
        args.dataset_name,
        model.device,
        model.precision,
    )
    try:
        model.fit(
            images,
            checkpoint_dir=args.save_model_dir,
            resume_from=args.ckpt_path,
            log_every_n_steps=args.log_every_n_steps,
        )
    except (TypeError, ValueError, KeyError) as err:  # KeyError: a checkpoint of another model
        sys.stderr.write(f"mrl_train: error: {err}\n")
        return 2
    logger.info("saved %s", Path(args.save_model_dir) / "relic_model.safetensors")
    return 0


def _make_relic(args: argparse.Namespace, batch_size: int) -> ReLIC:
    """The :class:`~twinlearn.ReLIC` estimator the parsed flags describe."""
    from twinlearn._device import resolve_device
    from twinlearn.estimators.matryoshka import ReLIC

    device = resolve_device(args.device)
    precision = "fp32"
    if args.fp16_precision:
        precision = "fp16" if device.type == "cuda" else "bf16"
    return ReLIC(
        backbone=args.encoder_model_name,
        cifar_stem=True if args.dataset_name == "cifar10" else None,
        n_epochs=args.num_epochs,
        batch_size=batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        proj_out_dim=args.proj_out_dim,
        proj_hidden_dim=args.proj_hidden_dim or None,
        nesting_dims=args.nesting_dims,
        shared_head=not args.full_mrl,
        gamma=args.gamma,
        alpha=args.alpha,
        update_gamma_after_step=args.update_gamma_after_step,
        update_gamma_every_n_steps=args.update_gamma_every_n_steps,
        image_size=args.image_size,
        precision=precision,
        channels_last=args.channels_last,
        device=device,
        random_state=args.seed,
        verbose=1,
    )


if __name__ == "__main__":
    sys.exit(mrl_main())
