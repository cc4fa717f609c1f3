"""The gate's statistics without Spark: task metrics, the paired (cluster) bootstrap, the per-task
baselines, and the seed sweep: a model trained on shuffled labels is refused as a first model on every
one of 20 seeds while a model of the real labels passes on every one (xgboost single-node fits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lakeloop.train import baselines, bootstrap, gate, metrics, tasks
from lakeloop.train.xgboost import BACKEND
from lakeloop_apps.recommender.model import FEATURES, LABEL

from tests.test_train import RUN_DATE, training_pandas

STRONG = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.1, "random_state": 0}
SETTINGS = {"train.gate_resamples": 200, "train.gate_confidence": 0.9, "train.seed": 7}


def test_metrics_of_every_task_and_their_direction():
    y = np.array([0, 0, 1, 1])
    from sklearn.metrics import roc_auc_score

    p = np.array([0.1, 0.6, 0.6, 0.9])
    assert metrics.compute("binary", "auc", y, p) == pytest.approx(roc_auc_score(y, p))  # ties count half
    assert metrics.compute("binary", "logloss", y, np.full(4, 0.5)) == pytest.approx(np.log(2))
    v = np.array([1.0, 2.0, 3.0])
    assert metrics.compute("regression", "rmse", v, v + 1) == pytest.approx(1.0)
    assert metrics.compute("regression", "mae", v, v - 2) == pytest.approx(2.0)
    assert metrics.compute("regression", "r2", v, v) == 1.0
    assert metrics.compute("regression", "r2", v, np.full(3, 2.0)) == pytest.approx(0.0)
    k = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 2, 1]] * 0.7 + 0.1
    assert metrics.compute("multiclass", "accuracy", k, probs) == 0.75
    assert metrics.compute("multiclass", "macro_f1", k, probs) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert metrics.compute("multiclass", "logloss", k, probs) == pytest.approx(-np.mean(np.log([0.8, 0.8, 0.8, 0.1])))
    assert metrics.improvement("regression", "rmse", 0.9, 1.0) == pytest.approx(0.1)
    assert metrics.improvement("binary", "auc", 0.7, 0.8) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="unknown regression metric 'auc': expected one of rmse, mae, r2"):
        metrics.metric("regression", "auc")


def test_task_predictions_are_checked():
    frame = pd.DataFrame({"p_0": [0.2], "p_1": [0.3], "p_2": [0.5]})
    assert tasks.predictions("multiclass", frame, 1, 3).shape == (1, 3)
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        tasks.predictions("multiclass", np.full((2, 2), 0.5), 2, 3)
    assert tasks.predictions("regression", [-5.0, 12.5], 2).tolist() == [-5.0, 12.5]
    with pytest.raises(ValueError, match="not finite"):
        tasks.predictions("regression", [np.nan, 1.0], 2)
    sig = tasks.signature("multiclass", ["a", "b"], 3)
    assert [c.name for c in sig.outputs.inputs] == ["p_0", "p_1", "p_2"]


def test_bootstrap_of_a_model_against_itself_has_no_improvement():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.3 + rng.uniform(size=400) * 0.7, 0, 1)
    same = bootstrap.paired_bootstrap("binary", "auc", y, p, p, resamples=50, confidence=0.9, seed=1)
    assert same.improvement == 0 and same.lower_bound == 0
    better = bootstrap.paired_bootstrap("binary", "auc", y, p, np.full(400, 0.5), resamples=100, confidence=0.9,
                                        seed=1, groups=np.arange(400) // 8)
    assert better.lower_bound > 0.1 and better.groups == 50 and better.usable == 100
    again = bootstrap.paired_bootstrap("binary", "auc", y, p, np.full(400, 0.5), resamples=100, confidence=0.9,
                                       seed=1, groups=np.arange(400) // 8)
    assert again == better  # seeded


def test_cluster_bootstrap_is_wider_than_the_row_bootstrap_for_clustered_rows():
    """Rows of one group share label and score: resampling rows understates the noise."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(60), 10)
    y = np.repeat(rng.integers(0, 2, 60), 10)
    p = np.repeat(rng.uniform(size=60), 10)
    rows = bootstrap.paired_bootstrap("binary", "auc", y, p, np.full(600, 0.5), resamples=200, confidence=0.9, seed=2)
    clustered = bootstrap.paired_bootstrap("binary", "auc", y, p, np.full(600, 0.5), resamples=200, confidence=0.9,
                                           seed=2, groups=groups)
    assert rows.improvement == clustered.improvement
    assert clustered.lower_bound < rows.lower_bound


def test_baselines_per_task():
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "y": [2.0, 4.0, 6.0, 100.0]})
    hold = pd.DataFrame({"x": [4.0, np.nan]})
    stats = baselines.stats_from_pandas(train, ["x"], "y", "regression")
    scores = baselines.baseline_scores(stats, hold)
    assert scores["mean"].tolist() == [28.0, 28.0]
    assert scores["feature:x"].tolist() == pytest.approx([8.0, 4.0])  # y = 2x; missing x -> its mean 2
    labels = pd.DataFrame({"k": [0, 1, 1, 2, 1]})
    multi = baselines.baseline_scores(baselines.stats_from_pandas(labels, [], "k", "multiclass", 3), hold)
    assert multi["majority"].tolist() == [[0, 1, 0]] * 2 and multi["class_frequencies"][0].tolist() == [0.2, 0.6, 0.2]
    binary = baselines.stats_from_pandas(pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 0, 1, 1]}), ["x"], "y",
                                         "binary")
    out = baselines.baseline_scores(binary, pd.DataFrame({"x": [-10.0, 1.5, 10.0], "c": [0.3, None, 2.0]}),
                                    {"conv": {"column": "c", "transform": "clip"}})
    assert out["positive_rate"].tolist() == [0.5] * 3 and out["feature:x"].tolist() == [0.0, 0.5, 1.0]
    assert out["conv"].tolist() == [0.3, 0.5, 1.0]


def _first_model_decision(seed: int, shuffle: bool) -> gate.GateDecision:
    """A first model of ``seed``'s data against the generic binary baselines, decided by the gate's statistics."""
    rows = training_pandas(RUN_DATE, seed=100 + seed)
    held = rows["user_id"] % 5 == 0
    train, hold = rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)
    if shuffle:
        train = train.assign(label=np.random.default_rng(seed).permutation(train[LABEL].to_numpy()))
    p = BACKEND.predict_local(BACKEND.fit_local(train, hold, FEATURES, LABEL, STRONG).model, hold)
    y = hold[LABEL].to_numpy()
    scores = baselines.baseline_scores(baselines.stats_from_pandas(train, FEATURES, LABEL, "binary"), hold)
    values = {k: metrics.compute("binary", "auc", y, v) for k, v in scores.items()}
    best = max(values, key=values.get)
    decision = gate.GateDecision(passed=False, metric="auc", margin=0.005, challenger_version="1",
                                 challenger_value=metrics.compute("binary", "auc", y, p),
                                 reference=f"baseline {best}", reference_value=values[best])
    gate.compare(SETTINGS, decision, y, p, scores[best], hold["user_id"].to_numpy())
    return decision


@pytest.mark.parametrize("seed", range(20))
def test_shuffled_labels_refused_and_real_model_promoted_on_every_seed(seed):
    refused = _first_model_decision(seed, shuffle=True)
    assert not refused.passed, refused.reasons
    promoted = _first_model_decision(seed, shuffle=False)
    assert promoted.passed, promoted.reasons
    assert promoted.lower_bound >= 0.005 and promoted.bootstrap["groups"] == len(set(range(0, 300, 5)))


def test_a_lucky_point_estimate_without_confidence_is_refused():
    """A challenger ahead by more than the margin on a tiny holdout is refused: the bound is below it."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40)
    p = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.3, 40), 0, 1)
    decision = gate.GateDecision(passed=False, metric="auc", margin=0.005, challenger_version="1",
                                 challenger_value=metrics.compute("binary", "auc", y, p), reference="baseline x",
                                 reference_value=0.5)
    gate.compare(SETTINGS, decision, y, p, np.full(40, 0.5))
    assert decision.improvement > 0.005 and decision.lower_bound < 0.005 and not decision.passed
    assert "not with confidence" in decision.reason
