import numpy as np
import pytest
import torch

from twinlearn.pairs import EdgePairSource, KNNPairSource
from twinlearn.pairs import knn as knn_pairs


def test_knn_pairs_cover_anchors_once_and_draw_true_neighbours():
    rng = np.random.default_rng(0)
    knn = np.stack([rng.choice(np.delete(np.arange(100), i), 4, replace=False) for i in range(100)])
    src = KNNPairSource(knn, 32, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(src) == 3  # drop_last
    anchors, positives = zip(*src.epoch())
    anchors, positives = torch.cat(anchors).numpy(), torch.cat(positives).numpy()
    assert len(set(anchors.tolist())) == 96
    assert all(p in knn[a] for a, p in zip(anchors, positives))


def test_knn_pairs_draw_every_neighbour_column_uniformly():
    knn = np.tile(np.arange(1, 6), (1000, 1))
    src = KNNPairSource(knn, 1000, torch.device("cpu"), torch.Generator().manual_seed(0))
    counts = np.zeros(6)
    for _ in range(20):
        for _, p in src.epoch():
            counts += np.bincount(p.numpy(), minlength=6)
    share = counts[1:] / counts.sum()
    assert np.allclose(share, 0.2, atol=0.01)


def test_same_generator_state_same_pairs():
    knn = np.tile(np.arange(1, 6), (64, 1))
    a = KNNPairSource(knn, 16, torch.device("cpu"), torch.Generator().manual_seed(5))
    b = KNNPairSource(knn, 16, torch.device("cpu"), torch.Generator().manual_seed(5))
    for (x1, y1), (x2, y2) in zip(a.epoch(), b.epoch()):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_edge_pairs_visit_every_edge_once():
    heads = np.array([0, 1, 1, 2, 3])
    tails = np.array([1, 0, 2, 1, 0])
    src = EdgePairSource(heads, tails, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(src) == 2  # 2 + 3: a lone last edge joins the batch before
    seen = [(int(h), int(t)) for hb, tb in src.epoch() for h, t in zip(hb, tb)]
    assert sorted(seen) == sorted(zip(heads.tolist(), tails.tolist()))


@pytest.mark.parametrize("path", ["compiled", "torch"])
def test_weighted_edges_are_drawn_in_proportion_to_their_weight(path, monkeypatch):
    # "torch": the order a GPU and small graphs use (randperm of the kept edges)
    monkeypatch.setattr(knn_pairs, "COMPILED_ORDER_EDGES", 0 if path == "compiled" else 10**9)
    n = 3000
    heads, tails = np.arange(n), np.roll(np.arange(n), 1)
    weights = np.repeat(np.array([0.8, 0.4, 0.2], dtype=np.float32), n // 3)
    src = EdgePairSource(heads, tails, 256, torch.device("cpu"), torch.Generator().manual_seed(0),
                         weights=weights)
    assert src.edges_per_epoch == round(n / 3 * (1 + 0.5 + 0.25))
    counts = np.zeros(n)
    for _ in range(100):
        epoch = [hb.numpy() for hb, _ in src.epoch()]
        assert sum(map(len, epoch)) == src.edges_per_epoch and len(epoch) == len(src)
        counts += np.bincount(np.concatenate(epoch), minlength=n)
    per_epoch = counts.reshape(3, -1).mean(axis=1) / 100
    assert np.allclose(per_epoch, [1.0, 0.5, 0.25], atol=0.02)


def test_edge_weights_must_be_positive_and_one_per_edge():
    heads, tails = np.array([0, 1]), np.array([1, 0])
    for bad in (np.array([1.0]), np.array([1.0, 0.0]), np.array([1.0, np.nan])):
        with pytest.raises(ValueError, match="edge weights"):
            EdgePairSource(heads, tails, 2, torch.device("cpu"), torch.Generator(), weights=bad)


def test_no_batch_of_a_single_edge():
    heads, tails = np.arange(9), np.roll(np.arange(9), 1)
    src = EdgePairSource(heads, tails, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    sizes = [len(h) for h, _ in src.epoch()]
    assert sizes == [4, 5] and len(src) == 2  # 4 + 4 + 1: the lone edge joins the last batch


@pytest.mark.parametrize("threshold", [0, 10**9])
def test_edge_order_comes_from_the_generator(threshold, monkeypatch):
    monkeypatch.setattr(knn_pairs, "COMPILED_ORDER_EDGES", threshold)
    heads = np.arange(100)
    orders = []
    for seed in (7, 7, 8):
        src = EdgePairSource(heads, (heads + 1) % 100, 1000, torch.device("cpu"), torch.Generator().manual_seed(seed))
        ((h, t),) = list(src.epoch())
        assert sorted(h.tolist()) == heads.tolist() and t.tolist() == ((h + 1) % 100).tolist()
        ((again, _),) = list(src.epoch())
        assert again.tolist() != h.tolist()  # the next epoch is another order
        orders.append(h.tolist())
    assert orders[0] == orders[1] and orders[0] != orders[2]


def test_the_cpu_edge_order_is_uniform():
    """Every position equally likely for every edge, within one bucket (Fisher–Yates) and
    across buckets (an edge's bucket is drawn, not its input block)."""
    from twinlearn.pairs._shuffle import BUCKET_EDGES, shuffled_edges

    edges = np.stack([np.arange(6), np.arange(6)], 1).astype(np.int32)
    places = np.zeros((6, 6))
    for seed in range(6000):
        heads, _ = shuffled_edges(edges, None, 6, seed)
        places[heads, np.arange(6)] += 1
    assert np.abs(places - 1000).max() < 150  # ~5 standard deviations
    n = 3 * BUCKET_EDGES
    edges = np.stack([np.arange(n), np.arange(n)], 1).astype(np.int32)
    spread = np.zeros(10)
    for seed in range(10):
        heads, tails = shuffled_edges(edges, None, n, seed)
        assert np.array_equal(heads, tails) and np.array_equal(np.sort(heads), np.arange(n))
        # where the first input bucket's edges land: all over the order, evenly
        spread += np.histogram(np.flatnonzero(heads < BUCKET_EDGES), bins=10, range=(0, n))[0]
    assert np.abs(spread - spread.mean()).max() < 5 * np.sqrt(spread.mean())
