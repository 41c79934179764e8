r"""Fused loss and gradient of :class:`~twinlearn.losses.ContrastiveLoss` for an embedding table
with the Cauchy kernel, compiled with numba (the CPU fast path of non-parametric CNE).

Plain torch ops on the small gathered tensors of a neighbour-embedding batch are overhead-bound
on a CPU (~0.7 s per epoch on MNIST-70k, see the performance notes); one compiled pass over the
batch computes the same loss and the same gradient of the table in a few milliseconds.
The negatives are drawn by :func:`~twinlearn.losses.sample_negatives` with the loss's own
generator, exactly as the torch path does, so both paths give the same result from the same
seed (up to float rounding); the trainer, schedule and checkpoints are unchanged.

The gradient reaches autograd as the dense table gradient, or, with
:class:`~twinlearn.training.row_sgd.FusedTableSGD` (the optimizer of plain SGD on such a
table), waits in the objective and that optimizer applies it, clipped, to the batch's rows
alone: the same step, at the batch's cost instead of three passes over the whole table per
step.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn

from twinlearn.kernels import CauchyKernel
from twinlearn.losses.contrastive import ContrastiveLoss

_MODE_CODE = {"infonce": 0, "neg": 1, "nce": 2, "umap": 3}
_UMAP_FLOOR = 1e-4  # the same clamp of 1 - q as ContrastiveLoss._umap

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a declared dependency
    HAVE_NUMBA = False


def fused_supported(loss: ContrastiveLoss, device: torch.device) -> bool:
    """Whether :class:`FusedTableObjective` can run ``loss`` on ``device``."""
    kernel = loss.kernel
    return (
        HAVE_NUMBA
        and device.type == "cpu"
        and isinstance(kernel, CauchyKernel)
        and kernel.dof == 1.0
        and isinstance(loss.negative_samples, int)
        and not loss.symmetric
    )


def _sq_dist(W, a, b):  # pragma: no cover - compiled
    sq = 0.0
    for k in range(W.shape[1]):
        diff = W[a, k] - W[b, k]
        sq += diff * diff
    return sq


def _infonce_terms(Dp, D, wgt, spec):  # pragma: no cover - compiled
    """ℓ = log(q⁺ + Σ q⁻)/ρ − log q⁺; writes each negative's ∂ℓ/∂d² (over c) into ``wgt``,
    returns ``(ℓ, ∂ℓ/∂d²⁺)``."""
    qp = 1.0 / Dp
    denom = qp
    for j in range(D.shape[0]):
        wgt[j] = 1.0 / D[j]
        denom += wgt[j]
    inv = 1.0 / (denom * spec)
    for j in range(D.shape[0]):
        wgt[j] = -wgt[j] * wgt[j] * inv
    return math.log(denom) / spec + math.log(Dp), qp * (1.0 - qp * inv)


def _neg_terms(Dp, D, wgt, xi):  # pragma: no cover - compiled
    """h = q/(q + ξ) = 1/(1 + ξD); ℓ = log(1 + ξD⁺) + Σ log((1 + ξD⁻)/(ξD⁻)), factors ≥ 1
    folded before overflow; returns ``(ℓ, ∂ℓ/∂d²⁺, ∂ℓ/∂log ξ)``."""
    inv_xi = 1.0 / xi
    hp = 1.0 / (1.0 + xi * Dp)
    prod = 1.0 + xi * Dp
    dlog_xi = xi * Dp * hp
    total = 0.0
    for j in range(D.shape[0]):
        one_plus = 1.0 + xi * D[j]
        r_j = 1.0 / (D[j] * one_plus)  # = q·h
        wgt[j] = -r_j
        dlog_xi -= D[j] * r_j
        prod *= one_plus * one_plus * r_j * inv_xi
        if prod > 1e200:
            total += math.log(prod)
            prod = 1.0
    return total + math.log(prod), xi * hp, dlog_xi


def _umap_terms(Dp, D, wgt):  # pragma: no cover - compiled
    """ℓ = −log q⁺ − Σ log(1 − q⁻), ``1 − q`` floored at ``_UMAP_FLOOR``."""
    qp = 1.0 / Dp
    prod = qp
    total = 0.0
    for j in range(D.shape[0]):
        q = 1.0 / D[j]
        one_minus = 1.0 - q
        if one_minus > _UMAP_FLOOR:
            prod *= one_minus
            wgt[j] = -q * q / one_minus
        else:
            prod *= _UMAP_FLOOR
            wgt[j] = 0.0
        if prod < 1e-200:
            total -= math.log(prod)
            prod = 1.0
    return total - math.log(prod), qp


def _push(W, grad, a, b, w):  # pragma: no cover - compiled
    """∂ℓ/∂a = w·(a − b), and the opposite for ``b``."""
    for k in range(W.shape[1]):
        diff = W[a, k] - W[b, k]
        grad[a, k] += w * diff
        grad[b, k] -= w * diff


def _denominator(sq, eps, c, power):  # pragma: no cover - compiled
    """``D = eps + (c·d²)^power = 1/q`` and ``∂D/∂d²`` (0 at d = 0 for a power below 1, where
    the product with the zero difference vanishes)."""
    if power == 1.0:
        return eps + c * sq, c
    if sq <= 0.0:
        return eps, 0.0
    # in float32: ~10 ns against ~45 for float64's pow, which took ~1/3 of an MNIST-70k fit
    t = math.exp(np.float32(power) * math.log(np.float32(c * sq)))
    return eps + t, power * t / sq


def _anchor_range(W, slot, draws, mode, spec, log_xi, eps, c, power, factor, grad, start, stop):  # pragma: no cover
    """Sum over anchors ``start..stop-1`` of the per-anchor loss; adds ``factor · ∂loss/∂W``
    into ``grad`` and returns ``(loss, ∂loss/∂log ξ)`` (the latter for NCE's learned ``log Z``).

    ``W`` holds the batch's distinct rows and ``slot`` maps each of the batch's ``2B`` points
    (anchors, then positives) to its row of ``W``: anchor ``i`` is point ``i``, its positive
    point ``i + B``, so the raw ``randint(2B − 2)`` draws of :func:`sample_negatives` become
    points once the anchor and its positive are skipped. Everything is written with
    ``D = eps + (c·d²)^power = 1/q`` with one division per candidate, and each anchor's loss
    terms are multiplied before one log.
    """
    B, m = draws.shape
    rows = np.empty(m, np.int64)
    D = np.empty(m, np.float64)
    dD = np.empty(m, np.float64)
    wgt = np.empty(m, np.float64)
    xi = math.exp(log_xi)
    total = 0.0
    dlog_xi = 0.0
    for i in range(start, stop):
        a, p = slot[i], slot[i + B]
        Dp, dDp = _denominator(_sq_dist(W, a, p), eps, c, power)
        for j in range(m):
            r = draws[i, j]
            r += r >= i
            r += r >= i + B
            rows[j] = slot[r]
            D[j], dD[j] = _denominator(_sq_dist(W, a, rows[j]), eps, c, power)
        # w_pos and wgt[j]: ∂ℓ/∂D of the positive and of each negative (times ∂D/∂d² below)
        if mode == 0:
            loss, w_pos = _infonce_terms(Dp, D, wgt, spec)
        elif mode == 1 or mode == 2:
            loss, w_pos, dlog = _neg_terms(Dp, D, wgt, xi)
            dlog_xi += dlog
        else:
            loss, w_pos = _umap_terms(Dp, D, wgt)
        total += loss
        _push(W, grad, a, p, 2.0 * dDp * w_pos * factor)
        for j in range(m):
            _push(W, grad, a, rows[j], 2.0 * dD[j] * wgt[j] * factor)
    return total, dlog_xi


def _distinct_rows(W, heads, tails, local, slot):  # pragma: no cover - compiled
    """The batch's distinct table rows, ascending: copies each into ``local``, writes each
    point's (``heads`` then ``tails``) row of ``local`` into ``slot``, and returns their table
    indices. Found by an LSD radix sort of ``row · 2^b + point`` on the row's bits: two
    passes over the batch in cache, and the table is then read (and later stepped) in
    ascending order, a stream instead of random accesses (at 10⁶ rows: 2.8 ms a batch
    against 4.2 for a sparse set of N entries, and the step 1.2 ms against 2.5)."""
    B = heads.shape[0]
    M = 2 * B
    point_bits = 1
    while (1 << point_bits) < M:
        point_bits += 1
    row_bits = 1
    while (1 << row_bits) < W.shape[0]:
        row_bits += 1
    passes = (row_bits + 11) // 12  # digits of at most 12 bits: the counts stay in L1
    digit = (row_bits + passes - 1) // passes
    mask = (1 << digit) - 1
    packed = np.empty(M, np.int64)
    other = np.empty(M, np.int64)
    for o in range(M):
        packed[o] = ((heads[o] if o < B else tails[o - B]) << point_bits) | o
    count = np.empty((1 << digit) + 1, np.int64)
    for p in range(passes):
        shift = point_bits + p * digit
        count[:] = 0
        for o in range(M):
            count[((packed[o] >> shift) & mask) + 1] += 1
        for d in range(1 << digit):
            count[d + 1] += count[d]
        for o in range(M):
            d = (packed[o] >> shift) & mask
            other[count[d]] = packed[o]
            count[d] += 1
        packed, other = other, packed
    found = other  # reused: the distinct rows
    n = 0
    for j in range(M):
        r = packed[j] >> point_bits
        if n == 0 or found[n - 1] != r:
            found[n] = r
            for k in range(W.shape[1]):
                local[n, k] = W[r, k]
            n += 1
        slot[packed[j] & ((1 << point_bits) - 1)] = n - 1
    return found[:n].copy()


if HAVE_NUMBA:
    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    _sq_dist, _denominator, _infonce_terms, _neg_terms, _umap_terms, _push = (
        _jit(f) for f in (_sq_dist, _denominator, _infonce_terms, _neg_terms, _umap_terms, _push))
    _anchor_range, _distinct_rows = _jit(_anchor_range), _jit(_distinct_rows)


#: a batch is cut into chunks of at least this many anchors, and at most ``MAX_CHUNKS`` of them:
#: the cut depends on the batch alone, so results are the same for any number of threads (at
#: most 4 of which work; each chunk more costs a gradient buffer of the batch's rows to clear
#: and add, ~0.25 ms per step at 32 768 anchors on 2 cores, benchmarks/cne_step_scaling.py)
CHUNK_ANCHORS, MAX_CHUNKS = 1024, 4


def kernel_chunks(batch_size: int) -> int:
    """How many chunks a batch of ``batch_size`` anchors is cut into (1 to ``MAX_CHUNKS``)."""
    return int(min(MAX_CHUNKS, max(1, batch_size // CHUNK_ANCHORS)))


def _kept(workspace: dict, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array kept in ``workspace`` under ``name`` and reused while its shape holds: fresh
    memory of a few MB every step cost more in page faults (1–2 ms) than the sums it holds."""
    array = workspace.get(name)
    if array is None or array.shape != shape or array.dtype != dtype:
        array = workspace[name] = np.zeros(shape, dtype=dtype)
    return array


def _loss_grad(W, heads, tails, draws, mode, spec, log_xi, eps, c, power, factor, pool, workspace):
    """:func:`_anchor_range` over all anchors, in :func:`kernel_chunks` chunks run by ``pool``
    (or one after another). Returns the loss, ``∂loss/∂log ξ``, the batch's distinct table
    rows and their gradient, one row each (a point's repeats in the batch summed).

    The kernel works on a copy of the batch's distinct rows and their gradient rather than on
    the table: its ~12 random row accesses per anchor then stay within a few hundred KB of
    cache however large the table (a step at 4·10⁵ rows took 3× one at 10⁵ when they did
    not), and only the gather and the update touch the table, ~2 rows per anchor, in
    ascending order. Distinct rows (:func:`_distinct_rows`) give each row one summed
    gradient, so a step updates it once, without a table-sized gradient to add into, clear
    and read back (with it, gather, scatter and step took ~5 of a ~16 ms step at 10⁶ rows).

    The compiled kernel releases the GIL, so plain Python threads run the chunks in parallel
    (numba's own thread pool fought torch's OpenMP threads for the cores: 8× slower). Each
    chunk accumulates its gradient in a buffer of its own, since anchors of different chunks
    share rows; buffers are summed in a fixed order. The chunks follow the batch, not the
    threads, so a run with 1 thread equals one with 2 (the UMAP loss amplifies a changed
    summation order to 0.5 % of its value within a few epochs), and with more chunks than
    threads a thread slowed by other work delays the step by less.
    """
    B, dim = draws.shape[0], W.shape[1]
    local = _kept(workspace, "local", (2 * B, dim), W.dtype)
    slot = _kept(workspace, "slot", (2 * B,), np.int64)
    rows = _distinct_rows(W, heads, tails, local, slot)
    n = rows.shape[0]
    n_chunks = kernel_chunks(B)
    buffers = _kept(workspace, "grads", (n_chunks, 2 * B, dim), W.dtype)[:, :n]
    buffers.fill(0)
    args = (local[:n], slot, draws, mode, spec, log_xi, eps, c, power, factor)
    bounds = [(t * B // n_chunks, (t + 1) * B // n_chunks) for t in range(n_chunks)]

    def run(t: int) -> tuple[float, float]:
        return _anchor_range(*args, buffers[t], *bounds[t])

    results = list(map(run, range(n_chunks)) if pool is None else pool.map(run, range(n_chunks)))
    for t in range(1, n_chunks):  # in place, in a fixed order
        buffers[0] += buffers[t]
    # a copy: the next batch reuses the buffers, and may come before this backward
    return sum(r[0] for r in results), sum(r[1] for r in results), rows, buffers[0].copy()


class _FusedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, log_z, heads, tails, neg, mode, spec, log_xi, eps, c, power, factor, objective):
        total, dlog_xi, ctx.rows, ctx.row_grads = _loss_grad(
            weight.detach().numpy(), heads.numpy(), tails.numpy(), neg.numpy(),
            _MODE_CODE[mode], spec, log_xi, eps, c, power, factor, objective._pool, objective._workspace,
        )
        ctx.objective = objective
        ctx.dlog_xi = dlog_xi * factor
        return weight.new_tensor(total * factor)

    @staticmethod
    def backward(ctx, g):
        g_log_z = g * ctx.dlog_xi if ctx.needs_input_grad[1] else None
        # the trainer backpropagates 1.0: skip a pass over the rows then
        row_grads = ctx.row_grads if float(g) == 1.0 else ctx.row_grads * float(g)
        table_grad = ctx.objective._table_gradient(ctx.rows, row_grads)
        return table_grad, g_log_z, *([None] * 11)


class FusedTableObjective(nn.Module):
    """Drop-in replacement of ``TwinObjective(EmbeddingTable, Identity, loss, IndexRows)`` on
    CPU: same parameters (``encoder.weight``, ``loss.log_Z``), same state-dict keys, same loss
    values and gradients (unless :class:`~twinlearn.training.row_sgd.FusedTableSGD` takes the
    table's gradient: then it stays here for that optimizer's row step), same consumption of
    the loss generator.

    Parameters
    ----------
    encoder : EmbeddingTable
    loss : ContrastiveLoss
        Must satisfy :func:`fused_supported`; its ``neg_spec``/``ince_spec`` are read at every
        step, so changing them (early exaggeration) takes effect at once.
    n_threads : int, optional
        Threads of the kernel (default: ``torch.get_num_threads()`` now). Results do not
        depend on it: the batch's chunks do not (:func:`kernel_chunks`).
    """

    def __init__(self, encoder: nn.Module, loss: ContrastiveLoss, n_threads: int | None = None) -> None:
        super().__init__()
        if not fused_supported(loss, encoder.weight.device):
            raise ValueError("the fused kernel needs numba, a CPU table, the Cauchy kernel (dof 1) "
                             "and a number of sampled negatives")
        self.encoder = encoder
        self.loss = loss
        self.n_threads = n_threads or torch.get_num_threads()
        self._pool = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        self._workspace: dict = {}
        #: set by :class:`~twinlearn.training.row_sgd.FusedTableSGD`: gradients stay here
        #: (rows pending) for its step
        self.row_updates = False
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def _table_gradient(self, rows: np.ndarray, row_grads: np.ndarray) -> torch.Tensor | None:
        """The table's gradient from the batch's distinct rows' gradient: dense (the autograd
        contract), or, with :attr:`row_updates`, kept as it is for :meth:`take_pending`
        (``None`` to autograd: a fresh N × d gradient, its clipping and the dense SGD step each
        passed over the whole table, ~1 ms each per step at 10⁶ rows)."""
        if not self.row_updates:
            grad = torch.zeros_like(self.encoder.weight)
            grad.numpy()[rows] = row_grads  # distinct rows: an assignment
            return grad
        self._pending.append((rows, row_grads))
        return None

    def take_pending(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The ``(distinct rows, their gradient)`` of each backward pass since the last call,
        oldest first, handed over to be stepped (see
        :class:`~twinlearn.training.row_sgd.FusedTableSGD`)."""
        pending, self._pending = self._pending, []
        return pending

    def drop_pending(self) -> None:
        """Forget the gradients no step has used."""
        self._pending.clear()

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        heads, tails = batch
        loss = self.loss
        B = heads.shape[0]
        # the same draws as sample_negatives (same generator consumption); mapped in the kernel
        draws = torch.randint(2 * B - 2, (B, loss.negative_samples), generator=loss.generator)
        factor = loss.loss_scale / (B if loss.reduction == "mean" else 1)
        if loss.mode == "nce":
            log_z = loss.log_Z
            log_xi = float(log_z.detach()) + math.log(loss.negative_samples)
        else:
            log_z = heads.new_zeros((), dtype=torch.float32)
            log_xi = math.log(loss.neg_spec) if loss.mode == "neg" else 0.0
        spec = loss.ince_spec if loss.mode == "infonce" else loss.neg_spec
        kernel = loss.kernel
        return _FusedLoss.apply(
            self.encoder.weight, log_z, heads, tails, draws, loss.mode, spec, log_xi,
            kernel.eps, kernel.scale**2, kernel.power, factor, self,
        )
