r"""The attraction–repulsion spectrum of contrastive neighbor embeddings (Damrich et al., 2023).

One parameter ``s`` moves an embedding from t-SNE-like (``s = 0``: more repulsion, finer local
structure) to UMAP-like (``s = 1``: more attraction, more global structure); ``s > 1`` goes
further (Laplacian-eigenmap-like), ``s < 0`` beyond t-SNE.

* InfoNCE: ``ince_spec = ρ = 4^s`` (ρ = 1 at s = 0, ρ = 4 at s = 1).
* NEG: a fixed normalisation ``Z̄`` interpolated log-linearly between ``Z_tsne = 100·n`` and
  ``Z_umap = n²/m``: ``Z̄ = Z_tsne·(Z_umap/Z_tsne)^s``; the loss uses ``ξ = neg_spec = m·Z̄/n²``.

Convention chosen: ``Z_umap = n²/m`` (the paper's and README's statement), so ``s = 1`` gives
``ξ = 1`` for *every* number of negatives ``m`` and the NEG default ``ξ = 1`` is exactly
``s = 1``. (The original code used ``n²/5`` whatever ``m`` was, so ``s = 1`` meant ``ξ = m/5``.)

Early exaggeration runs the first epochs at ``s_early = max(s, 1)``. When the user gives
``Z_bar``, ``neg_spec`` or ``ince_spec`` instead of ``s``, the equivalent ``s`` is recovered
by inverting the maps above, so exaggeration applies whenever it is on (the original silently
skipped it unless ``s`` itself was given). For ``s ≥ 1`` the exaggerated constant equals the
normal one: the run already is at least as attractive as the exaggeration phase.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

#: ``s`` of the t-SNE and UMAP ends of the spectrum.
S_TSNE, S_UMAP = 0.0, 1.0


def _z_ends(n: int, m: int) -> tuple[float, float]:
    return 100.0 * n, n * n / m


def z_bar_from_s(s: float, n: int, m: int) -> float:
    """NEG's fixed normaliser ``Z̄ = 100n·(n/(100m))^s`` for ``n`` points and ``m`` negatives."""
    z_tsne, z_umap = _z_ends(n, m)
    return z_tsne * (z_umap / z_tsne) ** s


def neg_spec_from_z_bar(z_bar: float, n: int, m: int) -> float:
    """``ξ = m·Z̄/n²``."""
    return m * z_bar / (n * n)


def neg_spec_from_s(s: float, n: int, m: int) -> float:
    """NEG constant ξ for spectrum position ``s`` (``s = 1`` → 1, ``s = 0`` → ``100m/n``)."""
    return neg_spec_from_z_bar(z_bar_from_s(s, n, m), n, m)


def s_from_neg_spec(neg_spec: float, n: int, m: int) -> float:
    """Inverse of :func:`neg_spec_from_s`."""
    z_tsne, z_umap = _z_ends(n, m)
    if z_umap == z_tsne:  # n == 100·m: both ends coincide, every ξ is "UMAP-like"
        return S_UMAP
    z_bar = neg_spec * n * n / m
    return math.log(z_bar / z_tsne) / math.log(z_umap / z_tsne)


def ince_spec_from_s(s: float) -> float:
    """InfoNCE constant ``ρ = 4^s``."""
    return 4.0**s


def s_from_ince_spec(ince_spec: float) -> float:
    """Inverse of :func:`ince_spec_from_s`."""
    return math.log(ince_spec, 4.0)


@dataclass(frozen=True)
class Spectrum:
    """Resolved spectrum of one run.

    Attributes
    ----------
    s : float or None
        Spectrum position (None for losses without one: NCE, UMAP).
    spec : float
        The loss constant of the main phase (``neg_spec`` for NEG, ``ince_spec`` for InfoNCE).
    early_spec : float
        The constant of the early-exaggeration phase (``s_early = max(s, 1)``); equal to
        ``spec`` when exaggeration is off or does not apply.
    """

    s: float | None
    spec: float
    early_spec: float


def _positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return float(value)


def check_spectrum_args(
    mode: str,
    *,
    s: float | None = None,
    Z_bar: float | None = None,
    neg_spec: float | None = None,
    ince_spec: float | None = None,
) -> tuple[str, ...]:
    """Cheap checks of the spectrum arguments (before any expensive work); returns the names
    that ``mode`` accepts."""
    given = {k: v for k, v in (("s", s), ("Z_bar", Z_bar), ("neg_spec", neg_spec),
                               ("ince_spec", ince_spec)) if v is not None}
    if len(given) > 1:
        raise ValueError(f"give at most one of s, Z_bar, neg_spec, ince_spec; got {sorted(given)}")
    allowed = {"infonce": ("s", "ince_spec"), "neg": ("s", "Z_bar", "neg_spec")}.get(mode, ())
    for name, value in given.items():
        if name not in allowed:
            raise ValueError(
                f"{name} has no meaning for loss_mode={mode!r}"
                + (f" (it takes {', '.join(allowed)})" if allowed else " (it has no spectrum)")
            )
        if name == "s":
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"s must be a finite number, got {value!r}")
        else:
            _positive(value, name)
    return allowed


def resolve_spectrum(
    mode: str,
    n: int,
    m: int,
    *,
    s: float | None = None,
    Z_bar: float | None = None,
    neg_spec: float | None = None,
    ince_spec: float | None = None,
    early_exaggeration: bool = True,
) -> Spectrum:
    """Turn the user's spectrum arguments into the loss constants of both phases.

    Parameters
    ----------
    mode : {"infonce", "neg", "nce", "umap"}
    n : int
        Number of points (of the kNN graph).
    m : int
        Negatives per anchor actually used (``2B − 2`` for full-batch negatives).
    s, Z_bar, neg_spec, ince_spec : float, optional
        At most one; ``Z_bar``/``neg_spec`` only for NEG, ``ince_spec`` only for InfoNCE.
        Defaults: InfoNCE ``s = 0`` (t-SNE-like), NEG ``ξ = 1`` (``s = 1``, UMAP-like).
    early_exaggeration : bool

    Raises
    ------
    ValueError
        Several spectrum arguments at once, one that does not belong to ``mode``, or a
        non-positive constant.
    """
    allowed = check_spectrum_args(mode, s=s, Z_bar=Z_bar, neg_spec=neg_spec, ince_spec=ince_spec)
    if not allowed:
        return Spectrum(None, 0.0, 0.0)
    if s is not None:
        s = float(s)
    if mode == "infonce":
        if ince_spec is not None:
            s = s_from_ince_spec(ince_spec)
        s = S_TSNE if s is None else s
        to_spec = ince_spec_from_s
    else:
        if Z_bar is not None:
            neg_spec = neg_spec_from_z_bar(Z_bar, n, m)
        if neg_spec is not None:
            s = s_from_neg_spec(neg_spec, n, m)
        s = S_UMAP if s is None else s

        def to_spec(x: float) -> float:
            return neg_spec_from_s(x, n, m)

    # a constant the user typed is used exactly, not after a float round trip through s
    spec = float(neg_spec if neg_spec is not None else ince_spec if ince_spec is not None else to_spec(s))
    early = to_spec(max(s, S_UMAP)) if early_exaggeration and s < S_UMAP else spec
    return Spectrum(s, spec, early)
