"""Positive pairs from a kNN graph: TLDR-style (anchor + one random neighbour) and CNE-style
(every directed edge of the symmetrised graph once per epoch)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

#: from this many edges an epoch's order on a CPU comes from the compiled bucket shuffle
#: (loading numba, ~0.5 s once, pays off within a few epochs; below, torch's order is cheap)
COMPILED_ORDER_EDGES = 1_000_000


class KNNPairSource:
    """Each step: a batch of anchors (a random permutation, without replacement) and, for each,
    one neighbour drawn uniformly from its ``k`` nearest.

    Everything is generated on ``device`` with a local generator: no host round trip per step.

    Parameters
    ----------
    knn_indices : array of shape (n_samples, k)
    batch_size : int
    device : torch.device
    generator : torch.Generator on ``device``
    drop_last : bool
        Drop the last incomplete batch (TLDR's behaviour; Barlow Twins needs full batches).
    """

    def __init__(
        self,
        knn_indices: np.ndarray | torch.Tensor,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
        drop_last: bool = True,
    ) -> None:
        self.knn = torch.as_tensor(knn_indices, dtype=torch.int64, device=device)
        self.n_samples, self.k = self.knn.shape
        self.batch_size = batch_size
        self.device = device
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        full, rest = divmod(self.n_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def _columns(self, anchors: torch.Tensor) -> torch.Tensor:
        """Which of its neighbours each anchor of an epoch is paired with: uniform."""
        return torch.randint(self.k, (len(anchors),), generator=self.generator, device=self.device)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(self.n_samples, generator=self.generator, device=self.device)
        positives = self.knn[perm, self._columns(perm)]
        for step in range(len(self)):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield perm[sl], positives[sl]


def _gather_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table[rows]`` (rows of a 1-D or 2-D tensor); on a CPU through NumPy, whose row gather
    ran ~15× faster than torch's advanced indexing on 1.6 M edges (88 → 5 ms)."""
    if table.device.type != "cpu":
        return table.index_select(0, rows)
    return torch.from_numpy(np.take(table.numpy(), rows.numpy(), axis=0))


class EdgePairSource:
    """Every directed edge ``(head, tail)`` once per epoch, in a random order.

    This is CNE's sampling: one epoch visits each edge of the symmetrised kNN graph in both
    directions. The last batch may be smaller.

    With ``weights``, an epoch keeps each edge with probability ``w / max(w)`` instead (UMAP's
    sampling of a fuzzy graph, in expectation): strong edges every epoch, weak ones now and
    then. An epoch then has a fixed ``round(Σ w / max(w))`` edges, so the LR schedule knows
    its length: the few kept beyond that are dropped, a shortfall is filled with repeats.
    """

    def __init__(
        self,
        heads: np.ndarray,
        tails: np.ndarray,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
        weights: np.ndarray | None = None,
    ) -> None:
        # one (n_edges, 2) array of int32 (int64 beyond 2³¹ points): an epoch's shuffle is
        # then a single gather of 8-byte rows. Stacked straight into that dtype: an int64
        # copy on the way took 0.37 GB at 23·10⁶ edges
        heads, tails = torch.as_tensor(heads), torch.as_tensor(tails)
        small = heads.numel() == 0 or max(int(heads.max()), int(tails.max())) < 2**31
        dtype = torch.int32 if small else torch.int64
        self.edges = torch.stack([heads.to(dtype), tails.to(dtype)], 1).to(device)
        self.batch_size = batch_size
        self.device = device
        self.generator = generator
        self.keep_prob = None
        self.edges_per_epoch = self.n_edges
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float32, device=device)
            if w.shape != (self.n_edges,) or not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
                raise ValueError("edge weights must be positive, finite and one per edge")
            self.keep_prob = w / w.max()
            self.edges_per_epoch = min(self.n_edges, max(2, round(float(self.keep_prob.sum()))))
        self._bounds = self._batch_bounds()

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    def _batch_bounds(self) -> list[int]:
        """Batch boundaries; a last batch of one edge joins the one before (a lone anchor has
        no other batch point to take negatives from)."""
        n = self.edges_per_epoch
        bounds = [*range(0, n, self.batch_size), n]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
            del bounds[-2]
        return bounds

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def _epoch_edges(self) -> torch.Tensor:
        # int32 when the edges are: the same permutation as int64, drawn ~2× faster on a CPU
        index = dict(generator=self.generator, device=self.device, dtype=self.edges.dtype)
        if self.keep_prob is None:
            return torch.randperm(self.n_edges, **index)
        draws = torch.rand(self.n_edges, generator=self.generator, device=self.device)
        kept = torch.nonzero(draws < self.keep_prob).squeeze(1)
        # never empty: the heaviest edge has probability 1
        order = torch.randperm(len(kept), **index)
        if len(kept) < self.edges_per_epoch:
            order = order[torch.arange(self.edges_per_epoch, device=self.device) % len(kept)]
        return _gather_rows(kept, order[: self.edges_per_epoch])

    def _epoch_heads_tails(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's edges in order, as heads and tails; on a CPU with many edges from the
        compiled bucket shuffle (half the time of a permutation, gather and transpose at 10⁶
        points), seeded from the generator."""
        if self.device.type != "cpu" or self.n_edges < COMPILED_ORDER_EDGES:
            return _gather_rows(self.edges, self._epoch_edges()).T.contiguous()
        from twinlearn.pairs._shuffle import shuffled_edges  # numba: loaded where it pays

        seed = int(torch.randint(2**62, (), generator=self.generator))
        keep = None if self.keep_prob is None else self.keep_prob.numpy()
        heads, tails = shuffled_edges(self.edges.numpy(), keep, self.edges_per_epoch, seed)
        return torch.from_numpy(heads), torch.from_numpy(tails)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        heads, tails = self._epoch_heads_tails()
        for start, stop in zip(self._bounds[:-1], self._bounds[1:]):
            yield heads[start:stop], tails[start:stop]
