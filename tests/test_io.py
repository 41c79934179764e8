import pickle

import pytest
import torch

from twinlearn import io


def test_roundtrip_and_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    io.save_tensors(path, {"a.w": torch.arange(6.0).reshape(2, 3)}, {"kind": "model", "x": [1, 2]})
    tensors, meta = io.load_tensors(path, kind="model")
    assert torch.equal(tensors["a.w"], torch.arange(6.0).reshape(2, 3))
    assert meta["x"] == [1, 2] and meta["format_version"] == io.FORMAT_VERSION


def test_pickle_is_refused_and_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="not a readable twinlearn model file"):
        io.load_tensors(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_missing_and_future_files(tmp_path):
    path = tmp_path / "m.safetensors"
    io.save_tensors(path, {"w": torch.ones(100)}, {"kind": "model"})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated|corrupt|readable"):
        io.load_tensors(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError):
        io.load_tensors(tmp_path / "nope.safetensors")
    io.FORMAT_VERSION += 1
    try:
        io.save_tensors(path, {"w": torch.ones(1)}, {"kind": "model"})
    finally:
        io.FORMAT_VERSION -= 1
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
