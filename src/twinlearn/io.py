"""Model and checkpoint files: safetensors weights + JSON metadata in one file. Never pickle.

A file holds tensors, a ``"twinlearn"`` metadata entry (a JSON object with ``format_version``,
``library_version``, ``kind``, the estimator ``class`` and its config) and, since format
version 2, a ``"twinlearn_checksum"``: BLAKE2b of that JSON text and of every tensor. A
truncated or bit-flipped file, or one read while another program rewrote it in place, is
refused. The checksum guards against accidents, not forgery (anyone can compute it), so
readers still check what they take. Version 1 files have none and load unverified.

Reads take the whole file in one bounded read: no memory map, which a rewrite turns into a
SIGBUS. Writes are atomic (:func:`atomic_write_bytes`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT_VERSION = 2
CHECKSUM_SINCE = 2  # the first format version whose files must carry a checksum
_META_KEY = "twinlearn"
_CHECKSUM_KEY = "twinlearn_checksum"
MAX_META_DEPTH = 32  # bounds of the JSON metadata: real files nest 5 deep, with ints < 2**40
MAX_META_INT = 2**63
ORPHAN_AGE_SECONDS = 60.0  # a save creates its temporary file an instant before it locks it


def library_version() -> str:
    from twinlearn import __version__

    return __version__


def check_path(path: object, name: str = "path") -> Path:
    """``path`` as a :class:`~pathlib.Path`; ``TypeError``/``ValueError`` naming ``name`` for
    what no file system call should see (not a path, empty, a NUL character)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a text path, got {text!r}")
    if not text:
        raise ValueError(f"{name} is empty; give a file name")
    if "\0" in text:
        raise ValueError(f"{name}={text!r} contains a NUL character")
    return Path(text)


# --- reading ----------------------------------------------------------------------------------
def read_file_bytes(path: str | os.PathLike, what: str = "model file") -> bytes:
    """The whole content of the regular file at ``path``, read once into memory.

    ``FileNotFoundError``, ``PermissionError`` ("permission denied"), ``IsADirectoryError`` or
    another ``OSError`` naming the file when it cannot be read; ``ValueError`` for a pipe or
    device (which could block or never end) and for a file that shrank while it was read."""
    path = check_path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise _named_os_error(err, path, what) from err
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"cannot read {what} {path}: is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is not a regular file (a pipe, socket or device)")
        try:
            data = fh.read(info.st_size)  # bounded by the size the file has on disk
        except OSError as err:
            raise _named_os_error(err, path, what) from err
    if len(data) != info.st_size:
        raise ValueError(f"{path} shrank while it was read (another program writes it)")
    return data


def _named_os_error(err: OSError, path: Path, what: str) -> OSError:
    """The same kind of error, naming the file ("permission denied", "no such file ...")."""
    return type(err)(err.errno, f"cannot read {what} {path}: {(err.strerror or str(err)).lower()}")


def _unreadable(path: Path, reason: object) -> ValueError:
    return ValueError(f"{path} is not a readable twinlearn model file (safetensors expected; it "
                      f"may be truncated, corrupt or a pickle, which is never loaded): {reason}")


def _parse_safetensors(data: bytes, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the string metadata of a safetensors file held in ``data``."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    if len(data) < 8 or header_end > len(data):
        raise _unreadable(path, f"its header length does not fit in its {len(data)} bytes")
    try:
        tensors = st_load(data)  # checks every dtype, shape and offset against the data
        metadata = json.loads(data[8:header_end]).get("__metadata__") or {}
    # KeyError/AssertionError: dtypes or empty tensors that safetensors' torch glue refuses
    except (SafetensorError, KeyError, AssertionError, RuntimeError, ValueError, TypeError) as err:
        raise _unreadable(path, err) from err
    return tensors, metadata


def _parse_meta(text: str, path: Path) -> dict[str, Any]:
    """The metadata object, refused when it nests over ``MAX_META_DEPTH`` or holds an integer
    of 2**63 or more (no writer makes them; they only serve to exhaust a reader)."""
    try:
        meta = json.loads(text)  # a ValueError also for an int over Python's digit limit
        if not isinstance(meta, dict):
            raise ValueError(f"an object expected, got {type(meta).__name__}")
        stack = [(meta, 1)]
        while stack:
            value, depth = stack.pop()
            if isinstance(value, (dict, list)):
                if depth > MAX_META_DEPTH:
                    raise ValueError(f"nested over {MAX_META_DEPTH} deep")
                children = value.values() if isinstance(value, dict) else value
                stack.extend((child, depth + 1) for child in children)
            elif isinstance(value, int) and abs(value) >= MAX_META_INT:
                raise ValueError(f"an integer of {value.bit_length()} bits")
    except (ValueError, RecursionError) as err:  # RecursionError: nested beyond the parser
        raise ValueError(f"{path} has corrupt twinlearn metadata: {err}") from err
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this twinlearn ({library_version()}) reads "
            f"up to version {FORMAT_VERSION}: upgrade twinlearn to load it"
        )
    return meta


def checksum(meta_text: str, tensors: dict[str, torch.Tensor]) -> str:
    """BLAKE2b of the metadata text and of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.blake2b(digest_size=32)
    encoded = meta_text.encode()
    digest.update(len(encoded).to_bytes(8, "little") + encoded)
    for name in sorted(tensors):
        value = tensors[name].contiguous()
        digest.update(json.dumps([name, str(value.dtype), list(value.shape)]).encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return "blake2b:" + digest.hexdigest()


def load_tensors(
    path: str | os.PathLike, kind: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; never executes code from the file.

    Raises ``TypeError`` when ``path`` is not a path, the ``OSError`` of
    :func:`read_file_bytes`, and ``ValueError`` naming the file when it is not a twinlearn
    safetensors file, fails its checksum (truncated, corrupt, or read while being rewritten),
    has metadata nested too deeply or with absurd integers, an invalid or newer format
    version, or is not of the expected ``kind``.
    """
    path = check_path(path)
    tensors, metadata = _parse_safetensors(read_file_bytes(path), path)
    raw_meta = metadata.get(_META_KEY)
    if raw_meta is None:
        raise ValueError(f"{path} is a safetensors file but not a twinlearn one (no metadata)")
    meta = _parse_meta(raw_meta, path)
    stored = metadata.get(_CHECKSUM_KEY)
    if stored is None and meta["format_version"] >= CHECKSUM_SINCE:
        raise ValueError(f"{path} has no checksum (format version {meta['format_version']} files "
                         "have one): it is corrupt or was not written by twinlearn")
    if stored is not None and stored != checksum(raw_meta, tensors):
        raise ValueError(f"{path} does not match its checksum: it is truncated or corrupt, or was "
                         "read while another program rewrote it (then load it once that is done)")
    if kind is not None and meta.get("kind") != kind:
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, expected a {kind!r}")
    return tensors, meta


# --- writing ----------------------------------------------------------------------------------
def encode_file(tensors: dict[str, torch.Tensor], meta_text: str) -> bytes:
    """The bytes of a file with ``tensors``, the JSON text ``meta_text`` and their checksum."""
    # copies: safetensors refuses tensors that share memory (tied weights)
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    metadata = {_META_KEY: meta_text, _CHECKSUM_KEY: checksum(meta_text, clean)}
    return st_save(clean, metadata=metadata)


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Save tensors and a JSON-serialisable ``meta`` dict (:func:`atomic_write_bytes`)."""
    header = {"format_version": FORMAT_VERSION, "library_version": library_version(), **meta}
    atomic_write_bytes(path, encode_file(tensors, json.dumps(header)))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` whole: a crash leaves the old file or the new one, never a mix.

    ``.{name}.tmp-<random>`` in the same folder is written, fsynced and renamed over the target,
    then the folder is fsynced. A symlink is followed (the link stays). A new file gets
    ``0o666 & ~umask`` as with :func:`open`; a replaced one keeps its mode (not owner or ACL).
    Temporary files of this target left by a killed save are removed first."""
    given = Path(check_path(path))
    if given.is_dir():
        raise IsADirectoryError(f"path={str(given)!r} is a directory; give a file name")
    # the folders as given first ("a/0/../b" needs a/0), then the real target of a symlink
    given.parent.mkdir(parents=True, exist_ok=True)
    path = Path(os.path.realpath(given))
    _remove_orphan_temps(path)
    try:
        keep_mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        keep_mode = None
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    # 0o666: the kernel applies the umask, as for open(); mkstemp would force 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # held until closed: marks the save as alive
            fh.write(data)
            fh.flush()
            if keep_mode is not None:
                os.fchmod(fh.fileno(), keep_mode)
            os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # file systems that cannot sync a folder
            raise
    finally:
        os.close(fd)


def _remove_orphan_temps(path: Path) -> None:
    """Delete the temporary files a killed save of ``path`` left behind: a save holds an
    exclusive ``flock`` on its temporary file until the rename, so one that can be locked (and
    is older than ``ORPHAN_AGE_SECONDS``) belongs to no live process."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-[0-9a-f]{{16}}")
    cutoff = time.time() - ORPHAN_AGE_SECONDS
    for entry in os.scandir(path.parent):
        if not pattern.fullmatch(entry.name):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, locked by a live save, or a link
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                if os.fstat(fd).st_mtime < cutoff:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(entry.path)
            finally:
                os.close(fd)


# --- state dicts ------------------------------------------------------------------------------
def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


def add_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Prefix every key with ``prefix.``."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


# --- optimizer state --------------------------------------------------------------------------
def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state dict into tensors plus a JSON-serialisable remainder."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def fits_like(value: object, reference: object) -> bool:
    """Whether ``value`` (read from a file) can stand where ``reference`` stands: any finite
    number for a number, the same length item by item for a sequence, and the same value for
    a flag (bool, None, str: a crafted ``capturable`` or ``differentiable`` made the next
    optimizer step fail)."""
    if isinstance(reference, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(reference)
                and all(map(fits_like, value, reference)))
    if isinstance(reference, (int, float)) and not isinstance(reference, bool):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and (math.isfinite(value) or value == reference))
    return type(value) is type(reference) and value == reference


def _probe_state(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The state one step creates for a parameter of each group: a shallow copy of
    ``optimizer`` steps a one-element stand-in per group (works for any optimizer class; the
    real parameters and state are not touched)."""
    probe = copy.copy(optimizer)
    probe.state = collections.defaultdict(dict)
    stand_ins = []
    for group in optimizer.param_groups:
        like = group["params"][0] if group["params"] else torch.empty(0)
        stand_in = torch.zeros(1, dtype=like.dtype, device=like.device, requires_grad=True)
        stand_in.grad = torch.zeros_like(stand_in)
        stand_ins.append(stand_in)
    probe.param_groups = [{**g, "params": [p]} for g, p in zip(optimizer.param_groups, stand_ins)]
    probe.step()
    return [dict(probe.state[p]) for p in stand_ins]


def _state_fits(value: object, reference: object, param: torch.Tensor, key: str) -> bool:
    if not isinstance(reference, torch.Tensor):
        fits = not isinstance(value, torch.Tensor) and fits_like(value, reference)
    else:
        shape = () if reference.ndim == 0 else tuple(param.shape)
        fits = (isinstance(value, torch.Tensor) and value.dtype == reference.dtype and tuple(value.shape) == shape
                and (not value.is_floating_point() or bool(torch.isfinite(value).all())))
    # a negative or fractional step count overflowed Adam's bias correction β^step at the next step
    return fits and (key != "step" or (math.isfinite(float(value)) and 0 <= float(value) == int(float(value))))


def _checked_groups(optimizer: torch.optim.Optimizer, saved: object, path: object) -> list[dict]:
    """The file's parameter groups: the same parameters and hyperparameters of the same types
    as ``optimizer``'s (a hyperparameter a newer torch added keeps its current value)."""
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(saved, list) or len(saved) != len(current):
        raise ValueError(f"{path} does not hold {len(current)} optimizer parameter groups")
    groups = []
    for i, (group, mine) in enumerate(zip(saved, current)):
        if not isinstance(group, dict) or group.get("params") != mine["params"]:
            raise ValueError(f"{path}: optimizer parameter group {i} is not this model's")
        bad = sorted(k for k, v in group.items()
                     if k != "params" and not (k in mine and fits_like(v, mine[k])))
        if bad:
            raise ValueError(f"{path}: optimizer parameter group {i} has invalid entries {bad}")
        groups.append({**mine, **group})
    return groups


def optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: object,
    path: object = "the file",
) -> dict[str, Any]:
    """The state dict :func:`optimizer_to_tensors` flattened, checked against ``optimizer``
    without changing it: the same groups and parameters, hyperparameters of the same types,
    and for each parameter with state exactly the entries a step of ``optimizer`` creates,
    of the right shapes and dtypes and finite. ``ValueError`` naming ``path`` otherwise
    (loading such a state gave a ``KeyError`` or ``RuntimeError`` at the next step)."""
    if not isinstance(meta, dict) or not isinstance(meta.get("scalars"), dict):
        raise ValueError(f"{path} has no valid optimizer state (no 'scalars' object)")
    groups = _checked_groups(optimizer, meta.get("param_groups"), path)
    params = {str(pid): (param, i)
              for i, (mine, group) in enumerate(zip(groups, optimizer.param_groups))
              for pid, param in zip(mine["params"], group["params"])}
    expected = _probe_state(optimizer)
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, _, key = name.partition(".")
        if pid not in params:
            raise ValueError(f"{path} has optimizer state {name!r} for no parameter of this model")
        param, group = params[pid]
        if key not in expected[group] or not _state_fits(value, expected[group][key], param, key):
            raise ValueError(f"{path}: optimizer state {name!r} is not what this optimizer keeps "
                             f"for a parameter of shape {tuple(param.shape)}")
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in state.items():
        want = expected[params[str(pid)][1]]
        if set(entries) != set(want):
            raise ValueError(f"{path}: optimizer state of parameter {pid} has {sorted(entries)}, "
                             f"expected {sorted(want)}")
    return {"state": state, "param_groups": groups}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: object,
    path: object = "the file",
) -> None:
    """Inverse of :func:`optimizer_to_tensors`: check the state (:func:`optimizer_state`), then
    load it into ``optimizer``."""
    optimizer.load_state_dict(optimizer_state(optimizer, tensors, meta, path))
