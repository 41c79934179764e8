"""How model, checkpoint and kNN files are written (issue 11, item 12): the mode follows the umask
for a new file and is kept for a replaced one, a symlink is written through, a killed save
leaves the previous file and its temporary file is removed by the next save, and the folder is
fsynced after the rename."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hypothesis import strategies as st
from test_bad_input import run_cases

from twinlearn import io


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_modes_follow_the_umask_and_a_replaced_file_keeps_its_own(tmp_path, record_property):
    # before: always 0600 (mkstemp), and a 0644 model became 0600 when saved again
    path = tmp_path / "model.safetensors"
    cases = st.tuples(st.integers(0, 0o777), st.none() | st.integers(0, 0o777))

    def check(case):
        umask, existing = case
        path.unlink(missing_ok=True)
        if existing is not None:
            path.write_bytes(b"old")
            path.chmod(existing)
        old = os.umask(umask)
        try:
            io.atomic_write_bytes(path, b"new")
        finally:
            os.umask(old)
        assert path.read_bytes() == b"new"
        want = 0o666 & ~umask if existing is None else existing
        assert _mode(path) == want, (oct(umask), existing, oct(_mode(path)))

    run_cases(cases, check, record_property)


def test_a_symlink_is_written_through_and_kept(tmp_path):
    # before: the link was replaced by a regular file and its target left unchanged
    target = tmp_path / "store" / "model.safetensors"
    target.parent.mkdir()
    io.save_tensors(target, {"w": torch.zeros(2)}, {"kind": "model"})
    link, chain = tmp_path / "link.safetensors", tmp_path / "chain.safetensors"
    link.symlink_to(Path("store") / "model.safetensors")  # relative, as users make them
    chain.symlink_to(link)
    for name, value in ((link, 1.0), (chain, 2.0)):
        io.save_tensors(name, {"w": torch.full((2,), value)}, {"kind": "model"})
        assert link.is_symlink() and chain.is_symlink()
        assert torch.equal(io.load_tensors(target)[0]["w"], torch.full((2,), value))
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(tmp_path / "created.safetensors")
    io.save_tensors(dangling, {"w": torch.ones(2)}, {"kind": "model"})
    assert dangling.is_symlink() and (tmp_path / "created.safetensors").is_file()
    to_folder = tmp_path / "folder.safetensors"
    to_folder.symlink_to(target.parent)
    with pytest.raises(IsADirectoryError):
        io.save_tensors(to_folder, {"w": torch.ones(2)}, {"kind": "model"})
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.safetensors"]


def test_the_file_then_the_folder_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    # before: the folder was never fsynced, so a power cut could lose the rename
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    io.save_tensors(tmp_path / "m.safetensors", {"w": torch.ones(2)}, {"kind": "model"})
    assert events == ["fsync file", "rename", "fsync folder"]


KILLED_SAVE = """
import os, signal, sys
from twinlearn import io
def die(fd):  # the data is written, the rename not done: the state a kill mid-save leaves
    os.kill(os.getpid(), signal.SIGKILL)
io.os.fsync = die
io.atomic_write_bytes(sys.argv[1], b"half-saved")
"""


def _temps(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.tmp-"))


def test_a_killed_save_keeps_the_old_file_and_the_next_save_removes_its_temp(tmp_path):
    # before: temporary files of killed saves (.name.XXXX.tmp) stayed forever
    path = tmp_path / "model.safetensors"
    io.save_tensors(path, {"w": torch.zeros(2)}, {"kind": "model"})
    src = str(Path(io.__file__).parents[1])
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_SAVE), str(path)],
                          env={**os.environ, "PYTHONPATH": src}, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert torch.equal(io.load_tensors(path)[0]["w"], torch.zeros(2)), "the old file is damaged"
    (orphan,) = _temps(path)
    assert (tmp_path / orphan).read_bytes() == b"half-saved"

    # a temporary file another save holds locked, and a fresh unlocked one, are kept
    live, fresh = (tmp_path / f".{path.name}.tmp-{digit * 16}" for digit in "12")
    live.write_bytes(b"saving")
    fresh.write_bytes(b"just created")
    an_hour_ago = time.time() - 3600
    for old in (tmp_path / orphan, live):
        os.utime(old, (an_hour_ago, an_hour_ago))
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        io.save_tensors(path, {"w": torch.ones(2)}, {"kind": "model"})
    assert _temps(path) == sorted([live.name, fresh.name]), "the orphan stayed or a live temp went"
    assert torch.equal(io.load_tensors(path)[0]["w"], torch.ones(2))
    os.utime(fresh, (an_hour_ago, an_hour_ago))
    io.save_tensors(path, {"w": torch.ones(2)}, {"kind": "model"})
    assert _temps(path) == []
