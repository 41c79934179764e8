"""Command-line options generated from the estimators' own source.

The ``__init__`` signature of each estimator (names, annotations, defaults) and the
"Parameters" section of its class docstring are read with :mod:`ast` from the module's source
file, *without importing it*: ``twinlearn fit cne --help`` then needs no torch and answers in a
fraction of a second, and the options cannot drift from the code (``tests/test_cli_main.py``
compares them with ``inspect.signature`` of the live classes).

Types come from the annotations: ``int``, ``float``, ``str``, ``bool`` (``--x`` / ``--no-x``),
``None`` (the word ``none``), lists and tuples of numbers (comma-separated: ``8,16,32``; a
one-element list where a number is also allowed: ``8,``);
choices from a docstring type that is a set literal (``{"fp32", "bf16", "fp16"}``). Parameters
that only a Python object can fill (modules, callables, generators) get no option.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: ``twinlearn fit METHOD``: the method names (any case) and their estimator classes
METHODS = {"tldr": "TLDR", "cne": "CNE", "tsimcne": "TSimCNE", "relic": "ReLIC"}
IMAGE_METHODS = frozenset({"tsimcne", "relic"})
#: set by the command line itself: ``--quiet`` gives 0, otherwise 1 (progress bars)
CLI_SET = frozenset({"verbose"})
#: seeds are offset (seed + 1, seed + 2) for torch generators, which take at most 2**64 - 1
SEED_MAX = 2**63 - 1
#: where the parsed estimator parameters go in the argparse namespace (``param.n_components``)
DEST_PREFIX = "param."

_SCALARS = {"int": "int", "float": "float", "str": "str", "bool": "bool"}
_SEQUENCES = ("list", "tuple", "Sequence")
_METAVARS = {"int": "N", "float": "X", "str": "TEXT", "bool": "true|false", "none": "none",
             "ints": "N,N,...", "floats": "X,X,..."}  # fmt: skip
_WORDS = {
    "int": "an int",
    "float": "a number",
    "str": "text",
    "bool": "true/false",
    "none": "none",
    "ints": "comma-separated ints",
    "floats": "comma-separated numbers",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (status 2): the usage of a method
    with 40 options would bury the message; ``--help`` still shows everything."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Param:
    """One estimator parameter as the command line sees it.

    ``kinds`` holds what a value may be: ``"int"``, ``"float"``, ``"str"``, ``"bool"``,
    ``"none"``, ``"ints"``/``"floats"`` (comma-separated); empty for Python-only parameters.
    """

    name: str
    kinds: frozenset[str]
    default: object
    help: str
    choices: tuple | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _module_source(class_name: str) -> Path:
    from twinlearn import _LAZY  # the public class -> module table; importing it is cheap

    spec = importlib.util.find_spec(_LAZY[class_name])
    if spec is None or spec.origin is None:
        raise RuntimeError(f"cannot locate the source of twinlearn.{class_name}")
    return Path(spec.origin)


@functools.cache
def _class_node(class_name: str) -> ast.ClassDef:
    path = _module_source(class_name)
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return node
    raise RuntimeError(f"class {class_name} not found in {path}")


def _method_node(class_name: str, method: str) -> ast.FunctionDef:
    for node in _class_node(class_name).body:
        if isinstance(node, ast.FunctionDef) and node.name == method:
            return node
    raise RuntimeError(f"{class_name}.{method} not found in its source")


def _keyword_defaults(func: ast.FunctionDef) -> list[tuple[ast.arg, ast.expr | None]]:
    """``(argument, default node)`` of every parameter but ``self``."""
    args = func.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults))
    return [(arg, default) for arg, default in pairs if arg.arg != "self"]


def _value(node: ast.expr | None) -> object:
    """A default's value: a literal, or simple arithmetic of literals (``1 / 32``)."""
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Mult)):
            left, right = _value(node.left), _value(node.right)
            return left / right if isinstance(node.op, ast.Div) else left * right
        raise


def _kinds(annotation: ast.expr | None) -> frozenset[str]:
    """What a value of this annotation may be, as far as text can express it."""
    if annotation is None:
        return frozenset()
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _kinds(annotation.left) | _kinds(annotation.right)
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return frozenset({"none"})
    if isinstance(annotation, ast.Name) and annotation.id in _SCALARS:
        return frozenset({_SCALARS[annotation.id]})
    if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) in _SEQUENCES:
        inner = _kinds(
            annotation.slice.elts[0]
            if isinstance(annotation.slice, ast.Tuple)
            else annotation.slice
        )
        return frozenset(kind + "s" for kind in inner & {"int", "float"})
    return frozenset()  # modules, callables, generators, devices: Python objects


def docstring_parameters(doc: str) -> dict[str, tuple[str, str]]:
    """The NumPy-style "Parameters" section: ``{name: (type text, description)}``; a line
    ``a, b : float`` documents both names."""
    lines = doc.splitlines()
    try:
        start = next(
            i
            for i, line in enumerate(lines[:-1])
            if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}
        )
    except StopIteration:
        return {}
    out: dict[str, tuple[str, str]] = {}
    names: list[str] = []
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace():
            head, _, type_text = line.partition(" : ")
            names = [name.strip() for name in head.split(",")]
            for name in names:
                out[name] = (type_text.strip(), "")
        elif line.strip() and names:
            for name in names:
                type_text, text = out[name]
                out[name] = (type_text, f"{text} {line.strip()}".strip())
    return out


def _choices(type_text: str) -> tuple | None:
    """The values of a docstring type that is exactly a set literal (``{"a", "b"}``, possibly
    followed by ``, default=...`` or ``, optional``); ``None`` for open types."""
    match = re.fullmatch(r"\{([^{}]*)\}\s*(?:,\s*(?:default=.*|optional))?", type_text)
    if match is None:
        return None
    try:
        return tuple(ast.literal_eval(f"[{match.group(1)}]"))
    except (ValueError, SyntaxError):
        return None


def _plain(text: str) -> str:
    """Docstring markup as plain text for ``--help``."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
    return text.replace("%", "%%")  # argparse formats help with %


def show(value: object) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(show(v) for v in value)
    return str(value)


@functools.cache
def estimator_params(class_name: str) -> tuple[Param, ...]:
    """Every ``__init__`` parameter of ``twinlearn.<class_name>``, read from its source."""
    docs = docstring_parameters(ast.get_docstring(_class_node(class_name)) or "")
    params = []
    for arg, default in _keyword_defaults(_method_node(class_name, "__init__")):
        type_text, text = docs.get(arg.arg, ("", ""))
        kinds, choices = _kinds(arg.annotation), _choices(type_text)
        if choices is not None and "none" in kinds and None not in choices:
            choices = (*choices, None)  # "{"sgd", "adam"}, optional": none is allowed too
        # an undocumented description falls back on the type ("int or "full"")
        type_only = re.sub(r",\s*(default=.*|optional)$", "", type_text)
        params.append(Param(arg.arg, kinds, _value(default), _plain(text or type_only), choices))
    return tuple(params)


def summary(class_name: str) -> str:
    """The first paragraph of the class docstring, on one line."""
    doc = ast.get_docstring(_class_node(class_name)) or class_name
    return _plain(" ".join(doc.split("\n\n")[0].split()))


def fit_keywords(class_name: str) -> frozenset[str]:
    """The keyword names of ``fit`` (``output_folder``, ``resume``, ``checkpoint_dir``, ...)."""
    return frozenset(arg.arg for arg, _ in _keyword_defaults(_method_node(class_name, "fit")))


def value_parser(param: Param) -> Callable[[str], object]:
    """An argparse ``type`` for ``param``: the first reading of the text that its kinds allow
    (none, true/false, int, float, comma-separated numbers, text)."""
    kinds = param.kinds

    def parse(text: str) -> object:
        word = text.strip()
        if "none" in kinds and word.lower() == "none":
            return None
        if "bool" in kinds and word.lower() in ("true", "false"):
            return word.lower() == "true"
        # "8," is a one-element list where a bare number would be read as a number
        items = word[:-1].split(",") if word.endswith(",") else word.split(",")
        for kind, convert in (("int", int), ("float", float), ("ints", int), ("floats", float)):
            if kind in kinds:
                try:
                    return [convert(v) for v in items] if kind.endswith("s") else convert(word)
                except ValueError:
                    continue
        if "str" in kinds:
            return word
        raise argparse.ArgumentTypeError(
            f"expected {_metavar(param, ' or ', _WORDS)}, got {text!r}"
        )

    return parse


def _metavar(param: Param, sep: str = "|", names: dict[str, str] = _METAVARS) -> str:
    if param.choices is not None:
        return "{" + ",".join(show(c) for c in param.choices) + "}"
    order = ("int", "float", "ints", "floats", "bool", "str", "none")
    return sep.join(names[kind] for kind in order if kind in param.kinds)


def add_estimator_options(parser: argparse.ArgumentParser, class_name: str) -> None:
    """One option per parameter of ``twinlearn.<class_name>``, in a group of their own. Values
    land in the namespace as ``param.<name>`` and only when given (the estimator's defaults
    apply otherwise); :func:`given_params` collects them."""
    group = parser.add_argument_group(
        f"{class_name} parameters", f"twinlearn.{class_name}(...); the defaults are the estimator's"
    )
    for param in estimator_params(class_name):
        if not param.kinds - {"none"} or param.name in CLI_SET:
            continue  # only a Python object can fill it (a module, a callable), or --quiet does
        text = f"{param.help} (default: {show(param.default)})"
        dest = DEST_PREFIX + param.name
        if param.kinds == {"bool"}:
            group.add_argument(
                param.flag,
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            group.add_argument(
                param.flag,
                dest=dest,
                type=value_parser(param),
                choices=param.choices,
                metavar=_metavar(param),
                default=argparse.SUPPRESS,
                help=text,
            )


def validate_params(estimator: object) -> None:
    """The estimators' own declared-constraint validation, before any data is read."""
    estimator._validate_params()


def given_params(args: argparse.Namespace) -> dict[str, object]:
    """The estimator parameters given on the command line."""
    return {k[len(DEST_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(DEST_PREFIX)}
