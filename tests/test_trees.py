"""The compiled tree evaluator gives exactly xgboost's outputs, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
from lakeloop.trees import compiled_trees

xgb = pytest.importorskip("xgboost")


def _data(rows: int = 3000, features: int = 8, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take each split's default direction
    y = ((np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2])) > 0).astype(np.float32)
    return x, y


def _booster(params: dict, rounds: int = 40, seed: int = 1) -> xgb.Booster:
    x, y = _data(seed=seed)
    if params.get("objective", "").startswith("reg:squared"):
        y = y * 3 + np.nan_to_num(x[:, 3])
    return xgb.train({"max_depth": 5, "eta": 0.3, "nthread": 1, **params}, xgb.DMatrix(x, label=y), rounds)


@pytest.mark.parametrize("params", [{"objective": "binary:logistic"}, {"objective": "reg:squarederror"},
                                    {"objective": "binary:logistic", "base_score": 0.1},
                                    {"objective": "reg:logistic", "max_depth": 8}],
                         ids=["binary", "regression", "base-score", "deep"])
def test_compiled_outputs_equal_xgboost_bit_for_bit(params):
    booster = _booster(params)
    trees = compiled_trees(booster)
    assert trees is not None
    x, _ = _data(20_000, seed=9)
    expected = booster.inplace_predict(x, validate_features=False)
    assert expected.dtype == trees(x).dtype == np.float32
    assert np.array_equal(trees(x), expected)
    for row in x[:200]:  # one row at a time, as online requests come
        assert trees(row[None, :].copy())[0] == booster.inplace_predict(row[None, :], validate_features=False)[0]


def test_models_it_does_not_handle_keep_xgboost():
    multiclass = _booster({"objective": "multi:softprob", "num_class": 3}, rounds=5)
    assert compiled_trees(multiclass) is None
    dart = _booster({"objective": "binary:logistic", "booster": "dart", "rate_drop": 0.1}, rounds=5)
    assert compiled_trees(dart) is None


def test_a_bad_matrix_is_refused():
    trees = compiled_trees(_booster({"objective": "binary:logistic"}, rounds=3))
    with pytest.raises(ValueError, match="float32 matrix of 8 columns"):
        trees(np.zeros((1, 8), dtype=np.float64))
    with pytest.raises(ValueError, match="float32 matrix of 8 columns"):
        trees(np.zeros((1, 7), dtype=np.float32))
