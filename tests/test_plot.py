"""Maps: labelled legends, density-aware pictures of large embeddings, and the interactive HTML
map rendered in a headless browser (skipped where no Chromium is installed)."""

import shutil
import subprocess

import numpy as np
import pytest

from twinlearn.plot import (
    DENSITY_THRESHOLD,
    label_codes,
    palette,
    plot_embedding,
    plot_embedding_html,
)

pytest.importorskip("matplotlib")


def _two_blobs(n: int):
    """Class "left" around (-5, 0), class "right" around (5, 0), nothing near (0, 5)."""
    rng = np.random.default_rng(0)
    labels = np.where(np.arange(n) % 2 == 0, "left", "right")
    Y = rng.normal(scale=0.7, size=(n, 2)) + np.where(labels == "left", -5.0, 5.0)[:, None] * [1, 0]
    return Y, labels


def _share(fig, image, point, rgb, tolerance):
    """The share of the 11 × 11 pixels of ``image`` (read back from the PNG) around where the
    data point ``point`` was drawn that have the colour ``rgb``."""
    x, y = fig.axes[0].transData.transform(point)
    row, col = image.shape[0] - 1 - round(y), round(x)
    patch = image[row - 5 : row + 6, col - 5 : col + 6, :3]
    return float((np.abs(patch - np.asarray(rgb)).max(axis=2) <= tolerance).mean())


@pytest.mark.parametrize("n", [2000, DENSITY_THRESHOLD])
def test_png_shows_each_class_in_its_colour_where_its_points_are(tmp_path, n):
    import matplotlib.image

    Y, labels = _two_blobs(n)
    path = tmp_path / "map.png"
    fig = plot_embedding(Y, labels, path, dpi=80, title="blobs")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (6 * 80, 7.5 * 80)
    left, right = palette(2)[:, :3]
    # the centre of a blob is dense: mostly its class colour (little white, none of the other)
    for centre, mine, other in (((-5, 0), left, right), ((5, 0), right, left)):
        assert _share(fig, image, centre, mine, 0.35) > 0.5
        assert _share(fig, image, centre, other, 0.35) == 0
    assert _share(fig, image, (0, 4), (1, 1, 1), 0.01) == 1  # no point there: background
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["left", "right"]
    assert ax.get_title() == "blobs"
    # from the threshold on, the points are aggregated into one image instead of drawn
    assert len(ax.images) == (1 if n >= DENSITY_THRESHOLD else 0)


def test_density_image_counts_and_colours():
    from twinlearn.plot import density_image

    Y = np.array([[0.0, 0.0]] * 9 + [[10.0, 10.0]])
    colours = np.array([[1.0, 0, 0, 1]] * 9 + [[0, 0, 1.0, 1]])
    image, extent = density_image(Y, colours, pixels=50)
    alpha = image[..., 3]
    assert alpha.max() == pytest.approx(1.0) and np.count_nonzero(alpha) == 2
    dense, sparse = (
        np.unravel_index(np.argmax(alpha), alpha.shape),
        np.argwhere((alpha > 0) & (alpha < 1))[0],
    )
    assert image[dense][:3].tolist() == [1, 0, 0] and image[tuple(sparse)][:3].tolist() == [0, 0, 1]
    assert alpha[tuple(sparse)] == pytest.approx(0.3 + 0.7 * np.log(2) / np.log(10))
    assert extent[0] < Y[:, 0].min() and Y[:, 0].max() < extent[1]


def test_class_names_name_integer_labels_and_string_labels_name_themselves():
    codes, names = label_codes(np.array([2, 0, 2]), ["cat", "dog", "ship"])
    assert names == ["cat", "ship"] and codes.tolist() == [1, 0, 1]
    assert label_codes(np.array(["b", "a"]), {"a": "Alpha"})[1] == ["Alpha", "b"]
    assert label_codes(np.array(["item 10", "item 9", "item 9"]))[1] == ["item 9", "item 10"]
    # a sequence of names cannot name strings: a clear error instead of a crash (issue 11.21)
    with pytest.raises(ValueError, match="integer labels.*dict"):
        plot_embedding(np.zeros((3, 2)), np.array(["a", "b", "a"]), class_names=["x", "y"])
    with pytest.raises(ValueError, match="class_names has 2 names"):
        label_codes(np.array([0, 5]), ["x", "y"])


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_embedding(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="5 entries for 4 points"):
        plot_embedding(np.zeros((4, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        plot_embedding_html(np.full((4, 2), np.nan))


def test_html_map_has_hover_labels_and_indices(tmp_path):
    pytest.importorskip("plotly")
    Y, labels = _two_blobs(200)
    fig = plot_embedding_html(Y, labels, tmp_path / "map.html", title="blobs")
    assert [trace.name for trace in fig.data] == ["left", "right"]
    left = fig.data[0]
    assert np.array_equal(left.customdata, np.flatnonzero(labels == "left"))
    assert left.hovertemplate.startswith("label: %{fullData.name}<br>index: %{customdata}")
    html = (tmp_path / "map.html").read_text()
    assert '"name":"right"' in html
    assert (
        "<script src=" not in html and "Plotly.newPlot" in html
    )  # plotly.js inline: opens offline


def _chromium():
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.mark.skipif(_chromium() is None, reason="no Chromium to render the HTML map")
def test_html_map_renders_in_a_headless_browser(tmp_path):
    pytest.importorskip("plotly")
    import matplotlib.image

    Y, labels = _two_blobs(400)
    plot_embedding_html(Y, labels, tmp_path / "map.html")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=800,600",
            "--virtual-time-budget=10000",
            f"--screenshot={shot}",
            (tmp_path / "map.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = matplotlib.image.imread(shot)[..., :3]
    assert image.shape[:2] == (600, 800)
    # both class colours are on the page (points and legend), well beyond a few stray pixels
    for rgb in palette(2)[:, :3]:
        near = np.abs(image - rgb).max(axis=2) < 0.1
        assert near.sum() > 200, (rgb, near.sum())
    # the left class is drawn left of the right class
    xs = [np.argwhere(np.abs(image - rgb).max(axis=2) < 0.1)[:, 1] for rgb in palette(2)[:, :3]]
    assert np.median(xs[0]) < np.median(xs[1])
