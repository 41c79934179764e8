"""Pair sources: where positive pairs come from."""

from twinlearn.pairs.base import PairSource
from twinlearn.pairs.knn import EdgePairSource, KNNPairSource

__all__ = ["EdgePairSource", "KNNPairSource", "PairSource"]
