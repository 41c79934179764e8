"""Determinism on CPU and no global random state touched, for every estimator: the same
``random_state`` gives identical results run to run (and ``fit_transform`` equals ``fit`` then
``transform`` where the method promises it); a fit leaves torch's, NumPy's and Python's global
generators as they were, CUDA's included (checked without a GPU by watching the seeding calls)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import IMAGE_ESTIMATORS, TINY_PARAMS, make_tiny, tiny_images, tiny_vectors

#: estimators whose ``fit_transform(X)`` promises ``fit(X).transform(X)`` (non-parametric CNE
#: returns the training embedding, which its transform of new points does not reproduce)
FIT_TRANSFORM_IS_TRANSFORM = ("TLDR", "CNE(parametric=True)", "TSimCNE", "ReLIC")


def _data(estimator: str) -> np.ndarray:
    return tiny_images() if estimator in IMAGE_ESTIMATORS else tiny_vectors()


def _global_state() -> tuple:
    np_state = np.random.get_state()
    return (torch.get_rng_state(), torch.initial_seed(), np_state[0], np_state[1].copy(),
            *np_state[2:], random.getstate())


def _assert_same_state(before: tuple, after: tuple) -> None:
    assert torch.equal(before[0], after[0]), "torch's global generator state changed"
    assert before[1] == after[1], "torch.initial_seed() changed"
    assert np.array_equal(before[3], after[3]) and before[2:3] + before[4:] == after[2:3] + after[4:], \
        "NumPy's or Python's global generator changed"


@pytest.mark.parametrize("estimator", list(TINY_PARAMS))
def test_same_seed_same_result_and_no_global_rng_touched(estimator, monkeypatch):
    X = _data(estimator)
    torch.manual_seed(1234)
    np.random.seed(4321)
    random.seed(99)
    # seeding CUDA (even lazily, with no GPU) would change a GPU user's global generators
    cuda_seeds = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda seed, name=name: cuda_seeds.append((name, seed)))
    before = _global_state()
    first = make_tiny(estimator)
    Z_first = first.fit_transform(X)
    _assert_same_state(before, _global_state())
    assert cuda_seeds == []

    second = make_tiny(estimator).fit(X)
    np.testing.assert_array_equal(second.transform(X), first.transform(X))
    if estimator in FIT_TRANSFORM_IS_TRANSFORM:
        np.testing.assert_array_equal(Z_first, second.transform(X))
    else:
        np.testing.assert_array_equal(Z_first, second.embedding_)
    other = make_tiny(estimator, random_state=1).fit(X)
    assert not np.array_equal(other.transform(X), first.transform(X)), "random_state has no effect"
