"""A training process killed with SIGKILL leaves a readable checkpoint; resuming from it gives
the same model as an uninterrupted run with the same random_state (CPU), for every trainer
that checkpoints: TLDR, CNE and t-SimCNE (``output_folder`` + ``resume``; t-SimCNE killed inside
its second stage) and ReLIC (``checkpoint_dir`` + ``resume_from``, mrl-pytorch's names)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from twinlearn import CNE, TLDR, ReLIC, TSimCNE, io
from twinlearn.training import Trainer

N_EPOCHS = 6
PARAMS = {
    "TLDR": dict(n_components=3, projector="mlp-1-64", n_epochs=N_EPOCHS, batch_size=32, random_state=0),
    "CNE": dict(n_epochs=N_EPOCHS, n_neighbors=5, batch_size=512, random_state=0),
    "ReLIC": dict(backbone="small_cnn", n_epochs=N_EPOCHS, batch_size=16, proj_hidden_dim=32,
                  nesting_dims=[8, 128], random_state=0),
    # stages of 2, 3 and 1 epochs; the kill lands in stage 2 (after epoch 3)
    "TSimCNE": dict(backbone="small_cnn", total_epochs=[2, 3, 1], batch_size=16, device="cpu",
                    pretrain_out_dim=16, nesting_dims=[4, 16], lr=[0.01, 0.01, 0.001], random_state=0),
}
#: the checkpoint epoch after which the run is killed
KILL_AFTER = {"TSimCNE": 3}
LATEST = "latest_snapshot.safetensors"
#: the model file each trainer writes once training is complete
FINAL = {"TLDR": "final_model.safetensors", "CNE": "final_model.safetensors",
         "ReLIC": "relic_model.safetensors", "TSimCNE": "final_model.safetensors"}


def _data(name: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if name in ("ReLIC", "TSimCNE"):
        return rng.integers(0, 256, (48, 16, 16, 3), dtype=np.uint8)
    return (rng.normal(size=(600, 20)) + rng.integers(0, 4, size=(600, 1)) * 3).astype(np.float32)


def train(name: str, folder: Path | None = None, resume: bool = False):
    """Fit trainer ``name`` on its data, checkpointing to ``folder`` (resuming from it)."""
    model = {"TLDR": TLDR, "CNE": CNE, "ReLIC": ReLIC, "TSimCNE": TSimCNE}[name](**PARAMS[name])
    X = _data(name)
    if name == "ReLIC":
        latest = folder / LATEST if resume else None
        return model.fit(X, checkpoint_dir=folder, resume_from=latest)
    return model.fit(X, output_folder=folder, resume=resume)


SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    sys.path.insert(0, {tests!r})
    from test_interrupt import train
    from twinlearn.training import Trainer

    # slow each epoch down (results unchanged) so the kill surely lands mid-run
    run_epoch = Trainer.run_epoch
    Trainer.run_epoch = lambda self: (time.sleep(0.3), run_epoch(self))[1]
    train({name!r}, {folder!r})
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("name", list(PARAMS))
def test_sigkill_then_resume_equals_uninterrupted(name, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    script = SCRIPT.format(tests=str(Path(__file__).parent), name=name, folder=str(folder))
    # the child gets this process's thread count: bf16 products (precision="auto" on an AMX
    # host) are blocked by thread count, and a 1-thread child drifted 5e-4 from a 2-thread run
    threads = str(torch.get_num_threads())
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": threads})
    latest = folder / LATEST
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and io.load_tensors(latest)[1]["epoch"] >= KILL_AFTER.get(name, 2):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    _, meta = io.load_tensors(latest, kind="checkpoint")  # readable despite the kill
    n_epochs = sum(PARAMS[name]["total_epochs"]) if name == "TSimCNE" else N_EPOCHS
    assert KILL_AFTER.get(name, 2) <= meta["epoch"] < n_epochs
    assert not (folder / FINAL[name]).exists()

    # count the epochs the resumed fit runs: a resume that silently restarted from scratch
    # would also end equal to the uninterrupted run
    epochs_run = []
    run_epoch = Trainer.run_epoch
    monkeypatch.setattr(Trainer, "run_epoch", lambda self: (epochs_run.append(1), run_epoch(self))[1])
    resumed = train(name, folder, resume=True)
    assert len(epochs_run) == n_epochs - meta["epoch"]
    monkeypatch.undo()
    full = train(name)
    assert resumed.n_epochs_trained_ == n_epochs
    assert (folder / FINAL[name]).exists()
    # t-SimCNE keeps one list per stage
    np.testing.assert_allclose(np.hstack(resumed.loss_history_), np.hstack(full.loss_history_), rtol=1e-4)
    X = _data(name)
    np.testing.assert_allclose(resumed.transform(X), full.transform(X), rtol=1e-4, atol=1e-4)
