"""Positive pairs from data augmentation: two random views of each image (SimCLR, t-SimCNE).

:class:`BatchAugment` is t-SimCNE's augmentation (random resized crop, scale 0.2–1, horizontal
flip, colour jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2; no normalisation) applied with
independent random parameters **per sample** but as a few batched tensor ops on the training
device: crop, resize and flip are one ``grid_sample`` per batch, and the colour operations use
torchvision's formulas with per-sample factors. That is what keeps augmentation from starving
the model (the original spends most of its time in per-image PIL transforms in loader workers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from twinlearn._device import fork_torch_rng

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _grayscale(x), f)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    # torchvision's own (batched) colour-space conversions; only the shift is per sample here
    from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

    h, s, v = _rgb_to_hsv(x).unbind(dim=1)
    h = (h + f.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(torch.stack((h, s, v), dim=1))


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator, device: torch.device, attempts: int = 10,
) -> torch.Tensor:
    """``(n, 4)`` boxes ``(top, left, h, w)`` drawn as torchvision's
    ``RandomResizedCrop.get_params``: up to 10 tries of a random area and log-uniform aspect
    ratio, else the central crop with the ratio clamped to ``ratio``."""
    area = height * width
    target = area * torch.empty(n, attempts, device=device).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, attempts, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1)
    any_ok = ok.any(dim=1)
    rows = torch.arange(n, device=device)
    w, h = w[rows, first], h[rows, first]
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, device=device, generator=generator)
    top = torch.where(any_ok, torch.floor(u[:, 0] * (height - h + 1)), torch.floor((height - h) / 2 + 0.5))
    left = torch.where(any_ok, torch.floor(u[:, 1] * (width - w + 1)), torch.floor((width - w) / 2 + 0.5))
    return torch.stack((top, left, h, w), dim=1)


def resized_crop(
    x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int], flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Crop each image to its box and resize it bilinearly to ``size`` (optionally mirrored),
    as one ``grid_sample``; equals torchvision's ``resized_crop`` (bilinear) when upsampling."""
    n, _, height, width = x.shape
    top, left, h, w = boxes.to(x.dtype).unbind(dim=1)
    sx, sy = w / width, h / height
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, (n, x.shape[1], *size), align_corners=False)
    # clamp to the box's outer pixel centres: torchvision crops first, so the resize replicates
    # the crop's edge instead of blending in the pixels just outside it
    lo = torch.stack(((2 * left + 1) / width, (2 * top + 1) / height), dim=1) - 1
    hi = torch.stack(((2 * (left + w) - 1) / width, (2 * (top + h) - 1) / height), dim=1) - 1
    grid = torch.maximum(torch.minimum(grid, hi.view(n, 1, 1, 2)), lo.view(n, 1, 1, 2))
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchAugment:
    """t-SimCNE's training augmentation, random per sample, batched on the input's device.

    Parameters
    ----------
    size : (height, width), optional
        Output size (default: the input's).
    scale, ratio : RandomResizedCrop's area and aspect-ratio ranges.
    flip_p : horizontal-flip probability.
    jitter : (brightness, contrast, saturation, hue) strengths of ColorJitter.
    jitter_p : probability of applying the colour jitter (in a random order per sample).
    grayscale_p : probability of converting to grayscale.
    channels_last : return a channels-last tensor (faster convolutions on CPU).

    ``__call__(images uint8 or float (N, 3, H, W), generator) -> float (N, 3, h, w)`` in [0, 1].
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        channels_last: bool = False,
    ) -> None:
        self.size = size
        self.scale, self.ratio = scale, ratio
        self.flip_p, self.jitter, self.jitter_p, self.grayscale_p = flip_p, jitter, jitter_p, grayscale_p
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        n, _, height, width = x.shape
        dev = x.device
        size = tuple(self.size) if self.size else (height, width)
        boxes = crop_boxes(n, height, width, self.scale, self.ratio, generator, dev)
        flip = torch.rand(n, device=dev, generator=generator) < self.flip_p
        x = resized_crop(x, boxes, size, flip)

        b, c, s, hue = self.jitter
        lo_hi = torch.tensor([[1 - b, 1 + b], [1 - c, 1 + c], [1 - s, 1 + s], [-hue, hue]], device=dev)
        u = torch.rand(n, 4, device=dev, generator=generator)
        factors = lo_hi[:, 0] + u * (lo_hi[:, 1] - lo_hi[:, 0])
        order = torch.argsort(torch.rand(n, 4, device=dev, generator=generator), dim=1)
        jitter = torch.rand(n, device=dev, generator=generator) < self.jitter_p
        for position in range(4):
            for k, op in enumerate(_JITTER_OPS):
                sel = torch.nonzero(jitter & (order[:, position] == k)).squeeze(1)
                if sel.numel():
                    x[sel] = op(x[sel], factors[sel, k].view(-1, 1, 1, 1))
        gray = torch.rand(n, device=dev, generator=generator) < self.grayscale_p
        x = torch.where(gray.view(-1, 1, 1, 1), _grayscale(x).expand_as(x), x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class PerImageTransform:
    """Wrap a per-image transform (e.g. a torchvision ``Compose`` taking a uint8 ``(3, H, W)``
    tensor and returning a float tensor) as a batch augmentation.

    torchvision draws its parameters from torch's global RNG; each batch runs inside a fork of
    it seeded from the pair source's generator, so runs stay reproducible and the caller's
    global RNG state is untouched.

    The first view is checked to be a ``(3, H, W)`` uint8 or float tensor and every later view
    to have its shape, so that a transform returning something else fails with an error that
    names ``data_transform`` rather than deep inside torch.
    """

    def __init__(self, transform: Callable, channels_last: bool = False) -> None:
        self.transform = transform
        self.channels_last = channels_last
        self._shape: tuple[int, ...] | None = None  # of a view, once the first one is checked

    def _check(self, view: object) -> None:
        if not isinstance(view, torch.Tensor):
            raise TypeError(f"data_transform returned a {type(view).__name__}; it must return an "
                            "image tensor (3, H, W), e.g. end it with ToImage()")
        if self._shape is None:
            if not (view.is_floating_point() or view.dtype == torch.uint8):
                raise TypeError(f"data_transform returned a {view.dtype} tensor; it must return "
                                "uint8 or float pixels, e.g. end it with ToDtype(torch.float32, "
                                "scale=True)")
            if view.ndim != 3 or view.shape[0] != 3:
                raise ValueError(f"data_transform returned a tensor of shape {tuple(view.shape)}; "
                                 "it must return an RGB image tensor (3, H, W)")
            self._shape = tuple(view.shape)
        elif tuple(view.shape) != self._shape:
            raise ValueError(f"data_transform returned views of different shapes ({self._shape} "
                             f"and {tuple(view.shape)}); end it with a fixed-size resize or crop")

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        with fork_torch_rng(seed):
            views = [self.transform(img) for img in images.cpu()]
        for view in views:
            self._check(view)
        x = torch.stack([v if v.is_floating_point() else v.float() / 255 for v in views]).to(images.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class AugmentPairSource:
    """Each step: a batch of images and two independent augmentations of each.

    Parameters
    ----------
    images : uint8 tensor (N, 3, H, W)
        Moved to ``device`` once.
    batch_size : int
        Images per batch (each gives two views).
    device : torch.device
    generator : torch.Generator on ``device``
        The only randomness (shuffling and augmentation), so checkpoints resume exactly.
    augment : callable ``(images, generator) -> views``
    rank, world_size : int
        Under DDP rank 0's permutation is broadcast and every process takes its own stride of
        it, so the processes see disjoint images and the same number of batches; give each
        process its own generator seed so that their augmentations differ.

    The last batch may be smaller; a last batch of one image is dropped (no negatives).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
        augment: Augment,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError("images must be a uint8 tensor (N, C, H, W)")
        self.images = images.to(device)
        self.batch_size = batch_size
        self.device = device
        self.generator = generator
        self.augment = augment
        self.rank, self.world_size = rank, world_size
        self.n_local = images.shape[0] // world_size

    def __len__(self) -> int:
        full, rest = divmod(self.n_local, self.batch_size)
        return full + (rest >= 2)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(self.images.shape[0], generator=self.generator, device=self.device)
        if self.world_size > 1:
            torch.distributed.broadcast(perm, src=0)
        mine = perm[self.rank :: self.world_size][: self.n_local]
        for step in range(len(self)):
            idx = mine[step * self.batch_size : (step + 1) * self.batch_size]
            batch = self.images[idx]
            yield self.augment(batch, self.generator), self.augment(batch, self.generator)
