"""Pair sources: where positive pairs come from."""

from twinlearn.pairs.base import PairSource
from twinlearn.pairs.knn import EdgePairSource, KNNPairSource
from twinlearn.pairs.labels import LabelAwarePairSource
from twinlearn.pairs.loader import LoaderPairSource

__all__ = ["EdgePairSource", "KNNPairSource", "LabelAwarePairSource", "LoaderPairSource", "PairSource"]
