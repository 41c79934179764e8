import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from twinlearn.pairs.augment import (
    AugmentPairSource,
    BatchAugment,
    PerImageTransform,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_boxes,
    resized_crop,
)


def _images(n=6, h=12, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
        (adjust_hue, TF.adjust_hue),
    ],
)
def test_colour_ops_match_torchvision_per_sample(ours, theirs):
    x = _images().float() / 255
    factors = torch.tensor([0.6, 0.8, 1.0, 1.2, 1.4, 0.9])
    if ours is adjust_hue:
        factors = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.07, 0.1])
    got = ours(x.clone(), factors.view(-1, 1, 1, 1))
    want = torch.stack([theirs(x[i], float(factors[i])) for i in range(len(x))])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_resized_crop_matches_torchvision_including_flip():
    x = _images().float() / 255
    boxes = torch.tensor([[0, 0, 12, 16], [2, 3, 6, 8], [1, 5, 9, 7], [4, 0, 8, 16], [0, 9, 5, 7], [3, 3, 3, 3]])
    flip = torch.tensor([False, True, False, True, False, True])
    got = resized_crop(x, boxes, (12, 16), flip)
    for i in range(len(x)):
        t, l, h, w = boxes[i].tolist()
        want = TF.resized_crop(x[i], t, l, h, w, [12, 16], antialias=False)
        if flip[i]:
            want = TF.horizontal_flip(want)
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-5)


def test_crop_boxes_respect_scale_ratio_and_bounds():
    g = torch.Generator().manual_seed(1)
    boxes = crop_boxes(4000, 32, 32, (0.2, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu"))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() >= 0.18 and area.max() <= 1.0
    assert 0.5 < area.mean() < 0.7  # uniform on [0.2, 1] before rounding/rejection
    assert len(set(map(tuple, boxes.tolist()))) > 500


def test_batch_augment_statistics_and_determinism():
    images = _images(400, 16, 16)
    aug = BatchAugment()
    v1 = aug(images, torch.Generator().manual_seed(3))
    v2 = aug(images, torch.Generator().manual_seed(3))
    assert v1.shape == (400, 3, 16, 16) and v1.dtype == torch.float32
    assert torch.equal(v1, v2)
    assert 0.0 <= v1.min() and v1.max() <= 1.0
    gray = (v1[:, 0] == v1[:, 1]).flatten(1).all(1) & (v1[:, 1] == v1[:, 2]).flatten(1).all(1)
    assert 0.12 < gray.float().mean() < 0.28  # grayscale with p = 0.2
    v3 = aug(images, torch.Generator().manual_seed(4))
    assert not torch.equal(v1, v3)
    identity = BatchAugment(scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0)
    torch.testing.assert_close(identity(images, torch.Generator()), images.float() / 255)
    assert BatchAugment(channels_last=True)(images[:2], torch.Generator()).is_contiguous(
        memory_format=torch.channels_last
    )


def test_pair_source_epoch_covers_images_once_and_keeps_global_rng():
    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 3, 2, 2).contiguous()
    keep = lambda x, g: x.float()  # noqa: E731
    state = torch.get_rng_state()
    src = AugmentPairSource(images, 3, torch.device("cpu"), torch.Generator().manual_seed(0), keep)
    batches = list(src.epoch())
    assert len(src) == len(batches) == 3
    seen = torch.cat([a[:, 0, 0, 0] for a, _ in batches]).long().sort().values
    assert seen.tolist() == list(range(8))
    assert torch.equal(state, torch.get_rng_state())
    one_left = AugmentPairSource(images[:7], 3, torch.device("cpu"), torch.Generator(), keep)
    assert len(one_left) == 2 and len(list(one_left.epoch())) == 2  # a last batch of one image has no negatives


def test_per_image_transform_is_seeded_by_the_generator():
    import torchvision.transforms.v2 as T

    tf = PerImageTransform(T.Compose([T.RandomResizedCrop(8, scale=(0.2, 1)), T.ToDtype(torch.float32, scale=True)]))
    images = _images(4, 12, 12)
    state = torch.get_rng_state()
    a = tf(images, torch.Generator().manual_seed(5))
    b = tf(images, torch.Generator().manual_seed(5))
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_less(a.numpy(), 1.0 + 1e-6)
