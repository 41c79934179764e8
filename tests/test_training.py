import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from twinlearn.training import LARS, lars_param_groups, linear_decay, warmup_cosine


def reference_lars_step(p, g, mu, lr, wd=1e-6, eta=1e-3, m=0.9, exclude=False):
    if not exclude:
        g = g + wd * p
        pn, gn = p.norm(), g.norm()
        if pn > 0 and gn > 0:
            g = g * (eta * pn / gn)
    mu = m * mu + g
    return p - lr * mu, mu


def test_lars_matches_reference_update_and_skips_1d_params():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    opt = LARS(lars_param_groups(lin), lr=0.5)
    mu_w, mu_b = torch.zeros_like(w0), torch.zeros_like(b0)
    for _ in range(3):
        gw, gb = torch.randn_like(w0), torch.randn_like(b0)
        lin.weight.grad, lin.bias.grad = gw.clone(), gb.clone()
        opt.step()
        w0, mu_w = reference_lars_step(w0, gw, mu_w, 0.5)
        b0, mu_b = reference_lars_step(b0, gb, mu_b, 0.5, exclude=True)
        assert torch.allclose(lin.weight, w0, atol=1e-6)
        assert torch.allclose(lin.bias, b0, atol=1e-6)


def test_warmup_cosine_shape():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(54) == pytest.approx(0.5 + 0.001 * 0.5, rel=1e-3)
    assert f(99) == pytest.approx(0.001)
    values = [f(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_linear_decay():
    f = linear_decay(10)
    assert [round(f(s), 3) for s in (0, 5, 9)] == [1.0, 0.5, 0.1]


def test_bf16_without_native_support_trains_in_fp32(monkeypatch):
    import twinlearn.training.trainer as trainer_module

    cpu = torch.device("cpu")
    monkeypatch.setattr(trainer_module, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):  # seen by users (issue 11)
        assert trainer_module.effective_precision("bf16", cpu) == "fp32"
    assert trainer_module.effective_precision("fp16", cpu) == "fp16"
    monkeypatch.setattr(trainer_module, "cpu_has_fast_bf16", lambda: True)
    assert trainer_module.effective_precision("bf16", cpu) == "bf16"


def test_long_epochs_hand_free_memory_back(monkeypatch):
    import twinlearn.training.trainer as trainer_module
    from twinlearn import CNE
    from twinlearn._device import _glibc_trim, release_free_memory

    release_free_memory()  # callable wherever it runs; on glibc it is malloc_trim
    import sys

    assert (_glibc_trim() is not None) == sys.platform.startswith("linux")
    calls = []
    monkeypatch.setattr(trainer_module, "release_free_memory", lambda: calls.append(1))
    X = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    monkeypatch.setattr(trainer_module, "RELEASE_AFTER_SECONDS", 1e9)  # no epoch is as long
    CNE(n_epochs=3, random_state=0).fit(X)
    assert calls == []
    monkeypatch.setattr(trainer_module, "RELEASE_AFTER_SECONDS", -1.0)  # every epoch is longer
    CNE(n_epochs=3, random_state=0).fit(X)
    assert calls == [1, 1, 1]  # one per epoch
