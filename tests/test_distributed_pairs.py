"""TLDR and parametric CNE data-parallel on 2 CPU processes (gloo): the same call as in one
process, every process ends with the same model, equal to one process at the same global
batch; bad process groups are refused before any work; a run whose rank dies resumes."""

from __future__ import annotations

import os
import signal
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from twinlearn import CNE, TLDR

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")

WORLD = 2


def _data(n: int = 240) -> np.ndarray:
    """Four separated clusters in 12-D."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=6.0, size=(4, 12))
    return (centers[rng.integers(0, 4, n)] + rng.normal(size=(n, 12))).astype(np.float32)


def _tldr(n_epochs: int = 3) -> TLDR:
    # a batch-normed projector: its statistics must cover the global batch
    return TLDR(n_components=4, projector="mlp-1-32", n_neighbors=5, batch_size=64, n_epochs=n_epochs,
                learning_rate=0.4, warmup_epochs=0, random_state=0)


def _cne() -> CNE:
    # binary edges: fuzzy weights would carry the float noise of faiss's distances against
    # torch's into which edges an epoch keeps; 1 828 edges in batches of 105 leave an uneven
    # last one (43 edges: 21 and 22 per rank); SGD, as Adam blows float noise in tiny gradients
    # up to whole steps
    return CNE(parametric=True, edge_weights="binary", optimizer="sgd", learning_rate=1e-2,
               n_epochs=2, batch_size=105, n_neighbors=5, random_state=0)


def _params(module: torch.nn.Module) -> np.ndarray:
    return torch.cat([t.detach().float().flatten() for t in module.state_dict().values()]).numpy()


def _recording_steps(setattr=setattr) -> list[torch.Tensor]:
    """Patch the trainer (with ``setattr``: pytest's monkeypatch outside a worker) to record
    the anchors of every step it trains."""
    from twinlearn.training import Trainer

    seen, original = [], Trainer._train_step

    def train_step(trainer, batch):
        seen.append(batch[0].clone())
        return original(trainer, batch)

    setattr(Trainer, "_train_step", train_step)
    return seen


def _refusals(X: np.ndarray, rank: int) -> dict[str, np.ndarray]:
    """The messages of fits that must be refused: the ranks' data differ, or a table."""
    out = {}
    for name, fit in {"n": lambda: _tldr().fit(X[: len(X) - rank]),
                      "content": lambda: _cne().fit(X + rank),
                      "table": lambda: CNE(n_epochs=1).fit(X)}.items():
        try:
            fit()
            out[f"refused_{name}"] = np.array("no error")
        except ValueError as err:
            out[f"refused_{name}"] = np.array(str(err))
    return out


def _fit_both(rank: int) -> dict[str, np.ndarray]:
    X = _data()
    out = _refusals(X, rank)
    steps = _recording_steps()
    tldr = _tldr().fit(X, retain_projector=True)
    n_tldr_steps = len(steps)
    cne = _cne().fit(X)
    return {**out, "tldr": np.concatenate([_params(tldr.encoder_), _params(tldr.projector_)]),
            "tldr_knn": tldr.knn_indices_, "tldr_loss": np.array(tldr.loss_history_),
            "tldr_first": steps[0].numpy(), "cne_last": steps[-1].numpy(),
            "rows": np.array([len(a) for a in steps[:n_tldr_steps]]),
            "cne": _params(cne.model_), "cne_edges": cne.neighbor_graph_.toarray()}


def _killed(rank: int, folder: str) -> dict[str, np.ndarray]:
    """Rank 1 dies (SIGKILL) at the end of epoch 2, after rank 0 checkpointed epoch 1."""
    from twinlearn.training import Trainer

    original = Trainer.run_epoch

    def run_epoch(trainer):
        mean = original(trainer)
        if rank == 1 and trainer.epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return mean

    Trainer.run_epoch = run_epoch
    _tldr(n_epochs=4).fit(_data(), output_folder=folder)
    return {}


def _resumed(rank: int, folder: str) -> dict[str, np.ndarray]:
    resumed = _tldr(n_epochs=4).fit(_data(), output_folder=folder, resume=True)
    whole = _tldr(n_epochs=4).fit(_data())
    return {"resumed": _params(resumed.encoder_), "whole": _params(whole.encoder_),
            "epochs": np.array(resumed.n_epochs_trained_)}


SCENARIOS = {"fit_both": _fit_both, "killed": _killed, "resumed": _resumed}


def _worker(rank: int, port: int, out_dir: str, scenario: str, folder: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        args = (rank,) if folder is None else (rank, folder)
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **SCENARIOS[scenario](*args))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path, scenario: str, folder=None) -> list[dict[str, np.ndarray]]:
    out = tmp_path / scenario
    out.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(out), scenario, folder and str(folder)), nprocs=WORLD)
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(WORLD)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict[str, np.ndarray]]:
    """One spawn of 2 processes for the tests below (each start costs seconds)."""
    return _spawn(tmp_path_factory.mktemp("ranks"), "fit_both")


def test_two_processes_train_one_model_equal_to_one_process(two_ranks, monkeypatch):
    r0, r1 = two_ranks
    for key in ("tldr", "tldr_knn", "tldr_loss", "cne", "cne_edges"):
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)  # every rank: one model
    X = _data()
    steps = _recording_steps(monkeypatch.setattr)
    tldr = _tldr().fit(X, retain_projector=True)
    n_tldr_steps = len(steps)
    cne = _cne().fit(X)
    # each rank trained on its half of every global batch, together the one-process batch
    assert n_tldr_steps == len(r0["rows"]) and set(r0["rows"]) == {32}
    np.testing.assert_array_equal(np.concatenate([r0["tldr_first"], r1["tldr_first"]]), steps[0])
    assert (len(r0["cne_last"]), len(r1["cne_last"])) == (21, 22)  # the uneven last CNE batch
    np.testing.assert_array_equal(np.concatenate([r0["cne_last"], r1["cne_last"]]), steps[-1])
    # the kNN graph each rank searched half of is the one-process graph
    np.testing.assert_array_equal(r0["tldr_knn"], tldr.knn_indices_)
    np.testing.assert_array_equal(r0["cne_edges"], cne.neighbor_graph_.toarray())
    # same global batch, same pairs: the same training up to the order of float sums (and to
    # bf16 rounding of those sums where "auto" trains TLDR in bf16: 2.8e-4 on an AMX host)
    bf16 = tldr.precision_ == "bf16"
    np.testing.assert_allclose(r0["tldr_loss"], tldr.loss_history_, rtol=1e-3 if bf16 else 1e-4)
    one = np.concatenate([_params(tldr.encoder_), _params(tldr.projector_)])
    np.testing.assert_allclose(r0["tldr"], one, rtol=1e-3, atol=1e-3 if bf16 else 1e-4)
    np.testing.assert_allclose(r0["cne"], _params(cne.model_), rtol=1e-3, atol=1e-4)


def test_process_groups_that_disagree_are_refused_before_any_work(two_ranks):
    for result in two_ranks:
        # both ranks raise (none is left waiting), naming what differs
        message = str(result["refused_n"])
        assert "disagree on X" in message and "(240, 12)" in message and "(239, 12)" in message
        assert "disagree on X" in str(result["refused_content"])
        assert "parametric=True" in str(result["refused_table"])


def test_a_killed_rank_loses_nothing_resume_finishes_the_same_model(tmp_path):
    from twinlearn.io import load_tensors

    folder = tmp_path / "run"
    # rank 1's SIGKILL, or rank 0's error on the lost connection when that is seen first
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):
        _spawn(tmp_path, "killed", folder)
    _, meta = load_tensors(folder / "latest_snapshot.safetensors", kind="checkpoint")
    assert 1 <= meta["epoch"] < 4 and not (folder / "final_model.safetensors").exists()
    r0, r1 = _spawn(tmp_path, "resumed", folder)
    np.testing.assert_array_equal(r0["resumed"], r1["resumed"])
    np.testing.assert_allclose(r0["resumed"], r0["whole"], rtol=1e-5, atol=1e-6)
    assert int(r0["epochs"]) == 4 and (folder / "final_model.safetensors").exists()
