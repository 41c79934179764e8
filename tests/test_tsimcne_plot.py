import numpy as np
import pytest

from twinlearn.plot import plot_embedding


def test_plot_embedding_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    Y, labels = rng.normal(size=(60, 2)), rng.integers(0, 3, 60)
    path = tmp_path / "map.png"
    plot_embedding(Y, labels, path, class_names=["a", "b", "c"], title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = plot_embedding(Y)
    assert len(fig.axes[0].collections) == 1
    with pytest.raises(ValueError, match="N, 2"):
        plot_embedding(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(Y, labels[:5])
