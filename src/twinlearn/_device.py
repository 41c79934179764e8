"""Device and random-number helpers shared by every part of the library."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

DeviceLike = str | torch.device
#: /proc/cpuinfo flags of x86 units that compute bf16 matrix products natively
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def resolve_device(device: DeviceLike | None) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` into a device.

    Raises ``ValueError`` for an unknown string and for CUDA when no GPU is visible.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was asked for but MPS is not available here")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r}: only 'cpu', 'cuda' and 'mps' are supported")
    return resolved


def seed_from(random_state: int | np.random.Generator | None) -> int:
    """Draw a 63-bit seed from ``random_state`` without touching any global RNG.

    An int must lie in ``[0, 2**63)``: seeds feed torch generators (at most 64 bits) with small
    offsets added, and wrapping a larger one silently would give two seeds the same runs.
    """
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if not 0 <= random_state < 2**63:
            raise ValueError(f"random_state must be an int in [0, 2**63), got {random_state}")
        return int(random_state)
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}"
    )


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A local torch generator seeded with ``seed`` on ``device`` (global RNGs stay untouched)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


class fork_torch_rng:
    """Context manager: run code that uses torch's global RNG (module initialisation) seeded
    with ``seed``, restoring the global RNG state afterwards so the caller sees no change."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        # only the CPU generator, the one fork_rng(devices=[]) restores: torch.manual_seed would
        # also (lazily) reseed every CUDA generator, a global change the caller would see
        torch.default_generator.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def numpy_base_pages() -> Iterator[None]:
    """Run the block with NumPy's ``madvise(MADV_HUGEPAGE)`` of large arrays off, restoring it.

    Where the kernel's transparent huge pages are in ``madvise`` mode, NumPy asks for 2 MB pages
    for every array of 4 MB or more; arrays filled a part at a time then hold whole 2 MB pages.
    CNE's fit of 10⁶ digits peaked 3 577 MiB beyond its input with the advice, 1 784 MiB
    without, in the same time (benchmarks/RESULTS.md). Also usable as a decorator. A NumPy
    without the switch (it is private) runs the block unchanged.
    """
    switch = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    before = switch(False) if switch is not None else None
    try:
        yield
    finally:
        if switch is not None:
            switch(before)


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel lists them (empty where there is no such file)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    return frozenset(word for line in text.splitlines() if line.startswith("flags")
                     for word in line.partition(":")[2].split())


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AMX or AVX512-BF16).

    Without a flags file (not Linux), torch's own CPU probes decide (its dispatch level,
    ``get_cpu_capability()``, names no bf16 level). AVX-512 alone is not enough: oneDNN takes
    bf16 there but emulates it, no faster than fp32.
    """
    flags = cpu_flags()
    if flags:
        return bool(flags & NATIVE_BF16_FLAGS)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 autocast natively (a CUDA GPU of compute capability 8.0 or
    later, e.g. A100/H100; a CPU with AMX or AVX512-BF16), not through emulation."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_fast_bf16()


def resolve_precision(precision: str, device: torch.device, method_supports_bf16: bool) -> str:
    """``precision``, with ``"auto"`` made ``"bf16"`` or ``"fp32"``.

    ``"auto"`` trains in bf16 autocast only where ``device`` runs it natively and the method's
    quality was measured to hold in bf16 (``method_supports_bf16``; the figures are in
    benchmarks/RESULTS.md); fp32 everywhere else. Other values are returned unchanged.
    """
    if precision != "auto":
        return precision
    return "bf16" if method_supports_bf16 and has_native_bf16(device) else "fp32"


#: epochs shorter than this do not return freed memory: a call costs ~5 ms on a large heap
RELEASE_AFTER_SECONDS = 0.5


@functools.cache
def _glibc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return None


def release_free_memory() -> None:
    """Hand the heap's free pages back to the operating system (glibc's ``malloc_trim``; a
    no-op elsewhere). An epoch of a table with 10⁶ rows frees ~100 MB of arrays of varying
    size; glibc keeps them on its heap, where they fragmented and peak RSS grew by ~4 MB per
    epoch (3.55 GB beyond the input after 200 epochs, 2.25 GB after one): trimmed after each
    epoch it stays flat (benchmarks/RESULTS.md)."""
    trim = _glibc_trim()
    if trim is not None:
        trim(0)
