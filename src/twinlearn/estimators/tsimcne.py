"""t-SimCNE: unsupervised 2-D visualisation of image datasets (Böhm, Berens & Kobak, ICLR 2023).

A composition on the shared engine: two random views per image (:class:`AugmentPairSource`
with :class:`BatchAugment`) + a ResNet backbone with an MLP head
(:mod:`twinlearn.encoders.vision`) + the Cauchy-kernel InfoNCE over all in-batch negatives
(:class:`ContrastiveLoss`, the loss CNE uses) + a three-stage schedule run by :class:`Trainer`:

1. the whole network at ``pretrain_out_dim`` (128) with warm-up and cosine LR;
2. a fresh last linear layer to ``out_dim`` (2), weights N(0, 1); only it trains;
3. everything unfrozen at LR / 1000.

SGD (momentum 0.9, weight decay 5e-4), LR 0.03·batch/256, gradient clipping by value at 4: the
recipe of the paper as the original's v0.3 code implements it, without that code's defects
(an int ``total_epochs`` gave a 128-D output, image size read as (W, H), no seed, no save).

Names follow the original package (``out_dim``, ``total_epochs``, ``lr``, ``batch_size``); in
the rest of twinlearn they are ``n_components``, ``n_epochs`` and ``learning_rate``.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.utils.validation import check_is_fitted

from twinlearn._device import fork_torch_rng, make_generator
from twinlearn.data.images import check_image_size, load_images
from twinlearn.encoders.vision import BACKBONES, HEADS, ImageEmbedder, infer_feature_dim, make_backbone, make_head
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    check_choice,
    check_float,
    check_int,
    check_prefix_size,
    finite_or_none,
    keep_prefix,
    load_state_strict,
)
from twinlearn.encoders.matryoshka import check_nesting_dims
from twinlearn.io import split_prefix
from twinlearn.kernels import make_kernel
from twinlearn.losses import ContrastiveLoss, MatryoshkaLoss
from twinlearn.pairs.augment import AugmentPairSource, BatchAugment, PerImageTransform
from twinlearn.training import PRECISIONS, Trainer, distributed
from twinlearn.training.objectives import ViewPairObjective

logger = logging.getLogger("twinlearn")

# the paper's split of its 1 500 epochs, used to split an int ``total_epochs``
PAPER_STAGES = (1000, 50, 450)
MOMENTUM, WEIGHT_DECAY, CLIP_VALUE, LAST_LINEAR_STD = 0.9, 5e-4, 4.0, 1.0
TRANSFORM_BATCH = 1024


def lr_from_batchsize(batch_size: int, mode: str = "lin-bs") -> float:
    """t-SimCNE's LR rule: ``"lin-bs"`` 0.03·B/256, ``"sqrt-bs"`` 0.075·√B."""
    check_choice(mode, "mode", ("lin-bs", "sqrt-bs"))
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


class TSimCNE(TwinlearnEstimator):
    """t-SimCNE: contrastive learning of a 2-D map of an image dataset.

    Parameters
    ----------
    model : nn.Module, optional
        A network with ``.backbone`` (images → features) and ``.head`` (an ``nn.Sequential``
        ending in ``nn.Linear``); overrides ``backbone`` and ``projection_head``.
    loss : "infonce" or nn.Module
        ``"infonce"``: symmetric InfoNCE with all ``2B − 2`` in-batch negatives; a module is
        called as ``loss(z_view1, z_view2)``.
    metric : {None, "euclidean", "cosine", "gauss"}
        Kernel of the InfoNCE: None/"euclidean" = Cauchy ``1/(1 + d²)`` (t-SimCNE), "cosine" =
        SimCLR's ``exp(cos/0.5)``, "gauss" = ``exp(−d²)``.
    backbone : str or nn.Module, default="resnet18_simclr"
        ``"resnet18_simclr"`` (CIFAR stem), ``"resnet18"`` (stock torchvision), ``"resnet34"``,
        ``"resnet50"`` (CIFAR stem), ``"small_cnn"`` (CPU-sized), or a module mapping images
        to ``(N, features)``.
    projection_head : {"mlp", "linear"} or nn.Module
        ``"mlp"`` = Linear(f, 1024) → ReLU → Linear(1024, out). A module must be an
        ``nn.Sequential`` ending in ``nn.Linear``.
    data_transform : callable, optional
        Per-image training augmentation (uint8 ``(3, H, W)`` tensor → float tensor) instead of
        the default batched on-device t-SimCNE augmentation (crop scale 0.2–1, flip, colour
        jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2, no normalisation).
    total_epochs : int or sequence of int, default=(1000, 50, 450)
        Epochs of the three stages. An int is split in the paper's 1000:50:450 proportion
        (at least 3). A single-element list trains one stage directly at ``out_dim``.
    batch_size : int, default=512
        Images per step and process (each gives two views).
    out_dim : int, default=2
        Output dimension (``n_components``).
    pretrain_out_dim : int, default=128
        Output dimension of stage 1.
    optimizer : {"sgd"}
    lr_scheduler : {"cos_annealing"}
    lr : "auto_batch", float or sequence of float
        ``"auto_batch"``: ``l = 0.03·B/256`` with ``B`` the global batch (all processes), stage
        LRs ``[l, l, l/1000]``; a float is ``l``; a sequence gives one LR per stage.
    warmup : "auto" or sequence of int
        Warm-up epochs per stage; ``"auto"``: ``min(10, n/10)`` epochs in stages 1 and 3
        (10 at the paper's lengths), none in stage 2.
    freeze_schedule : {"only_linear"}
        Stage 2 trains only the new last linear layer.
    image_size : int or (height, width), optional
        Resize images to this size; by default the size of the input images.
    devices : int, default=1
        Number of processes; more than one needs a launch with
        ``torchrun --nproc_per_node=devices`` (DDP, negatives gathered across processes).
    random_state : int, numpy Generator or None
        Seeds model initialisation, shuffling and augmentation (local generators; global RNGs
        are untouched). Same seed, same device, same result.
    device : {"auto", "cpu", "cuda"} or torch.device
    precision : {"fp32", "bf16", "fp16"}
        Autocast dtype of the forward pass; "bf16" roughly doubles CPU throughput on
        AVX-512-BF16 machines.
    channels_last : bool
        Channels-last memory layout (faster convolutions on CPU and tensor-core GPUs).
    nesting_dims : list of int, optional
        Matryoshka nesting of the high-dimensional stage: stage 1 sums the loss over these
        prefixes of its output (e.g. ``[8, 16, 32, 64, 128]`` with ``pretrain_out_dim=128``), so
        every prefix is itself an embedding. With three stages the stage-1 network is kept as
        ``pretrain_model_`` (``transform(X, pretrained=True, n_components=16)``); with one stage
        the final output is nested (``out_dim=128, total_epochs=[n], nesting_dims=[2, ..., 128]``
        then ``transform(X, n_components=2)``).
    verbose : int

    Attributes
    ----------
    model_ : ImageEmbedder
        The trained network (``model_.features(x)`` gives backbone features).
    pretrain_model_ : ImageEmbedder
        The network at the end of stage 1 (``pretrain_out_dim`` outputs); only with
        ``nesting_dims`` and three stages.
    image_size_ : (height, width)
    stage_epochs_ : list of int
    loss_history_ : list of list of float
        Mean loss per epoch, per stage.

    References
    ----------
    Böhm, Berens, Kobak, "Unsupervised visualization of image datasets using contrastive
    learning", ICLR 2023.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        loss: str | nn.Module = "infonce",
        metric: str | None = None,
        backbone: str | nn.Module = "resnet18_simclr",
        projection_head: str | nn.Module = "mlp",
        data_transform: Callable | None = None,
        total_epochs: int | Sequence[int] = (1000, 50, 450),
        batch_size: int = 512,
        out_dim: int = 2,
        pretrain_out_dim: int = 128,
        optimizer: str = "sgd",
        lr_scheduler: str = "cos_annealing",
        lr: str | float | Sequence[float] = "auto_batch",
        warmup: str | Sequence[int] = "auto",
        freeze_schedule: str = "only_linear",
        image_size: int | tuple[int, int] | None = None,
        devices: int = 1,
        random_state: int | np.random.Generator | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        channels_last: bool = False,
        nesting_dims: Sequence[int] | None = None,
        verbose: int = 0,
    ) -> None:
        self.model = model
        self.loss = loss
        self.metric = metric
        self.backbone = backbone
        self.projection_head = projection_head
        self.data_transform = data_transform
        self.total_epochs = total_epochs
        self.batch_size = batch_size
        self.out_dim = out_dim
        self.pretrain_out_dim = pretrain_out_dim
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.lr = lr
        self.warmup = warmup
        self.freeze_schedule = freeze_schedule
        self.image_size = image_size
        self.devices = devices
        self.random_state = random_state
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.nesting_dims = nesting_dims
        self.verbose = verbose

    # --- parameters --------------------------------------------------------------------------
    def _stage_epochs(self) -> list[int]:
        epochs = self.total_epochs
        if isinstance(epochs, numbers.Integral) and not isinstance(epochs, bool):
            n = check_int(epochs, "total_epochs", minimum=3)
            second = max(1, round(n * PAPER_STAGES[1] / sum(PAPER_STAGES)))
            third = round(n * PAPER_STAGES[2] / sum(PAPER_STAGES))
            return [n - second - third, second, third]
        if not isinstance(epochs, Sequence) or isinstance(epochs, str) or len(epochs) not in (1, 3):
            raise ValueError(
                f"total_epochs must be an int or a list of 1 or 3 ints (epochs per stage), got {epochs!r}"
            )
        stages = [check_int(e, "total_epochs[i]", minimum=0) for e in epochs]
        if stages[0] < 1:
            raise ValueError("total_epochs: the first stage needs at least 1 epoch")
        return stages

    def _stage_lrs(self, n_stages: int, global_batch: int) -> list[float]:
        lr = self.lr
        if lr == "auto_batch" or (isinstance(lr, numbers.Real) and not isinstance(lr, bool)):
            base = lr_from_batchsize(global_batch) if lr == "auto_batch" else check_float(lr, "lr")
            return [base, base, base / 1000] if n_stages == 3 else [base]
        if not isinstance(lr, Sequence) or isinstance(lr, str) or len(lr) != n_stages:
            raise ValueError(f"lr must be 'auto_batch', a float or a list of {n_stages} floats, got {lr!r}")
        return [check_float(v, "lr[i]") for v in lr]

    def _stage_warmups(self, stages: list[int]) -> list[int]:
        if self.warmup == "auto":
            auto = [min(10, n // 10) for n in stages]
            return [auto[0], 0, auto[2]] if len(stages) == 3 else auto
        warm = self.warmup
        if not isinstance(warm, Sequence) or isinstance(warm, str) or len(warm) != len(stages):
            raise ValueError(f"warmup must be 'auto' or a list of {len(stages)} ints, got {warm!r}")
        warm = [check_int(w, "warmup[i]", minimum=0) for w in warm]
        for w, n in zip(warm, stages):
            if w > n:
                raise ValueError(f"warmup={warm} has more warm-up epochs than a stage has epochs {stages}")
        return warm

    def _check_params(self) -> tuple[list[int], list[float], list[int]]:
        check_choice(self.optimizer, "optimizer", ("sgd",))
        check_choice(self.lr_scheduler, "lr_scheduler", ("cos_annealing",))
        check_choice(self.freeze_schedule, "freeze_schedule", ("only_linear",))
        check_choice(self.precision, "precision", PRECISIONS)
        check_int(self.batch_size, "batch_size", minimum=2)
        check_int(self.out_dim, "out_dim")
        check_int(self.pretrain_out_dim, "pretrain_out_dim")
        check_int(self.devices, "devices")
        check_choice(self.channels_last, "channels_last", (True, False))
        check_image_size(self.image_size)
        if self.model is not None and not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be an nn.Module with .backbone and .head, got {type(self.model).__name__}")
        if self.model is not None and not (hasattr(self.model, "backbone") and hasattr(self.model, "head")):
            raise TypeError("model must have a .backbone and a .head (an nn.Sequential ending in nn.Linear)")
        if not isinstance(self.backbone, nn.Module):
            check_choice("resnet18_simclr" if self.backbone == "resnet18_cifar" else self.backbone, "backbone", BACKBONES)
        if not isinstance(self.projection_head, nn.Module):
            check_choice(self.projection_head, "projection_head", HEADS)
        if isinstance(self.loss, nn.Module):
            if self.metric is not None:
                raise ValueError("metric applies to loss='infonce' only; a custom loss module sets its own")
        else:
            check_choice(self.loss, "loss", ("infonce",))
            make_kernel(self.metric)
        if self.data_transform is not None and not callable(self.data_transform):
            raise TypeError("data_transform must be a callable (a per-image transform) or None")
        stages = self._stage_epochs()
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, self._first_dim(stages))
        return stages, self._stage_lrs(len(stages), self.batch_size * self.devices), self._stage_warmups(stages)

    # --- parts -------------------------------------------------------------------------------
    def _first_dim(self, stages: list[int]) -> int:
        """Output dimension of stage 1: one stage trains directly at ``out_dim``."""
        return self.out_dim if len(stages) == 1 else self.pretrain_out_dim

    def _build_network(self, first_out_dim: int, image_shape: tuple[int, int, int], seed: int) -> ImageEmbedder:
        with fork_torch_rng(seed):
            if self.model is not None:
                model = copy.deepcopy(self.model)
                return ImageEmbedder(model.backbone, model.head)
            if isinstance(self.backbone, nn.Module):
                backbone = copy.deepcopy(self.backbone)
                feature_dim = infer_feature_dim(backbone, image_shape)
            else:
                backbone, feature_dim = make_backbone(self.backbone)
            if isinstance(self.projection_head, nn.Module):
                head = copy.deepcopy(self.projection_head)
            else:
                head = make_head(self.projection_head, feature_dim, first_out_dim)
        return ImageEmbedder(backbone, head)

    def _make_loss(self) -> nn.Module:
        if isinstance(self.loss, nn.Module):
            return self.loss
        kernel = make_kernel(self.metric)
        return ContrastiveLoss("infonce", kernel, "full", symmetric=True, gather_negatives=True)

    def _resolve_device(self) -> torch.device:
        device = self._device()
        if device.type == "cuda" and distributed.is_distributed():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", distributed.rank())))
        return device

    # --- fit ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: object = None) -> "TSimCNE":
        """Train on images ``X``.

        Parameters
        ----------
        X : torch Dataset of (image, label), image-folder path, or uint8 array (N, H, W, C)
        y : ignored

        Returns
        -------
        self
        """
        stages, lrs, warmups = self._check_params()
        if self.devices > 1:
            distributed.init_from_env()
            if distributed.world_size() != self.devices:
                raise ValueError(
                    f"devices={self.devices} needs as many processes: launch with "
                    f"torchrun --nproc_per_node={self.devices} (found {distributed.world_size()})"
                )
        images, _ = load_images(X, self.image_size)
        n_images = images.shape[0] // distributed.world_size()
        if n_images < 2:
            raise ValueError(f"X has {images.shape[0]} images; t-SimCNE needs at least 2 per process")
        batch = min(self.batch_size, n_images)
        device, seed = self._resolve_device(), self._seed()
        network = self._build_network(self._first_dim(stages), tuple(images.shape[1:]), seed).to(device)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        augment = (
            PerImageTransform(self.data_transform, self.channels_last)
            if self.data_transform is not None
            else BatchAugment(channels_last=self.channels_last)
        )
        pairs = AugmentPairSource(
            images, batch, device, make_generator(seed + 1 + distributed.rank(), device), augment,
            rank=distributed.rank(), world_size=distributed.world_size(),
        )
        loss = self._make_loss().to(device)
        first_loss = loss if self.nesting_dims is None else MatryoshkaLoss(loss, self.nesting_dims)
        history: list[list[float]] = []
        pretrain_model = None
        for stage, (n_epochs, lr, warm) in enumerate(zip(stages, lrs, warmups)):
            if stage == 1:
                if self.nesting_dims is not None:
                    pretrain_model = copy.deepcopy(network).eval()
                network.replace_last_linear(self.out_dim, LAST_LINEAR_STD, make_generator(seed + 2, device))
                # frozen = no gradients; batch norm stays in train mode as in the paper, so its
                # running statistics keep tracking the (fixed) backbone, which is what eval uses
                network.requires_grad_(False)
                network.last_linear().requires_grad_(True)
            elif stage == 2:
                network.requires_grad_(True)
            if n_epochs == 0:
                history.append([])
                continue
            trainable = [p for p in network.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(trainable, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
            objective = ViewPairObjective(distributed.wrap_ddp(network), first_loss if stage == 0 else loss)
            trainer = Trainer(
                objective, pairs, optimizer, stage_lr_schedule(n_epochs, warm, len(pairs)), n_epochs,
                precision=self.precision, clip_grad_value=CLIP_VALUE, verbose=self.verbose,
            )
            logger.info("t-SimCNE stage %d: %d epochs, lr %.3g, warm-up %d", stage + 1, n_epochs, lr, warm)
            trainer.fit()
            history.append(trainer.loss_history)
        network.requires_grad_(True)
        self.model_ = network.eval()
        if pretrain_model is not None:
            self.pretrain_model_ = pretrain_model
        elif hasattr(self, "pretrain_model_"):
            del self.pretrain_model_
        self.image_size_ = (int(images.shape[2]), int(images.shape[3]))
        self.stage_epochs_ = stages
        self.loss_history_ = history
        return self

    # --- transform ---------------------------------------------------------------------------
    @torch.no_grad()
    def transform(
        self,
        X: Any,
        data_transform: Callable | None = None,
        return_labels: bool = False,
        return_backbone_feat: bool = False,
        n_components: int | None = None,
        pretrained: bool = False,
    ) -> np.ndarray | tuple:
        """Embed images with the trained network (eval mode, batches of 1024).

        Parameters
        ----------
        X : torch Dataset of (image, label), image-folder path, or uint8 array (N, H, W, C)
            Images of another size are resized to ``image_size_``.
        data_transform : callable, optional
            Per-image test transform (uint8 tensor → float tensor); default: scale to [0, 1].
        return_labels : bool
            Also return the labels (``None`` when ``X`` has none).
        return_backbone_feat : bool
            Also return the backbone features ``(N, feature_dim)``.
        n_components : int, optional
            Keep the first ``n_components`` output dims (a nested model's smaller embedding).
        pretrained : bool
            Use the stage-1 network ``pretrain_model_`` (``pretrain_out_dim`` outputs; kept by
            a three-stage fit with ``nesting_dims``).

        Returns
        -------
        Y : ndarray (N, out_dim), or (N, n_components)
        labels : ndarray (N,) or None, if ``return_labels``
        features : ndarray (N, feature_dim), if ``return_backbone_feat``
        """
        check_is_fitted(self, "model_")
        if data_transform is not None and not callable(data_transform):
            raise TypeError("data_transform must be a callable or None")
        check_choice(pretrained, "pretrained", (True, False))
        if pretrained and not hasattr(self, "pretrain_model_"):
            raise ValueError(
                "pretrained=True needs the stage-1 network, which is kept only by a three-stage fit "
                "with nesting_dims"
            )
        model = self.pretrain_model_ if pretrained else self.model_
        check_prefix_size(n_components, model.out_dim)
        images, labels = load_images(X, self.image_size_)
        device = next(model.parameters()).device
        test_transform = PerImageTransform(data_transform, self.channels_last) if data_transform else None
        generator = torch.Generator()
        Y, H = [], []
        model.eval()
        for start in range(0, images.shape[0], TRANSFORM_BATCH):
            chunk = images[start : start + TRANSFORM_BATCH]
            if test_transform is not None:
                x = test_transform(chunk, generator).to(device)
            else:
                x = chunk.to(device).float().div_(255)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            h = model.features(x)
            Y.append(keep_prefix(model.head(h), n_components).float().cpu())
            if return_backbone_feat:
                H.append(h.float().cpu())
        out: list[Any] = [torch.cat(Y).numpy()]
        if return_labels:
            out.append(labels)
        if return_backbone_feat:
            out.append(torch.cat(H).numpy())
        return out[0] if len(out) == 1 else tuple(out)

    def fit_transform(
        self,
        X: Any,
        y: object = None,
        data_transform: Callable | None = None,
        return_labels: bool = False,
        return_backbone_feat: bool = False,
    ) -> np.ndarray | tuple:
        """``fit(X)`` then ``transform(X, ...)``: the same result as the two calls for a fixed
        ``random_state``."""
        return self.fit(X).transform(
            X, data_transform=data_transform, return_labels=return_labels, return_backbone_feat=return_backbone_feat
        )

    # --- model files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted network (safetensors) and hyperparameters (JSON); no pickle.

        Only named backbones and heads can be rebuilt from a file; for a custom module save
        ``model_.state_dict()`` with :func:`twinlearn.io.save_tensors`.
        """
        check_is_fitted(self, "model_")
        if any(isinstance(v, nn.Module) for v in (self.model, self.backbone, self.projection_head, self.loss)):
            raise TypeError("save() needs named backbone/projection_head/loss (strings), not modules")
        if self.data_transform is not None:
            raise TypeError("save() cannot store a data_transform callable; set it to None first")
        fitted = {
            "image_size_": list(self.image_size_),
            "out_dim": self.model_.out_dim,
            "stage_epochs_": self.stage_epochs_,
            "loss_history_": self.loss_history_,
        }
        modules = {"model": self.model_}
        if hasattr(self, "pretrain_model_"):
            modules["pretrain_model"] = self.pretrain_model_
        self._save(path, modules, fitted)

    def load(self, path: str | os.PathLike) -> "TSimCNE":
        """Load a model written by :meth:`save`: its hyperparameters and weights replace this
        estimator's, except ``device`` (a file saved on a GPU loads on a CPU).

        ``TSimCNE(device="cpu").load("tsimcne.safetensors").transform(X)``
        """
        tensors, meta = self._read_model_file(path)
        with self._restoring_from(path):
            # JSON has no tuples: the sequence parameters come back as lists
            params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
            self._take_file_params(params, path)
            fitted = meta["fitted"]
            height, width = check_image_size(fitted["image_size_"], "image_size_")
            out_dim = check_int(fitted["out_dim"], "out_dim")
            network = build_on_meta(lambda: self._build_network(out_dim, (3, height, width), 0))
            load_state_strict(network, split_prefix(tensors, "model"), path)
            pretrain_state = split_prefix(tensors, "pretrain_model")
            pretrain = None
            if pretrain_state:
                pretrain = build_on_meta(lambda: self._build_network(self.pretrain_out_dim, (3, height, width), 0))
                load_state_strict(pretrain, pretrain_state, path)
            stage_epochs = [check_int(e, "stage_epochs_", minimum=0) for e in fitted["stage_epochs_"]]
            loss_history = [[finite_or_none(v, "loss_history_") for v in stage]
                            for stage in fitted["loss_history_"]]
        self.model_ = network.to(self._device()).eval()
        if self.channels_last:
            self.model_ = self.model_.to(memory_format=torch.channels_last)
        if pretrain is not None:
            self.pretrain_model_ = pretrain.to(self._device()).eval()
            if self.channels_last:
                self.pretrain_model_ = self.pretrain_model_.to(memory_format=torch.channels_last)
        elif hasattr(self, "pretrain_model_"):
            del self.pretrain_model_
        self.image_size_ = (height, width)
        self.stage_epochs_ = stage_epochs
        self.loss_history_ = loss_history
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")
