"""Losses over a batch of positive pairs."""

from twinlearn.losses.barlow_twins import BarlowTwinsLoss
from twinlearn.losses.contrastive import LOSS_MODES, ContrastiveLoss, sample_negatives

__all__ = ["BarlowTwinsLoss", "ContrastiveLoss", "LOSS_MODES", "sample_negatives"]
