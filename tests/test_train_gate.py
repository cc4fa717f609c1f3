"""The evaluation gate against a real MLflow registry (SQLite under tmp_path): first model vs the
naive baselines, a shuffled-label model refused, a better model promoted, a model that cannot be
served refused by the infra check, and the metric arithmetic.  Models are trained single-node with
the xgboost backend so these tests need no Spark job."""

from __future__ import annotations

import json
import uuid

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
from lakeloop.train import gate, registry, report
from lakeloop.train.run import model_signature
from lakeloop.train.spec import model_conf
from lakeloop.train.xgboost import BACKEND
from lakeloop_apps.recommender.model import FEATURES, LABEL

from tests.test_train import RUN_DATE, training_pandas

WEAK = {"n_estimators": 2, "max_depth": 1, "learning_rate": 0.3, "random_state": 0}
STRONG = {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.1, "random_state": 0}


@pytest.fixture(scope="module")
def frames():
    rows = training_pandas(RUN_DATE)
    held = rows["user_id"] % 5 == 0
    train, holdout = rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)
    for part in (train, holdout):
        part[FEATURES] = part[FEATURES].astype("float64")
    return train, holdout


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One SQLite tracking store for the module (creating its tables takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return {"mlflow.tracking_uri": f"sqlite:///{root}/mlflow.db", "mlflow.artifact_root": str(root / "artifacts")}


@pytest.fixture
def gate_conf(conf, tracking):
    """A conf with its own registered model name in the shared store."""
    conf = conf.with_overrides({**tracking, "mlflow.model_name": f"gate-{uuid.uuid4().hex[:8]}",
                                "train.gate_margin": 0.01})
    conf = model_conf(conf)  # the recommender's model spec (conf/models/ranker.yaml): its baselines
    registry.setup(conf)
    return conf


def register(conf, fit=None, python_model=None):
    """Log a model in a new run and register it with @challenger; returns the version string."""
    with mlflow.start_run() as run:
        if python_model is None:
            info = BACKEND.log_model(fit, "model", signature=model_signature(FEATURES), input_example=None)
        else:
            info = mlflow.pyfunc.log_model(name="model", python_model=python_model, pip_requirements=[])
        return registry.register_challenger(conf, info.model_uri, run.info.run_id, {})


def fit(frames, params, shuffle=False):
    train, holdout = frames
    if shuffle:
        train = train.assign(label=np.random.default_rng(1).permutation(train[LABEL].to_numpy()))
    return BACKEND.fit_local(train, holdout, FEATURES, LABEL, params)


def run_gate(conf, frames, version):
    train, holdout = frames
    decision, scores = gate.evaluate(conf, holdout, FEATURES, LABEL, float(train[LABEL].mean()), version)
    gate.apply(conf, decision)
    return decision, scores


def champion(conf):
    return registry.alias_version(conf, registry.CHAMPION)


def version_tags(conf, version):
    return registry.client(conf).get_model_version(conf["mlflow.model_name"], version).tags


def test_first_model_must_beat_the_naive_baselines(gate_conf, frames):
    v1 = register(gate_conf, fit(frames, WEAK))
    assert registry.alias_version(gate_conf, registry.CHALLENGER) == v1
    decision, scores = run_gate(gate_conf, frames, v1)
    assert decision.passed, decision.reasons
    assert decision.reference.startswith("baseline ") and decision.champion_version is None
    assert set(decision.baselines) == {"positive_rate", "item_conversion", "item_popularity"}
    assert decision.baselines["positive_rate"] == pytest.approx(0.5)  # a constant score has AUC 0.5
    assert decision.reference_value == max(decision.baselines.values())
    assert decision.challenger_value >= decision.reference_value + 0.01
    assert len(scores) == len(frames[1])
    assert champion(gate_conf) == v1
    tags = version_tags(gate_conf, v1)
    assert tags["gate.decision"] == "promoted" and "baseline" in tags["gate.reason"]


def test_first_model_no_better_than_baseline_is_refused(gate_conf, frames):
    v1 = register(gate_conf, fit(frames, STRONG, shuffle=True))
    decision, _ = run_gate(gate_conf, frames, v1)
    assert not decision.passed
    assert champion(gate_conf) is None
    assert version_tags(gate_conf, v1)["gate.decision"] == "refused"


def test_shuffled_labels_refused_and_better_model_promoted(gate_conf, frames):
    v1 = register(gate_conf, fit(frames, WEAK))
    assert run_gate(gate_conf, frames, v1)[0].passed

    worse = register(gate_conf, fit(frames, STRONG, shuffle=True))
    decision, _ = run_gate(gate_conf, frames, worse)
    assert not decision.passed
    assert decision.reference == f"champion v{v1}" and decision.champion_version == v1
    assert decision.challenger_value < decision.champion_value
    assert champion(gate_conf) == v1  # untouched
    assert registry.alias_version(gate_conf, registry.CHALLENGER) == worse
    assert "does not beat champion" in version_tags(gate_conf, worse)["gate.reason"]

    better = register(gate_conf, fit(frames, STRONG))
    decision, _ = run_gate(gate_conf, frames, better)
    assert decision.passed, decision.reasons
    assert decision.challenger_value >= decision.champion_value + 0.01
    assert champion(gate_conf) == better
    # both were scored on the same holdout: re-scoring the old champion gives the value the gate used
    old = mlflow.pyfunc.load_model(f"models:/{gate_conf['mlflow.model_name']}/{v1}").predict(frames[1][FEATURES])
    assert gate.score("auc", frames[1][LABEL].to_numpy(), np.asarray(old)) == pytest.approx(decision.champion_value)


class FailsToLoad(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        raise RuntimeError("model weights missing")

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), 0.5)


class PredictsNaN(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), np.nan)


@pytest.mark.parametrize("broken, message", [(FailsToLoad(), "model weights missing"),
                                             (PredictsNaN(), "not finite probabilities")])
def test_infra_check_failure_refuses_promotion(gate_conf, frames, broken, message):
    v1 = register(gate_conf, fit(frames, WEAK))
    assert run_gate(gate_conf, frames, v1)[0].passed
    bad = register(gate_conf, python_model=broken)
    decision, scores = run_gate(gate_conf, frames, bad)
    assert not decision.passed and scores is None
    assert f"infra check failed for models:/{gate_conf['mlflow.model_name']}@challenger" in decision.reason
    assert message in decision.reason
    assert champion(gate_conf) == v1
    assert version_tags(gate_conf, bad)["gate.decision"] == "refused"


def test_gate_refuses_when_challenger_alias_moved(gate_conf, frames):
    v1 = register(gate_conf, fit(frames, WEAK))
    register(gate_conf, fit(frames, WEAK))  # another run moved @challenger
    decision, _ = run_gate(gate_conf, frames, v1)
    assert not decision.passed and "@challenger is version" in decision.reason
    assert champion(gate_conf) is None


def test_metric_direction_and_margin():
    y = np.array([0, 0, 1, 1])
    assert gate.score("auc", y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert gate.score("logloss", y, np.array([0.5] * 4)) == pytest.approx(np.log(2))
    assert gate.beats("auc", 0.80, 0.79, 0.01) and not gate.beats("auc", 0.80, 0.795, 0.01)
    assert gate.beats("logloss", 0.40, 0.45, 0.01) and not gate.beats("logloss", 0.45, 0.40, 0.01)
    with pytest.raises(ValueError, match="unknown gate metric"):
        gate.score("accuracy", y, y)


def test_positive_scores_normalises_and_checks_predictions():
    assert gate.positive_scores(np.array([[0.7, 0.3], [0.2, 0.8]]), 2).tolist() == [0.3, 0.8]
    with pytest.raises(ValueError, match="shape"):
        gate.positive_scores(np.array([0.1, 0.2, 0.3]), 2)
    with pytest.raises(ValueError, match="finite probabilities"):
        gate.positive_scores(np.array([0.1, 1.5]), 2)


def test_evaluation_plots_and_run_report(conf, tmp_path, frames):
    train, holdout = frames
    result = fit(frames, WEAK)
    p = BACKEND.predict_local(result.model, holdout)
    paths = report.evaluation_plots(holdout[LABEL].to_numpy(), p, result.feature_importance, tmp_path / "plots")
    assert [x.name for x in paths] == ["roc.png", "pr.png", "calibration.png", "feature_importance.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert len(report.evaluation_plots(holdout[LABEL].to_numpy(), p, {}, tmp_path / "p2")) == 3
    out = report.write_run_report(conf, RUN_DATE, {"gate": {"decision": "refused"}})
    assert out == tmp_path / "warehouse" / "_reports" / "train" / "dt=2026-11-10.json"
    report.write_run_report(conf, RUN_DATE, {"gate": {"decision": "promoted"}})  # a re-run replaces it
    assert json.loads(out.read_text()) == {"gate": {"decision": "promoted"}}
    assert [f.name for f in out.parent.iterdir()] == ["dt=2026-11-10.json"]
