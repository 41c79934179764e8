import math

import pytest
import torch

from twinlearn.kernels import CauchyKernel, CosineKernel, make_kernel
from twinlearn.losses import ContrastiveLoss, sample_negatives


def q(kernel, a, b):
    return math.exp(float(kernel.log_sim(a, b)))


def naive(mode, za, zp, negs, kernel, spec=1.0, log_Z=0.0):
    """Per-anchor loops of the textbook formulas."""
    z = torch.cat([za, zp])
    out = []
    for i in range(len(za)):
        qp = q(kernel, za[i], zp[i])
        qn = [q(kernel, za[i], z[j]) for j in negs[i]]
        if mode == "infonce":
            out.append(-math.log(qp) + math.log(qp + sum(qn)) / spec)
        elif mode in ("neg", "nce"):
            xi = spec if mode == "neg" else math.exp(log_Z) * len(qn)
            out.append(-math.log(qp / (qp + xi)) - sum(math.log(1 - x / (x + xi)) for x in qn))
        else:
            out.append(-math.log(qp) - sum(math.log(max(1 - x, 1e-4)) for x in qn))
    return sum(out) / len(out)


CASES = [(m, CauchyKernel()) for m in ("infonce", "neg", "nce", "umap")]
CASES += [(m, CosineKernel(0.5)) for m in ("infonce", "neg", "nce")]


@pytest.mark.parametrize("mode, kernel", CASES, ids=[f"{m}-{k.name}" for m, k in CASES])
def test_sampled_negatives_match_naive_formula(mode, kernel):
    g = torch.Generator().manual_seed(0)
    za, zp = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    loss = ContrastiveLoss(mode, kernel, 4, ince_spec=2.0, neg_spec=2.0, log_Z=0.3,
                           generator=torch.Generator().manual_seed(1))
    negs = sample_negatives(8, 4, torch.Generator().manual_seed(1), torch.device("cpu"))
    spec = 2.0
    assert float(loss(za, zp)) == pytest.approx(naive(mode, za, zp, negs.tolist(), kernel, spec, 0.3), rel=1e-5)


def test_full_batch_symmetric_infonce_matches_naive():
    g = torch.Generator().manual_seed(0)
    za, zp = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    loss = ContrastiveLoss("infonce", CauchyKernel(), "full", symmetric=True)
    z = torch.cat([za, zp])
    negs = [[j for j in range(10) if j not in (i, (i + 5) % 10)] for i in range(10)]
    # anchors are all 10 views, each with its partner as positive
    expected = naive("infonce", z, torch.cat([zp, za]), negs, CauchyKernel())
    assert float(loss(za, zp)) == pytest.approx(expected, rel=1e-5)


def test_negatives_never_hit_anchor_or_its_positive():
    idx = sample_negatives(64, 200, torch.Generator().manual_seed(0), torch.device("cpu"))
    rows = torch.arange(64)[:, None]
    assert not (idx == rows).any() and not (idx == rows + 64).any()
    assert idx.min() >= 0 and idx.max() < 128
    counts = torch.bincount(idx[0], minlength=128).float()
    assert counts[0] == 0 and counts[64] == 0 and counts.sum() == 200


def test_bad_arguments():
    with pytest.raises(ValueError, match="bounded by 1"):
        ContrastiveLoss("umap", CosineKernel())
    with pytest.raises(ValueError, match="loss mode"):
        ContrastiveLoss("triplet")
    with pytest.raises(ValueError, match="negative_samples"):
        ContrastiveLoss("neg", negative_samples=0)
    with pytest.raises(ValueError, match="metric"):
        make_kernel("manhattan")


def test_sum_reduction_and_scale():
    za, zp = torch.randn(4, 2), torch.randn(4, 2)
    mean = ContrastiveLoss("infonce", negative_samples="full")(za, zp)
    total = ContrastiveLoss("infonce", negative_samples="full", reduction="sum", loss_scale=0.5)(za, zp)
    assert float(total) == pytest.approx(float(mean) * 4 * 0.5, rel=1e-6)


def test_umap_kernel_is_umap_learns_curve():
    """``CauchyKernel.umap(a, b)`` is ``1/(1 + a·d^{2b})``; (1, 1) is the Cauchy kernel."""
    a_, b_ = torch.zeros(3, 2), torch.tensor([[0.5, 0.0], [1.0, 1.0], [3.0, -2.0]])
    d = b_.norm(dim=1)
    umap = CauchyKernel.umap(1.577, 0.8951)
    torch.testing.assert_close(umap.log_sim(a_, b_), -torch.log1p(1.577 * d ** (2 * 0.8951)))
    torch.testing.assert_close(CauchyKernel.umap(1.0, 1.0).log_sim(a_, b_), CauchyKernel().log_sim(a_, b_))
    z = torch.zeros(1, 2, requires_grad=True)  # d = 0: no NaN gradient for b < 1
    umap.log_sim(z, torch.zeros(1, 2)).sum().backward()
    assert torch.equal(z.grad, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="power"):
        CauchyKernel(power=0.5)
    with pytest.raises(ValueError, match="power"):
        CauchyKernel(dof=2.0, power=0.9)
