"""Inputs read from files or produced by user code: a damaged image in an image folder, a
``data_transform`` returning something other than an image tensor, and MNIST's row order."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from conftest import make_tiny, tiny_images
from hypothesis import strategies as st
from PIL import Image
from test_bad_input import run_cases

from twinlearn.data import load_mnist
from twinlearn.data.images import load_images
from twinlearn.pairs.augment import PerImageTransform

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif"}


def _encoded(fmt: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@st.composite
def damaged_files(draw) -> tuple[str, bytes]:
    """A format and the bytes of a damaged file of it: truncated, some bytes after the header
    changed, random bytes, or empty. (Header fields are left alone: a changed image size can
    ask the decoder for gigabytes.)"""
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    data = bytearray(_encoded(fmt))
    kind = draw(st.sampled_from(["truncated", "changed", "random", "empty"]))
    if kind == "truncated":
        return fmt, bytes(data[: draw(st.integers(1, len(data) - 1))])
    if kind == "changed":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(64, len(data) - 1))] = draw(st.integers(0, 255))
        return fmt, bytes(data)
    return fmt, draw(st.binary(max_size=200)) if kind == "random" else b""


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.convert("RGB")
        return True
    except Exception:  # whatever PIL raises: the oracle only asks whether it decodes
        return False


def test_a_damaged_image_file_is_named(tmp_path, record_property):
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        (folder / label / "good.png").write_bytes(_encoded("PNG", seed=ord(label)))

    def damage(data: bytes, suffix: str):
        for old in (folder / "b").glob("damaged*"):
            old.unlink()
        path = folder / "b" / f"damaged{suffix}"
        path.write_bytes(data)
        return path

    def check(case):
        fmt, data = case
        path = damage(data, FORMATS[fmt])
        if _decodes(data):  # a harmless change: the folder loads
            images, labels = load_images(folder, image_size=8)
            assert images.shape == (3, 3, 8, 8) and labels.tolist() == [0, 1, 1]
            return
        with pytest.raises(ValueError, match="cannot read the image file") as info:
            load_images(folder)
        assert str(path) in str(info.value)

    run_cases(damaged_files(), check, record_property)
    damage(_encoded("PNG")[:-30], ".png")  # truncated: PIL's error would not name it
    with pytest.raises(ValueError, match="damaged.png"):
        make_tiny("TSimCNE").fit(folder)


#: transforms returning what is not one RGB image tensor, or not the same shape each time
_sizes = itertools.count()
BAD_TRANSFORMS = {
    "PIL image": lambda img: Image.fromarray(img.permute(1, 2, 0).numpy()),
    "numpy array": lambda img: img.numpy(),
    "list": lambda img: img.tolist(),
    "(H, W) tensor": lambda img: img[0].float() / 255,
    "one channel": lambda img: img[:1].float() / 255,
    "four channels": lambda img: torch.cat([img, img[:1]]).float() / 255,
    "batch of one": lambda img: img[None].float() / 255,
    "int64 pixels": lambda img: img.long(),
    "complex pixels": lambda img: img.to(torch.complex64),
    "varying size": lambda img: img[:, : 1 + next(_sizes) % img.shape[1]].float() / 255,
}


def test_a_bad_data_transform_is_named(record_property):
    def check(case):
        kind, n, height, width = case
        images = torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8)
        augment = PerImageTransform(BAD_TRANSFORMS[kind])
        with pytest.raises((TypeError, ValueError), match="data_transform") as info:
            augment(images, torch.Generator().manual_seed(0))
        assert "data_transform returned" in str(info.value), (kind, info.value)

    cases = st.tuples(st.sampled_from(sorted(BAD_TRANSFORMS)), st.integers(2, 6), st.integers(2, 9), st.integers(2, 9))
    run_cases(cases, check, record_property)
    with pytest.raises(ValueError, match=r"data_transform returned a tensor of shape \(1, 8, 8\)"):
        make_tiny("TSimCNE", data_transform=BAD_TRANSFORMS["one channel"]).fit(tiny_images())


def test_load_mnist_says_it_is_sorted_and_can_shuffle(tmp_path):
    """A small stand-in file sorted by class, as the shared one is; each image holds its label
    so that image/label pairs can be checked after the permutation."""
    labels = {"train": np.repeat(np.arange(10), 6).astype(np.uint8), "test": np.repeat(np.arange(10), 3).astype(np.uint8)}
    path = tmp_path / "mnist.npz"
    np.savez(path, **{f"y_{s}": y for s, y in labels.items()},
             **{f"x_{s}": np.broadcast_to(y[:, None, None], (len(y), 28, 28)).copy() for s, y in labels.items()})
    assert "sorted by digit" in load_mnist.__doc__
    x_train, y_train, _, y_test = load_mnist(path, scale=False)
    assert y_train.tolist() == sorted(y_train.tolist())  # the file's order by default
    a = load_mnist(path, scale=False, shuffle=True, random_state=0)
    b = load_mnist(path, scale=False, shuffle=True, random_state=0)
    c = load_mnist(path, scale=False, shuffle=True, random_state=1)
    for x, y, split in ((a[0], a[1], "train"), (a[2], a[3], "test")):
        assert (x == y[:, None]).all()  # every image still with its label
        assert sorted(y.tolist()) == labels[split].tolist() and y.tolist() != labels[split].tolist()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[1], c[1])
