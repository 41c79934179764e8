"""Scatter plot of a 2-D embedding coloured by label, written to a PNG (needs matplotlib:
``pip install 'twinlearn[plot]'``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from twinlearn._optional import import_optional


def plot_embedding(
    Y: np.ndarray,
    labels: np.ndarray | None = None,
    path: str | os.PathLike | None = None,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    point_size: float | None = None,
    dpi: int = 150,
):
    """Draw ``Y`` (N, 2) as a scatter coloured by ``labels``; save to ``path`` if given.

    Parameters
    ----------
    Y : array (N, 2)
    labels : array (N,), optional
        Integer or string classes; one colour each (tab10/tab20), with a legend.
    path : path-like, optional
        PNG file to write (the folder must exist).
    class_names : sequence of str, optional
        Legend names for integer labels ``0..K-1``.
    title : str, optional
    point_size : float, optional
        Marker area; default shrinks with N.
    dpi : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[1] != 2:
        raise ValueError(f"Y must have shape (N, 2), got {Y.shape}")
    if labels is not None and len(labels) != len(Y):
        raise ValueError(f"labels has {len(labels)} entries for {len(Y)} points")
    matplotlib = import_optional("matplotlib")
    if path is not None:
        matplotlib.use("Agg", force=False)
    plt = import_optional("matplotlib.pyplot")
    size = point_size if point_size is not None else max(0.5, min(20.0, 2e4 / max(len(Y), 1)))
    fig, ax = plt.subplots(figsize=(6, 6))
    if labels is None:
        ax.scatter(Y[:, 0], Y[:, 1], s=size, c="k", linewidths=0, rasterized=True)
    else:
        classes = np.unique(labels)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, cls in enumerate(classes):
            sel = np.asarray(labels) == cls
            name = class_names[int(cls)] if class_names is not None else str(cls)
            ax.scatter(Y[sel, 0], Y[sel, 1], s=size, color=cmap(i % cmap.N), label=name, linewidths=0, rasterized=True)
        if len(classes) <= 20:
            ax.legend(markerscale=max(1.0, 6 / size**0.5), fontsize=7, loc="best", frameon=False)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig
