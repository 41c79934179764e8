"""Running an encoder over data in chunks, in eval mode, into preallocated outputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn


@torch.no_grad()
def run_in_chunks(
    forward: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    chunks: Iterable[torch.Tensor],
    n_rows: int,
    module: nn.Module | None = None,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``forward`` over each chunk (``module``, or ``forward`` itself if it is a module, in eval
    mode), written into preallocated float32 outputs — one per tensor ``forward`` returns — so
    the peak is the output plus one chunk, not a list of chunks and a copy."""
    module = forward if module is None and isinstance(forward, nn.Module) else module
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    outs, start = None, 0
    try:
        for chunk in chunks:
            ys = forward(chunk)
            ys = ys if isinstance(ys, tuple) else (ys,)
            if outs is None:
                outs = [torch.empty((n_rows, *y.shape[1:]), dtype=torch.float32, device=y.device) for y in ys]
            for out, y in zip(outs, ys):
                out[start : start + y.shape[0]] = y
            start += ys[0].shape[0]
    finally:
        if module is not None:
            module.train(was_training)
    if outs is None:
        return torch.empty((0, 0))
    return outs[0] if len(outs) == 1 else tuple(outs)
