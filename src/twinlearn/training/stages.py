"""t-SimCNE's schedule: how ``total_epochs``, ``lr`` and ``warmup`` become three stages, each
with its LR table, and the :class:`~twinlearn.training.trainer.Stage` objects that change the
network between them (Böhm, Berens & Kobak, ICLR 2023; the original's v0.3 recipe)."""

from __future__ import annotations

import copy
import logging
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from twinlearn._checks import check_float, check_int
from twinlearn._device import make_generator
from twinlearn.losses import MatryoshkaLoss
from twinlearn.training import distributed
from twinlearn.training.trainer import Stage, Trainer

logger = logging.getLogger("twinlearn")

#: the paper's split of its 1 500 epochs, used to split an int ``total_epochs``
PAPER_STAGES = (1000, 50, 450)
MOMENTUM, WEIGHT_DECAY, LAST_LINEAR_STD = 0.9, 5e-4, 1.0
#: most epochs a run may have in all (a larger value is a typo)
MAX_TOTAL_EPOCHS = 10**6


def lr_from_batchsize(batch_size: int, mode: str = "lin-bs") -> float:
    """t-SimCNE's LR rule: ``"lin-bs"`` 0.03·B/256, ``"sqrt-bs"`` 0.075·√B."""
    if mode not in ("lin-bs", "sqrt-bs"):
        raise ValueError(f"mode={mode!r}: choose 'lin-bs' or 'sqrt-bs'")
    return 0.03 * batch_size / 256 if mode == "lin-bs" else 0.075 * math.sqrt(batch_size)


def stage_lr_schedule(n_epochs: int, warmup_epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """t-SimCNE's per-epoch LR factor (``CosineAnnealingSchedule`` of v0.3): the table
    ``linspace(0, 1, W) ++ [(1 + cos(π t/(n + 1 − W)))/2 for t = 0..n − W]``, epoch ``e`` using
    entry ``e`` (so a warm-up starts at 0 and its last value is repeated once)."""
    warm = np.linspace(0.0, 1.0, warmup_epochs)
    span = n_epochs + 1 - warmup_epochs
    cos = 0.5 * (1 + np.cos(np.pi * np.arange(n_epochs - warmup_epochs + 1) / span))
    table = np.concatenate([warm, cos])

    def factor(step: int) -> float:
        return float(table[min(step // steps_per_epoch, n_epochs - 1)])

    return factor


def stage_epochs(total_epochs: object) -> list[int]:
    """Epochs per stage: an int is split in the paper's 1000:50:450 proportion (at least 3);
    a list of 1 or 3 ints is taken as given (one stage trains directly at ``out_dim``)."""
    if isinstance(total_epochs, numbers.Integral) and not isinstance(total_epochs, bool):
        n = check_int(total_epochs, "total_epochs", 3)
        second = max(1, round(n * PAPER_STAGES[1] / sum(PAPER_STAGES)))
        third = round(n * PAPER_STAGES[2] / sum(PAPER_STAGES))
        stages = [n - second - third, second, third]
    elif isinstance(total_epochs, Sequence) and not isinstance(total_epochs, str) and len(total_epochs) in (1, 3):
        stages = [check_int(e, "total_epochs[i]", 0) for e in total_epochs]
        if stages[0] < 1:
            raise ValueError("total_epochs: the first stage needs at least 1 epoch")
    else:
        raise ValueError(f"total_epochs must be an int or a list of 1 or 3 ints (epochs per stage), "
                         f"got {total_epochs!r}")
    if sum(stages) > MAX_TOTAL_EPOCHS:
        raise ValueError(f"total_epochs={total_epochs!r} is implausibly large (at most {MAX_TOTAL_EPOCHS})")
    return stages


def stage_lrs(lr: object, n_stages: int, global_batch: int) -> list[float]:
    """``"auto_batch"`` (``l = 0.03·B/256`` for the global batch ``B``) or a float ``l`` gives
    ``[l, l, l/1000]``; a list gives one LR per stage."""
    if lr == "auto_batch" or (isinstance(lr, numbers.Real) and not isinstance(lr, bool)):
        base = lr_from_batchsize(global_batch) if lr == "auto_batch" else check_float(lr, "lr")
        return [base, base, base / 1000] if n_stages == 3 else [base]
    if not isinstance(lr, Sequence) or isinstance(lr, str) or len(lr) != n_stages:
        raise ValueError(f"lr must be 'auto_batch', a float or a list of {n_stages} floats, got {lr!r}")
    return [check_float(v, "lr[i]") for v in lr]


def stage_warmups(warmup: object, stages: list[int]) -> list[int]:
    """``"auto"``: ``min(10, n/10)`` warm-up epochs in stages 1 and 3, none in stage 2; or a
    list of ints, one per stage, none longer than its stage."""
    if warmup == "auto":
        auto = [min(10, n // 10) for n in stages]
        return [auto[0], 0, auto[2]] if len(stages) == 3 else auto
    if not isinstance(warmup, Sequence) or isinstance(warmup, str) or len(warmup) != len(stages):
        raise ValueError(f"warmup must be 'auto' or a list of {len(stages)} ints, got {warmup!r}")
    warm = [check_int(w, "warmup[i]", 0) for w in warmup]
    if any(w > n for w, n in zip(warm, stages)):
        raise ValueError(f"warmup={warm} has more warm-up epochs than a stage has epochs {stages}")
    return warm


def tsimcne_stages(
    objective: nn.Module, network: nn.Module, stages: list[int], lrs: list[float], warmups: list[int], *,
    out_dim: int, nesting_dims: Sequence[int] | None, seed: int, device: torch.device,
) -> list[Stage]:
    """The paper's stages on ``objective`` (a view-pair objective over ``network``, an
    :class:`~twinlearn.encoders.vision.ImageEmbedder`): (1) everything at the first output
    width (the nested loss with ``nesting_dims``); (2) a fresh N(0, 1) last layer to
    ``out_dim``, the only part that trains (with ``nesting_dims`` the stage-1 network is kept
    as ``objective.pretrained``); (3) everything. Each stage brings a fresh SGD and its LR table."""
    loss = objective.loss

    def entry(index: int) -> Stage:
        def enter(trainer: Trainer) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
            if index == 1:
                if nesting_dims is not None:
                    objective.pretrained = copy.deepcopy(network).requires_grad_(False).eval()
                network.replace_last_linear(out_dim, LAST_LINEAR_STD, make_generator(seed + 2, device))
                # frozen = no gradients; batch norm stays in train mode as in the paper, so its
                # running statistics keep tracking the (fixed) backbone, which is what eval uses
                network.requires_grad_(False)
                network.last_linear().requires_grad_(True)
            elif index == 2:
                network.requires_grad_(True)
            nested = index == 0 and nesting_dims is not None
            objective.loss = MatryoshkaLoss(loss, nesting_dims) if nested else loss
            objective.network = distributed.wrap_ddp(network)
            trainable = [p for p in network.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(trainable, lr=lrs[index], momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
            logger.info("t-SimCNE stage %d: %d epochs, lr %.3g, warm-up %d",
                        index + 1, stages[index], lrs[index], warmups[index])
            return optimizer, stage_lr_schedule(stages[index], warmups[index], len(trainer.pair_source))

        return Stage(stages[index], enter)

    return [entry(i) for i in range(len(stages))]
