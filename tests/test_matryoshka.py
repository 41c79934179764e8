"""Matryoshka heads and loss wrapper against hand-written references; nested TLDR."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from twinlearn import TLDR
from twinlearn.encoders.matryoshka import (
    NestedHeads,
    NestedMLPProjector,
    check_nesting_dims,
    default_nesting_dims,
)
from twinlearn.kernels import CauchyKernel
from twinlearn.losses import BarlowTwinsLoss, ContrastiveLoss, MatryoshkaLoss, ReLICLoss
from twinlearn.metrics import knn_accuracy

DIMS = [2, 4, 8]


def _pair(b=32, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


def test_wrapper_equals_hand_computed_weighted_sum_of_prefix_losses():
    z1, z2 = _pair()
    base = BarlowTwinsLoss()
    weights = [0.5, 1.0, 2.0]
    got = MatryoshkaLoss(base, DIMS, weights)(z1, z2)
    expected = sum(w * base(z1[:, :m], z2[:, :m]) for w, m in zip(weights, DIMS))
    torch.testing.assert_close(got, expected)
    unweighted = MatryoshkaLoss(base, DIMS)(z1, z2)
    torch.testing.assert_close(unweighted, sum(base(z1[:, :m], z2[:, :m]) for m in DIMS))


def test_wrapper_takes_per_nest_head_outputs_and_keeps_per_nest_losses():
    z1, z2 = _pair(d=16)
    outs1 = [z1[:, :5], z1[:, 5:12], z1]
    outs2 = [z2[:, :5], z2[:, 5:12], z2]
    base = BarlowTwinsLoss()
    wrapper = MatryoshkaLoss(base, DIMS)
    got = wrapper(outs1, outs2)
    parts = [base(a, b) for a, b in zip(outs1, outs2)]
    torch.testing.assert_close(got, sum(parts))
    torch.testing.assert_close(wrapper.last_losses, torch.stack(parts))


def test_wrapper_around_contrastive_loss_matches_loop():
    z1, z2 = _pair(d=8)
    base = ContrastiveLoss("infonce", CauchyKernel(), negative_samples="full")
    got = MatryoshkaLoss(base, DIMS)(z1, z2)
    torch.testing.assert_close(got, sum(base(z1[:, :m], z2[:, :m]) for m in DIMS))


def test_stacked_relic_path_equals_per_nest_loop():
    z1, z2 = _pair(d=6)
    outs1 = list(torch.randn(3, 32, 6).unbind(0))
    outs2 = list(torch.randn(3, 32, 6).unbind(0))
    base = ReLICLoss(alpha=0.7)
    got = MatryoshkaLoss(base, DIMS)(outs1, outs2)
    torch.testing.assert_close(got, sum(base(a, b) for a, b in zip(outs1, outs2)))


def test_wrapper_rejects_bad_arguments():
    base = BarlowTwinsLoss()
    with pytest.raises(ValueError, match="strictly increasing"):
        MatryoshkaLoss(base, [8, 8])
    with pytest.raises(ValueError, match="weights"):
        MatryoshkaLoss(base, [2, 4], [1.0])
    with pytest.raises(ValueError, match="weights"):
        MatryoshkaLoss(base, [2, 4], [1.0, -1.0])
    with pytest.raises(TypeError, match="nesting_dims"):
        MatryoshkaLoss(base, "8,16")
    with pytest.raises(ValueError, match="fewer than the largest nest"):
        MatryoshkaLoss(base, [2, 16])(*_pair(d=8))


def test_nesting_dim_helpers():
    assert default_nesting_dims(512) == [8, 16, 32, 64, 128, 256, 512]
    assert default_nesting_dims(100) == [8, 16, 32, 64, 100]
    with pytest.raises(ValueError, match="embedding has 32"):
        check_nesting_dims([8, 64], 32)


def test_shared_head_uses_only_the_first_m_weight_columns():
    torch.manual_seed(0)
    x = torch.randn(10, 8)
    heads = NestedHeads(lambda d: nn.Linear(d, 3), DIMS, shared=True)
    lin = heads.heads[0]
    for m, out in zip(DIMS, heads(x)):
        torch.testing.assert_close(out, x[:, :m] @ lin.weight[:, :m].T + lin.bias)


def test_shared_projector_stacked_equals_one_nest_at_a_time_and_hidden_layer_is_used():
    torch.manual_seed(0)
    x = torch.randn(10, 8, requires_grad=True)
    proj = NestedMLPProjector(DIMS, out_dim=4, hidden_dim=16)
    hidden, _, out = proj.heads[0]
    for m, z in zip(DIMS, proj(x)):
        manual = torch.relu(x[:, :m] @ hidden.weight[:, :m].T) @ out.weight.T
        torch.testing.assert_close(z, manual)
    sum(z.sum() for z in proj(x)).backward()
    assert hidden.weight.grad is not None and hidden.weight.grad.abs().sum() > 0


def test_full_mrl_heads_see_only_their_prefix():
    torch.manual_seed(0)
    heads = NestedHeads(lambda d: nn.Sequential(nn.Linear(d, 5), nn.BatchNorm1d(5)), DIMS, shared=False)
    assert [h[0].in_features for h in heads.heads] == DIMS
    x = torch.randn(16, 8, requires_grad=True)
    outs = heads(x)
    for m, z in zip(DIMS, outs):
        (grad,) = torch.autograd.grad((z * torch.randn_like(z)).sum(), x, retain_graph=True)
        assert grad[:, m:].abs().sum() == 0 and grad[:, :m].abs().min() > 0


def test_shared_batchnorm_head_normalises_each_nest_alone():
    torch.manual_seed(0)
    heads = NestedHeads(lambda d: nn.Sequential(nn.Linear(d, 5), nn.BatchNorm1d(5, affine=False)), DIMS)
    for z in heads(torch.randn(64, 8)):
        torch.testing.assert_close(z.mean(0), torch.zeros(5), atol=1e-5, rtol=0)


# --- nested TLDR --------------------------------------------------------------------------
FAST = dict(projector="mlp-1-128", n_epochs=3, batch_size=64, random_state=0)


def test_nested_tldr_prefixes_are_the_first_columns(blobs, tmp_path):
    X, _ = blobs
    model = TLDR(n_components=8, nesting_dims=[2, 4, 8], **FAST).fit(X, retain_projector=True)
    full = model.transform(X)
    for m in (2, 4, 8):
        assert np.array_equal(model.transform(X, n_components=m), full[:, :m])
    assert len(model.projector_.heads) == 3
    path = tmp_path / "nested.safetensors"
    model.save(path)
    loaded = TLDR().load(path, init=True)
    assert loaded.nesting_dims == [2, 4, 8]
    assert np.array_equal(loaded.transform(X), full)
    with pytest.raises(ValueError, match="different architecture"):
        TLDR(n_components=8, projector="mlp-1-128").load(path)


def test_nested_tldr_rejects_bad_nesting_before_training(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="nesting_dims"):
        TLDR(n_components=8, nesting_dims=[4, 16], **FAST).fit(X)
    with pytest.raises(TypeError, match="nesting_dims"):
        TLDR(n_components=8, nesting_dims=8, **FAST).fit(X)


def test_nested_tldr_small_prefix_is_as_good_as_a_small_tldr(mnist_small):
    # A short run on 3 000 digits: the claim tested is "the 8-dim prefix of one nested model is
    # as good as a model trained for 8 dims", not absolute quality (benchmarks/mrl_tldr_mnist.py
    # checks that on the full set, against PCA too).
    from twinlearn.neighbors import compute_knn

    x_train, y_train, x_test, y_test = mnist_small
    knn, _ = compute_knn(x_train, 5, method="exact")
    params = dict(projector="mlp-1-128", n_epochs=5, batch_size=128, random_state=0)
    nested = TLDR(n_components=32, nesting_dims=[8, 32], **params).fit(x_train, knn_graph=knn)
    single = TLDR(n_components=8, **params).fit(x_train, knn_graph=knn)

    def acc(model, m=None):
        return knn_accuracy(model.transform(x_train, n_components=m), y_train,
                            model.transform(x_test, n_components=m), y_test)

    a_nested, a_single, a_full = acc(nested, 8), acc(single), acc(nested)
    assert a_nested > a_single - 0.02, (a_nested, a_single)
    assert a_full > a_nested + 0.05, (a_full, a_nested)


# --- linear probe and the accuracy-across-dimensions report ---------------------------------
def test_linear_probe_matches_a_direct_sklearn_fit(blobs):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from twinlearn.metrics import linear_probe

    X, y = blobs
    rng = np.random.default_rng(0)
    noisy = X + rng.normal(scale=6.0, size=X.shape).astype(np.float32)
    tr, te = slice(0, 200), slice(200, 300)
    scaler = StandardScaler().fit(noisy[tr])
    ref = LogisticRegression(max_iter=1000).fit(scaler.transform(noisy[tr]), y[tr])
    expected = ref.score(scaler.transform(noisy[te]), y[te])
    assert linear_probe(noisy[tr], y[tr], noisy[te], y[te]) == pytest.approx(expected)
    shuffled = rng.permutation(y[tr])
    assert linear_probe(noisy[tr], shuffled, noisy[te], y[te]) < expected
    with pytest.raises(ValueError, match="features"):
        linear_probe(noisy[tr], y[tr], noisy[te, :5], y[te])


def test_accuracy_across_dims_report(tmp_path):
    from twinlearn.metrics import accuracy_across_dims, format_dims_table, plot_accuracy_across_dims

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    # the class signal sits in the last columns: prefixes of 2 miss it, PCA finds it
    X = rng.normal(size=(400, 8)).astype(np.float32)
    X[:, 6] += 6 * (y % 2)
    X[:, 7] += 6 * (y // 2)
    rows = accuracy_across_dims(X[:300], y[:300], X[300:], y[300:], [2, 8])
    assert [r["d"] for r in rows] == [2, 8]
    assert rows[0]["prefix"] < 0.5 < rows[0]["pca"] and rows[1]["prefix"] > 0.9
    table = format_dims_table(rows)
    assert table.splitlines()[0] == "| d | prefix accuracy | pca accuracy |" and len(table.splitlines()) == 4
    pytest.importorskip("matplotlib")
    plot_accuracy_across_dims(rows, tmp_path / "dims.png")
    assert (tmp_path / "dims.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="dims"):
        accuracy_across_dims(X, y, X, y, [16])
