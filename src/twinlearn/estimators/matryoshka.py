"""Matryoshka Representation Learning with ReLIC on images.

References
----------
Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.
Mitrovic et al., "Representation Learning via Invariant Causal Mechanisms", ICLR 2021.
mrl-pytorch (filipbasara0/matryoshka-representation-learning): the defaults reproduced here.

Two augmented views of each image go through an online network (backbone + nested projector)
and an EMA target copy; the ReLIC loss on every nested prefix of the backbone features trains
the online network, and the target's backbone is the feature extractor users keep. What the
original got wrong is not repeated: BatchNorm trains (the trainer puts the network in train
mode), the projector's hidden layer is used, a resume restores optimizer, step and γ, folders
are created, and nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.utils.validation import check_is_fitted

from twinlearn._device import fork_torch_rng, make_generator
from twinlearn.data.images import check_image_size, load_images
from twinlearn.encoders.matryoshka import (
    NestedMLPProjector,
    check_nesting_dims,
    default_nesting_dims,
)
from twinlearn.encoders.vision import BACKBONES, _torchvision_resnet, make_backbone
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    check_choice,
    check_float,
    check_int,
    check_prefix_size,
    load_state_strict,
)
from twinlearn.io import split_prefix
from twinlearn.losses import MatryoshkaLoss, ReLICLoss
from twinlearn.pairs.augment import AugmentPairSource
from twinlearn.pairs.relic_augment import ReLICAugment
from twinlearn.training import PRECISIONS, Trainer, constant
from twinlearn.training.ema import EMATargetObjective, EMAUpdate

logger = logging.getLogger("twinlearn")

RELIC_BACKBONES = tuple(dict.fromkeys(("resnet18", "resnet50", *BACKBONES)))
TRANSFORM_BATCH = 512


class ReLIC(TwinlearnEstimator):
    """Matryoshka ReLIC: self-supervised image features whose every prefix is usable.

    Parameters
    ----------
    backbone : str, default="resnet18"
        ``"resnet18"`` or ``"resnet50"`` (torchvision, fresh weights; stem set by
        ``cifar_stem``), or any name of :func:`twinlearn.encoders.vision.make_backbone`
        (``"small_cnn"`` is the CPU-sized one). mrl-pytorch's ``--encoder_model_name``.
    cifar_stem : bool or None, default=None
        3×3 stride-1 first convolution and no max-pool (SimCLR's CIFAR stem) for the ResNets;
        ``None``: use it for images of at most 64 pixels.
    n_components : int or None, default=None
        Feature prefix returned by :meth:`transform` (``None``: all features).
    n_epochs : int, default=100
    batch_size : int, default=256
    learning_rate : float, default=3e-4
        Adam, constant (as in mrl-pytorch).
    weight_decay : float, default=1e-5
    proj_out_dim : int, default=64
    proj_hidden_dim : int or None, default=512
        Hidden width of the nested projector; ``None``: a single nested linear layer.
    nesting_dims : list of int or None, default=None
        Prefix sizes; ``None``: 8, 16, 32, ... up to the feature size.
    shared_head : bool, default=True
        MRL-E (one projector whose input columns are sliced, as mrl-pytorch) or full MRL.
    gamma : float, default=0.995
        Initial EMA coefficient, raised towards 1 along a cosine.
    alpha : float, default=1.0
        Weight of ReLIC's KL invariance term.
    max_inverse_temperature : float, default=5.0
    update_gamma_after_step : int, default=1
        The target copies the online network up to this step; EMA afterwards.
    update_gamma_every_n_steps : int, default=1
    image_size : int or None, default=None
        Resize images to this side (needed when they differ in size).
    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Autocast dtype of the training forward pass (``"fp16"`` with loss scaling on CUDA).
    channels_last : bool, default=False
        Channels-last tensors (faster convolutions on CPUs).
    device : str or torch.device, default="cpu"
    random_state : int, numpy Generator or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    backbone_ : nn.Module
        The EMA target's backbone (mrl-pytorch's ``get_features``), in eval mode.
    objective_ : EMATargetObjective
        Online and target networks and the loss, as trained (not saved by :meth:`save`).
    feature_dim_ : int
    nesting_dims_ : list of int
    image_size_ : (int, int)
    inverse_temperature_ : float
    loss_history_ : list of float
    epoch_seconds_ : list of float
        Wall-clock seconds of each epoch trained in the last ``fit``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        cifar_stem: bool | None = None,
        n_components: int | None = None,
        n_epochs: int = 100,
        batch_size: int = 256,
        learning_rate: float = 3e-4,
        weight_decay: float = 1e-5,
        proj_out_dim: int = 64,
        proj_hidden_dim: int | None = 512,
        nesting_dims: list[int] | None = None,
        shared_head: bool = True,
        gamma: float = 0.995,
        alpha: float = 1.0,
        max_inverse_temperature: float = 5.0,
        update_gamma_after_step: int = 1,
        update_gamma_every_n_steps: int = 1,
        image_size: int | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        device: str | torch.device = "cpu",
        random_state: int | np.random.Generator | None = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.cifar_stem = cifar_stem
        self.n_components = n_components
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.proj_out_dim = proj_out_dim
        self.proj_hidden_dim = proj_hidden_dim
        self.nesting_dims = nesting_dims
        self.shared_head = shared_head
        self.gamma = gamma
        self.alpha = alpha
        self.max_inverse_temperature = max_inverse_temperature
        self.update_gamma_after_step = update_gamma_after_step
        self.update_gamma_every_n_steps = update_gamma_every_n_steps
        self.image_size = image_size
        self.precision = precision
        self.channels_last = channels_last
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # --- parameter checks --------------------------------------------------------------------
    def _check_params(self) -> None:
        check_choice(self.backbone, "backbone", RELIC_BACKBONES)
        check_choice(self.cifar_stem, "cifar_stem", (None, True, False))
        if self.n_components is not None:
            check_int(self.n_components, "n_components")
        for name in ("n_epochs", "proj_out_dim", "update_gamma_every_n_steps"):
            check_int(getattr(self, name), name)
        check_int(self.batch_size, "batch_size", minimum=2)
        check_int(self.update_gamma_after_step, "update_gamma_after_step", minimum=0)
        if self.proj_hidden_dim is not None:
            check_int(self.proj_hidden_dim, "proj_hidden_dim")
        if self.image_size is not None:
            check_int(self.image_size, "image_size")
        if self.nesting_dims is not None:
            # types and order now; the largest against the feature size once the backbone exists
            check_nesting_dims(self.nesting_dims, sys.maxsize)
        for name in ("learning_rate", "max_inverse_temperature"):
            check_float(getattr(self, name), name)
        for name in ("weight_decay", "alpha"):
            check_float(getattr(self, name), name, positive=False)
        if not 0.0 <= check_float(self.gamma, "gamma", positive=False) < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        check_choice(self.shared_head, "shared_head", (True, False))
        check_choice(self.channels_last, "channels_last", (True, False))
        check_choice(self.precision, "precision", PRECISIONS)
        self._device()
        self._seed()

    # --- model -------------------------------------------------------------------------------
    def _make_backbone(self, image_side: int) -> tuple[nn.Module, int]:
        if self.backbone in ("resnet18", "resnet50"):
            stem = image_side <= 64 if self.cifar_stem is None else self.cifar_stem
            return _torchvision_resnet(self.backbone, cifar_stem=stem)
        return make_backbone(self.backbone)

    def _build_online(self, image_side: int, seed: int) -> tuple[nn.Sequential, list[int], int]:
        with fork_torch_rng(seed):
            backbone, feature_dim = self._make_backbone(image_side)
            dims = (default_nesting_dims(feature_dim) if self.nesting_dims is None
                    else check_nesting_dims(self.nesting_dims, feature_dim))
            projector = NestedMLPProjector(
                dims, self.proj_out_dim, self.proj_hidden_dim, self.shared_head
            )
        return nn.Sequential(backbone, projector), dims, feature_dim

    def fit(
        self,
        X: Any,
        y: object = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        snapshot_freq: int = 0,
        resume_from: str | os.PathLike | None = None,
        log_every_n_steps: int = 0,
    ) -> "ReLIC":
        """Train on the images ``X``.

        Parameters
        ----------
        X : uint8 array (N, H, W, C), uint8 tensor (N, C, H, W), image-folder path or torch
            Dataset of ``(image, label)`` (see :func:`twinlearn.data.images.load_images`).
        y : ignored
        checkpoint_dir : path, optional
            Created if needed; ``latest_snapshot.safetensors`` after every epoch (plus
            ``snapshot_{epoch}`` every ``snapshot_freq`` epochs) and ``relic_model.safetensors``
            at the end.
        snapshot_freq : int
        resume_from : path, optional
            A checkpoint written by a previous run: weights (online and target), optimizer,
            step (hence γ), RNG and loss history are restored, and training continues.
        log_every_n_steps : int
            Log the loss every this many steps.
        """
        self._check_params()
        check_int(snapshot_freq, "snapshot_freq", minimum=0)
        check_int(log_every_n_steps, "log_every_n_steps", minimum=0)
        if resume_from is not None and not Path(resume_from).is_file():
            raise ValueError(f"resume_from={str(resume_from)!r} is not a checkpoint file")
        images, _ = load_images(X, self.image_size)
        n = images.shape[0]
        if n < 2:
            raise ValueError(f"X holds {n} image(s); ReLIC needs at least 2")
        if self.batch_size > n:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the number of images ({n})"
            )
        device, seed = self._device(), self._seed()
        online, dims, feature_dim = self._build_online(int(images.shape[2]), seed)
        loss = MatryoshkaLoss(ReLICLoss(self.alpha, self.max_inverse_temperature), dims)
        objective = EMATargetObjective(online, loss, backbone_name="0").to(device)
        if self.channels_last:
            objective = objective.to(memory_format=torch.channels_last)
        pairs = AugmentPairSource(
            images, self.batch_size, device, make_generator(seed + 1, device),
            ReLICAugment(channels_last=self.channels_last),
        )
        optimizer = torch.optim.Adam(
            [p for p in objective.parameters() if p.requires_grad],
            lr=self.learning_rate, weight_decay=self.weight_decay,
        )
        # mrl-pytorch's cosine length, "+2" epochs included, so γ never quite reaches 1
        total = len(pairs) * (self.n_epochs + 2) - self.update_gamma_after_step
        ema = EMAUpdate(objective, self.gamma, total, self.update_gamma_after_step,
                        self.update_gamma_every_n_steps)
        trainer = Trainer(
            objective, pairs, optimizer, constant(), self.n_epochs, precision=self.precision,
            callbacks=[ema], checkpoint_dir=checkpoint_dir, snapshot_freq=snapshot_freq,
            checkpoint_meta={"class": "ReLIC"}, verbose=self.verbose, print_every=log_every_n_steps,
        )
        if resume_from is not None:
            trainer.load_checkpoint(resume_from)
            logger.info("resumed from %s at epoch %d (step %d)",
                        resume_from, trainer.epoch, trainer.step)
        trainer.fit()

        self.objective_ = objective
        self.backbone_ = objective.target_backbone().eval()
        self.feature_dim_ = feature_dim
        self.nesting_dims_ = dims
        self.image_size_ = (int(images.shape[2]), int(images.shape[3]))
        self.inverse_temperature_ = float(loss.base_loss.inverse_temperature().detach())
        self.loss_history_ = trainer.loss_history
        self.epoch_seconds_ = trainer.epoch_seconds
        self.n_epochs_trained_ = trainer.epoch
        if checkpoint_dir is not None:
            self.save(Path(checkpoint_dir) / "relic_model.safetensors")
        return self

    # --- transform ---------------------------------------------------------------------------
    @torch.no_grad()
    def transform(self, X: Any, n_components: int | None = None) -> np.ndarray:
        """Backbone features of the EMA target (eval mode), first ``n_components`` columns.

        Parameters
        ----------
        X : images, as in :meth:`fit`; resized to ``image_size_`` when they differ.
        n_components : int, optional
            Prefix size (best at one of ``nesting_dims_``); default: the ``n_components``
            parameter, else all ``feature_dim_`` features.

        Returns
        -------
        ndarray (n_samples, n_components), float32
        """
        check_is_fitted(self, "backbone_")
        m = n_components if n_components is not None else self.n_components
        check_prefix_size(m, self.feature_dim_)
        images, _ = load_images(X, self.image_size_)
        device = next(self.backbone_.parameters()).device
        self.backbone_.eval()
        out = []
        for start in range(0, images.shape[0], TRANSFORM_BATCH):
            x = images[start : start + TRANSFORM_BATCH].to(device).float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(self.backbone_(x)[:, :m].float().cpu())
        return torch.cat(out).numpy()

    # --- model files -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the target backbone (safetensors) with the hyperparameters (JSON); no pickle."""
        check_is_fitted(self, "backbone_")
        self._save(path, {"backbone": self.backbone_}, {
            "feature_dim_": self.feature_dim_, "nesting_dims_": self.nesting_dims_,
            "image_size_": list(self.image_size_),
            "inverse_temperature_": self.inverse_temperature_,
        })

    def load(self, path: str | os.PathLike) -> "ReLIC":
        """Load a model written by :meth:`save`, taking its hyperparameters (not the device)."""
        tensors, meta = self._read_model_file(path)
        with self._restoring_from(path):
            self._take_file_params(meta["params"], path)
            fitted = meta["fitted"]
            height, width = check_image_size(fitted["image_size_"], "image_size_")
            backbone, feature_dim = build_on_meta(lambda: self._make_backbone(height))
            load_state_strict(backbone, split_prefix(tensors, "backbone"), path)
            if check_int(fitted["feature_dim_"], "feature_dim_") != feature_dim:
                raise ValueError(f"{path} says feature_dim_={fitted['feature_dim_']}, but its "
                                 f"{self.backbone} backbone has {feature_dim} features")
            nesting_dims = check_nesting_dims(fitted["nesting_dims_"], feature_dim, "nesting_dims_")
            inverse_temperature = check_float(fitted["inverse_temperature_"], "inverse_temperature_")
        if self.channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        self.backbone_ = backbone.to(self._device()).eval()
        self.feature_dim_ = feature_dim
        self.nesting_dims_ = nesting_dims
        self.image_size_ = (height, width)
        self.inverse_temperature_ = inverse_temperature
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "backbone_")
