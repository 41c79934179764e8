"""The spectrum mapping s -> (Z_bar, neg_spec, ince_spec) against hand-computed values."""

import math

import pytest

from twinlearn.losses.spectrum import (
    ince_spec_from_s,
    neg_spec_from_s,
    resolve_spectrum,
    s_from_ince_spec,
    s_from_neg_spec,
    z_bar_from_s,
)


@pytest.mark.parametrize("s, rho", [(0, 1.0), (1, 4.0), (0.5, 2.0), (-1, 0.25), (2, 16.0)])
def test_ince_spec_is_four_to_the_s(s, rho):
    assert ince_spec_from_s(s) == pytest.approx(rho)
    assert s_from_ince_spec(rho) == pytest.approx(s)


# n = 1000, m = 5: Z_tsne = 100·n = 1e5, Z_umap = n²/m = 2e5, ξ = m·Z̄/n²
@pytest.mark.parametrize(
    "s, z_bar, xi",
    [(0.0, 1e5, 0.5), (1.0, 2e5, 1.0), (0.5, 1e5 * math.sqrt(2), 0.5 * math.sqrt(2)), (2.0, 4e5, 2.0)],
)
def test_neg_spectrum_hand_values(s, z_bar, xi):
    assert z_bar_from_s(s, 1000, 5) == pytest.approx(z_bar)
    assert neg_spec_from_s(s, 1000, 5) == pytest.approx(xi)
    assert s_from_neg_spec(xi, 1000, 5) == pytest.approx(s)


def test_umap_end_is_xi_one_for_any_m():
    # the convention Z_umap = n²/m (the original's code fixed m = 5 there)
    for m in (1, 5, 50):
        assert neg_spec_from_s(1.0, 70000, m) == pytest.approx(1.0)
    assert neg_spec_from_s(0.0, 70000, 5) == pytest.approx(100 * 5 / 70000)


def test_defaults_and_exaggeration():
    info = resolve_spectrum("infonce", 1000, 5)
    assert (info.s, info.spec, info.early_spec) == (0.0, 1.0, 4.0)
    neg = resolve_spectrum("neg", 1000, 5)
    assert (neg.s, neg.spec, neg.early_spec) == (1.0, 1.0, 1.0)
    off = resolve_spectrum("infonce", 1000, 5, early_exaggeration=False)
    assert off.early_spec == off.spec == 1.0


def test_exaggeration_applies_when_a_constant_is_given():
    neg = resolve_spectrum("neg", 1000, 5, neg_spec=0.5)  # = s 0
    assert neg.spec == 0.5 and neg.s == pytest.approx(0.0) and neg.early_spec == pytest.approx(1.0)
    zb = resolve_spectrum("neg", 1000, 5, Z_bar=1e5)
    assert zb.spec == pytest.approx(0.5) and zb.early_spec == pytest.approx(1.0)
    inf = resolve_spectrum("infonce", 1000, 5, ince_spec=2.0)
    assert inf.spec == 2.0 and inf.s == pytest.approx(0.5) and inf.early_spec == pytest.approx(4.0)
    high = resolve_spectrum("neg", 1000, 5, s=2.0)  # already beyond the UMAP end
    assert high.early_spec == high.spec == pytest.approx(2.0)


def test_losses_without_spectrum():
    for mode in ("nce", "umap"):
        assert resolve_spectrum(mode, 1000, 5).s is None


@pytest.mark.parametrize(
    "mode, kwargs, match",
    [
        ("neg", dict(s=0.0, neg_spec=1.0), "at most one"),
        ("neg", dict(ince_spec=2.0), "no meaning"),
        ("infonce", dict(Z_bar=1e5), "no meaning"),
        ("nce", dict(s=0.5), "no spectrum"),
        ("neg", dict(neg_spec=-1.0), "positive"),
        ("infonce", dict(ince_spec=0.0), "positive"),
        ("infonce", dict(s=float("nan")), "finite"),
    ],
)
def test_bad_spectrum_arguments(mode, kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_spectrum(mode, 1000, 5, **kwargs)
