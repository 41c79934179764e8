"""Array adapters and real-data loaders."""

from twinlearn.data.arrays import FeatureStore, validate_features
from twinlearn.data.datasets import find_shared_data, load_mnist

__all__ = ["FeatureStore", "validate_features", "find_shared_data", "load_mnist"]
