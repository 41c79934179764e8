"""ReLIC's augmentation (mrl-pytorch ``get_training_transforms``), batched per sample.

Random resized crop (scale 0.08–1), horizontal flip, colour jitter (0.8, 0.8, 0.8, 0.2) with
p 0.8, grayscale p 0.2 — all by :class:`~twinlearn.pairs.augment.BatchAugment` — then a Gaussian
blur applied to every image (odd kernel from ``0.1 · size``, σ uniform in [0.1, 2]) and
solarisation (threshold 127/255, p 0.5). No normalisation, as in the original.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from twinlearn.pairs.augment import BatchAugment


def blur_kernel_size(size: int) -> int:
    """mrl-pytorch's kernel size: ``⌊0.1·size⌋`` made odd (3 for 32 px, 9 for 96 px)."""
    k = int(0.1 * size)
    return k + 1 if k % 2 == 0 else k


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur each image of ``x`` (N, C, H, W) with its own ``sigma`` (N,): separable Gaussian,
    reflect padding (torchvision's ``gaussian_blur``), as two grouped convolutions."""
    n, c, h, w = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None].to(x.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (N·C, K)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


class ReLICAugment:
    """``__call__(images (N, 3, H, W) uint8 or float, generator) -> float views in [0, 1]``.

    Parameters
    ----------
    size : int, optional
        Output side (default: the input's height).
    channels_last : bool
        Return a channels-last tensor (faster convolutions on CPU).
    """

    def __init__(self, size: int | None = None, channels_last: bool = False) -> None:
        self.size = size
        self.channels_last = channels_last
        self._base = BatchAugment(
            size=(size, size) if size else None, scale=(0.08, 1.0),
            jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, grayscale_p=0.2,
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self._base(images, generator)
        n, dev = x.shape[0], x.device
        sigma = torch.empty(n, device=dev).uniform_(0.1, 2.0, generator=generator)
        ksize = blur_kernel_size(x.shape[-2])
        if ksize > 1:
            x = gaussian_blur(x, sigma, ksize)
        solarize = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(solarize.view(-1, 1, 1, 1) & (x >= 127 / 255), 1.0 - x, x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
