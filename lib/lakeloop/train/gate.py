"""The evaluation gate: a new model version becomes ``@champion`` only when it earns it.

1. Infra check: ``models:/<name>@challenger`` is loaded with :func:`mlflow.pyfunc.load_model` (what
   serving and bulk inference will do) and must predict ``train.infra_check_rows`` rows as finite
   probabilities.  Any failure refuses the challenger.
2. The challenger and the current ``@champion`` are scored on the SAME holdout frame through pyfunc
   and compared on ``train.gate_metric``.  The challenger passes when it beats the champion by at
   least ``train.gate_margin``.
3. With no champion (the first model, or a champion that no longer loads) the reference is the best
   naive baseline on the holdout: the training positive rate as a constant score, and the item's
   historical conversion / purchase popularity.

The decision and every reason are returned as a :class:`GateDecision`; :func:`apply` moves the alias
(or leaves ``@champion`` untouched) and tags the model version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.train import registry

if TYPE_CHECKING:
    import pandas as pd

    from lakeloop.conf import Conf

__all__ = ["GateDecision", "METRICS", "score", "beats", "positive_scores", "baseline_scores",
           "infra_check", "evaluate", "apply", "decision_tags"]

# metric -> higher is better
METRICS = {"auc": True, "pr_auc": True, "logloss": False}
_EPS = 1e-6


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

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": "promoted" if self.passed else "refused"}


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """``metric`` of scores ``p`` against 0/1 labels ``y``."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    if metric == "auc":
        return float(roc_auc_score(y, p))
    if metric == "pr_auc":
        return float(average_precision_score(y, p))
    if metric == "logloss":
        return float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))
    raise ValueError(f"unknown gate metric {metric!r}: expected one of {', '.join(METRICS)}")


def beats(metric: str, value: float, reference: float, margin: float) -> bool:
    """Whether ``value`` is better than ``reference`` by at least ``margin``."""
    return value - reference >= margin if METRICS[metric] else reference - value >= margin


def positive_scores(prediction: Any, rows: int) -> np.ndarray:
    """A pyfunc prediction as a 1-d float array of positive-class probabilities, checked."""
    arr = np.asarray(prediction.to_numpy() if hasattr(prediction, "to_numpy") else prediction, dtype=float)
    if arr.ndim == 2:
        arr = arr[:, -1]
    if arr.ndim != 1 or len(arr) != rows:
        raise ValueError(f"prediction has shape {arr.shape}, expected ({rows},)")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError("predictions are not finite probabilities in [0, 1]")
    return arr


def baseline_scores(holdout: pd.DataFrame, prior: float) -> dict[str, np.ndarray]:
    """Naive scores a model must beat when there is no champion (see module docstring)."""
    n = len(holdout)
    popularity = holdout["item_purchases"].fillna(0.0).to_numpy(dtype=float)
    top = popularity.max() if n else 0.0
    return {
        "positive_rate": np.full(n, prior),
        "item_conversion": np.clip(holdout["item_conversion"].fillna(prior).to_numpy(dtype=float), 0.0, 1.0),
        "item_popularity": popularity / top if top > 0 else np.full(n, prior),
    }


def _load_and_predict(uri: str, frame: pd.DataFrame) -> np.ndarray:
    import mlflow.pyfunc

    return positive_scores(mlflow.pyfunc.load_model(uri).predict(frame), len(frame))


def infra_check(uri: str, sample: pd.DataFrame) -> str | None:
    """None when ``uri`` loads and predicts ``sample``; otherwise the reason it failed."""
    try:
        _load_and_predict(uri, sample)
    except Exception as exc:  # noqa: BLE001 - any failure to serve refuses the model
        return f"infra check failed for {uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    return None


def evaluate(conf: Conf, holdout: pd.DataFrame, features: list[str], label: str, prior: float,
             challenger_version: str) -> tuple[GateDecision, np.ndarray | None]:
    """Run the gate for the version now holding ``@challenger``; returns the decision and its scores.

    ``holdout`` holds ``features`` and ``label``; ``prior`` is the training positive rate.
    ``challenger_version`` is the version the caller registered: if ``@challenger`` points elsewhere
    (another run moved it) the challenger is refused rather than judging the wrong model.
    """
    name = conf["mlflow.model_name"]
    metric, margin = conf["train.gate_metric"], float(conf["train.gate_margin"])
    decision = GateDecision(passed=False, metric=metric, margin=margin, challenger_version=challenger_version,
                            challenger_value=None, reference="none", reference_value=None,
                            holdout_rows=len(holdout))
    current = registry.alias_version(conf, registry.CHALLENGER)
    if current != str(challenger_version):
        decision.reasons.append(f"@challenger is version {current}, not {challenger_version}")
        return decision, None
    x, y = holdout[features], holdout[label].to_numpy()
    failure = infra_check(registry.model_uri(name, registry.CHALLENGER), x.head(conf["train.infra_check_rows"]))
    if failure:
        decision.reasons.append(failure)
        return decision, None
    challenger = _load_and_predict(registry.model_uri(name, registry.CHALLENGER), x)
    decision.challenger_value = score(metric, y, challenger)
    decision.baselines = {k: score(metric, y, v) for k, v in baseline_scores(x, prior).items()}
    _set_reference(conf, decision, x, y)
    decision.passed = beats(metric, decision.challenger_value, decision.reference_value, margin)
    verdict = "beats" if decision.passed else "does not beat"
    decision.reasons.append(f"challenger v{challenger_version} {metric}={decision.challenger_value:.5f} "
                            f"{verdict} {decision.reference} {metric}={decision.reference_value:.5f} "
                            f"by the margin {margin}")
    return decision, challenger


def _set_reference(conf: Conf, decision: GateDecision, x: pd.DataFrame, y: np.ndarray) -> None:
    champion = registry.alias_version(conf, registry.CHAMPION)
    if champion is not None:
        decision.champion_version = champion
        try:
            decision.champion_value = score(decision.metric, y, _load_and_predict(
                registry.model_uri(conf["mlflow.model_name"], registry.CHAMPION), x))
        except Exception as exc:  # noqa: BLE001 - a broken champion is compared like no champion
            decision.reasons.append(f"champion v{champion} could not score the holdout "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                    "compared with the baselines instead")
        else:
            decision.reference = f"champion v{champion}"
            decision.reference_value = decision.champion_value
            return
    better = max if METRICS[decision.metric] else min
    best = better(decision.baselines, key=decision.baselines.__getitem__)
    decision.reference = f"baseline {best}"
    decision.reference_value = decision.baselines[best]
    if champion is None:
        decision.reasons.append("no @champion yet: compared with the naive baselines")


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
            "gate.reference_value": fmt(decision.reference_value), "gate.reason": decision.reason[:5000]}
