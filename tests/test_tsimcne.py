import functools

import numpy as np
import pytest
import torch
import torch.nn as nn

from twinlearn import TSimCNE
from twinlearn.data.images import load_images
from twinlearn.training.stages import stage_lr_schedule
from twinlearn.kernels import CauchyKernel, CosineKernel
from twinlearn.losses import ContrastiveLoss


def _naive_tsimcne_loss(a, b, q):
    """The formula of t-SimCNE v0.3's InfoNCECauchy, written out term by term."""
    B = len(a)
    pos = torch.stack([torch.log(q(a[i], b[i])) for i in range(B)]).mean()

    def side(x, y):
        terms = []
        for i in range(B):
            s = sum(q(x[i], x[j]) for j in range(B) if j != i) + sum(q(x[i], y[j]) for j in range(B))
            terms.append(torch.log(s))
        return torch.stack(terms).mean()

    return -pos + 0.5 * (side(a, b) + side(b, a))


def test_loss_matches_naive_reference_cauchy_and_cosine():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    cauchy = lambda x, y: 1 / (1 + (x - y).pow(2).sum())  # noqa: E731
    loss = ContrastiveLoss("infonce", CauchyKernel(), "full", symmetric=True)
    # the loss computes in float32
    torch.testing.assert_close(loss(a, b).double(), _naive_tsimcne_loss(a, b, cauchy), rtol=1e-5, atol=1e-5)
    cosine = lambda x, y: torch.exp(torch.nn.functional.cosine_similarity(x, y, dim=0) / 0.5)  # noqa: E731
    loss = ContrastiveLoss("infonce", CosineKernel(0.5), "full", symmetric=True)
    torch.testing.assert_close(loss(a, b).double(), _naive_tsimcne_loss(a, b, cosine), rtol=1e-5, atol=1e-5)


def test_stage_schedule_is_the_v03_table():
    f = stage_lr_schedule(n_epochs=30, warmup_epochs=3, steps_per_epoch=4)
    per_epoch = [f(4 * e) for e in range(30)]
    assert [f(4 * e + 3) for e in range(30)] == per_epoch  # constant within an epoch
    assert per_epoch[:4] == [0.0, 0.5, 1.0, 1.0]  # warm-up from 0; its last value repeated
    span = 30 + 1 - 3
    np.testing.assert_allclose(per_epoch[3:], 0.5 * (1 + np.cos(np.pi * np.arange(27) / span)))
    g = stage_lr_schedule(n_epochs=5, warmup_epochs=0, steps_per_epoch=1)
    assert g(0) == 1.0 and 0 < g(4) < g(3)


def _images(n=48, h=12, w=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _fit(epochs, X, **kw):
    params = dict(backbone="small_cnn", total_epochs=epochs, batch_size=16, random_state=0, device="cpu")
    params.update(kw)
    return TSimCNE(**params).fit(X)


@functools.lru_cache(maxsize=None)
def _staged(epochs, seed=0):
    # the same LR in every stage: at lr/1000 the last bias (whose gradient is 0: the loss is
    # translation invariant) moves by weight decay alone, below float32 resolution
    return _fit(list(epochs), _images(32, 8, 8), lr=[0.01] * 3, random_state=seed)


def test_stage_freezing_by_which_parameters_change():
    after1 = _staged((1, 0, 0)).model_  # stage 1, then a fresh untrained 2-D layer
    after2 = _staged((1, 1, 0)).model_
    after3 = _staged((1, 1, 1)).model_
    p1, p2, p3 = (dict(m.named_parameters()) for m in (after1, after2, after3))
    last = {"head.2.weight", "head.2.bias"}
    assert set(p1) == set(p2) == set(p3) and last < set(p1)
    for name in p1:
        if name in last:
            assert not torch.equal(p1[name], p2[name]), f"stage 2 did not train {name}"
        else:
            assert torch.equal(p1[name], p2[name]), f"stage 2 changed frozen {name}"
        assert not torch.equal(p2[name], p3[name]), f"stage 3 did not train {name}"
    # the fresh stage-2 layer is N(0, 1): far larger than PyTorch's default init
    assert 0.8 < p1["head.2.weight"].std().item() < 1.2
    assert all(p.requires_grad for p in after3.parameters())


def test_int_and_single_stage_epochs_give_2d_and_bad_values_are_refused():
    X = _images(24, 8, 8)
    est = _fit(3, X)
    assert est.stage_epochs_ == [1, 1, 1]
    assert est.transform(X).shape == (24, 2)
    assert TSimCNE(total_epochs=1500)._stage_epochs() == [1000, 50, 450]
    one = _fit([1], X, pretrain_out_dim=128)
    assert one.transform(X).shape == (24, 2) and one.stage_epochs_ == [1]
    for bad, match in [
        (dict(total_epochs=2), "total_epochs"),
        (dict(total_epochs=[5, 5]), "total_epochs"),
        (dict(lr=[0.1, 0.1]), "lr"),
        (dict(warmup=[20, 0, 0], total_epochs=[10, 1, 1]), "warmup"),
        (dict(optimizer="adam"), "optimizer"),
        (dict(backbone="vgg"), "backbone"),
        (dict(metric="manhattan"), "metric"),
        (dict(batch_size=1), "batch_size"),
        (dict(devices=2), "torchrun"),
    ]:
        with pytest.raises(ValueError, match=match):
            TSimCNE(**{"device": "cpu", **bad}).fit(X)
    with pytest.raises(TypeError, match="X"):
        TSimCNE(device="cpu").fit(3.0)


def test_scalar_lr_gives_three_stage_lrs():
    assert TSimCNE(lr=0.5)._stage_lrs(3, 512) == [0.5, 0.5, 0.0005]
    assert TSimCNE()._stage_lrs(3, 512) == [0.06, 0.06, 0.06 / 1000]


@pytest.fixture(scope="module")
def tiny_run(cifar_small):
    X, y = cifar_small
    state = torch.get_rng_state()
    est = TSimCNE(
        backbone="small_cnn", total_epochs=[1, 1, 1], batch_size=64, random_state=3, device="cpu"
    )
    Y = est.fit_transform(X)
    return est, X, y, Y, state


@pytest.fixture(scope="module")
def cifar_small():
    from twinlearn.data.images import load_cifar10

    try:
        x_train, y_train, _, _ = load_cifar10()
    except FileNotFoundError:
        pytest.skip("cifar10-jpg.tar.gz not available")
    idx = np.random.default_rng(0).choice(len(x_train), 200, replace=False)
    return x_train[idx], y_train[idx]


def test_end_to_end_tiny_cifar_run(tiny_run, tmp_path):
    est, X, y, Y, state = tiny_run
    assert torch.equal(state, torch.get_rng_state()), "fit touched the global RNG"
    assert Y.shape == (200, 2) and np.isfinite(Y).all()
    assert est.image_size_ == (32, 32)
    assert [len(h) for h in est.loss_history_] == [1, 1, 1]
    assert all(np.isfinite(h[0]) for h in est.loss_history_)
    Y2, labels, feats = est.transform(X, return_labels=True, return_backbone_feat=True)
    np.testing.assert_array_equal(Y, Y2)
    assert labels is None and feats.shape == (200, 128)
    path = tmp_path / "tsimcne.safetensors"
    est.save(path)
    loaded = TSimCNE(device="cpu").load(path)
    np.testing.assert_array_equal(loaded.transform(X), Y)
    assert loaded.get_params()["total_epochs"] == (1, 1, 1)


def test_same_seed_same_map_on_cpu():
    X = _images(32, 8, 8)
    a = _staged((1, 1, 1)).transform(X)
    b = _fit([1, 1, 1], X, lr=[0.01] * 3, random_state=0).transform(X)
    c = _staged((1, 1, 1), seed=1).transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_not_fitted_and_unsavable_modules(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TSimCNE().transform(_images(4))
    X = _images(16, 8, 8)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    est = _fit([1, 1, 1], X, backbone=backbone)
    assert est.transform(X).shape == (16, 2)
    assert est.backbone is backbone and est.model_.backbone is not backbone  # params not mutated
    with pytest.raises(TypeError, match="save"):
        est.save(tmp_path / "m.safetensors")


class _PILDataset(torch.utils.data.Dataset):
    def __init__(self, n, h, w):
        from PIL import Image

        rng = np.random.default_rng(0)
        self.items = [(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), i % 3) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_image_inputs_dataset_folder_array(tmp_path):
    ds = _PILDataset(6, 10, 14)  # non-square: (H, W) = (10, 14), PIL's .size is (14, 10)
    images, labels = load_images(ds)
    assert images.shape == (6, 3, 10, 14) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(images[1].permute(1, 2, 0).numpy(), np.asarray(ds[1][0]))
    for i, (img, label) in enumerate(ds):
        (tmp_path / f"c{label}").mkdir(exist_ok=True)
        img.save(tmp_path / f"c{label}" / f"{i}.png")
    folder, folder_labels = load_images(tmp_path)
    assert folder.shape == (6, 3, 10, 14) and sorted(folder_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    tensors = [(torch.rand(3, 10, 14), 1)]
    assert load_images(tensors)[0].shape == (1, 3, 10, 14)
    gray = np.zeros((2, 5, 6), dtype=np.uint8)
    assert load_images(gray)[0].shape == (2, 3, 5, 6)
    assert load_images(_images(2, 8, 8), image_size=(4, 6))[0].shape == (2, 3, 4, 6)
    mixed = [(torch.rand(3, 8, 8), 0), (torch.rand(3, 9, 8), 0)]
    with pytest.raises(ValueError, match="image_size"):
        load_images(mixed)
    est = TSimCNE(backbone="small_cnn", total_epochs=[1, 1, 1], batch_size=3, random_state=0, device="cpu")
    Y, y = est.fit(ds).transform(ds, return_labels=True)
    assert est.image_size_ == (10, 14) and Y.shape == (6, 2) and y.tolist() == labels.tolist()


def test_nested_first_stage_keeps_a_matryoshka_network(tmp_path):
    X = _images(32, 8, 8)
    nested = dict(pretrain_out_dim=16, nesting_dims=[2, 4, 16], lr=[0.01] * 3)
    est = _fit([2, 1, 1], X, **nested)
    P = est.transform(X, pretrained=True)
    assert P.shape == (32, 16) and est.transform(X).shape == (32, 2)
    np.testing.assert_array_equal(est.transform(X, pretrained=True, n_components=4), P[:, :4])
    # the kept network is the one stage 1 ended with: the same backbone as a stage-1-only run
    stage1 = _fit([2, 0, 0], X, **nested).model_
    for (name, a), b in zip(est.pretrain_model_.backbone.state_dict().items(), stage1.backbone.state_dict().values()):
        assert torch.equal(a, b), name
    # stage 1 sums the loss over three nests, each a positive InfoNCE term
    plain = _fit([2, 1, 1], X, pretrain_out_dim=16, lr=[0.01] * 3)
    assert est.loss_history_[0][0] > 2 * plain.loss_history_[0][0]
    assert not hasattr(plain, "pretrain_model_")
    with pytest.raises(ValueError, match="pretrained"):
        plain.transform(X, pretrained=True)
    with pytest.raises(ValueError, match="exceeds"):
        est.transform(X, pretrained=True, n_components=17)
    path = tmp_path / "nested.safetensors"
    est.save(path)
    loaded = TSimCNE(device="cpu").load(path)
    np.testing.assert_array_equal(loaded.transform(X, pretrained=True), P)
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))


def test_nested_single_stage_and_bad_nesting_dims():
    X = _images(24, 8, 8)
    est = _fit([1], X, out_dim=8, nesting_dims=[2, 8])
    Y = est.transform(X)
    assert Y.shape == (24, 8)
    np.testing.assert_array_equal(est.transform(X, n_components=2), Y[:, :2])
    with pytest.raises(ValueError, match="nesting_dims"):
        TSimCNE(device="cpu", pretrain_out_dim=16, nesting_dims=[2, 32]).fit(X)
    with pytest.raises(ValueError, match="nesting_dims"):
        TSimCNE(device="cpu", total_epochs=[1], out_dim=2, nesting_dims=[2, 4]).fit(X)
