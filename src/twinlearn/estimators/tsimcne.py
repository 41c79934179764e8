"""t-SimCNE: unsupervised 2-D visualisation of image datasets (Böhm, Berens & Kobak, ICLR 2023).

A facade over shared parts: two random views per image (:class:`AugmentPairSource` with
:class:`BatchAugment`) + a ResNet backbone with an MLP head (:mod:`twinlearn.encoders.vision`)
+ the Cauchy-kernel InfoNCE over all in-batch negatives (the loss CNE uses) + the paper's three
stages (:mod:`twinlearn.training.stages`) as one schedule of the :class:`Trainer`, so a run
resumes in any stage. The recipe is the original's v0.3 code without its defects (an int
``total_epochs`` gave a 128-D output, image size read as (W, H), no seed, no save); names follow
the original (``out_dim``, ``total_epochs``, ``lr``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.utils.validation import check_is_fitted

from twinlearn._checks import check_int, finite_or_none
from twinlearn._device import fork_torch_rng, make_generator
from twinlearn.data.images import check_image_size, image_batches, load_images
from twinlearn.encoders.matryoshka import check_nesting_dims
from twinlearn.encoders.vision import BACKBONES, HEADS, ImageEmbedder, image_embedder
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    check_prefix_size,
    load_state_strict,
)
from twinlearn.estimators._params import (
    BOOLEAN,
    CALLABLE,
    DEVICE,
    MAX_BATCH,
    MAX_LEARNING_RATE,
    MAX_WIDTH,
    MODULE,
    NESTING_DIMS,
    PRECISION,
    SEED,
    SEQUENCE,
    VERBOSE,
    AnyOf,
    Check,
    Integer,
    Options,
    Real,
    none_or,
)
from twinlearn.io import split_prefix
from twinlearn.kernels import make_kernel
from twinlearn.losses import ContrastiveLoss
from twinlearn.pairs.augment import AugmentPairSource, BatchAugment, PerImageTransform
from twinlearn.training import Trainer, distributed
from twinlearn.training.objectives import ViewPairObjective
from twinlearn.training.stages import stage_epochs, stage_lrs, stage_warmups, tsimcne_stages

logger = logging.getLogger("twinlearn")

CLIP_VALUE = 4.0
TRANSFORM_BATCH = 1024


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
        Per-image augmentation (uint8 ``(3, H, W)`` → float tensor) instead of the batched
        on-device one (crop 0.2–1, flip, colour jitter 0.4/0.4/0.4/0.1 p 0.8, grayscale p 0.2).
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
        Processes; more need ``torchrun --nproc_per_node=devices`` (DDP, global negatives).
    random_state : int, numpy Generator or None
        Seeds initialisation, shuffling and augmentation (local generators only).
    device : {"auto", "cpu", "cuda"} or torch.device
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype of the forward pass; ``"auto"``: bf16 where the hardware runs it
        natively (AMX/AVX512-BF16 CPU, GPU), else fp32.
    channels_last : bool
        Channels-last memory layout (faster convolutions on CPU and tensor-core GPUs).
    nesting_dims : list of int, optional
        Matryoshka: stage 1 sums the loss over these prefixes of its output, e.g.
        ``[8, 16, 32, 64, 128]``; with three stages that network is kept as ``pretrain_model_``
        (``transform(X, pretrained=True, n_components=16)``), with one stage the output nests.
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
    precision_ : {"fp32", "bf16", "fp16"}
        The precision the network trained in (what ``"auto"`` resolved to).

    References
    ----------
    Böhm, Berens, Kobak, "Unsupervised visualization of image datasets using contrastive
    learning", ICLR 2023.
    """

    #: bf16 kept fp32's 2-D kNN accuracy at equal epochs (benchmarks/RESULTS.md, bf16_quality.py)
    _auto_bf16 = True

    def __init__(
        self, model: nn.Module | None = None, loss: str | nn.Module = "infonce",
        metric: str | None = None, backbone: str | nn.Module = "resnet18_simclr",
        projection_head: str | nn.Module = "mlp", data_transform: Callable | None = None,
        total_epochs: int | Sequence[int] = (1000, 50, 450), batch_size: int = 512,
        out_dim: int = 2, pretrain_out_dim: int = 128, optimizer: str = "sgd",
        lr_scheduler: str = "cos_annealing", lr: str | float | Sequence[float] = "auto_batch",
        warmup: str | Sequence[int] = "auto", freeze_schedule: str = "only_linear",
        image_size: int | tuple[int, int] | None = None, devices: int = 1,
        random_state: int | np.random.Generator | None = None, device: str | torch.device = "auto",
        precision: str = "auto", channels_last: bool = False,
        nesting_dims: Sequence[int] | None = None, verbose: int = 0,
    ) -> None:
        self._store_init_args(locals())

    # --- parameters --------------------------------------------------------------------------
    def _stage_epochs(self) -> list[int]:
        return stage_epochs(self.total_epochs)

    def _stage_lrs(self, n_stages: int, global_batch: int) -> list[float]:
        return stage_lrs(self.lr, n_stages, global_batch)

    _parameter_constraints = {
        "model": none_or(MODULE),
        "loss": AnyOf((Options(("infonce",)), MODULE)),
        "metric": Options((None, "euclidean", "cosine", "gauss")),
        "backbone": AnyOf((Options((*BACKBONES, "resnet18_cifar")), MODULE)),
        "projection_head": AnyOf((Options(HEADS), MODULE)),
        "data_transform": none_or(CALLABLE),
        "total_epochs": Check(lambda value, name: stage_epochs(value), "an int >= 3 or a list of 1 or 3 ints"),
        "batch_size": Integer(2, MAX_BATCH),
        "out_dim": Integer(1, MAX_WIDTH),
        "pretrain_out_dim": Integer(1, MAX_WIDTH),
        "optimizer": Options(("sgd",)),
        "lr_scheduler": Options(("cos_annealing",)),
        # lists are checked against the number of stages in _check_param_relations
        "lr": AnyOf((Options(("auto_batch",)), Real(0.0, MAX_LEARNING_RATE), SEQUENCE)),
        "warmup": AnyOf((Options(("auto",)), SEQUENCE)),
        "freeze_schedule": Options(("only_linear",)),
        "image_size": Check(lambda v, name: check_image_size(v), "an int or (height, width)"),
        "devices": Integer(1, 4096),
        "random_state": SEED,
        "device": DEVICE,
        "precision": PRECISION,
        "channels_last": BOOLEAN,
        "nesting_dims": NESTING_DIMS,
        "verbose": VERBOSE,
    }

    def _check_param_relations(self) -> None:
        if self.model is not None and not (hasattr(self.model, "backbone") and hasattr(self.model, "head")):
            raise TypeError("model must have a .backbone and a .head (an nn.Sequential ending in nn.Linear)")
        if isinstance(self.loss, nn.Module) and self.metric is not None:
            raise ValueError("metric applies to loss='infonce' only; a custom loss module sets its own")
        stages = self._stage_epochs()
        if self.nesting_dims is not None:
            check_nesting_dims(self.nesting_dims, self._first_dim(stages))
        self._stage_lrs(len(stages), self.batch_size * self.devices)
        stage_warmups(self.warmup, stages)

    def _output_width(self) -> int:
        return self.model_.out_dim

    # --- parts -------------------------------------------------------------------------------
    def _first_dim(self, stages: list[int]) -> int:  # one stage trains directly at out_dim
        return self.out_dim if len(stages) == 1 else self.pretrain_out_dim

    def _build_network(self, first_out_dim: int, image_shape: tuple[int, int, int], seed: int) -> ImageEmbedder:
        with fork_torch_rng(seed):
            return image_embedder(self.model, self.backbone, self.projection_head, first_out_dim, image_shape)

    def _make_loss(self) -> nn.Module:
        if isinstance(self.loss, nn.Module):
            return self.loss
        return ContrastiveLoss("infonce", make_kernel(self.metric), "full", symmetric=True, gather_negatives=True)

    def _resolve_device(self) -> torch.device:
        return distributed.local_device(self._device())

    # --- fit ---------------------------------------------------------------------------------
    def fit(self, X: Any, y: object = None, *, output_folder: str | os.PathLike | None = None,
            resume: bool = False, snapshot_freq: int = 0) -> "TSimCNE":
        """Train on images ``X``: the three stages run as one schedule of the trainer.

        Parameters
        ----------
        X : torch Dataset of (image, label), image-folder path, or uint8 array (N, H, W, C)
        y : ignored
        output_folder : path, optional
            ``latest_snapshot.safetensors`` after every epoch (``snapshot_{epoch}`` every
            ``snapshot_freq`` epochs) and ``final_model.safetensors`` at the end.
        resume : bool
            Continue from the latest snapshot in ``output_folder`` (in whichever stage it was
            taken): same data and parameters give the uninterrupted result.
        snapshot_freq : int

        Returns
        -------
        self
        """
        self._validate_params()
        self._check_run_options(output_folder, resume, snapshot_freq)
        distributed.require_processes(self.devices)
        images, _ = load_images(X, self.image_size)
        n_images = images.shape[0] // distributed.world_size()
        if n_images < 2:
            raise ValueError(f"X has {images.shape[0]} images; t-SimCNE needs at least 2 per process")
        device, seed = self._resolve_device(), self._seed()
        stages = self._stage_epochs()
        network = self._build_network(self._first_dim(stages), tuple(images.shape[1:]), seed).to(device)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        augment = (PerImageTransform(self.data_transform, self.channels_last) if self.data_transform is not None
                   else BatchAugment(channels_last=self.channels_last))
        pairs = AugmentPairSource(
            images, min(self.batch_size, n_images), device, make_generator(seed + 1 + distributed.rank(), device),
            augment, rank=distributed.rank(), world_size=distributed.world_size(),
        )
        objective = ViewPairObjective(network, self._make_loss().to(device))
        schedule = tsimcne_stages(
            objective, network, stages, self._stage_lrs(len(stages), self.batch_size * self.devices),
            stage_warmups(self.warmup, stages), out_dim=self.out_dim, nesting_dims=self.nesting_dims,
            seed=seed, device=device)
        trainer = Trainer.in_stages(objective, pairs, schedule, precision=self._precision(device),
                                    clip_grad_value=CLIP_VALUE, verbose=self.verbose)

        def keep(trainer: Trainer) -> None:
            network.requires_grad_(True)
            self.model_ = network.eval()
            pretrained = getattr(objective, "pretrained", None)
            if pretrained is not None:
                self.pretrain_model_ = pretrained.eval()
            elif hasattr(self, "pretrain_model_"):
                del self.pretrain_model_
            self.image_size_ = (int(images.shape[2]), int(images.shape[3]))
            self.stage_epochs_ = stages

        self._run_training(trainer, images, keep, output_folder=output_folder, resume=resume,
                           snapshot_freq=snapshot_freq)
        ends = np.cumsum([0, *stages])
        self.loss_history_ = [self.loss_history_[a:b] for a, b in zip(ends[:-1], ends[1:])]
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
        none_or(CALLABLE).check(data_transform, "data_transform")
        BOOLEAN.check(pretrained, "pretrained")
        if pretrained and not hasattr(self, "pretrain_model_"):
            raise ValueError("pretrained=True needs the stage-1 network, which is kept only by a "
                             "three-stage fit with nesting_dims")
        model = self.pretrain_model_ if pretrained else self.model_
        check_prefix_size(n_components, model.out_dim)
        images, labels = load_images(X, self.image_size_)
        device = next(model.parameters()).device
        batches = image_batches(images, TRANSFORM_BATCH, device, self.channels_last, data_transform)
        outs = model.embed(batches, images.shape[0], n_components, with_features=return_backbone_feat)
        Y, H = outs if return_backbone_feat else (outs, None)
        out = [Y.cpu().numpy(), *([labels] if return_labels else []), *([H.cpu().numpy()] if return_backbone_feat else [])]
        return out[0] if len(out) == 1 else tuple(out)

    def fit_transform(self, X: Any, y: object = None, **transform_params: Any) -> np.ndarray | tuple:
        """``fit(X)`` then ``transform(X, **transform_params)``: the same result as the two calls
        for a fixed ``random_state``."""
        return self.fit(X).transform(X, **transform_params)

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
        fitted = {"image_size_": list(self.image_size_), "out_dim": self.model_.out_dim,
                  "stage_epochs_": self.stage_epochs_, "loss_history_": self.loss_history_}
        kept = {"pretrain_model": self.pretrain_model_} if hasattr(self, "pretrain_model_") else {}
        self._save(path, {"model": self.model_, **kept}, fitted)

    def load(self, path: str | os.PathLike) -> "TSimCNE":
        """Load a model written by :meth:`save`: its hyperparameters and weights replace this
        estimator's, except ``device`` (a file saved on a GPU loads on a CPU).

        ``TSimCNE(device="cpu").load("tsimcne.safetensors").transform(X)``
        """
        return self._load_file(path, init=True)

    _optional_fitted = ("pretrain_model_",)

    def _params_from_file(self, params: dict[str, Any]) -> dict[str, Any]:
        # JSON has no tuples: the sequence parameters come back as lists
        return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}

    def _restore(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any], path: str | os.PathLike) -> dict:
        height, width = check_image_size(fitted["image_size_"], "image_size_")
        out_dims = {"model": check_int(fitted["out_dim"], "out_dim"), "pretrain_model": self.pretrain_out_dim}
        networks = {}
        for name, out_dim in out_dims.items():
            state = split_prefix(tensors, name)
            if state or name == "model":
                networks[name] = build_on_meta(lambda: self._build_network(out_dim, (3, height, width), 0))
                load_state_strict(networks[name], state, path)
        kept = {"pretrain_model_": networks["pretrain_model"]} if "pretrain_model" in networks else {}
        return {
            "model_": networks["model"], **kept, "image_size_": (height, width),
            "stage_epochs_": [check_int(e, "stage_epochs_", minimum=0) for e in fitted["stage_epochs_"]],
            "loss_history_": [[finite_or_none(v, "loss_history_") for v in stage] for stage in fitted["loss_history_"]],
        }

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")
