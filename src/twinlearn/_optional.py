"""Lazy import of optional dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

_EXTRA_OF = {
    "matplotlib": "plot",
    "plotly": "plot",
    "torchvision": "vision",
    "PIL": "vision",
    "pandas": "tables",
    "pyarrow": "tables",
    "anndata": "anndata",
    "h5py": "hdf5",
    "zarr": "zarr",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def import_optional(module: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = _EXTRA_OF.get(top)
        hint = f"pip install 'twinlearn[{extra}]'" if extra else f"pip install {top}"
        raise ImportError(f"{module!r} is needed for this feature: {hint}") from err
