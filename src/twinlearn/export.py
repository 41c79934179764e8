"""ONNX export of fitted encoders: :func:`export_onnx` writes the network of a fitted TLDR,
parametric CNE, TSimCNE or ReLIC as an ONNX graph (batch size free) that onnxruntime, or any
ONNX runtime, serves without PyTorch (torch is imported inside it only). For serving without
any runtime but NumPy, see :mod:`twinlearn.numpy_encoder`."""

from __future__ import annotations

import io as _bytes_io
import os
import warnings
from pathlib import Path
from typing import Any

#: ONNX opset written by default: LayerNormalization is native from 17; the TorchScript exporter
#: writes up to 20, and onnxruntime 1.17+ runs 17
DEFAULT_OPSET = 17
_MAX_TORCHSCRIPT_OPSET = 20


def _onnx_network(estimator: Any) -> tuple[Any, tuple[int, ...], int | None]:
    """The fitted network of ``estimator``, one input row's shape, and the default prefix size
    of its ``transform`` (``None``: every output)."""
    from sklearn.utils.validation import check_is_fitted

    import twinlearn

    if isinstance(estimator, twinlearn.TLDR):
        check_is_fitted(estimator, "encoder_")
        return estimator.encoder_, (estimator.n_features_in_,), None
    if isinstance(estimator, twinlearn.CNE):
        if not estimator.parametric:
            raise TypeError("a non-parametric CNE has no encoder to export: it places new points "
                            "by optimisation against the training embedding; use parametric=True")
        check_is_fitted(estimator, "model_")
        return estimator.model_, (estimator.n_features_in_,), None
    if isinstance(estimator, twinlearn.TSimCNE):
        check_is_fitted(estimator, "model_")
        return estimator.model_, (3, *estimator.image_size_), None
    if isinstance(estimator, twinlearn.ReLIC):
        check_is_fitted(estimator, "backbone_")
        return estimator.backbone_, (3, *estimator.image_size_), estimator.n_components
    raise TypeError(f"export_onnx takes a fitted TLDR, CNE(parametric=True), TSimCNE or ReLIC, "
                    f"got {type(estimator).__name__}")


def _with_prefix(network: Any, n_components: int | None) -> Any:
    """``network`` followed by keeping the first ``n_components`` outputs (as ``transform``)."""
    from torch import nn

    class FirstColumns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x):
            return self.network(x)[:, :n_components]

    return network if n_components is None else FirstColumns()


def export_onnx(
    estimator: Any, path: str | os.PathLike, *, n_components: int | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """Write the network of a fitted estimator as an ONNX model with a free batch size.

    The graph maps input ``"input"`` to output ``"embedding"``, as the estimator's
    ``transform``: feature rows ``(n, n_features_in_)`` float32 for TLDR and parametric CNE;
    images ``(n, 3, H, W)`` float32 in [0, 1] (``H, W = image_size_``; uint8 pixels divided by
    255, no other normalisation) for TSimCNE and ReLIC. Normalisation layers run in eval mode.

    Parameters
    ----------
    estimator : fitted TLDR, CNE(parametric=True), TSimCNE or ReLIC
    path : path-like
        Written atomically.
    n_components : int, optional
        Keep the first ``n_components`` outputs; default as ``transform`` (ReLIC: its
        ``n_components`` parameter; the others: everything).
    opset : int, default=17
        ONNX opset, 13 to 20 (PyTorch's TorchScript exporter, used because the newer one needs
        onnxscript).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        Not one of these estimators, or a non-parametric CNE (no encoder).
    ValueError
        ``opset`` or ``n_components`` out of range.
    sklearn.exceptions.NotFittedError
        The estimator is not fitted.
    ImportError
        The ``onnx`` package is missing.
    """
    from twinlearn._optional import import_optional
    from twinlearn.estimators._base import check_int
    from twinlearn.io import atomic_write_bytes, check_path

    path = check_path(path)
    if check_int(opset, "opset", minimum=13) > _MAX_TORCHSCRIPT_OPSET:
        raise ValueError(f"opset={opset}: PyTorch's TorchScript exporter writes opsets up to "
                         f"{_MAX_TORCHSCRIPT_OPSET}")
    network, row_shape, default_prefix = _onnx_network(estimator)
    import_optional("onnx")  # torch.onnx.export needs it; the hint says how to install it
    prefix = default_prefix if n_components is None else n_components
    atomic_write_bytes(path, _trace(network, row_shape, prefix, opset))
    return path


def _trace(network: Any, row_shape: tuple[int, ...], prefix: int | None, opset: int) -> bytes:
    """The ONNX bytes of ``network`` (eval mode, its training flag restored) whose output keeps
    the first ``prefix`` columns."""
    import torch

    from twinlearn.estimators._base import check_prefix_size

    example = torch.zeros((2, *row_shape), device=next(network.parameters()).device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            check_prefix_size(prefix, network(example).shape[1])
        buffer = _bytes_io.BytesIO()
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated, but the dynamo one needs onnxscript
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
            warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
            torch.onnx.export(
                _with_prefix(network, prefix), (example,), buffer, dynamo=False,
                opset_version=opset, input_names=["input"], output_names=["embedding"],
                dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                training=torch.onnx.TrainingMode.EVAL,
            )
    finally:
        network.train(was_training)
    return buffer.getvalue()
