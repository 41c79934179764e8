r"""The t-SNE end of CNE with every point as a negative: ``CNE(negative_samples="all")``.

InfoNCE with ``m`` negatives tends to t-SNE as ``m`` grows (Damrich et al., 2023); here ``m`` is
all ``n - 1`` other points, so the loss *is* t-SNE's KL divergence between the normalised kNN
affinities ``p_ij`` (the CNE graph's edge weights over their sum) and
``q_ij = w_ij / Z``. Its gradient, per point,

.. math:: g_i = \rho \sum_j p_{ij} w_{ij} (y_i - y_j) - \frac{1}{Z} \sum_j w_{ij}^2 (y_i - y_j),

sums the attraction over the graph's edges and the repulsion over all pairs, the latter by an
injected strategy (:class:`~twinlearn.losses.interpolated_repulsion.GridRepulsion`, FIt-SNE's
interpolation, by default). Every epoch is one full-gradient step, optimised as openTSNE does:
gradient descent with momentum 0.8 and per-coordinate gains, steps clipped to norm 5, the map
re-centred after each step, the LR ``learning_rate · n / ρ`` (openTSNE's ``"auto"`` for
``learning_rate=1``), the initial coordinates scaled so the first has std 1e-4, and early
exaggeration ``ρ = max(12, ρ_main)`` for the first third of the epochs (t-SNE's 250 of 750).

The spectrum is the exaggeration: ``ρ = ince_spec = 4^s`` after the early phase, so ``s = 0`` is
t-SNE and ``s = 1`` (``ρ = 4``) is UMAP-like (Böhm, Kobak et al., "Attraction-repulsion
spectrum in neighbor embeddings", JMLR 2022).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from twinlearn.encoders.table import EmbeddingTable
from twinlearn.losses.interpolated_repulsion import GridRepulsion
from twinlearn.losses.spectrum import Spectrum
from twinlearn.training.callbacks import SpectrumPhases
from twinlearn.training.trainer import Trainer

#: t-SNE's early exaggeration, and the std of the first initial coordinate (openTSNE's)
EARLY_EXAGGERATION = 12.0
INIT_STD = 1e-4
#: negatives per new point when ``transform`` places it against a frozen "all" map (the
#: attraction to its neighbours decides where it lands; the few negatives keep it off them)
PLACEMENT_NEGATIVES = 5

Repulsion = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def check_full_repulsion(params: dict[str, Any], n_components: int) -> None:
    """Raise ValueError if ``negative_samples="all"`` meets settings it does not support."""
    if params.get("negative_samples") != "all":
        return
    unsupported = {
        "parametric=True": params.get("parametric"),
        f"n_components={n_components} (only 2)": n_components != 2,
        f"loss_mode={params.get('loss_mode')!r} (only 'infonce')": params.get("loss_mode") != "infonce",
        f"metric={params.get('metric')!r} (only 'euclidean')": params.get("metric") != "euclidean",
        "nesting_dims": params.get("nesting_dims") is not None,
        "optimizer='adam'": params.get("optimizer") == "adam",
        "a, b (the Cauchy kernel only)": params.get("a") not in (None, 1) or params.get("b") not in (None, 1),
    }
    bad = [name for name, present in unsupported.items() if present]
    if bad:
        raise ValueError(f"negative_samples='all' (t-SNE's repulsion from every point, by grid "
                         f"interpolation) does not support {', '.join(bad)}")


def placement_negatives(negative_samples: int | str) -> int | str:
    """The negatives that place new points: as in training, but a few for ``"all"``."""
    return PLACEMENT_NEGATIVES if negative_samples == "all" else negative_samples


class WholeGraph:
    """A pair source of one batch per epoch: every edge of the graph, in a fixed order."""

    def __init__(self, edges: torch.Tensor, generator: torch.Generator) -> None:
        self.edges = edges.long()
        self.generator = generator  # unused, checkpointed like every source's

    def __len__(self) -> int:
        return 1

    def epoch(self) -> Iterator[torch.Tensor]:
        yield self.edges


class _GivenGradient(torch.autograd.Function):
    """Returns ``loss`` with ``gradient`` as its derivative with respect to ``weight``."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, loss: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gradient)
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (gradient,) = ctx.saved_tensors
        return grad_output * gradient, None, None


class TSNEObjective(nn.Module):
    """t-SNE's KL divergence of a 2-D table, with its gradient computed in closed form.

    Parameters
    ----------
    model : EmbeddingTable
    affinities : Tensor of shape (n_edges,)
        ``p_ij`` of the edges the batch lists (any positive weights; normalised to sum 1).
    repulsion : callable
        ``repulsion(Y) -> (Z, F)``, see :mod:`twinlearn.losses.interpolated_repulsion`.
    exaggeration : float
        ``ρ``, the attraction's factor (set per phase by :class:`SpectrumPhases`).
    """

    def __init__(self, model: EmbeddingTable, affinities: torch.Tensor, repulsion: Repulsion,
                 exaggeration: float = 1.0) -> None:
        super().__init__()
        self.encoder = model
        affinities = affinities.to(model.weight)
        self.register_buffer("p", affinities / affinities.sum())
        self.entropy = float((self.p * torch.log(self.p)).sum())  # Σ p log p, constant
        self.repulsion = repulsion
        self.exaggeration = exaggeration

    def forward(self, edges: torch.Tensor) -> torch.Tensor:
        """The (un-exaggerated) KL divergence; its backward gives the exaggerated gradient."""
        weight = self.encoder.weight
        with torch.no_grad():
            Y = weight.detach()
            heads, tails = edges[:, 0], edges[:, 1]
            diff = Y.index_select(0, heads) - Y.index_select(0, tails)
            w = 1.0 / (1.0 + (diff * diff).sum(1))
            attraction = torch.zeros_like(Y).index_add_(0, heads, (self.p * w)[:, None] * diff)
            Z, force = self.repulsion(Y)
            gradient = self.exaggeration * attraction - force / Z
            kl = self.entropy - (self.p * torch.log(w)).sum() + torch.log(Z)
        return _GivenGradient.apply(weight, kl, gradient)


class TSNEDescent(torch.optim.Optimizer):
    """t-SNE's gradient descent (openTSNE's): momentum, per-coordinate gains that grow by 0.2
    while the gradient keeps its sign against the last step and shrink by 0.8 when it flips,
    steps clipped to ``max_step_norm`` per point, and the embedding re-centred after each step."""

    def __init__(self, params: Any, lr: float, momentum: float = 0.8, min_gain: float = 0.01,
                 max_step_norm: float = 5.0) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, min_gain=min_gain,
                                      max_step_norm=max_step_norm))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["update"], state["gains"] = torch.zeros_like(p), torch.ones_like(p)
                update, gains = state["update"], state["gains"]
                flipped = torch.sign(update) != torch.sign(p.grad)
                gains.copy_(torch.where(flipped, gains + 0.2, gains * 0.8 + group["min_gain"]))
                update.mul_(group["momentum"]).sub_(group["lr"] * gains * p.grad)
                norms = update.norm(dim=1, keepdim=True)
                update.mul_(torch.clamp(group["max_step_norm"] / norms.clamp_min(1e-12), max=1.0))
                p.add_(update)
                p.sub_(p.mean(0))


@dataclass
class FullRepulsionRun:
    """The parts of a ``negative_samples="all"`` run (the interface of ``ContrastiveRun``)."""

    trainer: Trainer
    objective: TSNEObjective
    spectrum: Spectrum

    def learned_log_z(self) -> None:
        return None


def tsne_run(recipe: Any, model: nn.Module, source: Any, *, n: int | None, store: object = None,
             callbacks: Sequence[Any] = (), repulsion: Repulsion | None = None,
             **trainer_options: Any) -> FullRepulsionRun:
    """A trainer for t-SNE's full-gradient descent on the edges of ``source`` (an
    :class:`~twinlearn.pairs.EdgePairSource`); the signature of ``contrastive_run``.

    ``recipe.learning_rate`` multiplies openTSNE's automatic LR ``n / ρ``; its momentum,
    optimizer, LR annealing, batch size and gradient clipping do not apply.
    """
    if not isinstance(model, EmbeddingTable) or store is not None:
        raise ValueError("negative_samples='all' needs a non-parametric embedding table")
    spectrum = recipe.spectrum(n, None)
    with torch.no_grad():  # openTSNE's scale: first coordinate with std 1e-4
        model.weight.mul_(INIT_STD / model.weight[:, 0].std().clamp_min(1e-12))
    weights = source.keep_prob if source.keep_prob is not None else torch.ones(source.n_edges)
    objective = TSNEObjective(model, weights, repulsion or GridRepulsion())
    main = spectrum.spec
    early = max(EARLY_EXAGGERATION, main) if recipe.early_exaggeration else main
    n_early = recipe.n_epochs // 3 if recipe.early_exaggeration else 0
    phases = SpectrumPhases(objective, "exaggeration", early, main, n_early)
    optimizer = TSNEDescent(model.parameters(), lr=recipe.learning_rate * model.weight.shape[0])
    trainer = Trainer(
        objective, WholeGraph(source.edges, source.generator), optimizer,
        lambda step: 1.0 / (early if step < n_early else main), recipe.n_epochs,
        callbacks=[phases, *callbacks],
        # one torch thread on a CPU: the steps are a few FFTs of ~10⁶ values and gathers over the
        # edges, which intra-op threads slow down (MNIST 10 000 on 2 shared cores: 87 ms per
        # step with one thread, 723 ms with two)
        num_threads=1 if model.weight.device.type == "cpu" else None, **trainer_options,
    )
    return FullRepulsionRun(trainer, objective, spectrum)
