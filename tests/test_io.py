"""Model files: the safetensors + JSON round trip, atomic writes, and untrusted files (a pickle
under the model's name, a truncated file, a newer format, tensors or a config that do not fit)
refused with a clear error by the file layer and by every estimator's ``load``."""

from __future__ import annotations

import inspect
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_PARAMS, make_tiny
from safetensors import safe_open

from twinlearn import io


# --- crafting untrusted files (shared by the tests below and test_bad_input.py) ----------------
def write_pickle_bomb(path: Path, marker: Path) -> None:
    """A pickle that would create ``marker`` if anything unpickled it."""

    class Boom:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    path.write_bytes(pickle.dumps(Boom()))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and the twinlearn metadata of a file, without any of twinlearn's checks."""
    with safe_open(str(path), framework="pt") as fh:
        # copies, not views of the memory-mapped file the caller may rewrite
        return {k: fh.get_tensor(k).clone() for k in fh.keys()}, json.loads(fh.metadata()["twinlearn"])


def write_raw(path: Path, tensors: dict[str, torch.Tensor], meta: object) -> None:
    """Write tensors and metadata as given (``meta`` need not even be a dict), with a matching
    checksum: a crafted file passes the integrity check, so what it holds is what gets tested."""
    path.write_bytes(io.encode_file(tensors, json.dumps(meta)))


def rewrite(path: Path, change: Callable[[dict[str, torch.Tensor], dict], None]) -> None:
    """Apply ``change(tensors, meta)`` in place to the file at ``path``."""
    tensors, meta = read_raw(path)
    change(tensors, meta)
    write_raw(path, tensors, meta)


def _largest(tensors: dict[str, torch.Tensor]) -> str:
    return max(sorted(tensors), key=lambda k: tensors[k].numel())


def _drop_last_row(tensors, meta):
    key = _largest(tensors)
    tensors[key] = tensors[key][:-1].clone()


def _bump_version(tensors, meta):
    meta["format_version"] += 1


#: corruption name -> (apply to a saved model file, words the error must contain)
CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "pickle renamed to the model file": (
        lambda path: write_pickle_bomb(path, path.parent / "pwned"), "not a readable twinlearn model file"),
    "truncated": (truncate, "truncated|corrupt|readable"),
    "future format version": (lambda path: rewrite(path, _bump_version), "format version"),
    "another estimator's file": (
        lambda path: rewrite(path, lambda t, m: m.update({"class": "Other"})), "holds a Other model"),
    "a checkpoint, not a model": (
        lambda path: rewrite(path, lambda t, m: m.update(kind="checkpoint")), "'checkpoint'"),
    "tensor of the wrong shape": (lambda path: rewrite(path, _drop_last_row), "match|shape"),
    "tensor missing": (lambda path: rewrite(path, lambda t, m: t.pop(_largest(t))), "match|hold|no '"),
    "config field missing": (
        lambda path: rewrite(path, lambda t, m: m["fitted"].pop(sorted(m["fitted"])[0])), "invalid twinlearn config"),
    "config value of the wrong type": (
        lambda path: rewrite(path, lambda t, m: m["fitted"].update({sorted(m["fitted"])[0]: "x"})), "invalid|must"),
    "metadata not an object": (
        lambda path: write_raw(path, read_raw(path)[0], [1, 2]), "corrupt twinlearn metadata"),
}


def load_into(estimator, path: Path):
    """``estimator.load(path)``, taking the file's parameters where ``load`` asks."""
    if "init" in inspect.signature(estimator.load).parameters:
        return estimator.load(path, init=True)
    return estimator.load(path)


# --- the file layer ---------------------------------------------------------------------------
def test_roundtrip_and_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    io.save_tensors(path, {"a.w": torch.arange(6.0).reshape(2, 3)}, {"kind": "model", "x": [1, 2]})
    tensors, meta = io.load_tensors(path, kind="model")
    assert torch.equal(tensors["a.w"], torch.arange(6.0).reshape(2, 3))
    assert meta["x"] == [1, 2] and meta["format_version"] == io.FORMAT_VERSION


def test_pickle_is_refused_and_never_executed(tmp_path):
    path = tmp_path / "model.safetensors"
    write_pickle_bomb(path, tmp_path / "pwned")
    with pytest.raises(ValueError, match="not a readable twinlearn model file"):
        io.load_tensors(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_missing_and_future_files(tmp_path):
    path = tmp_path / "m.safetensors"
    io.save_tensors(path, {"w": torch.ones(100)}, {"kind": "model"})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes())
    truncate(cut)
    with pytest.raises(ValueError, match="truncated|corrupt|readable"):
        io.load_tensors(cut)
    with pytest.raises(FileNotFoundError):
        io.load_tensors(tmp_path / "nope.safetensors")
    with pytest.raises(IsADirectoryError):
        io.load_tensors(tmp_path)
    rewrite(path, _bump_version)
    with pytest.raises(ValueError, match="format version"):
        io.load_tensors(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    io.save_tensors(path, {"w": torch.ones(3)}, {"kind": "model"})
    before = path.read_bytes()

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", fail)
    with pytest.raises(OSError):
        io.save_tensors(path, {"w": torch.zeros(3)}, {"kind": "model"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_optimizer_state_roundtrip():
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    tensors, meta = io.optimizer_to_tensors(opt)
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.Adam([q], lr=0.1)
    io.optimizer_from_tensors(opt2, tensors, meta)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


# --- every estimator's load -------------------------------------------------------------------
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("estimator", list(TINY_PARAMS))
def test_untrusted_model_files_are_refused_clearly(estimator, corruption, fitted_tiny, tmp_path):
    path = tmp_path / "model.safetensors"
    fitted_tiny[estimator].save(path)
    corrupt, words = CORRUPTIONS[corruption]
    corrupt(path)
    fresh = type(fitted_tiny[estimator])()  # default parameters, unlike the file's
    before = fresh.get_params()
    with pytest.raises(ValueError, match=words) as info:
        load_into(fresh, path)
    assert str(path) in str(info.value), "the error must name the file"
    assert not (tmp_path / "pwned").exists(), "the pickle was executed"
    assert fresh.get_params() == before, "a failed load changed the estimator"
    assert not hasattr(fresh, "n_features_in_") and not fresh.__sklearn_is_fitted__()


@pytest.mark.parametrize("estimator", list(TINY_PARAMS))
def test_load_allocates_no_more_than_the_file_holds(estimator, fitted_tiny, tmp_path):
    # widths from the config build nothing before the tensors are checked against them
    path = tmp_path / "model.safetensors"
    fitted_tiny[estimator].save(path)
    huge = {key: 10**12 for key in ("n_features_in_", "n_samples_fit_", "out_dim", "feature_dim_")}

    def blow_up(tensors, meta):
        meta["fitted"].update({k: v for k, v in huge.items() if k in meta["fitted"]})
        meta["params"].update({k: 10**12 for k in ("n_components", "proj_out_dim") if k in meta["params"]})

    rewrite(path, blow_up)
    with pytest.raises(ValueError, match=str(path)):
        load_into(make_tiny(estimator), path)


def test_a_loaded_model_survives_its_file_being_rewritten(fitted_tiny, tmp_path):
    # a subprocess: without copies this dies of SIGBUS, or reads zeros for a file shorter than a
    # page (the tensors were views of the file's memory map)
    folder = tmp_path / "models"
    folder.mkdir()
    for key, model in fitted_tiny.items():
        model.save(folder / f"{key}.safetensors")
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import IMAGE_ESTIMATORS, TINY_PARAMS, make_tiny, tiny_images, tiny_vectors
        from test_io import load_into
        import numpy as np
        for key in TINY_PARAMS:
            path = Path({str(folder)!r}) / f"{{key}}.safetensors"
            model = load_into(make_tiny(key), path)
            X = tiny_images(2) if key in IMAGE_ESTIMATORS else tiny_vectors(3)
            before = model.transform(X)
            path.write_bytes(b"overwritten in place")  # not atomically: the same inode
            np.testing.assert_array_equal(model.transform(X), before, err_msg=key)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
