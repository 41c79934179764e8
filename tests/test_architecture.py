"""The shape the architecture promises: declared parameter constraints for every estimator, one
set-up helper, the kNN index object, staged training, numba loaded only for the fused path,
feature names out of every fitted estimator."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import IMAGE_ESTIMATORS, TINY_PARAMS, make_tiny

import twinlearn
from twinlearn.neighbors import KNNIndex, compute_knn
from twinlearn.training import Trainer
from twinlearn.training.trainer import Stage

ESTIMATOR_CLASSES = ("TLDR", "CNE", "TSimCNE", "ReLIC")


@pytest.mark.parametrize("name", ESTIMATOR_CLASSES)
def test_every_init_argument_has_a_declared_constraint(name):
    cls = getattr(twinlearn, name)
    arguments = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert arguments == set(cls._parameter_constraints)


@pytest.mark.parametrize("name", ESTIMATOR_CLASSES)
def test_defaults_satisfy_their_own_constraints(name):
    getattr(twinlearn, name)()._validate_params()


@pytest.mark.parametrize(
    "name, params, error, match",
    [
        ("TLDR", {"n_components": 10**9}, ValueError, "n_components.*implausibly large"),
        ("TLDR", {"learning_rate": 1e300}, ValueError, "learning_rate.*implausibly large"),
        ("TLDR", {"batch_size": True}, TypeError, "batch_size must be an int"),
        ("TLDR", {"random_state": 2**64}, ValueError, "random_state"),
        ("CNE", {"negative_samples": 10**9}, ValueError, "negative_samples"),
        ("CNE", {"learning_rate": float("nan")}, ValueError, "learning_rate"),
        ("CNE", {"metric": True}, TypeError, "metric"),
        ("TSimCNE", {"pretrain_out_dim": 10**9}, ValueError, "pretrain_out_dim.*implausibly"),
        ("TSimCNE", {"image_size": 10**5}, ValueError, "image"),
        ("ReLIC", {"n_components": 999, "backbone": "resnet18"}, ValueError, "n_components=999 exceeds"),
        ("ReLIC", {"gamma": 1.0}, ValueError, "gamma"),
    ],
)
def test_implausible_parameters_are_refused_before_any_work(name, params, error, match):
    with pytest.raises(error, match=match):
        getattr(twinlearn, name)(**params)._validate_params()


def test_a_missing_constraint_is_a_programming_error():
    class Sloppy(twinlearn.TLDR):
        def __init__(self, n_components=2, extra=1):
            self._store_init_args(locals())

    with pytest.raises(RuntimeError, match="declares no constraint"):
        Sloppy()._validate_params()


@pytest.mark.parametrize("key", list(TINY_PARAMS))
def test_feature_names_out_of_every_fitted_estimator(fitted_tiny, key):
    estimator = fitted_tiny[key]
    names = estimator.get_feature_names_out()
    width = estimator.transform(_data_for(key)[:3]).shape[1]
    prefix = type(estimator).__name__.lower()
    assert list(names) == [f"{prefix}{i}" for i in range(width)]


def _data_for(key):
    from conftest import tiny_images, tiny_vectors

    return tiny_images() if key in IMAGE_ESTIMATORS else tiny_vectors()


def test_relic_feature_names_follow_the_feature_width_when_n_components_is_none(fitted_tiny):
    relic = fitted_tiny["ReLIC"]
    assert relic.n_components is None
    assert len(relic.get_feature_names_out()) == relic.feature_dim_


def test_knn_index_queries_match_brute_force():
    rng = np.random.default_rng(0)
    X, Q = rng.normal(size=(300, 6)).astype(np.float32), rng.normal(size=(20, 6)).astype(np.float32)
    d2 = ((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    for method in ("exact", "faiss", "hnsw"):
        idx, dist = KNNIndex(method).build(X).query(Q, 5)
        np.testing.assert_array_equal(idx, np.argsort(d2, axis=1)[:, :5])
        np.testing.assert_allclose(dist, np.sort(d2, axis=1)[:, :5], rtol=1e-4)
    self_idx, _ = KNNIndex("exact").build(X).query_self(4)
    np.testing.assert_array_equal(self_idx, compute_knn(X, 4, method="faiss")[0])
    assert not (self_idx == np.arange(300)[:, None]).any()


def test_knn_index_can_leave_the_graph_on_its_device():
    X = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    idx, dist = KNNIndex("exact").build(X).query_self(3, on_device=True)
    assert isinstance(idx, torch.Tensor) and idx.device.type == "cpu" and idx.shape == (50, 3)


class _Counter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return (self.w * batch[0]).sum()


class _Source:
    def __init__(self, n_batches=2):
        self.generator = torch.Generator().manual_seed(0)
        self.batch_size = 2
        self.n_batches = n_batches

    def __len__(self):
        return self.n_batches

    def epoch(self):
        for _ in range(self.n_batches):
            yield (torch.ones(2), torch.ones(2))


def test_stages_enter_in_order_with_their_own_optimizer_and_step_offset():
    objective = _Counter()
    entered, lrs = [], []

    def stage(index, n_epochs, lr):
        def enter(trainer):
            entered.append((index, trainer.epoch))
            return torch.optim.SGD(objective.parameters(), lr=lr), lambda step: lrs.append(step) or 1.0

        return Stage(n_epochs, enter)

    trainer = Trainer.in_stages(objective, _Source(), [stage(0, 2, 0.1), stage(1, 0, 0.2), stage(2, 1, 0.3)])
    trainer.fit()
    # the empty stage is still entered (t-SimCNE's fresh layer), right before the third
    assert entered == [(0, 0), (1, 2), (2, 2)]
    assert lrs == [0, 1, 2, 3, 0, 1]  # the schedule counts steps from its stage's start
    assert trainer.optimizer.param_groups[0]["initial_lr"] == 0.3


def test_trainer_refuses_weights_that_diverged_in_the_last_step():
    class Explode(_Counter):
        def forward(self, batch):
            return 1e30 * (self.w**2).sum()

    objective = Explode()
    # one step: its loss (1e30) is finite, the weight it leaves is not
    trainer = Trainer(objective, _Source(n_batches=1), torch.optim.SGD(objective.parameters(), lr=1e30),
                      lambda step: 1.0, 1)
    with pytest.raises(twinlearn.training.TrainingDiverged, match="weight"):
        trainer.fit()


def test_numba_loads_only_when_the_fused_table_path_runs():
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from twinlearn import CNE
        X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
        CNE(parametric=True, n_epochs=1, batch_size=64, n_neighbors=5, random_state=0).fit(X)
        assert "numba" not in sys.modules, "parametric CNE imported numba"
        CNE(n_epochs=1, batch_size=64, n_neighbors=5, random_state=0).fit(X)
        assert "numba" in sys.modules, "the table path did not use the fused kernel"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_every_estimator_fit_goes_through_the_shared_set_up(monkeypatch):
    from twinlearn.estimators._base import TwinlearnEstimator

    calls = []
    original = TwinlearnEstimator._run_training

    def spy(self, trainer, X, keep, **options):
        calls.append(type(self).__name__)
        return original(self, trainer, X, keep, **options)

    monkeypatch.setattr(TwinlearnEstimator, "_run_training", spy)
    for key in TINY_PARAMS:
        make_tiny(key).fit(_data_for(key))
    assert calls == [key.split("(")[0] for key in TINY_PARAMS]
