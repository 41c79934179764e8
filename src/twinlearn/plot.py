"""Maps of 2-D embeddings, coloured by label with a legend: a picture with matplotlib
(:func:`plot_embedding`) and an interactive HTML page with plotly (:func:`plot_embedding_html`,
hover shows label and index). Both need ``pip install 'twinlearn[plot]'``.

Large maps stay legible. Below ``DENSITY_THRESHOLD`` points the picture is a scatter whose
point size and opacity shrink with N, drawn in random order so that no class hides under the
one drawn last. From ``DENSITY_THRESHOLD`` points on, the points are aggregated on the pixel
grid, as datashader does: each pixel takes the mean colour of the points in it and an opacity
that grows with the log of their count, so dense cores and sparse outskirts both show.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinlearn._optional import import_optional

DENSITY_THRESHOLD = 100_000
#: legends longer than this are left out (with a warning): they would hide the map
MAX_LEGEND = 60
#: the HTML map switches from SVG to WebGL markers above this many points
WEBGL_THRESHOLD = 20_000


def label_codes(
    labels: Sequence | np.ndarray, class_names: Sequence[str] | Mapping | None = None
) -> tuple[np.ndarray, list[str]]:
    """Integer codes ``0..K-1`` of ``labels`` (sorted classes) and the legend name of each.

    ``class_names`` is a sequence naming integer labels ``0..K-1`` (CIFAR-10's class names), or
    a mapping ``{label: name}`` for labels of any type; without it a label names itself.
    """
    labels = np.asarray(labels)
    classes, codes = np.unique(labels, return_inverse=True)
    if classes.dtype.kind in "US":  # text in natural order: "class 2" before "class 10"
        order = sorted(range(len(classes)), key=lambda i: _natural_key(str(classes[i])))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        classes, codes = classes[order], rank[codes.reshape(-1)]
    if class_names is None:
        return codes, [str(c) for c in classes]
    if isinstance(class_names, Mapping):
        return codes, [str(class_names.get(c.item(), c)) for c in classes]
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"class_names (a sequence) names integer labels 0..K-1, but the labels are "
            f"{classes.dtype} values such as {classes[0].item()!r}: pass a dict {{label: name}} "
            "or leave class_names out (the labels then name themselves)"
        )
    if classes[0] < 0 or classes[-1] >= len(class_names):
        raise ValueError(
            f"labels run from {classes[0]} to {classes[-1]}, but class_names has "
            f"{len(class_names)} names"
        )
    return codes, [str(class_names[int(c)]) for c in classes]


def _natural_key(text: str) -> list:
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)
    ]


def palette(k: int) -> np.ndarray:
    """``k`` RGBA colours: tab10 or tab20, else evenly spaced hues of turbo."""
    import_optional("matplotlib")
    from matplotlib import colormaps

    if k <= 20:
        cmap = colormaps["tab10" if k <= 10 else "tab20"]
        return np.asarray([cmap(i) for i in range(k)])
    return colormaps["turbo"](np.linspace(0.05, 0.95, k))


def _classes(
    labels: Any, class_names: Sequence[str] | Mapping | None, n: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Class codes, legend names and colours; one black class without labels."""
    if labels is None:
        return np.zeros(n, dtype=np.int64), [], np.asarray([[0.0, 0.0, 0.0, 1.0]])
    codes, names = label_codes(labels, class_names)
    return codes, names, palette(len(names))


def _check(Y: np.ndarray, labels: Any) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != 2:
        raise ValueError(f"Y must have shape (N, 2), got {Y.shape}")
    if not np.isfinite(Y).all():
        raise ValueError("Y contains NaN or infinity")
    if labels is not None and len(labels) != len(Y):
        raise ValueError(f"labels has {len(labels)} entries for {len(Y)} points")
    return Y


def _limits(Y: np.ndarray, tail: float = 0.0) -> tuple[float, float, float, float]:
    """Limits spanning the ``tail``..``1 - tail`` quantiles of each axis with a 3 % margin (a
    unit span for a single point)."""
    low, high = np.quantile(Y, [tail, 1 - tail], axis=0) if tail else (Y.min(axis=0), Y.max(axis=0))
    span = np.where(high > low, high - low, 1.0)
    low, high = low - 0.03 * span, high + 0.03 * span
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


def density_image(
    Y: np.ndarray, colours: np.ndarray, pixels: int = 800
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Aggregate points on a grid of about ``pixels`` pixels along the longer side.

    The grid spans the 0.05–99.95 % quantiles of each axis (and a margin), so that a handful of
    far outliers cannot shrink the map into a corner; points beyond are left out.

    Parameters
    ----------
    Y : array (N, 2)
    colours : array (N, 4)
        Each point's RGBA colour.
    pixels : int

    Returns
    -------
    image : array (H, W, 4)
        Mean colour of the points in each pixel; alpha ``0.3 + 0.7·log(1+c)/log(1+max c)``
        for a pixel with ``c`` points, 0 where there are none. Row 0 is the bottom.
    extent : (x0, x1, y0, y1)
    """
    x0, x1, y0, y1 = _limits(Y, tail=5e-4)
    scale = pixels / max(x1 - x0, y1 - y0)
    width, height = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    col = np.floor((Y[:, 0] - x0) * scale).astype(np.int64)
    row = np.floor((Y[:, 1] - y0) * scale).astype(np.int64)
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    cell = row[inside] * width + col[inside]
    counts = np.bincount(cell, minlength=width * height).astype(np.float64)
    image = np.zeros((width * height, 4))
    filled = counts > 0
    for channel in range(3):
        sums = np.bincount(cell, colours[inside, channel], width * height)
        image[filled, channel] = sums[filled] / counts[filled]
    image[filled, 3] = 0.3 + 0.7 * np.log1p(counts[filled]) / np.log1p(counts.max())
    return image.reshape(height, width, 4), (x0, x1, y0, y1)


def _legend(ax: Any, names: list[str], colours: np.ndarray) -> None:
    from matplotlib.lines import Line2D

    if len(names) > MAX_LEGEND:
        warnings.warn(
            f"{len(names)} classes: the legend is left out (at most {MAX_LEGEND})", stacklevel=3
        )
        return
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=6, color=colours[i], label=name)
        for i, name in enumerate(names)
    ]
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        fontsize=8,
        ncols=1 + len(names) // 21,
        handletextpad=0.2,
    )


def _scatter(ax: Any, Y: np.ndarray, colours: np.ndarray, point_size: float | None) -> None:
    """Points whose size and opacity shrink with N, in random order so that no class is drawn
    wholly on top of another."""
    n = len(Y)
    order = np.random.default_rng(0).permutation(n)
    size = point_size if point_size is not None else float(np.clip(2e4 / max(n, 1), 0.5, 30))
    alpha = float(np.clip(np.sqrt(2e4 / max(n, 1)), 0.3, 1.0))
    ax.scatter(*Y[order].T, s=size, c=colours[order], alpha=alpha, linewidths=0, rasterized=True)


def plot_embedding(
    Y: np.ndarray,
    labels: Sequence | np.ndarray | None = None,
    path: str | os.PathLike | None = None,
    *,
    class_names: Sequence[str] | Mapping | None = None,
    title: str | None = None,
    point_size: float | None = None,
    dpi: int = 150,
    density: bool | None = None,
):
    """Draw ``Y`` (N, 2) coloured by ``labels``, with a legend; save to ``path`` if given.

    Parameters
    ----------
    Y : array (N, 2)
    labels : array (N,), optional
        Classes of any type (integers, strings); one colour each, named in the legend.
    path : path-like, optional
        Picture to write (``.png``, ``.pdf``, ``.svg``; the folder must exist).
    class_names : sequence of str or mapping, optional
        Legend names: a sequence for integer labels ``0..K-1``, a mapping for any labels.
    title : str, optional
    point_size : float, optional
        Marker area of the scatter; default shrinks with N.
    dpi : int
    density : bool, optional
        Aggregate the points on the pixel grid (see the module docstring); default: from
        ``DENSITY_THRESHOLD`` points on.

    Returns
    -------
    matplotlib.figure.Figure
    """
    Y = _check(Y, labels)
    if path is not None and Path(path).suffix.lower() == ".html":
        raise ValueError("an .html map is drawn by plot_embedding_html")
    if path is not None:
        import_optional("matplotlib").use("Agg", force=False)  # no window when writing a file
    plt = import_optional("matplotlib.pyplot")
    n = len(Y)
    codes, names, colours = _classes(labels, class_names, n)
    fig, ax = plt.subplots(figsize=(7.5 if names else 6, 6), dpi=dpi, layout="constrained")
    if density if density is not None else n >= DENSITY_THRESHOLD:
        image, extent = density_image(Y, colours[codes], pixels=round(4.5 * dpi))
        ax.imshow(image, extent=extent, origin="lower", interpolation="nearest")
    else:
        _scatter(ax, Y, colours[codes], point_size)
    if names:
        _legend(ax, names, colours)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_axis_off()  # coordinates of an embedding mean nothing on their own
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig


def plot_embedding_html(
    Y: np.ndarray,
    labels: Sequence | np.ndarray | None = None,
    path: str | os.PathLike | None = None,
    *,
    class_names: Sequence[str] | Mapping | None = None,
    title: str | None = None,
):
    """An interactive map of ``Y`` (N, 2): zoom, pan, a legend that hides classes on click, and
    the label and row index of the point under the mouse.

    Parameters
    ----------
    Y : array (N, 2)
    labels : array (N,), optional
    path : path-like, optional
        ``.html`` file to write; it holds plotly's JavaScript, so it opens offline.
    class_names : sequence of str or mapping, optional
        As in :func:`plot_embedding`.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    Y = _check(Y, labels)
    go = import_optional("plotly.graph_objects")
    n = len(Y)
    codes, names, colours = _classes(labels, class_names, n)
    Scatter = go.Scattergl if n > WEBGL_THRESHOLD else go.Scatter
    marker = {"size": float(np.clip(150 / np.sqrt(max(n, 1)), 2, 8)), "opacity": 0.8}
    # the trace name is the label: no label text is parsed as part of the template
    hover = ("label: %{fullData.name}<br>" if labels is not None else "") + "index: %{customdata}"
    fig = go.Figure()
    for k, name in enumerate(names or [""]):
        rows = np.flatnonzero(codes == k)
        rgb = ",".join(str(round(255 * c)) for c in colours[k][:3])
        fig.add_trace(Scatter(
            x=Y[rows, 0], y=Y[rows, 1], mode="markers", name=name, customdata=rows,
            marker={**marker, "color": f"rgb({rgb})"}, hovertemplate=hover + "<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(
        title=title,
        template="plotly_white",
        showlegend=labels is not None,
        legend={"itemsizing": "constant"},
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"visible": False},
        yaxis={"visible": False, "scaleanchor": "x"},
    )
    if path is not None:
        fig.write_html(path, include_plotlyjs=True, full_html=True)
    return fig
