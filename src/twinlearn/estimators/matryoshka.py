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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.utils.validation import check_is_fitted

from twinlearn._checks import check_float, check_int, one_of
from twinlearn._device import fork_torch_rng, make_generator
from twinlearn.data.images import check_image_size, image_batches, load_images
from twinlearn.encoders.inference import run_in_chunks
from twinlearn.encoders.matryoshka import (
    NestedMLPProjector,
    check_nesting_dims,
    default_nesting_dims,
)
from twinlearn.encoders.vision import BACKBONES, FEATURE_DIMS, _torchvision_resnet, make_backbone
from twinlearn.estimators._base import (
    TwinlearnEstimator,
    build_on_meta,
    check_prefix_size,
    load_state_strict,
)
from twinlearn.estimators._params import (
    BOOLEAN,
    DEVICE,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGE_SIDE,
    MAX_LEARNING_RATE,
    MAX_WIDTH,
    NESTING_DIMS,
    PRECISION,
    SEED,
    VERBOSE,
    Integer,
    Options,
    Real,
    none_or,
)
from twinlearn.io import split_prefix
from twinlearn.losses import MatryoshkaLoss, ReLICLoss
from twinlearn.pairs.augment import AugmentPairSource
from twinlearn.pairs.relic_augment import ReLICAugment
from twinlearn.training import Trainer, constant
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
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Autocast dtype of the training forward pass (``"fp16"`` with loss scaling on CUDA);
        ``"auto"``: bf16 where native (AMX/AVX512-BF16 CPU, GPU), else fp32.
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
    precision_ : {"fp32", "bf16", "fp16"}
        The precision the networks trained in (what ``"auto"`` resolved to).
    """

    #: bf16 kept fp32's quality at equal epochs (benchmarks/RESULTS.md, bf16_quality.py)
    _auto_bf16 = True

    def __init__(
        self, backbone: str = "resnet18", cifar_stem: bool | None = None,
        n_components: int | None = None, n_epochs: int = 100, batch_size: int = 256,
        learning_rate: float = 3e-4, weight_decay: float = 1e-5, proj_out_dim: int = 64,
        proj_hidden_dim: int | None = 512, nesting_dims: list[int] | None = None,
        shared_head: bool = True, gamma: float = 0.995, alpha: float = 1.0,
        max_inverse_temperature: float = 5.0, update_gamma_after_step: int = 1,
        update_gamma_every_n_steps: int = 1, image_size: int | None = None,
        precision: str = "auto", channels_last: bool = False, device: str | torch.device = "cpu",
        random_state: int | np.random.Generator | None = None, verbose: int = 0,
    ) -> None:
        self._store_init_args(locals())

    _parameter_constraints = {
        "backbone": Options(RELIC_BACKBONES),
        "cifar_stem": Options((None, True, False)),
        "n_components": none_or(Integer(1, MAX_WIDTH)),
        "n_epochs": Integer(1, MAX_EPOCHS),
        "batch_size": Integer(2, MAX_BATCH),
        "learning_rate": Real(0.0, MAX_LEARNING_RATE),
        "weight_decay": Real(0.0, strict=False),
        "proj_out_dim": Integer(1, MAX_WIDTH),
        "proj_hidden_dim": none_or(Integer(1, MAX_WIDTH)),
        "nesting_dims": NESTING_DIMS,
        "shared_head": BOOLEAN,
        "gamma": Real(0.0, 1.0 - 1e-12, strict=False),
        "alpha": Real(0.0, strict=False),
        "max_inverse_temperature": Real(0.0, 1e6),
        "update_gamma_after_step": Integer(0),
        "update_gamma_every_n_steps": Integer(1),
        "image_size": none_or(Integer(1, MAX_IMAGE_SIDE)),
        "precision": PRECISION,
        "channels_last": BOOLEAN,
        "device": DEVICE,
        "random_state": SEED,
        "verbose": VERBOSE,
    }
    _final_model_name = "relic_model.safetensors"

    def _check_param_relations(self) -> None:
        if self.n_components is not None and self.nesting_dims is not None and self.n_components > self.nesting_dims[-1]:
            raise ValueError(f"n_components={self.n_components} exceeds the largest nesting dim "
                             f"{self.nesting_dims[-1]}")
        if self.n_components is not None and self.backbone in FEATURE_DIMS and self.n_components > FEATURE_DIMS[self.backbone]:
            raise ValueError(f"n_components={self.n_components} exceeds the {FEATURE_DIMS[self.backbone]} "
                             f"features of backbone={self.backbone!r}")

    def _output_width(self) -> int:
        return self.n_components if self.n_components is not None else self.feature_dim_

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
        output_folder: str | os.PathLike | None = None,
        resume: bool = False,
        snapshot_freq: int = 0,
        log_every_n_steps: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
        resume_from: str | os.PathLike | None = None,
    ) -> "ReLIC":
        """Train on the images ``X``.

        Parameters
        ----------
        X : uint8 array (N, H, W, C), uint8 tensor (N, C, H, W), image-folder path or torch
            Dataset of ``(image, label)`` (see :func:`twinlearn.data.images.load_images`).
        y : ignored
        output_folder : path, optional
            Created if needed; ``latest_snapshot.safetensors`` after every epoch (plus
            ``snapshot_{epoch}`` every ``snapshot_freq`` epochs) and ``relic_model.safetensors``
            at the end. ``checkpoint_dir`` (mrl-pytorch's name) is accepted for it.
        resume : bool
            Continue from ``output_folder``'s latest snapshot: weights (online and target),
            optimizer, step (hence γ), RNG and loss history are restored.
        snapshot_freq : int
        log_every_n_steps : int
            Log the loss every this many steps.
        resume_from : path, optional
            mrl-pytorch's way to resume: a checkpoint file written by a previous run.
        """
        self._validate_params()
        output_folder = one_of(output_folder, checkpoint_dir, "output_folder", "checkpoint_dir")
        self._check_run_options(output_folder, resume, snapshot_freq)
        check_int(log_every_n_steps, "log_every_n_steps", minimum=0)
        if resume_from is not None and not Path(resume_from).is_file():
            raise ValueError(f"resume_from={str(resume_from)!r} is not a checkpoint file")
        images, _ = load_images(X, self.image_size)
        n = images.shape[0]
        if n < 2:
            raise ValueError(f"X holds {n} image(s); ReLIC needs at least 2")
        if self.batch_size > n:
            raise ValueError(f"batch_size={self.batch_size} is larger than the number of images ({n})")
        device, seed = self._device(), self._seed()
        online, dims, feature_dim = self._build_online(int(images.shape[2]), seed)
        loss = MatryoshkaLoss(ReLICLoss(self.alpha, self.max_inverse_temperature), dims)
        objective = EMATargetObjective(online, loss, backbone_name="0").to(device)
        if self.channels_last:
            objective = objective.to(memory_format=torch.channels_last)
        pairs = AugmentPairSource(images, self.batch_size, device, make_generator(seed + 1, device),
                                  ReLICAugment(channels_last=self.channels_last))
        optimizer = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad],
                                     lr=self.learning_rate, weight_decay=self.weight_decay)
        # mrl-pytorch's cosine length, "+2" epochs included, so γ never quite reaches 1
        total = len(pairs) * (self.n_epochs + 2) - self.update_gamma_after_step
        ema = EMAUpdate(objective, self.gamma, total, self.update_gamma_after_step,
                        self.update_gamma_every_n_steps)
        trainer = Trainer(objective, pairs, optimizer, constant(), self.n_epochs,
                          precision=self._precision(device), callbacks=[ema], verbose=self.verbose,
                          print_every=log_every_n_steps)

        def keep(trainer: Trainer) -> None:
            self.objective_ = objective
            self.backbone_ = objective.target_backbone().eval()
            self.feature_dim_, self.nesting_dims_ = feature_dim, dims
            self.image_size_ = (int(images.shape[2]), int(images.shape[3]))
            self.inverse_temperature_ = float(loss.base_loss.inverse_temperature().detach())
            self.epoch_seconds_ = trainer.epoch_seconds

        self._run_training(trainer, images, keep, output_folder=output_folder,
                           resume=resume_from if resume_from is not None else resume,
                           snapshot_freq=snapshot_freq)
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
        batches = image_batches(images, TRANSFORM_BATCH, device, self.channels_last)
        return run_in_chunks(lambda x: self.backbone_(x)[:, :m], batches, images.shape[0],
                             module=self.backbone_).cpu().numpy()

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
        return self._load_file(path, init=True)

    def _restore(self, tensors: dict[str, torch.Tensor], fitted: dict[str, Any], path: str | os.PathLike) -> dict:
        height, width = check_image_size(fitted["image_size_"], "image_size_")
        backbone, feature_dim = build_on_meta(lambda: self._make_backbone(height))
        load_state_strict(backbone, split_prefix(tensors, "backbone"), path)
        if check_int(fitted["feature_dim_"], "feature_dim_") != feature_dim:
            raise ValueError(f"{path} says feature_dim_={fitted['feature_dim_']}, but its "
                             f"{self.backbone} backbone has {feature_dim} features")
        return {
            "backbone_": backbone, "feature_dim_": feature_dim,
            "nesting_dims_": check_nesting_dims(fitted["nesting_dims_"], feature_dim, "nesting_dims_"),
            "image_size_": (height, width),
            "inverse_temperature_": check_float(fitted["inverse_temperature_"], "inverse_temperature_"),
        }

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "backbone_")
