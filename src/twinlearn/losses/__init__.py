"""Losses over a batch of positive pairs."""

from twinlearn.losses.barlow_twins import BarlowTwinsLoss

__all__ = ["BarlowTwinsLoss"]
