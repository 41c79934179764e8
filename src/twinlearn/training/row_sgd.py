"""Plain SGD that updates only the rows of an embedding table that a batch touched: the
optimizer of non-parametric CNE's fused CPU path
(:class:`~twinlearn.losses.fused_table.FusedTableObjective`), as umap-learn's layout
optimisation steps only the points of its sampled edges."""

from __future__ import annotations

import numpy as np
import torch

from twinlearn.losses.fused_table import HAVE_NUMBA, FusedTableObjective


def _step_rows(W, rows, grad, lr, clip, first_free):  # pragma: no cover - compiled
    """SGD on the distinct rows ``rows`` only: ``W[rows[j]] -= lr · clip(grad[j])``, except
    rows below ``first_free`` (frozen). The table's other rows have a zero gradient, so this is
    the dense step (clipped as ``clip_grad_value_``) at the cost of the batch, not of the
    table. Rounded once, as torch's fused multiply-add ``p.add_(g, alpha=-lr)`` is (the
    float32 product is exact in float64): the UMAP loss turns a last-bit difference per step
    into points swapping places within a cluster."""
    step = -np.float64(lr)
    for j in range(rows.shape[0]):
        r = rows[j]
        if r >= first_free:
            for k in range(W.shape[1]):
                g = min(max(grad[j, k], -clip), clip)
                W[r, k] = np.float32(np.float64(W[r, k]) + step * np.float64(g))


if HAVE_NUMBA:
    import numba

    _step_rows = numba.njit(cache=True, nogil=True, error_model="numpy")(_step_rows)


class FusedTableSGD(torch.optim.SGD):
    """Plain SGD (no momentum, no weight decay) for the table of a
    :class:`~twinlearn.losses.fused_table.FusedTableObjective` that updates only the rows of
    the batch, as umap-learn's layout optimisation does: the same step
    as ``torch.optim.SGD`` on the dense gradient (whose other rows are zero) clipped by value
    as ``clip_grad_value_``, but at the batch's cost (at 10⁶ rows the dense gradient's
    allocation, clipping and update took ~3 passes over 8 MB per step). Other parameters
    (NCE's ``log Z``) take the plain step. The state dict is ``SGD``'s.

    Parameters
    ----------
    objective : FusedTableObjective
        Its table must be the first parameter group's only parameter.
    params : iterable of parameter groups
    lr : float
    clip : float, optional
        Bound of the table's gradient values (the trainer's ``clip_grad_value``).
    """

    def __init__(self, objective: FusedTableObjective, params, lr: float, clip: float | None = None) -> None:
        super().__init__(params, lr=lr)
        if list(self.param_groups[0]["params"]) != [objective.encoder.weight]:
            raise ValueError("the first parameter group must hold the table alone")
        self.objective, self.clip = objective, clip
        objective.row_updates = True

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        super().zero_grad(set_to_none)
        self.objective.drop_pending()  # as a dense gradient would be: a backward with no step

    def step(self, closure=None):  # noqa: D102
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        if group["params"][0] is self.objective.encoder.weight:  # (not a copy probing the state)
            with torch.no_grad():
                self._step_table(group["lr"])
        super().step()  # the table's .grad is None: SGD skips it (log Z, if any, steps here)
        return loss

    def _step_table(self, lr: float) -> None:
        """SGD on the table's rows with pending gradients (each clipped to ``[-clip, clip]``),
        except the frozen rows of a :class:`~twinlearn.encoders.table.FrozenRowsTable`
        (placement); the pending gradients are consumed."""
        encoder = self.objective.encoder
        pending = self.objective.take_pending()
        if not pending:
            return
        rows, grad = pending[0]
        if len(pending) > 1:  # several backward passes: their sum per row, as .grad would hold
            rows, inverse = np.unique(np.concatenate([r for r, _ in pending]), return_inverse=True)
            grad = np.zeros((len(rows), encoder.weight.shape[1]), dtype=np.float32)
            np.add.at(grad, inverse, np.concatenate([g for _, g in pending]))
        bound = np.float32(np.inf if self.clip is None else self.clip)
        table = encoder.weight.detach().numpy()
        _step_rows(table, rows, grad, np.float32(lr), bound, getattr(encoder, "n_frozen", 0))

    def __getstate__(self) -> dict:
        # torch keeps only the groups and state; a copy (io's state probe) needs the rest
        return {**super().__getstate__(), "objective": self.objective, "clip": self.clip}
