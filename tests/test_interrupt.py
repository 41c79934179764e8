"""A training process killed with SIGKILL leaves a readable checkpoint; resuming from it gives
the same model as an uninterrupted run with the same random_state (CPU)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from twinlearn import TLDR, io

PARAMS = dict(n_components=3, projector="mlp-1-64", n_epochs=6, batch_size=32, random_state=0)


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(600, 20)) + rng.integers(0, 4, size=(600, 1)) * 3).astype(np.float32)


SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    sys.path.insert(0, {tests!r})
    from test_interrupt import PARAMS, _data
    from twinlearn import TLDR
    from twinlearn.training import Trainer

    # slow each epoch down (results unchanged) so the kill surely lands mid-run
    run_epoch = Trainer.run_epoch
    Trainer.run_epoch = lambda self: (time.sleep(0.3), run_epoch(self))[1]
    TLDR(**PARAMS).fit(_data(), output_folder={folder!r})
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    folder = tmp_path / "run"
    script = SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = folder / "latest_snapshot.safetensors"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if latest.exists() and io.load_tensors(latest)[1]["epoch"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    _, meta = io.load_tensors(latest, kind="checkpoint")  # readable despite the kill
    assert 2 <= meta["epoch"] < PARAMS["n_epochs"]
    assert not (folder / "final_model.safetensors").exists()

    X = _data()
    resumed = TLDR(**PARAMS).fit(X, output_folder=folder, resume=True)
    full = TLDR(**PARAMS).fit(X)
    assert resumed.n_epochs_trained_ == PARAMS["n_epochs"]
    np.testing.assert_allclose(resumed.loss_history_, full.loss_history_, rtol=1e-4)
    np.testing.assert_allclose(resumed.transform(X), full.transform(X), rtol=1e-4, atol=1e-4)
