"""Corrupt and crafted checkpoints (issue 11, item 8): ``Trainer.load_checkpoint`` checks the
counters, loss history, weights, optimizer state, random generator and fp16 scaler state
against the run before it changes anything. A refused checkpoint gives a ``ValueError`` naming
the file and leaves the trainer as it was; an accepted one trains on without a crash."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import strategies as st
from test_bad_input import json_values, run_cases
from test_io import read_raw, write_raw

from twinlearn.training import LARS, lars_param_groups
from twinlearn.training.trainer import Trainer, TrainingDiverged

N_EPOCHS = 3


class Batches:
    """A pair source: 4 batches of 8 rows an epoch, in an order drawn by its generator."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(0)
        self.rows = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return 4

    def epoch(self):
        order = torch.randperm(32, generator=self.generator)
        yield from (self.rows[order[i:i + 8]] for i in range(0, 32, 8))


class Objective(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch).pow(2).mean()


OPTIMIZERS = {
    "LARS": lambda module: LARS(lars_param_groups(module), lr=0.1),
    "Adam": lambda module: torch.optim.Adam(module.parameters(), lr=0.01),
    "SGD": lambda module: torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9),
}
SETUPS = [("LARS", "fp32"), ("Adam", "fp16"), ("SGD", "fp32")]


def make_trainer(optimizer: str, precision: str) -> Trainer:
    objective = Objective()
    return Trainer(objective, Batches(), OPTIMIZERS[optimizer](objective), lambda step: 1.0,
                   N_EPOCHS, precision=precision, checkpoint_meta={"class": "Test"})


def state_of(trainer: Trainer) -> list:
    return copy.deepcopy([
        trainer.objective.state_dict(), trainer.optimizer.state_dict(),
        trainer.pair_source.generator.get_state(), trainer._scaler.state_dict(),
        trainer.epoch, trainer.step, trainer.loss_history,
    ])


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """A checkpoint after 2 of 3 epochs for each setup, and the loss of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for setup in SETUPS:
        trainer = make_trainer(*setup)
        trainer.n_epochs = 2
        trainer.fit()
        path = folder / f"{'-'.join(setup)}.safetensors"
        trainer.save_checkpoint(path)
        full = make_trainer(*setup).fit()
        made[setup] = (path, full.loss_history)
    return made


@pytest.mark.parametrize("setup", SETUPS, ids="-".join)
def test_a_checkpoint_resumes_exactly(setup, checkpoints):
    path, full_history = checkpoints[setup]
    trainer = make_trainer(*setup)
    trainer.load_checkpoint(path)
    assert (trainer.epoch, trainer.step) == (2, 8)
    assert trainer.fit().loss_history == full_history


@pytest.mark.parametrize("epoch", [N_EPOCHS + 1, 10**18, -1])
def test_an_epoch_outside_the_run_is_refused_not_skipped(epoch, checkpoints, tmp_path):
    # before: epoch=10**18 was taken, and fit() trained nothing
    source, _ = checkpoints[SETUPS[0]]
    tensors, meta = read_raw(source)
    history = [1.0] * epoch if 0 <= epoch < 100 else []
    meta.update(epoch=epoch, step=epoch * 4, loss_history=history)
    path = tmp_path / "checkpoint.safetensors"
    write_raw(path, tensors, meta)
    trainer = make_trainer(*SETUPS[0])
    with pytest.raises(ValueError, match="epoch") as info:
        trainer.load_checkpoint(path)
    assert str(path) in str(info.value) and trainer.epoch == 0


@pytest.mark.parametrize("drop", ["optimizer.0.exp_avg", "rng.pair_source",
                                  "objective.net.0.weight"])
def test_a_checkpoint_missing_a_tensor_is_refused_before_anything_changes(drop, checkpoints,
                                                                        tmp_path):
    # before: a KeyError, or a KeyError at the first optimizer step after the weights had been
    # replaced (a parameter without any optimizer state is fine: it starts afresh, as in torch)
    setup = ("Adam", "fp16")
    tensors, meta = read_raw(checkpoints[setup][0])
    del tensors[drop]
    path = tmp_path / "checkpoint.safetensors"
    write_raw(path, tensors, meta)
    trainer = make_trainer(*setup)
    before = state_of(trainer)
    with pytest.raises(ValueError) as info:
        trainer.load_checkpoint(path)
    assert str(path) in str(info.value)
    assert same(state_of(trainer), before), "a refused checkpoint changed the trainer"


def _tensor_change(draw, tensors: dict) -> None:
    key = draw(st.sampled_from(sorted(tensors)))
    value = tensors[key]
    action = draw(st.sampled_from(["delete", "reshape", "dtype", "nan", "extra", "random bytes"]))
    if action == "delete":
        del tensors[key]
    elif action == "reshape":
        tensors[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)), dtype=value.dtype)
    elif action == "dtype":
        tensors[key] = value.to(draw(st.sampled_from([torch.float64, torch.int64, torch.uint8,
                                                      torch.float16, torch.bool])))
    elif action == "nan" and value.is_floating_point() and value.numel():
        flat = value.clone().view(-1)
        flat[0] = float("nan")
        tensors[key] = flat.view_as(value)
    elif action == "random bytes":
        raw = draw(st.binary(min_size=value.numel() * value.element_size(),
                             max_size=value.numel() * value.element_size()))
        if raw:
            tensors[key] = torch.frombuffer(bytearray(raw), dtype=value.dtype).view_as(value)
    else:
        prefix = draw(st.sampled_from(["objective.", "optimizer.0.", "optimizer.99.", ""]))
        tensors[prefix + draw(st.text("abmu.", min_size=1, max_size=4))] = torch.ones(2)


def _meta_change(draw, meta: dict) -> None:
    """Replace or delete one entry of the metadata, at any depth of its optimizer part."""
    target = meta
    path = draw(st.sampled_from([[], ["optimizer"], ["optimizer", "param_groups", 0],
                                 ["optimizer", "scalars"], ["loss_history"], ["scaler"]]))
    for step in path:
        # an earlier change may have left a list where a dict was (or the reverse)
        if (isinstance(target, dict) and step in target
                or isinstance(target, list) and isinstance(step, int) and len(target) > step):
            target = target[step]
    if isinstance(target, list):
        index = draw(st.integers(0, max(len(target), 1)))
        if index < len(target) and draw(st.booleans()):
            del target[index]
        else:
            target.insert(index, draw(json_values))
        return
    if not isinstance(target, dict):
        return
    key = draw(st.sampled_from([*sorted(target), "epoch", "step", "0.mu", "1.step"]))
    numbers = st.integers(-3, 20) | st.sampled_from([10**18, 2.0, float("nan"), True, "1"])
    if draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = draw(numbers if key in ("epoch", "step") else json_values)


@st.composite
def corrupt_checkpoints(draw, checkpoints: dict):
    setup = draw(st.sampled_from(SETUPS))
    tensors, meta = read_raw(checkpoints[setup][0])
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            _tensor_change(draw, tensors)
        else:
            _meta_change(draw, meta)
    return setup, tensors, meta


def test_corrupt_checkpoints_are_refused_cleanly_or_train_on(checkpoints, tmp_path,
                                                             record_property):
    path = tmp_path / "checkpoint.safetensors"

    def check(case):
        setup, tensors, meta = case
        write_raw(path, tensors, meta)
        trainer = make_trainer(*setup)
        before = state_of(trainer)
        try:
            trainer.load_checkpoint(path)
        except ValueError as err:
            assert str(path) in str(err), repr(err)
            assert same(state_of(trainer), before), "a refused checkpoint changed the trainer"
            return
        assert 0 <= trainer.epoch <= N_EPOCHS and trainer.step == trainer.epoch * 4
        try:
            trainer.fit()  # a crafted but well-formed state (a huge lr, say) may diverge
        except TrainingDiverged:
            return
        assert trainer.epoch == N_EPOCHS and len(trainer.loss_history) == N_EPOCHS

    run_cases(corrupt_checkpoints(checkpoints), check, record_property)


@pytest.mark.parametrize("step", [-8192.0, 2.5])
def test_an_adam_step_count_below_zero_or_fractional_is_refused(checkpoints, tmp_path, step):
    # found by the test above in CI: a negative step overflowed Adam's β^step at the next step
    path = tmp_path / "checkpoint.safetensors"
    setup = next(s for s in SETUPS if s[0] == "Adam")
    tensors, meta = read_raw(checkpoints[setup][0])
    key = next(k for k in tensors if k.startswith("optimizer.") and k.endswith(".step"))
    tensors[key] = torch.tensor(step)
    write_raw(path, tensors, meta)
    trainer = make_trainer(*setup)
    with pytest.raises(ValueError, match="step") as info:
        trainer.load_checkpoint(path)
    assert str(path) in str(info.value)
