"""Image inputs: torch datasets of ``(image, label)``, class-per-subfolder image folders and
uint8 arrays ``(N, H, W, C)``, all turned into one uint8 tensor ``(N, C, H, W)``; and the
CIFAR-10 loader for the shared JPEG tarball (never downloads).

Images are kept as uint8 (4× smaller than float) and moved to the training device once; the
augmentations convert batches to float on the fly.
"""

from __future__ import annotations

import io as _io
import numbers
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from twinlearn._progress import progress
from twinlearn.data.datasets import find_shared_data

#: the largest image side (``image_size``, or ``image_size_`` in a model file): 8192x8192 RGB
#: is already 805 MB per image as floats
MAX_IMAGE_SIDE = 8192
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _pil():
    from twinlearn._optional import import_optional

    return import_optional("PIL.Image")


def _check_float_pixels(values: np.ndarray | torch.Tensor, what: str) -> None:
    """Float pixels must be finite and in [0, 1]: clipping them silently would turn images in
    [0, 255] or normalised images into near-constant ones."""
    lib = torch if isinstance(values, torch.Tensor) else np
    if not bool(lib.isfinite(values).all()):
        raise ValueError(f"{what} contains NaN or infinity; pixels must be finite")
    if values.numel() if isinstance(values, torch.Tensor) else values.size:
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"{what} holds float pixels in [{low:g}, {high:g}]; floats must lie in [0, 1] "
                "(divide 0-255 values by 255, undo normalisation, or pass uint8)"
            )


def check_image_size(image_size: object, name: str = "image_size") -> tuple[int, int] | None:
    """``None``, an int or a ``(height, width)`` pair of ints in [1, ``MAX_IMAGE_SIDE``], as
    ``(H, W)``. The bound holds for sizes read from a model file too: one image resized to a
    crafted size of 10**5 asked for tens of GiB before anything else failed."""
    if image_size is None:
        return None
    pair = (image_size, image_size) if isinstance(image_size, numbers.Integral) else image_size
    if (
        isinstance(image_size, (str, bytes, bool))
        or not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                   and 1 <= v <= MAX_IMAGE_SIDE for v in pair)
    ):
        raise ValueError(
            f"{name} must be None, an int or (height, width) of ints in [1, {MAX_IMAGE_SIDE}], "
            f"got {image_size!r:.100}"
        )
    return int(pair[0]), int(pair[1])


def _to_hwc_uint8(img: object, index: int) -> np.ndarray:
    """One image (PIL, tensor CHW in [0, 1] or uint8, array HWC) as an ``(H, W, 3)`` uint8 array."""
    if hasattr(img, "convert") and hasattr(img, "size"):  # PIL without importing PIL
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise ValueError(f"image {index} is a tensor of shape {tuple(t.shape)}; expected (C, H, W)")
        if t.is_floating_point():
            _check_float_pixels(t, f"image {index}")
            t = (t * 255).round().to(torch.uint8)
        elif t.dtype != torch.uint8:
            raise TypeError(f"image {index} is a {t.dtype} tensor; expected uint8 or float in [0, 1]")
        arr = t.permute(1, 2, 0).numpy()
    elif isinstance(img, np.ndarray):
        arr = img if img.ndim == 3 else img[..., None]
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.floating):
                raise TypeError(f"image {index} has dtype {arr.dtype}; expected uint8 or float in [0, 1]")
            _check_float_pixels(arr, f"image {index}")
            arr = (arr * 255).round().astype(np.uint8)
    else:
        raise TypeError(f"image {index} is a {type(img).__name__}; expected a PIL image, tensor or array")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image {index} has shape {arr.shape}; expected 1 or 3 channels")
    return arr


def _read_image(source: str | os.PathLike | _io.BytesIO, where: str) -> np.ndarray:
    """Decode one image file as an ``(H, W, 3)`` uint8 array; a file that cannot be decoded
    raises ``ValueError`` naming ``where`` (PIL's own errors do not name the file)."""
    Image = _pil()
    # unknown or truncated data (OSError), a size beyond PIL's pixel limit (DecompressionBombError)
    # and a few plugins' own parse errors
    errors = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
    try:
        with Image.open(source) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except errors as err:
        raise ValueError(f"cannot read the image file {where}: {err}") from err


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    return np.asarray(_pil().fromarray(arr).resize((width, height), resample=2), dtype=np.uint8)


def _stack(images: Sequence[np.ndarray], image_size: tuple[int, int] | None) -> torch.Tensor:
    if not images:
        raise ValueError("X holds no images")
    size = image_size or images[0].shape[:2]
    out = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    for i, arr in enumerate(images):
        if min(arr.shape[:2]) < 1:
            raise ValueError(
                f"image {i} of X is {arr.shape[0]}×{arr.shape[1]} pixels (H×W); at least 1×1 is needed"
            )
        if arr.shape[:2] != tuple(size):
            if image_size is None:
                raise ValueError(
                    f"image {i} is {arr.shape[0]}×{arr.shape[1]} (H×W) but image 0 is "
                    f"{size[0]}×{size[1]}: pass image_size=(H, W) to resize them"
                )
            arr = _resize(arr, size)
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _folder_items(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class subfolders (expected root/<class>/<image>)")
    paths, labels = [], []
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
    if not paths:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return paths, np.asarray(labels, dtype=np.int64), classes


def load_images(
    X: object, image_size: int | tuple[int, int] | None = None, *, name: str = "X"
) -> tuple[torch.Tensor, np.ndarray | None]:
    """Any supported image input as ``(uint8 tensor (N, 3, H, W), labels or None)``.

    Parameters
    ----------
    X : torch Dataset of ``(image, label)`` (or of images), image-folder path, or uint8 array
        A folder path uses the ``root/<class>/<image>`` layout (labels = sorted class index).
        Arrays are ``(N, H, W, C)`` with C in {1, 3} (``(N, H, W)`` = grayscale), uint8 or float
        in [0, 1]; a uint8 tensor ``(N, C, H, W)`` is taken as is.
    image_size : int or (height, width), optional
        Resize every image to this size; needed when the images differ in size.

    Raises
    ------
    TypeError
        For input of no supported kind (sparse matrices and mappings included) or a dtype other
        than uint8 or float.
    ValueError
        For a wrong shape or channel count, no images, images without pixels, float pixels
        that are not finite or lie outside [0, 1] (they are never clipped silently), and an
        image file of a folder that cannot be decoded (the message names the file).
    """
    image_size = check_image_size(image_size)
    if scipy.sparse.issparse(X):
        raise TypeError(f"{name} is a sparse matrix; images must be a dense uint8 array (N, H, W, C)")
    if isinstance(X, Mapping):
        raise TypeError(
            f"{name} is a {type(X).__name__}; expected a torch Dataset, folder path or array"
        )
    if isinstance(X, (str, os.PathLike)):
        root = Path(X)
        if not root.is_dir():
            raise ValueError(f"{name}={str(X)!r} is not a directory of class subfolders")
        paths, labels, _ = _folder_items(root)
        return _stack([_read_image(p, str(p)) for p in paths], image_size), labels
    if isinstance(X, torch.Tensor) and X.ndim not in (3, 4):
        raise ValueError(f"{name} tensor must be (N, C, H, W) or (N, H, W), got shape {tuple(X.shape)}")
    if isinstance(X, torch.Tensor) and X.dtype == torch.uint8 and X.ndim == 4 and X.shape[1] in (1, 3):
        if X.shape[0] == 0 or min(X.shape[2:]) < 1:
            raise ValueError(f"{name} holds no images or images without pixels: shape {tuple(X.shape)}")
        images = X.cpu()
        if image_size is not None and tuple(images.shape[2:]) != image_size:
            return _stack([_to_hwc_uint8(img, i) for i, img in enumerate(images)], image_size), None
        return (images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images).contiguous(), None
    if isinstance(X, np.ndarray):
        if X.ndim == 3:
            X = X[..., None]
        if X.ndim != 4 or X.shape[-1] not in (1, 3):
            raise ValueError(f"{name} array must be (N, H, W, C) with C in (1, 3), got shape {X.shape}")
        if X.dtype != np.uint8:
            if not np.issubdtype(X.dtype, np.floating):
                raise TypeError(f"{name} must be uint8 or floats in [0, 1], got dtype {X.dtype}")
            _check_float_pixels(X, name)
        return _stack([_to_hwc_uint8(x, i) for i, x in enumerate(X)], image_size), None
    if hasattr(X, "__getitem__") and hasattr(X, "__len__"):
        arrays, labels = [], []
        for i in range(len(X)):
            item = X[i]
            if isinstance(item, tuple) and len(item) == 2:
                img, label = item
                labels.append(int(label))
            else:
                img = item
            arrays.append(_to_hwc_uint8(img, i))
        if labels and len(labels) != len(arrays):
            raise ValueError(f"{name}: some items are (image, label) pairs and some are not")
        return _stack(arrays, image_size), (np.asarray(labels, dtype=np.int64) if labels else None)
    raise TypeError(
        f"{name} must be a torch Dataset of (image, label), an image-folder path or a uint8 array "
        f"(N, H, W, C); got {type(X).__name__}"
    )


def _cifar_cache_dir() -> Path:
    base = os.environ.get("TWINLEARN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "twinlearn"
    )
    return Path(base)


#: entries of the CIFAR-10 tarball: 60 000 images and their folders (for the progress bar)
CIFAR10_FILES = 60_000


def _read_cifar_tarball(path: Path, show_progress: bool = False) -> dict[str, np.ndarray]:
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    parts: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(path, "r:*") as tar:
        for member in progress(tar, show_progress, "decoding CIFAR-10", CIFAR10_FILES, "file"):
            bits = Path(member.name).parts
            if not member.isfile() or len(bits) < 4 or bits[-3] not in parts or bits[-2] not in index:
                continue
            data = _io.BytesIO(tar.extractfile(member).read())
            image = _read_image(data, f"{path}:{member.name}")
            parts[bits[-3]].append((bits[-2], bits[-1], image))
    out = {}
    for split, items in parts.items():
        items.sort(key=lambda t: (index[t[0]], t[1]))
        out[f"x_{split}"] = np.stack([t[2] for t in items]) if items else np.zeros((0, 32, 32, 3), np.uint8)
        out[f"y_{split}"] = np.asarray([index[t[0]] for t in items], dtype=np.int64)
    return out


def load_cifar10(
    path: str | os.PathLike | None = None, *, cache: bool = True, show_progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 from ``cifar10-jpg.tar.gz`` (``cifar10/{train,test}/<class>/NNNN.jpg``);
    ``show_progress`` shows a bar while the tarball is decoded.

    Returns ``(x_train, y_train, x_test, y_test)`` with images uint8 ``(N, 32, 32, 3)``, sorted
    by class (take random subsets, never a prefix). The decoded arrays are cached as an
    ``.npz`` under ``$TWINLEARN_CACHE`` (default ``~/.cache/twinlearn``) when ``cache``.
    Raises ``FileNotFoundError`` when the tarball is not found; nothing is downloaded.
    """
    if path is None:
        folder = find_shared_data("cifar10-jpg.tar.gz")
        if folder is None:
            raise FileNotFoundError("cifar10-jpg.tar.gz not found: pass its path or set $TWINLEARN_DATA")
        path = folder / "cifar10-jpg.tar.gz"
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    stat = path.stat()
    cached = _cifar_cache_dir() / f"cifar10-{stat.st_size}-{int(stat.st_mtime)}.npz"
    if cache and cached.exists():
        with np.load(cached) as data:
            arrays = {k: data[k] for k in data.files}
    else:
        arrays = _read_cifar_tarball(path, show_progress)
        if cache:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, cached)
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def image_batches(
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    channels_last: bool = False,
    transform: Callable | None = None,
) -> Iterator[torch.Tensor]:
    """Float batches of uint8 ``(N, C, H, W)`` images on ``device``, for inference: scaled to
    [0, 1], or through a per-image test ``transform`` (uint8 tensor → float tensor)."""
    from twinlearn.pairs.augment import PerImageTransform

    per_image = PerImageTransform(transform, channels_last) if transform is not None else None
    generator = torch.Generator()
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        if per_image is not None:
            yield per_image(chunk, generator).to(device)
            continue
        x = chunk.to(device).float().div_(255)
        yield x.contiguous(memory_format=torch.channels_last) if channels_last else x
