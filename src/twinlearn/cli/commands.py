"""What each ``twinlearn`` subcommand does (the parser is :mod:`twinlearn.cli.app`).

Every command checks its paths (input type, keys, labels, outputs that would be overwritten)
and then its parameters before it reads the data, so that a mistake costs no time.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from twinlearn.cli.app import MAP_SUFFIXES
from twinlearn.cli.options import (
    IMAGE_METHODS,
    METHODS,
    fit_keywords,
    given_params,
    validate_params,
)
from twinlearn.data import files
from twinlearn.data.writers import OUTPUT_SUFFIXES, check_output_path, write_output

logger = logging.getLogger("twinlearn")
#: rows per transform call: the progress bar moves once per chunk
CHUNK_ROWS = {"vectors": 8192, "images": 1024}


def _estimator(args: argparse.Namespace) -> Any:
    import twinlearn

    estimator = getattr(twinlearn, METHODS[args.method])(**given_params(args))
    estimator.set_params(verbose=0 if args.quiet else 1)
    validate_params(estimator)
    return estimator


def _check_fit_args(args: argparse.Namespace, outputs: list[tuple[str, tuple[str, ...]]]) -> None:
    """The checks that need neither torch nor the data: the input opens, the outputs are new
    (or ``--overwrite``), ``--resume`` has its folder."""
    files.check_input(args.input, args.key, args.use_rep)
    for path, suffixes in outputs:
        check_output_path(path, args.overwrite, suffixes)
    if getattr(args, "resume", False) and args.output_folder is None:
        raise ValueError("--resume needs --output-folder, where the checkpoints are")


def _read_for(
    method: str, args: argparse.Namespace, estimator: Any
) -> tuple[np.ndarray, files.InputData]:
    """The input as images or vectors, as ``method`` needs them."""
    images = method in IMAGE_METHODS
    data = files.read_input(
        args.input,
        args.key,
        args.use_rep,
        progress=not args.quiet,
        image_size=estimator.get_params().get("image_size") if images else None,
    )
    X = files.as_images(data) if images else files.as_vectors(data)
    return X, data


def _fit_kwargs(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--output-folder`` / ``--resume`` in the words of the method's ``fit``."""
    folder = getattr(args, "output_folder", None)
    if folder is None:
        return {}
    latest = Path(folder) / "latest_snapshot.safetensors"
    if args.resume and not latest.exists():
        warnings.warn(f"no checkpoint in {folder}: training starts from scratch", stacklevel=2)
    if "checkpoint_dir" in fit_keywords(METHODS[method]):  # ReLIC
        resume_from = latest if args.resume and latest.exists() else None
        return {"checkpoint_dir": folder, "resume_from": resume_from}
    return {"output_folder": folder, "resume": args.resume}


def _train(
    args: argparse.Namespace, outputs: list[tuple[str, tuple[str, ...]]]
) -> tuple[Any, np.ndarray, files.InputData]:
    _check_fit_args(args, outputs)
    estimator = _estimator(args)
    X, data = _read_for(args.method, args, estimator)
    logger.info("fitting %s on %d samples of shape %s", METHODS[args.method], len(X), X.shape[1:])
    estimator.fit(X, **_fit_kwargs(args.method, args))
    return estimator, X, data


def run_fit(args: argparse.Namespace) -> int:
    """``twinlearn fit METHOD INPUT -o MODEL``."""
    estimator, _, _ = _train(args, [(args.output, (".safetensors",))])
    estimator.save(args.output)
    logger.info("saved %s", args.output)
    return 0


def run_embed(args: argparse.Namespace) -> int:
    """``twinlearn embed METHOD INPUT -o OUTPUT [--save-model MODEL]``."""
    outputs = [(args.output, OUTPUT_SUFFIXES)]
    if args.save_model is not None:
        outputs.append((args.save_model, (".safetensors",)))
    estimator, X, data = _train(args, outputs)
    if args.save_model is not None:
        estimator.save(args.save_model)
    # CNE keeps the training embedding: no second pass (and none of a non-parametric placement)
    Y = getattr(estimator, "embedding_", None)
    if Y is None:
        Y = transform_rows(estimator, X, quiet=args.quiet)
    write_output(args.output, Y, args.overwrite, like=data, name=args.method)
    logger.info("wrote %s (%d × %d)", args.output, *Y.shape)
    return 0


def transform_rows(
    estimator: Any, X: np.ndarray, *, quiet: bool, n_components: int | None = None
) -> np.ndarray:
    """``estimator.transform`` in chunks of rows under a progress bar (one call for a
    non-parametric CNE, whose placement of new points is one optimisation)."""
    from tqdm.auto import tqdm

    if getattr(estimator, "parametric", True) is False:
        return np.asarray(estimator.transform(X, n_components=n_components))
    step = CHUNK_ROWS["images" if X.ndim > 2 else "vectors"]
    parts = []
    with tqdm(total=len(X), desc="transform", unit="row", disable=quiet) as bar:
        for start in range(0, len(X), step):
            chunk = X[start : start + step]
            parts.append(np.asarray(estimator.transform(chunk, n_components=n_components)))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def load_model(path: str, device: str | None = None) -> tuple[Any, str]:
    """The estimator saved in ``path`` (its class read from the file's metadata) and its
    method name."""
    import twinlearn
    from twinlearn import io

    _, meta = io.load_tensors(path, kind="model")
    class_name = meta.get("class")
    method = {v: k for k, v in METHODS.items()}.get(class_name)
    if method is None:
        raise ValueError(
            f"{path} holds a {class_name!r} model; twinlearn reads {', '.join(METHODS.values())}"
        )
    estimator = getattr(twinlearn, class_name)(**({} if device is None else {"device": device}))
    if "init" in inspect.signature(estimator.load).parameters:
        estimator.load(path, init=True)
    else:
        estimator.load(path)
    return estimator, method


def run_transform(args: argparse.Namespace) -> int:
    """``twinlearn transform MODEL INPUT -o OUTPUT``."""
    if not Path(args.model).is_file():
        raise FileNotFoundError(f"MODEL {args.model!r}: no such file")
    files.check_input(args.input, args.key, args.use_rep)
    check_output_path(args.output, args.overwrite)
    estimator, method = load_model(args.model, args.device)
    estimator.set_params(verbose=0 if args.quiet else 1)
    X, data = _read_for(method, args, estimator)
    Y = transform_rows(estimator, X, quiet=args.quiet, n_components=args.n_components)
    write_output(args.output, Y, args.overwrite, like=data, name=method)
    logger.info("wrote %s (%d × %d)", args.output, *Y.shape)
    return 0


def _read_embedding(args: argparse.Namespace) -> tuple[np.ndarray, files.InputData]:
    data = files.read_input(args.embedding, args.key, args.use_rep)
    return np.asarray(files.as_vectors(data, "EMBEDDING"), dtype=np.float32), data


def _check_spec(spec: str | None, option: str) -> None:
    """A ``FILE[:KEY]`` option names an existing file of a known type (a bare key is looked up
    in the embedding file later)."""
    if spec is not None:
        path, _ = files.split_spec(spec)
        if path is not None:
            files.input_type(path, option)


def run_evaluate(args: argparse.Namespace) -> int:
    """``twinlearn evaluate EMBEDDING --labels ... [--reference INPUT]``."""
    if args.labels is None and args.reference is None:
        raise ValueError(
            "give --labels (kNN accuracy) and/or --reference (recall, trustworthiness)"
        )
    if not 0 < args.test_fraction < 1 or args.n_neighbors < 1 or args.sample_size < 2:
        raise ValueError(
            "--test-fraction must be in (0, 1), --n-neighbors >= 1, --sample-size >= 2"
        )
    files.check_input(args.embedding, args.key, args.use_rep, "EMBEDDING")
    _check_spec(args.labels, "--labels")
    _check_spec(args.reference, "--reference")
    Y, data = _read_embedding(args)
    labels = files.read_labels(args.labels, len(Y), data) if args.labels else None
    reference = None if args.reference is None else _read_reference(args.reference, len(Y))
    scores = evaluate_embedding(Y, labels, reference, args)
    print(json.dumps(scores, indent=2) if args.format == "json" else _table(scores))
    return 0


def _read_reference(spec: str, n: int) -> np.ndarray:
    path, key = files.split_spec(spec)
    if path is None:
        raise FileNotFoundError(f"--reference {spec!r}: no such file")
    where = {"use_rep": key} if files.input_type(path, "--reference") == "h5ad" else {"key": key}
    reference = files.as_vectors(files.read_input(path, **where), "--reference")
    if len(reference) != n:
        raise ValueError(f"--reference has {len(reference)} rows for {n} embedded points")
    return reference


def evaluate_embedding(
    Y: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None, args: argparse.Namespace
) -> dict[str, Any]:
    """The scores ``twinlearn evaluate`` prints."""
    from tqdm.auto import tqdm

    from twinlearn import metrics

    k, n = args.n_neighbors, len(Y)
    rng = np.random.default_rng(args.seed)
    steps: list[tuple[str, Callable[[], float]]] = []
    if labels is not None:
        n_test = min(n - 1, max(1, round(n * args.test_fraction)))
        test, train = np.split(rng.permutation(n), [n_test])
        test, train = np.sort(test), np.sort(train)
        knn = min(k, len(train))
        steps.append(("knn_accuracy", partial(
            metrics.knn_accuracy, Y[train], labels[train], Y[test], labels[test], knn)))  # fmt: skip
    if reference is not None:
        # trustworthiness needs all pairwise distances: a sample keeps it at seconds
        sample = np.sort(rng.choice(n, min(n, args.sample_size), replace=False))
        steps.append(("knn_recall", partial(
            metrics.knn_recall, reference, Y, k, sample_size=args.sample_size,
            random_state=args.seed)))  # fmt: skip
        steps.append(("trustworthiness", partial(
            metrics.trustworthiness, reference[sample], Y[sample], k)))  # fmt: skip
    scores: dict[str, Any] = {"n_samples": n, "n_neighbors": k}
    for name, score in tqdm(steps, desc="evaluate", unit="metric", disable=args.quiet):
        scores[name] = round(score(), 6)
    return scores


def _table(scores: dict[str, Any]) -> str:
    width = max(map(len, scores))
    return "\n".join(f"{name:<{width}}  {value}" for name, value in scores.items())


def run_plot(args: argparse.Namespace) -> int:
    """``twinlearn plot EMBEDDING --labels ... -o map.png`` (or ``map.html``)."""
    files.check_input(args.embedding, args.key, args.use_rep, "EMBEDDING")
    _check_spec(args.labels, "--labels")
    path = check_output_path(args.output, args.overwrite, MAP_SUFFIXES, "MAP")
    Y, data = _read_embedding(args)
    if Y.shape[1] != 2:
        raise ValueError(
            f"EMBEDDING has {Y.shape[1]} columns; a map needs 2 (for a nested model: "
            "twinlearn transform MODEL INPUT --n-components 2)"
        )
    labels = files.read_labels(args.labels, len(Y), data) if args.labels else None
    from twinlearn import plot

    if path.suffix.lower() == ".html":
        plot.plot_embedding_html(Y, labels, path, title=args.title)
    else:
        plot.plot_embedding(Y, labels, path, title=args.title, dpi=args.dpi)
    logger.info("wrote %s", path)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fit": run_fit,
    "embed": run_embed,
    "transform": run_transform,
    "evaluate": run_evaluate,
    "plot": run_plot,
}
