"""Per trained model of a run: its training curves and evaluation plots, read back from MLflow.

The train step logs every round's metrics (``training-logloss``, ``validation-auc`` ...) and its evaluation
PNGs (``evaluation/roc.png``, ``pr.png``, ``calibration.png``, ``feature_importance.png``) to its MLflow run;
the run report embeds them (so the page stays viewable offline) next to the run's address in the MLflow UI.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakeloop.report_charts import Chart, figure, to_chart

__all__ = ["ModelFigures", "MLFLOW_UI", "model_figures", "training_curves", "mlflow_ui_command", "trained_models"]

MLFLOW_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` listens by default
EVALUATION_DIR = "evaluation"


@dataclass
class ModelFigures:
    """What the report shows of one training run."""

    date: str
    run_id: str
    experiment_id: str
    model_version: str | None
    decision: str | None
    curves: Chart | None = None
    plots: list[Chart] = field(default_factory=list)

    @property
    def link(self) -> str:
        """The run's page in the MLflow UI (``mlflow ui`` on its default port)."""
        return f"{MLFLOW_UI}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def training_curves(history: dict[str, list[tuple[int, float]]], key: str) -> Chart | None:
    """One panel per metric (``logloss``, ``auc``...), a line per side (``training``, ``validation``)."""
    from matplotlib.ticker import MaxNLocator

    by_metric: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, points in history.items():
        side, _, metric = name.partition("-")
        if metric and len(points) > 1:
            by_metric.setdefault(metric, {})[side] = sorted(points)
    if not by_metric:
        return None
    fig, axes = figure(4.0 * len(by_metric), 3.0, ncols=len(by_metric))
    for ax, (metric, sides) in zip(axes if len(by_metric) > 1 else [axes], sorted(by_metric.items()), strict=True):
        for side, points in sorted(sides.items()):
            ax.plot([s for s, _ in points], [v for _, v in points], label=side)
        ax.set(title=metric, xlabel="round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    return to_chart(key, "Training curves", fig, "per-round metrics logged to MLflow")


def _history(client: Any, run: Any) -> dict[str, list[tuple[int, float]]]:
    names = [k for k in run.data.metrics if "-" in k and k.split("-", 1)[0] in ("training", "validation")]
    return {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in names}


def _plots(client: Any, run_id: str) -> list[Chart]:
    files = [a.path for a in client.list_artifacts(run_id, EVALUATION_DIR) if a.path.endswith(".png")]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(files):
            local = Path(client.download_artifacts(run_id, path, tmp))
            stem = local.stem
            out.append(Chart(f"{run_id}-{stem}", stem.replace("_", " "), local.read_bytes(), path))
    return out


def model_figures(tracking_uri: str, trained: Iterable[dict[str, Any]]) -> list[ModelFigures]:
    """The figures of every training run in ``trained`` (train step summaries with ``mlflow_run_id``, plus
    ``date``); a run MLflow no longer has is left out."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    out = []
    for summary in trained:
        run_id = summary.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            run = client.get_run(run_id)
            gate = summary.get("gate") or {}
            found = ModelFigures(summary.get("date", ""), run_id, run.info.experiment_id,
                                 summary.get("model_version"), gate.get("decision"))
            found.curves = training_curves(_history(client, run), f"{run_id}-curves")
            found.plots = _plots(client, run_id)
        except (MlflowException, OSError):
            continue
        out.append(found)
    return out


def mlflow_ui_command(tracking_uri: str) -> str:
    """The exact ``mlflow ui`` command serving ``tracking_uri`` (the ``mlflow`` of this Python's environment)."""
    import shlex
    import shutil
    import sys

    beside = Path(sys.executable).with_name("mlflow")
    exe = str(beside) if beside.is_file() else (shutil.which("mlflow") or "mlflow")
    return f"{shlex.quote(exe)} ui --backend-store-uri {shlex.quote(tracking_uri)}"


def trained_models(steps: Iterable[Any]) -> list[dict[str, Any]]:
    """The train steps' summaries of a run's step records (``date``, ``step``, ``summary``), with their date."""
    return [{**r.summary, "date": r.date} for r in steps if r.step == "train" and (r.summary or {}).get(
        "mlflow_run_id")]
