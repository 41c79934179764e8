"""Image backbones and heads: torchvision ResNets (with the CIFAR stem), a small CPU-sized CNN,
and the MLP/linear projection heads of SimCLR / t-SimCNE.

``make_backbone(name) -> (module, feature_dim)`` is the one entry point other methods use;
``make_head(kind, in_dim, out_dim)`` builds a head whose last module is a ``nn.Linear`` (t-SimCNE
replaces exactly that layer between its stages).

References
----------
Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020
(CIFAR stem: 3×3 stride-1 first convolution, no max-pool).
Böhm, Berens, Kobak, "Unsupervised visualization of image datasets using contrastive
learning", ICLR 2023 (t-SimCNE).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn as nn

from twinlearn._optional import import_optional
from twinlearn.encoders.inference import run_in_chunks
from twinlearn.encoders.mlp import mlp

BACKBONES = ("resnet18_simclr", "resnet18", "resnet34", "resnet50", "small_cnn")
HEADS = ("mlp", "linear")
#: feature width of each named backbone (small_cnn at its default width 16)
FEATURE_DIMS = {"resnet18_simclr": 512, "resnet18_cifar": 512, "resnet18": 512, "resnet34": 512,
                "resnet50": 2048, "small_cnn": 128}

# The CIFAR-stem ResNets of t-SimCNE v0.3 ("resnet18_simclr" is its default); plain "resnet18"
# is the stock ImageNet model (7×7 stride-2 stem and max-pool), as in the original.
_CIFAR_STEM = {"resnet18_simclr": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50"}


def _torchvision_resnet(arch: str, cifar_stem: bool) -> tuple[nn.Module, int]:
    models = import_optional("torchvision.models")
    net = getattr(models, arch)(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def small_cnn(width: int = 16) -> tuple[nn.Module, int]:
    """A 6-convolution network (~9 M multiply-adds per 32×32 image at width 16, ~60× less than the CIFAR
    ResNet-18) so t-SimCNE is usable on a CPU. Returns ``(module, feature_dim)``."""

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]

    w = width
    layers = [
        *block(3, w, 1),
        *block(w, 2 * w, 2),
        *block(2 * w, 2 * w, 1),
        *block(2 * w, 4 * w, 2),
        *block(4 * w, 4 * w, 1),
        *block(4 * w, 8 * w, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net, 8 * w


def make_backbone(name: str) -> tuple[nn.Module, int]:
    """Build a backbone by name; returns ``(module, feature_dim)``.

    The module maps images ``(N, 3, H, W)`` to features ``(N, feature_dim)``.

    Parameters
    ----------
    name : {"resnet18_simclr", "resnet18", "resnet34", "resnet50", "small_cnn"}
        ``"resnet18_simclr"`` (alias ``"resnet18_cifar"``), ``"resnet34"`` and ``"resnet50"``
        use the CIFAR stem (3×3 stride-1 conv, no max-pool); ``"resnet18"`` is the stock
        torchvision model; ``"small_cnn"`` is the CPU-sized network of :func:`small_cnn`.
        Weights are always freshly initialised (nothing is downloaded).
    """
    if name == "resnet18_cifar":
        name = "resnet18_simclr"
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is not known; choose one of {BACKBONES} or pass an nn.Module")
    if name == "small_cnn":
        return small_cnn()
    if name == "resnet18":
        return _torchvision_resnet("resnet18", cifar_stem=False)
    return _torchvision_resnet(_CIFAR_STEM[name], cifar_stem=True)


def make_head(kind: str, in_dim: int, out_dim: int, hidden_dim: int = 1024) -> nn.Sequential:
    """Projection head: ``"mlp"`` = Linear(in, hidden) → ReLU → Linear(hidden, out) (SimCLR,
    t-SimCNE), ``"linear"`` = Linear(in, out). The last module is always the output Linear."""
    if kind in HEADS:
        return mlp([in_dim, hidden_dim, out_dim] if kind == "mlp" else [in_dim, out_dim])
    raise ValueError(f"projection_head={kind!r} is not known; choose one of {HEADS} or pass an nn.Module")


@torch.no_grad()
def infer_feature_dim(module: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Width of a user backbone's output, found with one dummy forward pass in eval mode."""
    was_training = module.training
    module.eval()
    try:
        device = next(module.parameters()).device
        out = module(torch.zeros((1, *image_shape), device=device))
    finally:
        module.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"the backbone must return (N, features); it returned shape {tuple(out.shape)}")
    return int(out.shape[1])


class ImageEmbedder(nn.Module):
    """``backbone`` then ``head``: ``forward(x) -> z``; ``features(x) -> h`` (the backbone's
    output, t-SimCNE's ``return_backbone_feat``)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @property
    def out_dim(self) -> int:
        return self.last_linear().out_features

    def last_linear(self) -> nn.Linear:
        """The head's output layer."""
        last = self.head[-1] if isinstance(self.head, nn.Sequential) else None
        if not isinstance(last, nn.Linear):
            raise TypeError("the projection head must be an nn.Sequential ending in an nn.Linear")
        return last

    @torch.no_grad()
    def embed(self, batches: Iterable[torch.Tensor], n_rows: int, n_components: int | None = None,
              with_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Outputs (their first ``n_components`` columns), and with ``with_features`` the
        backbone features, of ``n_rows`` images given in float batches; eval mode."""

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            h = self.features(x)
            y = self.head(h)[:, :n_components]
            return (y, h) if with_features else (y,)

        return run_in_chunks(forward, batches, n_rows, module=self)

    def replace_last_linear(self, out_dim: int, std: float, generator: torch.Generator | None = None) -> None:
        """A fresh output layer ``Linear(in, out_dim)`` with weights drawn from N(0, std²)
        (t-SimCNE stage 2 uses std 1) and PyTorch's default bias init."""
        old = self.last_linear()
        # skip_init: the default init would consume torch's global RNG
        new = nn.utils.skip_init(nn.Linear, old.in_features, out_dim, device=old.weight.device)
        with torch.no_grad():
            new.weight.normal_(0.0, std, generator=generator)
            bound = 1.0 / old.in_features**0.5
            new.bias.uniform_(-bound, bound, generator=generator)
        self.head[-1] = new


def image_embedder(
    model: nn.Module | None,
    backbone: str | nn.Module,
    head: str | nn.Module,
    out_dim: int,
    image_shape: tuple[int, int, int],
) -> ImageEmbedder:
    """t-SimCNE's network: a copy of ``model`` (with ``.backbone`` and ``.head``), or a named or
    given backbone with a named (``"mlp"``/``"linear"`` to ``out_dim``) or given head. Modules
    are deep-copied, so the caller's stay untouched; initialise under a forked, seeded RNG."""
    if model is not None:
        model = copy.deepcopy(model)
        return ImageEmbedder(model.backbone, model.head)
    if isinstance(backbone, nn.Module):
        backbone = copy.deepcopy(backbone)
        feature_dim = infer_feature_dim(backbone, image_shape)
    else:
        backbone, feature_dim = make_backbone(backbone)
    head = copy.deepcopy(head) if isinstance(head, nn.Module) else make_head(head, feature_dim, out_dim)
    return ImageEmbedder(backbone, head)
