"""The t-SNE end of CNE (``negative_samples="all"``): the grid-interpolated repulsion against the
exact sum over all pairs, the closed-form gradient against autograd, and the estimator mode."""

import numpy as np
import pytest
import torch

from twinlearn import CNE
from twinlearn.encoders.table import EmbeddingTable
from twinlearn.losses.interpolated_repulsion import GridRepulsion, exact_repulsion
from twinlearn.metrics import knn_accuracy
from twinlearn.training.full_repulsion import TSNEDescent, TSNEObjective

TSNE = dict(negative_samples="all", n_epochs=60, n_neighbors=10, random_state=0)


def clustered_map(n: int, spread: float, seed: int = 0) -> torch.Tensor:
    """A t-SNE-like layout: 10 clusters of width ``spread / 5`` around centres ``spread`` apart."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 2, generator=g, dtype=torch.float64) * spread
    return centres[torch.randint(0, 10, (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64) * spread / 5


def relative_errors(Y: torch.Tensor, repulsion: GridRepulsion) -> tuple[float, float]:
    """Relative errors of ``Z`` and of the forces (as one vector) against the exact sums."""
    Z, F = exact_repulsion(Y.double())
    Z_grid, F_grid = repulsion(Y)
    return float(abs(Z_grid.double() - Z) / Z), float((F_grid.double() - F).norm() / F.norm())


@pytest.mark.parametrize("spread, box_width", [(2.0, 1.0), (20.0, 0.5)], ids=["compact", "wide"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grid_repulsion_matches_exact_sum(spread, box_width, dtype):
    Y = clustered_map(2000, spread).to(dtype)
    assert GridRepulsion(box_width=box_width)(Y)[1].dtype == dtype
    z_error, force_error = relative_errors(Y, GridRepulsion(box_width=box_width))
    assert z_error < 1e-2 and force_error < 1e-2


def test_grid_repulsion_converges_as_boxes_shrink():
    Y = clustered_map(600, 8.0, seed=1)
    errors = [relative_errors(Y, GridRepulsion(box_width=w))[1] for w in (1.0, 0.5, 0.25)]
    assert errors[0] > 3 * errors[1] > 9 * errors[2]  # cubic interpolation: ~8× per halving


def test_grid_repulsion_is_translation_invariant_and_checks_shape():
    Y = clustered_map(500, 5.0)
    Z, F = GridRepulsion()(Y)
    Z_moved, F_moved = GridRepulsion()(Y + 1000.0)
    assert torch.allclose(Z, Z_moved, rtol=1e-6) and torch.allclose(F, F_moved, atol=1e-6)
    with pytest.raises(ValueError, match="2-D embedding"):
        GridRepulsion()(torch.zeros(10, 3))


def test_closed_form_gradient_is_the_kl_divergence_gradient():
    """Autograd of t-SNE's KL over all pairs equals 4× the objective's gradient (the 4 that
    openTSNE folds into its learning rate), and the returned loss is that KL."""
    g = torch.Generator().manual_seed(0)
    n = 30
    Y = torch.randn(n, 2, generator=g, dtype=torch.float64) * 2
    heads, tails = torch.triu_indices(n, n, 1)
    keep = torch.rand(len(heads), generator=g) < 0.3
    edges = torch.cat([torch.stack([heads[keep], tails[keep]], 1), torch.stack([tails[keep], heads[keep]], 1)])
    weights = torch.rand(int(keep.sum()), generator=g, dtype=torch.float64).repeat(2) + 0.5
    table = EmbeddingTable(Y.clone())
    Y = table.weight.detach().double()  # the float32 coordinates the objective sees
    objective = TSNEObjective(table, weights, exact_repulsion)
    objective(edges).backward()

    Y_ref = Y.clone().requires_grad_(True)
    P = torch.zeros(n, n, dtype=torch.float64)
    P[edges[:, 0], edges[:, 1]] = weights / weights.sum()
    W = 1 / (1 + torch.cdist(Y_ref, Y_ref) ** 2)
    off = ~torch.eye(n, dtype=torch.bool)
    Q = W[off] / W[off].sum()
    kl = (P[off][P[off] > 0] * torch.log(P[off][P[off] > 0] / Q[P[off] > 0])).sum()
    kl.backward()
    assert table.weight.grad.dtype == torch.float32  # the table's dtype
    assert torch.allclose(4 * table.weight.grad.double(), Y_ref.grad, rtol=1e-4, atol=1e-7)
    assert float(objective(edges).detach()) == pytest.approx(float(kl.detach()), rel=1e-5)


def test_descent_clips_steps_and_recentres():
    weight = torch.nn.Parameter(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    weight.grad = torch.tensor([[-100.0, 0.0], [0.0, 0.0]])
    TSNEDescent([weight], lr=1.0, max_step_norm=5.0).step()
    # point 0 steps by (120, 0) clipped to (5, 0), point 1 stays; then both shift by the mean
    expected = torch.tensor([[5.0, 0.0], [1.0, 1.0]])
    assert torch.allclose(weight.detach(), expected - expected.mean(0))


def test_all_negatives_fit_separates_clusters_and_is_deterministic(blobs):
    X, labels = blobs
    Y = CNE(**TSNE).fit_transform(X)
    Y_again = CNE(**TSNE).fit_transform(X)
    np.testing.assert_array_equal(Y, Y_again)
    assert Y.shape == (300, 2) and np.isfinite(Y).all()
    assert knn_accuracy(Y[::2], labels[::2], Y[1::2], labels[1::2]) > 0.95


def test_spectrum_position_is_the_exaggeration(blobs):
    """s = 1 runs at exaggeration 4 after the early phase: tighter clusters than t-SNE's s = 0."""
    X, labels = blobs
    sizes = {}
    for s in (0.0, 1.0):
        model = CNE(**TSNE, s=s).fit(X)
        assert model.spectrum_.spec == pytest.approx(4.0**s)
        Y = model.embedding_
        sizes[s] = np.mean([Y[labels == c].std(0).mean() for c in range(3)])
    assert sizes[1.0] < 0.8 * sizes[0.0]


def test_all_negatives_places_new_points_next_to_their_neighbours(blobs):
    X, labels = blobs
    model = CNE(**TSNE, transform_epochs=5).fit(X[:250])
    Y_new = model.transform(X[250:])
    assert knn_accuracy(model.embedding_, labels[:250], Y_new, labels[250:]) > 0.95


@pytest.mark.parametrize("params, match", [
    (dict(n_components=3), "n_components=3"),
    (dict(parametric=True), "parametric=True"),
    (dict(loss_mode="neg"), "loss_mode='neg'"),
    (dict(metric="cosine"), "metric='cosine'"),
    (dict(optimizer="adam"), "optimizer='adam'"),
])
def test_all_negatives_refuses_what_it_does_not_support(blobs, params, match):
    with pytest.raises(ValueError, match=f"negative_samples='all'.*{match}"):
        CNE(negative_samples="all", **params).fit(blobs[0])


def test_unknown_negative_samples_name_is_refused(blobs):
    with pytest.raises(ValueError, match="negative_samples"):
        CNE(negative_samples="everything").fit(blobs[0])
