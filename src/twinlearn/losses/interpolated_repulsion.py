r"""The repulsion of t-SNE between *all* pairs of a 2-D embedding, exactly or by grid
interpolation (Linderman et al., "Fast interpolation-based t-SNE", Nature Methods 2019).

Both strategies return, for the Cauchy kernel :math:`w_{ij} = 1/(1 + \lVert y_i - y_j\rVert^2)`,

* the normaliser :math:`Z = \sum_{i \ne j} w_{ij}` and
* the repulsive force on every point, :math:`F_i = \sum_j w_{ij}^2 (y_i - y_j)`,

so that t-SNE's gradient is :math:`\rho \sum_j p_{ij} w_{ij}(y_i - y_j) - F_i / Z`.

:class:`GridRepulsion` spreads the points' unit charges onto a regular grid (``n_nodes``
Lagrange nodes per box and axis), convolves them by FFT with the kernels ``w`` and
``w²·(y_i − y_j)`` sampled on the grid (it is regular, so the kernel matrix is Toeplitz) and
interpolates the potentials back: O(N + G log G) for G grid nodes instead of O(N²). It is
written in plain torch for any device (exercised on CPU only so far); on a GPU the scatter of
the charges uses atomic adds, so results there vary in the last bits.
:func:`exact_repulsion` is the O(N²) reference (tests, small data).
"""

from __future__ import annotations

import math
import warnings

import torch

#: rows of the exact pairwise matrices held at once (memory ~ chunk × N × 8 bytes × 3)
EXACT_CHUNK = 1024


def exact_repulsion(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Z, F)`` by summing over every pair (O(N²) time, O(chunk·N) memory)."""
    Z = torch.zeros((), dtype=Y.dtype, device=Y.device)
    forces = []
    for rows in torch.split(Y, EXACT_CHUNK):
        diff = rows[:, None, :] - Y[None, :, :]
        w = 1.0 / (1.0 + (diff * diff).sum(-1))
        Z = Z + w.sum()
        forces.append(((w * w)[..., None] * diff).sum(1))
    return Z - Y.shape[0], torch.cat(forces)  # minus each point's own w_ii = 1


def _smooth_size(n: int) -> int:
    """The smallest integer >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _lagrange_weights(t: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Weights ``(len(t), n_nodes)`` of the Lagrange polynomials through nodes at ``0.5, 1.5,
    ...`` (node-spacing units inside a box) evaluated at local positions ``t``."""
    diff = t[:, None] - (torch.arange(n_nodes, dtype=t.dtype, device=t.device) + 0.5)
    columns = []
    for j in range(n_nodes):
        w = torch.ones_like(t)
        for m in range(n_nodes):
            if m != j:
                w = w * diff[:, m] / (j - m)
        columns.append(w)
    return torch.stack(columns, 1)


def _interpolation_matrix(nodes: torch.Tensor, weights: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """The sparse ``(N, n_nodes)`` matrix of each point's interpolation weights: a CSR product
    gathers the potentials ~10× faster than indexing (70 000 points: 3 ms against 50 ms)."""
    n, per_point = nodes.shape
    rows = torch.arange(0, n * per_point + 1, per_point, device=nodes.device)
    with warnings.catch_warnings():  # torch calls its CSR support "beta" once per process
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, nodes.reshape(-1), weights.reshape(-1),
                                       size=(n, n_nodes), check_invariants=False)


class GridRepulsion:
    """Interpolated all-pairs repulsion of a 2-D embedding (FIt-SNE's scheme).

    Parameters
    ----------
    n_nodes : int, default=3
        Interpolation nodes per box and axis.
    min_boxes : int, default=50
        Boxes per axis at least.
    box_width : float, default=1.0
        Boxes per axis grow so that none is wider than this (the kernel's scale is 1).

    Notes
    -----
    A call costs O(N·n_nodes²) for spreading and gathering plus an FFT of
    ``(2·n_nodes·boxes)²`` values, in the input's dtype (float32 loses nothing next to the
    interpolation error).
    """

    def __init__(self, n_nodes: int = 3, min_boxes: int = 50, box_width: float = 1.0) -> None:
        if n_nodes < 1 or min_boxes < 1 or not box_width > 0:
            raise ValueError(f"n_nodes={n_nodes}, min_boxes={min_boxes} and box_width={box_width} "
                             "must be positive")
        self.n_nodes, self.min_boxes, self.box_width = n_nodes, min_boxes, box_width
        self._cache_key: tuple | None = None
        self._cache = torch.empty(0)

    def __call__(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Z, F)`` for the embedding ``Y`` of shape ``(N, 2)``."""
        if Y.ndim != 2 or Y.shape[1] != 2:
            raise ValueError(f"GridRepulsion needs a 2-D embedding of shape (N, 2), got {tuple(Y.shape)}")
        y = Y.detach()
        lo, hi = float(y.min()), float(y.max())
        span = max(hi - lo, 1e-6) * (1 + 1e-9)  # the largest point lands inside the last box
        wide = math.ceil(span / self.box_width) >= self.min_boxes
        n_boxes = _smooth_size(max(self.min_boxes, math.ceil(span / self.box_width)))
        # boxes of exactly box_width once the map is wide enough: the grid's geometry then
        # changes only with its size, so the kernels' FFTs are reused across steps
        width = self.box_width if wide else span / n_boxes
        spacing = width / self.n_nodes
        nodes, weights = self._stencil((y - lo) / spacing, n_boxes)
        grid = self._spread(nodes, weights, n_boxes)
        Z, potentials = self._convolve(grid, self._kernels(grid.shape[-1], spacing, y))
        force = _interpolation_matrix(nodes, weights, grid.numel()) @ potentials  # at the points
        return Z - y.shape[0], force

    def _stencil(self, u: torch.Tensor, n_boxes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat grid indices ``(N, p²)`` of each point's box nodes and their weights."""
        p = self.n_nodes
        box = torch.clamp(torch.floor(u / p), 0, n_boxes - 1)
        wx, wy = (_lagrange_weights(u[:, d] - box[:, d] * p, p) for d in (0, 1))
        first = (box * p).long()
        offsets = torch.arange(p, device=u.device)
        ix, iy = first[:, :1] + offsets, first[:, 1:] + offsets  # (N, p) node columns per axis
        side = n_boxes * p
        nodes = (ix[:, :, None] * side + iy[:, None, :]).reshape(len(u), p * p)
        weights = (wx[:, :, None] * wy[:, None, :]).reshape(len(u), p * p)
        return nodes, weights

    def _spread(self, nodes: torch.Tensor, weights: torch.Tensor, n_boxes: int) -> torch.Tensor:
        """Every point's unit charge spread onto the grid, shape ``(side, side)``."""
        side = n_boxes * self.n_nodes
        grid = weights.new_zeros(side * side)
        grid.index_add_(0, nodes.reshape(-1), weights.reshape(-1))
        return grid.reshape(side, side)

    def _kernels(self, side: int, spacing: float, like: torch.Tensor) -> torch.Tensor:
        """The FFTs ``(3, 2·side, side + 1)`` of ``w`` and of ``w²·d`` (both components of the
        offset ``d``) on the grid padded to twice its side (a circular convolution there is the
        plain one on the grid); the last ones again if the geometry has not changed."""
        key = (side, spacing, like.dtype, like.device)
        if self._cache_key != key:
            steps = torch.arange(2 * side, dtype=like.dtype, device=like.device)
            steps = torch.where(steps < side, steps, steps - 2 * side) * spacing
            dx, dy = steps[:, None].expand(-1, 2 * side), steps[None, :].expand(2 * side, -1)
            w = 1.0 / (1.0 + dx * dx + dy * dy)
            self._cache_key, self._cache = key, torch.fft.rfft2(torch.stack([w, w * w * dx, w * w * dy]))
        return self._cache

    @staticmethod
    def _convolve(grid: torch.Tensor, kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``Σ_a grid·(w ⊛ grid)`` (``Z`` plus the self terms) and the force potentials
        ``(side², 2)`` at the nodes. The force is convolved directly rather than as
        ``y·Σw² − Σw²·y``, whose two large terms cancel far from the origin; ``Z`` needs no
        inverse FFT, by Parseval (the half spectrum's inner columns count twice)."""
        side = grid.shape[-1]
        spectrum = torch.fft.rfft2(grid, s=(2 * side, 2 * side))
        power = spectrum.real**2 + spectrum.imag**2
        power[:, 1:side] *= 2
        Z = (power * kernels[0].real).sum() / (2 * side) ** 2
        potentials = torch.fft.irfft2(spectrum * kernels[1:], s=(2 * side, 2 * side))[:, :side, :side]
        return Z, potentials.reshape(2, -1).T
