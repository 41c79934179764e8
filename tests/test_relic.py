"""ReLIC: the loss against a naive reference, the EMA target, the augmentation, and the
estimator (BatchNorm trains, prefixes, exact resume, model files)."""

import math

import numpy as np
import pytest
import torch

from twinlearn import ReLIC
from twinlearn.losses import ReLICLoss
from twinlearn.pairs.relic_augment import ReLICAugment, blur_kernel_size, gaussian_blur
from twinlearn.training.ema import EMATargetObjective, EMAUpdate, cosine_gamma


def naive_relic(x, y, beta, alpha):
    """Row by row, in float64, straight from the formulas of mrl-pytorch's relic_loss."""
    x = [[v / math.sqrt(sum(u * u for u in xi)) for v in xi] for xi in x.tolist()]
    y = [[v / math.sqrt(sum(u * u for u in yi)) for v in yi] for yi in y.tolist()]
    n = len(x)
    s = [[beta * sum(a * b for a, b in zip(x[i], y[j])) for j in range(n)] for i in range(n)]
    ce, kl = 0.0, 0.0
    for i in range(n):
        row = [math.exp(v) for v in s[i]]
        p1 = [v / sum(row) for v in row]
        col = [math.exp(s[j][i]) for j in range(n)]
        p2 = [v / sum(col) for v in col]
        ce -= math.log(p1[i])
        kl += sum(p2[j] * (math.log(p2[j]) - math.log(p1[j])) for j in range(n))
    return (ce + alpha * kl) / n


def test_relic_loss_matches_naive_reference_single_and_stacked():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 6, 4, generator=g), torch.randn(3, 6, 4, generator=g)
    loss = ReLICLoss(alpha=0.5, init_log_inverse_temperature=math.log(2.0))
    for k in range(3):
        assert loss(x[k], y[k]).item() == pytest.approx(naive_relic(x[k], y[k], 2.0, 0.5), rel=1e-5)
    stacked = loss(x, y)
    assert stacked.shape == (3,)
    expected = [naive_relic(x[k], y[k], 2.0, 0.5) for k in range(3)]
    assert stacked.detach().tolist() == pytest.approx(expected, rel=1e-5)


def test_inverse_temperature_is_clamped_in_value_but_keeps_its_gradient():
    loss = ReLICLoss(init_log_inverse_temperature=math.log(20.0))
    assert loss.inverse_temperature().item() == pytest.approx(5.0)
    x, y = torch.randn(8, 4), torch.randn(8, 4)
    assert loss(x, y).item() == pytest.approx(naive_relic(x, y, 5.0, 1.0), rel=1e-5)
    loss(x, y).backward()
    assert loss.log_inverse_temperature.grad is not None and loss.log_inverse_temperature.grad != 0


def test_cosine_gamma_schedule():
    assert cosine_gamma(0, 100, 0.995) == pytest.approx(0.995)
    assert cosine_gamma(50, 100, 0.995) == pytest.approx(0.9975)
    assert cosine_gamma(100, 100, 0.995) == pytest.approx(1.0)


class _Steps:
    step = 0


def test_ema_update_copies_then_lerps_parameters_and_buffers():
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    objective = EMATargetObjective(online, torch.nn.MSELoss())
    assert not any(p.requires_grad for p in objective.target.parameters())
    ema = EMAUpdate(objective, gamma=0.9, total_steps=10, start_step=1)
    trainer = _Steps()
    with torch.no_grad():
        online[0].weight.add_(1.0)
        online[1].running_mean.add_(2.0)
    trainer.step = 1
    ema.on_step_end(trainer)
    torch.testing.assert_close(objective.target[0].weight, online[0].weight)
    before = {k: v.clone() for k, v in objective.target.state_dict().items()}
    with torch.no_grad():
        online[0].weight.add_(1.0)
        online[1].running_mean.add_(2.0)
    trainer.step = 2
    ema.on_step_end(trainer)
    gamma = cosine_gamma(1, 10, 0.9)
    for key in ("0.weight", "1.running_mean"):
        expected = gamma * before[key] + (1 - gamma) * online.state_dict()[key]
        torch.testing.assert_close(objective.target.state_dict()[key], expected)


def test_gaussian_blur_matches_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    x = torch.rand(3, 3, 16, 16)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    got = gaussian_blur(x, sigma, 3)
    for i in range(3):
        ref = tvf.gaussian_blur(x[i], [3, 3], [float(sigma[i])] * 2)
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=0)
    assert blur_kernel_size(32) == 3 and blur_kernel_size(96) == 9


def test_relic_augment_is_reproducible_in_range_and_leaves_global_rng_alone():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    state = torch.get_rng_state()
    a = ReLICAugment()(images, torch.Generator().manual_seed(1))
    b = ReLICAugment()(images, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, ReLICAugment()(images, torch.Generator().manual_seed(2)))


# --- estimator ----------------------------------------------------------------------------
TINY = dict(backbone="small_cnn", n_epochs=2, batch_size=8, proj_hidden_dim=32,
            nesting_dims=[8, 32, 128], random_state=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)


def test_fit_trains_batchnorm_and_prefixes_are_first_columns(images):
    torch.manual_seed(5)
    state = torch.get_rng_state()
    model = ReLIC(**TINY).fit(images)
    assert torch.equal(torch.get_rng_state(), state)
    online_bn = model.objective_.online[0][1]
    target_bn = model.backbone_[1]
    assert isinstance(online_bn, torch.nn.BatchNorm2d)
    for bn in (online_bn, target_bn):
        assert bn.running_mean.abs().sum() > 0 and not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert int(online_bn.num_batches_tracked) == 2 * 2 * 2  # two views, 2 steps, 2 epochs
    assert not model.backbone_.training
    full = model.transform(images)
    assert full.shape == (16, 128) and model.feature_dim_ == 128 and model.nesting_dims_ == [8, 32, 128]
    for m in (8, 32):
        assert np.array_equal(model.transform(images, n_components=m), full[:, :m])
    assert len(model.loss_history_) == 2 and all(np.isfinite(model.loss_history_))
    hidden = model.objective_.online[1].heads[0][0]
    assert hidden.weight.grad is not None and hidden.weight.grad.abs().sum() > 0


def test_resume_restores_optimizer_step_and_gamma(images, tmp_path):
    # tolerances, not equality: CPU convolutions are not bit-reproducible across thread schedules
    params = {**TINY, "n_epochs": 1}
    full = ReLIC(**{**params, "n_epochs": 2}).fit(images)
    first = ReLIC(**params).fit(images, checkpoint_dir=tmp_path / "new" / "dir")
    ckpt = tmp_path / "new" / "dir" / "latest_snapshot.safetensors"
    assert ckpt.exists() and (tmp_path / "new" / "dir" / "relic_model.safetensors").exists()
    resumed = ReLIC(**{**params, "n_epochs": 2}).fit(images, resume_from=ckpt)
    assert resumed.n_epochs_trained_ == 2 and first.n_epochs_trained_ == 1
    assert resumed.loss_history_ == pytest.approx(full.loss_history_, rel=1e-4)
    # bf16 ("auto" on an AMX host) rounds each product to 2^-8: features drift up to 2e-4
    tol = dict(rtol=1e-3, atol=1e-3 if full.precision_ == "bf16" else 1e-4)
    np.testing.assert_allclose(resumed.transform(images), full.transform(images), **tol)
    assert not np.allclose(first.transform(images), full.transform(images), **tol)


def test_save_load_roundtrip(images, tmp_path):
    model = ReLIC(**{**TINY, "n_epochs": 1, "n_components": 32}).fit(images)
    model.save(tmp_path / "m.safetensors")
    loaded = ReLIC().load(tmp_path / "m.safetensors")
    assert loaded.nesting_dims == [8, 32, 128] and loaded.backbone == "small_cnn"
    assert np.array_equal(loaded.transform(images), model.transform(images))
    assert loaded.transform(images).shape == (16, 32)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(backbone="vgg"), "backbone"),
        (dict(gamma=1.0), "gamma"),
        (dict(nesting_dims=[8, 4]), "nesting_dims"),
        (dict(nesting_dims=[8, 512]), "nesting_dims"),
        (dict(batch_size=100), "batch_size"),
        (dict(precision="fp8"), "precision"),
    ],
)
def test_bad_parameters_raise_before_training(images, params, match):
    with pytest.raises(ValueError, match=match):
        ReLIC(**{**TINY, **params}).fit(images)


def test_transform_before_fit_raises(images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ReLIC().transform(images)


def test_online_target_relic_objective_learns_a_toy_invariance():
    # two noisy views of the same vector: the Matryoshka ReLIC objective with an EMA target
    # must fall and raise the inverse temperature
    import torch.nn as nn

    from twinlearn.encoders.matryoshka import NestedMLPProjector
    from twinlearn.losses import MatryoshkaLoss

    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 20, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16))
        online = nn.Sequential(backbone, NestedMLPProjector([4, 16], 8, 32))
    objective = EMATargetObjective(online, MatryoshkaLoss(ReLICLoss(), [4, 16]))
    optimizer = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=3e-3)
    ema = EMAUpdate(objective, gamma=0.99, total_steps=80)
    trainer = _Steps()
    losses = []
    for _ in range(80):
        idx = torch.randint(256, (64,), generator=g)
        views = [X[idx] + 0.3 * torch.randn(64, 20, generator=g) for _ in range(2)]
        loss = objective(views)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trainer.step += 1
        ema.on_step_end(trainer)
        losses.append(loss.item())
    assert losses[0] < 2 * math.log(64)
    assert sum(losses[-10:]) / 10 < losses[0] - 0.3, losses[::10]
    assert objective.loss.base_loss.inverse_temperature().item() > 1.05
