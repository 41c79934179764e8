"""Quality metrics for embeddings, usable by users and benchmarks alike."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.manifold import trustworthiness as _sk_trustworthiness

from twinlearn.data.arrays import validate_features
from twinlearn.neighbors.faiss_index import drop_self
from twinlearn.neighbors.index import KNNIndex


def _as_numpy(X) -> np.ndarray:
    X = validate_features(X)
    return X.cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float32)


def _neighbours_of(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest database rows of each query row (exact)."""
    return KNNIndex("faiss").build(database).query(queries, k)[0]


def knn_recall(
    X_high,
    X_low,
    n_neighbors: int = 10,
    *,
    sample_size: int | None = None,
    random_state: int | None = 0,
) -> float:
    """Share of each point's ``n_neighbors`` true neighbours (in ``X_high``) that are also among
    its ``n_neighbors`` nearest in ``X_low`` (neighbour recall / "kNN preservation").

    Parameters
    ----------
    X_high, X_low : arrays with the same rows
    n_neighbors : int
    sample_size : int, optional
        Evaluate on this many random query points (neighbours are still searched among all).
    random_state : int, optional
        Seed of the query sample.

    Returns
    -------
    float in [0, 1]
    """
    X_high, X_low = _as_numpy(X_high), _as_numpy(X_low)
    n = X_high.shape[0]
    if X_low.shape[0] != n:
        raise ValueError(f"X_high has {n} rows but X_low has {X_low.shape[0]}")
    if not 1 <= n_neighbors < n:
        raise ValueError(f"n_neighbors must be in [1, {n - 1}], got {n_neighbors}")
    if sample_size is None or sample_size >= n:
        queries = np.arange(n)
    else:
        queries = np.sort(np.random.default_rng(random_state).choice(n, sample_size, replace=False))
    recalls = []
    for X in (X_high, X_low):
        hits = _neighbours_of(X[queries], X, n_neighbors + 1)
        recalls.append(drop_self(hits, hits, n_neighbors, query_ids=queries)[0])
    high, low = recalls
    overlap = (high[:, :, None] == low[:, None, :]).any(axis=2).sum(axis=1)
    return float(overlap.mean() / n_neighbors)


def knn_accuracy(
    train_embedding,
    train_labels,
    test_embedding,
    test_labels,
    n_neighbors: int = 10,
) -> float:
    """Accuracy of a ``n_neighbors``-NN majority-vote classifier fitted on the train embedding
    and scored on the test embedding (scikit-learn's ``KNeighborsClassifier``)."""
    from sklearn.neighbors import KNeighborsClassifier

    train, test = _as_numpy(train_embedding), _as_numpy(test_embedding)
    clf = KNeighborsClassifier(n_neighbors=n_neighbors, algorithm="brute", n_jobs=1)
    clf.fit(train, np.asarray(train_labels))
    return float(clf.score(test, np.asarray(test_labels)))


def trustworthiness(X_high, X_low, n_neighbors: int = 5) -> float:
    """scikit-learn's trustworthiness: how far the low-d neighbourhoods are true neighbours."""
    return float(_sk_trustworthiness(_as_numpy(X_high), _as_numpy(X_low), n_neighbors=n_neighbors))


def linear_probe(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of a logistic regression trained on frozen features (standardised with
    the training set's mean and scale) — the usual linear evaluation of self-supervised
    features (mrl-pytorch's CIFAR/STL-10 numbers).

    Parameters
    ----------
    train_features, test_features : arrays (n, d) with the same d
    train_labels, test_labels : arrays (n,)
    C : float
        Inverse L2 regularisation strength of scikit-learn's ``LogisticRegression``.
    max_iter : int

    Returns
    -------
    float in [0, 1]
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = _as_numpy(train_features), _as_numpy(test_features)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train has {train.shape[1]} features but test has {test.shape[1]}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(train, np.asarray(train_labels))
    return float(clf.score(test, np.asarray(test_labels)))


def accuracy_across_dims(
    train_features,
    train_labels,
    test_features,
    test_labels,
    dims,
    *,
    pca: bool = True,
    probe: str = "linear",
    random_state: int | None = 0,
) -> list[dict]:
    """Accuracy of every nested prefix ``features[:, :d]``, next to PCA of the full features
    reduced to the same ``d`` (fitted on the training features) — the Matryoshka evaluation.

    Parameters
    ----------
    train_features, test_features : arrays (n, D)
    train_labels, test_labels : arrays (n,)
    dims : list of int
        Prefix sizes, each ``<= D``.
    pca : bool
        Also score PCA-``d`` of the full features.
    probe : {"linear", "knn"}
        :func:`linear_probe` or 10-NN :func:`knn_accuracy`.
    random_state : int, optional
        PCA's seed (randomised solver on large inputs).

    Returns
    -------
    list of dict with keys ``d``, ``prefix`` and (with ``pca``) ``pca``; see
    :func:`format_dims_table` and :func:`plot_accuracy_across_dims`.
    """
    from sklearn.decomposition import PCA

    train, test = _as_numpy(train_features), _as_numpy(test_features)
    if probe not in ("linear", "knn"):
        raise ValueError(f"probe={probe!r}: choose 'linear' or 'knn'")
    score = linear_probe if probe == "linear" else knn_accuracy
    dims = [int(d) for d in dims]
    if not dims or min(dims) < 1 or max(dims) > train.shape[1]:
        raise ValueError(f"dims={dims} must lie in [1, {train.shape[1]}]")
    rows = []
    for d in dims:
        row = {"d": d, "prefix": score(train[:, :d], train_labels, test[:, :d], test_labels)}
        if pca:
            reducer = PCA(d, random_state=random_state).fit(train)
            row["pca"] = score(
                reducer.transform(train), train_labels, reducer.transform(test), test_labels
            )
        rows.append(row)
    return rows


def format_dims_table(rows: list[dict], title: str = "accuracy") -> str:
    """A Markdown table of :func:`accuracy_across_dims` rows."""
    keys = [k for k in rows[0] if k != "d"]
    lines = [f"| d | {' | '.join(f'{k} {title}' for k in keys)} |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['d']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def plot_accuracy_across_dims(
    rows: list[dict], path, title: str = "accuracy across dimensions"
) -> None:
    """Save a PNG of accuracy against the prefix size (log-2 axis), one line per method, like
    mrl-pytorch's figures. Needs matplotlib (``pip install 'twinlearn[plot]'``)."""
    from twinlearn._optional import import_optional

    import_optional("matplotlib").use("Agg")
    plt = import_optional("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    dims = [r["d"] for r in rows]
    for key, label in (("prefix", "Matryoshka prefix"), ("pca", "PCA of full features")):
        if key in rows[0]:
            ax.plot(dims, [r[key] for r in rows], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("dimensions")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "accuracy_across_dims",
    "format_dims_table",
    "knn_accuracy",
    "knn_recall",
    "linear_probe",
    "plot_accuracy_across_dims",
    "trustworthiness",
]
