"""The compiled tree evaluator gives exactly xgboost's outputs, or is not used."""

from __future__ import annotations

import json

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


def test_the_intercepts_margin_is_xgboosts_for_every_intercept():
    """A model of no trees predicts its intercept's margin: the compiled evaluator's logit of it is xgboost's
    exactly (numpy's float32 log is one unit in the last place off for about one intercept in five, which made
    such models fall back to xgboost)."""
    from lakeloop.trees import _logf

    x, y = np.zeros((4, 3), dtype=np.float32), np.array([0, 1, 0, 1], dtype=np.float32)
    for p in np.linspace(0.01, 0.99, 300).astype(np.float32):
        booster = xgb.train({"objective": "binary:logistic", "base_score": float(p)}, xgb.DMatrix(x, label=y), 0)
        margin = booster.inplace_predict(x[:1], predict_type="margin")[0]
        assert margin == -_logf(np.float32(1) / p - np.float32(1)), p


def test_a_tree_shorter_than_the_deepest_is_padded_to_the_same_outputs():
    """Trees of several depths in one ensemble (a leaf above the bottom repeated under padding nodes), scored by
    the complete-tree kernel and by the node-by-node walk: the same float32 outputs as xgboost's."""
    booster = _booster({"objective": "binary:logistic", "max_depth": 7, "min_child_weight": 40}, rounds=30)
    trees = compiled_trees(booster)
    assert trees is not None and trees.full is not None
    sizes = {int(t["tree_param"]["num_nodes"]) for t in json.loads(booster.save_raw("json"))["learner"][
        "gradient_booster"]["model"]["trees"]}
    assert len(sizes) > 1  # trees of different shapes
    x, _ = _data(5000, seed=4)
    expected = booster.inplace_predict(x, validate_features=False)
    full = trees(x)
    trees.full = None
    assert np.array_equal(full, expected) and np.array_equal(trees(x), expected)


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
