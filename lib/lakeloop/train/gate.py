"""The evaluation gate: a new model version becomes ``@champion`` only when it earns it.

1. Infra check: ``models:/<name>@challenger`` is loaded with :func:`mlflow.pyfunc.load_model` (what
   serving and bulk inference will do) and must predict ``train.infra_check_rows`` rows as the task's
   prediction (finite probabilities, values or class-probability rows: :func:`lakeloop.train.tasks.predictions`).
   Any failure refuses the challenger.
2. The challenger and the reference are scored on the SAME holdout frame and compared on
   ``train.gate_metric`` by a seeded paired bootstrap (:mod:`lakeloop.train.bootstrap`,
   ``train.gate_resamples`` resamples): the challenger passes when its improvement over the reference is at
   least ``train.gate_margin`` AND the one-sided lower confidence bound (``train.gate_confidence``) of
   that improvement is at least the margin too.  A model whose advantage could be holdout noise is refused.
3. The reference is the current ``@champion``; with no champion (the first model, or a champion that no
   longer loads) it is the best naive baseline on the holdout (:mod:`lakeloop.train.baselines`: the
   task's generic ones and the model spec's domain ones).

The decision and every reason are returned as a :class:`GateDecision`; :func:`apply` moves the alias
(or leaves ``@champion`` untouched) and tags the model version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.train import baselines, bootstrap, metrics, registry, tasks

if TYPE_CHECKING:
    import pandas as pd

    from lakeloop.conf import Conf

__all__ = ["GateDecision", "METRICS", "score", "beats", "positive_scores", "infra_check", "evaluate", "apply",
           "decision_tags"]

# binary metric -> higher is better (every task's: lakeloop.train.metrics)
METRICS = {name: m.higher_is_better for name, m in metrics.METRICS["binary"].items()}


@dataclass
class GateDecision:
    """Outcome of the gate for one challenger version."""

    passed: bool
    metric: str
    margin: float
    challenger_version: str
    challenger_value: float | None
    reference: str
    reference_value: float | None
    champion_version: str | None = None
    champion_value: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    holdout_rows: int = 0
    reasons: list[str] = field(default_factory=list)
    task: str = "binary"
    confidence: float | None = None
    improvement: float | None = None
    lower_bound: float | None = None
    bootstrap: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": "promoted" if self.passed else "refused"}


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """Binary ``metric`` of scores ``p`` against 0/1 labels ``y`` (any task: :func:`lakeloop.train.metrics.compute`)."""
    if metric not in METRICS:
        raise ValueError(f"unknown gate metric {metric!r}: expected one of {', '.join(METRICS)}")
    return metrics.compute("binary", metric, y, p)


def beats(metric: str, value: float, reference: float, margin: float) -> bool:
    """Whether ``value`` is better than ``reference`` by at least ``margin``."""
    return value - reference >= margin if METRICS[metric] else reference - value >= margin


def positive_scores(prediction: Any, rows: int) -> np.ndarray:
    """A pyfunc prediction as a 1-d float array of positive-class probabilities, checked."""
    return tasks.predictions("binary", prediction, rows)


def _load_and_predict(uri: str, frame: pd.DataFrame, task: str = "binary", classes: int = 0) -> np.ndarray:
    import mlflow.pyfunc

    return tasks.predictions(task, mlflow.pyfunc.load_model(uri).predict(frame), len(frame), classes)


def infra_check(uri: str, sample: pd.DataFrame, task: str = "binary", classes: int = 0) -> str | None:
    """None when ``uri`` loads and predicts ``sample``; otherwise the reason it failed."""
    try:
        _load_and_predict(uri, sample, task, classes)
    except Exception as exc:  # noqa: BLE001 - any failure to serve refuses the model
        return f"infra check failed for {uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return None


def evaluate(conf: Conf, holdout: pd.DataFrame, features: list[str], label: str, prior: float,
             challenger_version: str, *, stats: baselines.TrainingStats | None = None,
             classes: int = 0) -> tuple[GateDecision, np.ndarray | None]:
    """Run the gate for the version now holding ``@challenger``; returns the decision and its predictions.

    ``holdout`` holds ``features`` and ``label``; ``stats`` are the training statistics of the baselines
    (default: only the training positive rate ``prior``, for a binary model).  ``challenger_version`` is
    the version the caller registered: if ``@challenger`` points elsewhere (another run moved it) the
    challenger is refused rather than judging the wrong model.
    """
    name, task = conf["mlflow.model_name"], conf["train.task"]
    metric, margin = conf["train.gate_metric"], float(conf["train.gate_margin"])
    stats = stats or baselines.TrainingStats(task=task, rows=0, label_mean=prior)
    decision = GateDecision(passed=False, metric=metric, margin=margin, challenger_version=challenger_version,
                            challenger_value=None, reference="none", reference_value=None,
                            holdout_rows=len(holdout), task=task, confidence=conf["train.gate_confidence"])
    current = registry.alias_version(conf, registry.CHALLENGER)
    if current != str(challenger_version):
        decision.reasons.append(f"@challenger is version {current}, not {challenger_version}")
        return decision, None
    x, y = holdout[features], holdout[label].to_numpy()
    uri = registry.model_uri(name, registry.CHALLENGER)
    failure = infra_check(uri, x.head(conf["train.infra_check_rows"]), task, classes)
    if failure:
        decision.reasons.append(failure)
        return decision, None
    challenger = _load_and_predict(uri, x, task, classes)
    decision.challenger_value = metrics.compute(task, metric, y, challenger)
    scores = baselines.baseline_scores(stats, x, conf["train.baselines"])
    decision.baselines = {k: metrics.compute(task, metric, y, v) for k, v in scores.items()}
    reference = _set_reference(conf, decision, x, y, scores, classes)
    _compare(conf, decision, y, challenger, reference)
    return decision, challenger


def _compare(conf: Conf, decision: GateDecision, y: np.ndarray, challenger: np.ndarray,
             reference: np.ndarray) -> None:
    """The paired bootstrap decision (module docstring, step 2)."""
    task, metric, margin = decision.task, decision.metric, decision.margin
    result = bootstrap.paired_bootstrap(task, metric, y, challenger, reference, resamples=conf["train.gate_resamples"],
                                        confidence=conf["train.gate_confidence"], seed=conf["train.seed"])
    decision.improvement, decision.lower_bound, decision.bootstrap = (result.improvement, result.lower_bound,
                                                                      result.as_dict())
    point_ok = result.improvement >= margin
    bound_ok = bool(np.isfinite(result.lower_bound)) and result.lower_bound >= margin
    decision.passed = point_ok and bound_ok
    verdict = "beats" if point_ok else "does not beat"
    decision.reasons.append(f"challenger v{decision.challenger_version} {metric}={decision.challenger_value:.5f} "
                            f"{verdict} {decision.reference} {metric}={decision.reference_value:.5f} "
                            f"by the margin {margin}")
    if point_ok and not bound_ok:
        decision.reasons.append(
            f"not with confidence: the {result.confidence:.0%} lower bound of the improvement is "
            f"{result.lower_bound:.5f} < the margin {margin} ({result.usable} of {result.resamples} "
            f"paired bootstrap resamples of {decision.holdout_rows} holdout rows)")
    elif point_ok:
        decision.reasons.append(f"{result.confidence:.0%} lower bound of the improvement {result.lower_bound:.5f} "
                                f">= the margin ({result.resamples} paired bootstrap resamples)")


def _set_reference(conf: Conf, decision: GateDecision, x: pd.DataFrame, y: np.ndarray,
                   scores: dict[str, np.ndarray], classes: int) -> np.ndarray:
    """Fill the reference of ``decision``; returns the reference's holdout predictions."""
    task, metric = decision.task, decision.metric
    champion = registry.alias_version(conf, registry.CHAMPION)
    if champion is not None:
        decision.champion_version = champion
        try:
            predicted = _load_and_predict(registry.model_uri(conf["mlflow.model_name"], registry.CHAMPION), x,
                                          task, classes)
            decision.champion_value = metrics.compute(task, metric, y, predicted)
        except Exception as exc:  # noqa: BLE001 - a broken champion is compared like no champion
            decision.reasons.append(f"champion v{champion} could not score the holdout "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                    "compared with the baselines instead")
        else:
            decision.reference = f"champion v{champion}"
            decision.reference_value = decision.champion_value
            return predicted
    better = max if metrics.metric(task, metric).higher_is_better else min
    best = better(decision.baselines, key=decision.baselines.__getitem__)
    decision.reference = f"baseline {best}"
    decision.reference_value = decision.baselines[best]
    if champion is None:
        decision.reasons.append("no @champion yet: compared with the naive baselines")
    return scores[best]


def apply(conf: Conf, decision: GateDecision) -> None:
    """Promote on a pass (``@champion`` -> the challenger); always tag the version with the decision."""
    name = conf["mlflow.model_name"]
    client = registry.client(conf)
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(name, decision.challenger_version, key, value)
    if decision.passed:
        client.set_registered_model_alias(name, registry.CHAMPION, decision.challenger_version)


def decision_tags(decision: GateDecision) -> dict[str, str]:
    def fmt(v: float | None) -> str:
        return "" if v is None or math.isnan(v) else f"{v:.6f}"

    return {"gate.decision": "promoted" if decision.passed else "refused",
            "gate.metric": decision.metric, "gate.margin": str(decision.margin),
            "gate.challenger_value": fmt(decision.challenger_value), "gate.reference": decision.reference,
            "gate.reference_value": fmt(decision.reference_value), "gate.lower_bound": fmt(decision.lower_bound),
            "gate.confidence": str(decision.confidence), "gate.reason": decision.reason[:5000]}
