"""Similarity kernels in log space: ``log q(x, y)`` for matched rows and for all pairs.

Losses take a kernel object instead of branching on strings, so a new kernel needs no change
to any loss.
"""

from __future__ import annotations

import torch


def _sq_dist_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum(-1)


def _sq_dist_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


class CauchyKernel:
    r"""Heavy-tailed kernel ``q = (eps + d²/ν)^{-(ν+1)/2}`` (Student-t with ``dof`` ν).

    ``dof=1, eps=1`` is the Cauchy kernel ``1/(1 + d²)`` of t-SNE, CNE and t-SimCNE;
    ``eps → 0`` gives CNE's UMAP-like ``1/d²``. ``scale`` multiplies distances first
    (t-SimCNE's temperature ``t``: ``1/(1 + (t·d)²)``). ``power`` (``dof=1`` only) raises the
    scaled squared distance: ``1/(eps + (scale·d)^{2·power})``, umap-learn's ``1/(1 + a·d^{2b})``
    with ``power = b`` and ``scale = a^{1/(2b)}`` (:meth:`umap`).
    """

    name = "cauchy"
    bounded_by_one = True

    def __init__(self, dof: float = 1.0, eps: float = 1.0, scale: float = 1.0, power: float = 1.0) -> None:
        self.dof, self.eps, self.scale, self.power = float(dof), float(eps), float(scale), float(power)
        if self.power != 1.0 and (self.dof != 1.0 or self.power <= 0.5):
            raise ValueError(f"power={power} needs dof=1 and power > 0.5 (a finite gradient at d = 0)")
        self.bounded_by_one = self.eps >= 1.0

    @classmethod
    def umap(cls, a: float, b: float, eps: float = 1.0) -> CauchyKernel:
        """umap-learn's ``1/(eps + a·d^{2b})``."""
        return cls(eps=eps, scale=a ** (0.5 / b), power=b)

    def _from_sq(self, sq: torch.Tensor) -> torch.Tensor:
        sq = sq * self.scale**2
        if self.power != 1.0:  # the clamp keeps d^{2b}'s gradient finite (zero) at d = 0
            return -torch.log(self.eps + sq.clamp_min(1e-30) ** self.power)
        if self.dof == 1.0:
            return -torch.log(self.eps + sq)
        return -0.5 * (self.dof + 1) * torch.log(self.eps + sq / self.dof)

    def log_sim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``log q(a_i, b_i)`` for matched rows; any leading batch shape broadcasts."""
        return self._from_sq(_sq_dist_rows(a, b))

    def log_sim_matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``log q(a_i, b_j)`` for all pairs, shape ``(len(a), len(b))``, O(n·m) memory."""
        return self._from_sq(_sq_dist_matrix(a, b))


class GaussianKernel:
    """``q = exp(-(t·d)²)`` (t-SimCNE's ``metric="gauss"``)."""

    name = "gauss"
    bounded_by_one = True

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def log_sim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -_sq_dist_rows(a, b) * self.scale**2

    def log_sim_matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -_sq_dist_matrix(a, b) * self.scale**2


class CosineKernel:
    """``q = exp(cos(x, y)/τ)`` with temperature τ (SimCLR; CNE clamps τ ≥ 0.02)."""

    name = "cosine"
    bounded_by_one = False

    def __init__(self, temperature: float = 0.5) -> None:
        if temperature < 0.02:
            raise ValueError(f"temperature must be >= 0.02, got {temperature}")
        self.temperature = float(temperature)

    def log_sim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8) / self.temperature

    def log_sim_matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        an = torch.nn.functional.normalize(a, dim=1, eps=1e-8)
        bn = torch.nn.functional.normalize(b, dim=1, eps=1e-8)
        return an @ bn.T / self.temperature


Kernel = CauchyKernel | GaussianKernel | CosineKernel


def make_kernel(metric: str | None, temperature: float = 0.5) -> Kernel:
    """``"euclidean"``/``"cauchy"``/None → Cauchy, ``"cosine"`` → cosine, ``"gauss"``."""
    if metric in (None, "euclidean", "cauchy"):
        return CauchyKernel()
    if metric == "cosine":
        return CosineKernel(temperature)
    if metric in ("gauss", "gaussian"):
        return GaussianKernel()
    raise ValueError(f"metric={metric!r}: choose 'euclidean' (Cauchy kernel), 'cosine' or 'gauss'")
