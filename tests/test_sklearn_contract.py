"""The scikit-learn estimator contract, checked by scikit-learn itself, for every vector estimator."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from twinlearn import TLDR

TINY = {"n_epochs": 1, "batch_size": 8, "n_neighbors": 3, "random_state": 0}

#: every vector estimator, with tiny settings; expected failures with the reason a reviewer accepts
ESTIMATORS = [TLDR(n_components=2, projector="mlp-1-16", **TINY)]
EXPECTED_FAILURES: dict[str, dict[str, str]] = {"TLDR": {}}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILURES[type(est).__name__])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_grid_search_pipeline_and_pandas_output(estimator, blobs):
    X, y = blobs
    pipe = Pipeline([("embed", clone(estimator)), ("knn", KNeighborsClassifier(3))])
    search = GridSearchCV(pipe, {"embed__n_components": [2, 3]}, cv=2).fit(X, y)
    assert search.best_params_["embed__n_components"] in (2, 3)
    assert search.best_score_ > 0.9
    frame = clone(estimator).set_output(transform="pandas").fit_transform(X)
    prefix = type(estimator).__name__.lower()
    assert list(frame.columns) == [f"{prefix}{i}" for i in range(frame.shape[1])]
    assert np.isfinite(frame.to_numpy()).all()
