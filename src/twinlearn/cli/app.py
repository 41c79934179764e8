"""The ``twinlearn`` command (also ``python -m twinlearn``).

``twinlearn fit METHOD INPUT -o MODEL``, ``transform MODEL INPUT -o OUTPUT``, ``embed METHOD
INPUT -o OUTPUT``, ``evaluate EMBEDDING``, ``plot EMBEDDING -o MAP``. The estimator options
of ``fit`` and ``embed`` are generated from the estimators' source
(:mod:`twinlearn.cli.options`); building the parser imports neither torch nor the estimators,
so ``--help`` answers at once. Bad arguments or unreadable input exit with status 2 and one
line on stderr, before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

from twinlearn.cli.options import (
    METHODS,
    OneLineErrorParser,
    add_estimator_options,
    fit_keywords,
    summary,
)

PROG = "twinlearn"
INPUT_HELP = (
    ".npy, .npz (--key), .h5/.hdf5 or .zarr (--key), .csv/.tsv, .parquet, .txt, .h5ad "
    "(--use-rep), an image folder root/<class>/<image> or the CIFAR-10 tarball (--key "
    "train|test); .npy, HDF5, zarr and a dense .h5ad X are read from disk a block at a time"
)
EMBEDDING_HELP = "an embedding file: .npy, .npz (--key), .csv/.tsv, .parquet or .h5ad (--use-rep)"
LABELS_HELP = (
    "labels: FILE (.npy, .txt one a line, an image folder), FILE:KEY (an .npz array, "
    "a table column, an .h5ad obs column) or a column of EMBEDDING's own table"
)
MAP_SUFFIXES = (".png", ".pdf", ".svg", ".html")


def _common(parser: argparse.ArgumentParser, *, overwrite: bool = True) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or messages (warnings stay)"
    )
    if overwrite:
        parser.add_argument(
            "--overwrite", action="store_true", help="replace an existing output file"
        )


def _input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        help="the array of an .npz, HDF5 or zarr file (needed when it holds several), or the "
        "split of the CIFAR-10 tarball (train, the default, or test)",
    )
    parser.add_argument(
        "--use-rep", metavar="OBSM_KEY", help="the obsm entry of an .h5ad file to use (default: X)"
    )


def _method_parsers(sub: argparse._SubParsersAction, command: str, output_help: str) -> None:
    for method, class_name in METHODS.items():
        parser = sub.add_parser(
            method,
            help=summary(class_name),
            description=f"{summary(class_name)} (twinlearn.{class_name})",
        )
        parser.add_argument("input", metavar="INPUT", help=INPUT_HELP)
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="MODEL" if command == "fit" else "OUTPUT",
            help=output_help,
        )
        if command == "embed":
            parser.add_argument(
                "--save-model", metavar="MODEL", help="also write the fitted model (.safetensors)"
            )
        _input_options(parser)
        keywords = fit_keywords(class_name)
        if keywords & {"output_folder", "checkpoint_dir"}:
            parser.add_argument(
                "--output-folder",
                metavar="DIR",
                help="write a checkpoint every epoch (latest_snapshot.safetensors)",
            )
            parser.add_argument(
                "--resume",
                action="store_true",
                help="continue from --output-folder's latest checkpoint",
            )
        _common(parser)
        add_estimator_options(parser, class_name)


def build_parser() -> argparse.ArgumentParser:
    """The ``twinlearn`` argument parser (cheap: no torch, no estimator imported)."""
    from twinlearn import __version__

    parser = OneLineErrorParser(
        prog=PROG,
        description="Self-supervised dimensionality reduction and maps: TLDR, CNE, "
        "t-SimCNE and ReLIC from the command line. Options may be spelled --n-components or "
        "--n_components.",
    )
    parser.add_argument("--version", action="version", version=f"twinlearn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fit = sub.add_parser(
        "fit",
        help="train a model and save it (.safetensors)",
        description="Train METHOD on INPUT and save the model.",
    )
    _method_parsers(
        fit.add_subparsers(dest="method", required=True, metavar="METHOD"),
        "fit",
        "model file to write (.safetensors)",
    )
    embed = sub.add_parser(
        "embed",
        help="fit and write the embedding of INPUT",
        description="Train METHOD on INPUT and write INPUT's embedding.",
    )
    _method_parsers(
        embed.add_subparsers(dest="method", required=True, metavar="METHOD"),
        "embed",
        "embedding file to write: .npy, .csv, .parquet or .h5ad (into obsm)",
    )
    _transform_parser(sub)
    _evaluate_parser(sub)
    _plot_parser(sub)
    return parser


def _transform_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "transform",
        help="embed INPUT with a saved model",
        description="Embed INPUT with a model written by `twinlearn fit`.",
    )
    parser.add_argument("model", metavar="MODEL", help="a .safetensors model file")
    parser.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="embedding file to write: .npy, .csv, .parquet or .h5ad (into obsm)",
    )
    parser.add_argument(
        "--n-components",
        type=int,
        metavar="N",
        help="keep the first N dimensions (a nested model's smaller embedding)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, auto (default: the model's default)")
    _input_options(parser)
    _common(parser)


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="kNN accuracy, neighbour recall and trustworthiness of an embedding",
        description="Score EMBEDDING: kNN accuracy of its labels (on a held-out share), and with "
        "--reference (the input it was computed from) kNN recall and trustworthiness.",
    )
    parser.add_argument("embedding", metavar="EMBEDDING", help=EMBEDDING_HELP)
    parser.add_argument("--labels", metavar="LABELS", help=LABELS_HELP)
    parser.add_argument(
        "--reference",
        metavar="INPUT[:KEY]",
        help="the high-dimensional data (KEY: an .npz array or .h5ad obsm entry)",
    )
    parser.add_argument("--n-neighbors", type=int, default=10, metavar="K", help="k (default: 10)")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="held-out share for kNN accuracy (default: 0.2)",
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=5000,
        metavar="N",
        help="points scored for recall and trustworthiness (default: 5000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the sample")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    _input_options(parser)
    _common(parser, overwrite=False)


def _plot_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plot",
        help="draw a 2-D embedding (.png, .pdf, .svg, or interactive .html)",
        description="Draw a 2-D embedding coloured by label: a picture (density-aware from "
        "100 000 points on) or an interactive HTML map with hover labels.",
    )
    parser.add_argument("embedding", metavar="EMBEDDING", help=EMBEDDING_HELP)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MAP",
        help=f"the map to write: {', '.join(MAP_SUFFIXES)}",
    )
    parser.add_argument("--labels", metavar="LABELS", help=LABELS_HELP)
    parser.add_argument("--title")
    parser.add_argument("--dpi", type=int, default=150)
    _input_options(parser)
    _common(parser)


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """``--n_components`` as ``--n-components``, and the method name in lower case."""
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + list(argv[i:])
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            token = name.replace("_", "-") + eq + value
        elif len(out) == 1 and out[0] in ("fit", "embed") and token.lower() in METHODS:
            token = token.lower()
        out.append(token)
    return out


@contextlib.contextmanager
def _console(quiet: bool) -> Iterator[None]:
    """Log messages (none with ``--quiet``) and warnings as short lines on stderr."""
    logger = logging.getLogger("twinlearn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    level = logger.level
    if not quiet:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, category, *_: sys.stderr.write(
            f"{PROG}: warning: {message}\n"
        )
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``twinlearn``; returns the exit status (2: bad arguments or input, one line on
    stderr; ``TWINLEARN_DEBUG=1`` shows the traceback instead)."""
    args = build_parser().parse_args(normalise_argv(sys.argv[1:] if argv is None else argv))
    from twinlearn.cli.commands import COMMANDS

    with _console(args.quiet):
        try:
            return COMMANDS[args.command](args)
        # bad values, files or data, or a missing optional package (named with its extra)
        except (ValueError, TypeError, OSError, ImportError) as err:
            if os.environ.get("TWINLEARN_DEBUG"):
                raise
            message = " ".join(str(err).split()) or type(err).__name__
            sys.stderr.write(f"{PROG} {args.command}: error: {message}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write(f"{PROG} {args.command}: interrupted\n")
            return 130
