"""Losses over a batch of positive pairs."""

from twinlearn.losses.barlow_twins import BarlowTwinsLoss
from twinlearn.losses.contrastive import LOSS_MODES, ContrastiveLoss, sample_negatives
from twinlearn.losses.matryoshka import MatryoshkaLoss
from twinlearn.losses.relic import ReLICLoss

__all__ = [
    "BarlowTwinsLoss",
    "ContrastiveLoss",
    "LOSS_MODES",
    "MatryoshkaLoss",
    "ReLICLoss",
    "sample_negatives",
]
