"""Evaluation report of a training run: plots (PNG, logged as MLflow artifacts) and the run JSON.

Plots use matplotlib's Agg backend (no display): ROC curve, precision-recall curve, calibration
(reliability) curve, and feature importance.  The run report JSON goes to
``<warehouse>/_reports/train/dt=<date>.json`` and is replaced by a re-run of the same date.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.reports import Documents

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["evaluation_plots", "report_name", "report_path", "reports", "write_run_report"]

_CALIBRATION_BINS = 10


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5, 4), dpi=100)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _roc(y: np.ndarray, p: np.ndarray, out: Path) -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    plt, fig, ax = _figure()
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    ax.legend(loc="lower right")
    return _save(plt, fig, out / "roc.png")


def _pr(y: np.ndarray, p: np.ndarray, out: Path) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, p)
    plt, fig, ax = _figure()
    ax.plot(recall, precision, label=f"AP {average_precision_score(y, p):.4f}")
    ax.axhline(float(np.mean(y)), linestyle="--", color="grey", label="positive rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
    ax.legend(loc="upper right")
    return _save(plt, fig, out / "pr.png")


def _calibration(y: np.ndarray, p: np.ndarray, out: Path) -> Path:
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y, p, n_bins=_CALIBRATION_BINS, strategy="quantile")
    plt, fig, ax = _figure()
    ax.plot(predicted, observed, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate",
           title="Calibration (holdout, quantile bins)")
    ax.legend(loc="upper left")
    return _save(plt, fig, out / "calibration.png")


def _importance(importance: dict[str, float], out: Path) -> Path:
    ranked = sorted(importance.items(), key=lambda kv: kv[1])
    plt, fig, ax = _figure()
    ax.barh([k for k, _ in ranked], [v for _, v in ranked])
    ax.set(xlabel="importance (total gain)", title="Feature importance")
    ax.tick_params(axis="y", labelsize=7)
    return _save(plt, fig, out / "feature_importance.png")


def evaluation_plots(y: np.ndarray, p: np.ndarray, importance: dict[str, float],
                     out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the report PNGs for labels ``y`` and scores ``p`` into ``out_dir``; returns their paths.

    The feature importance plot is skipped when ``importance`` is empty.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_roc(y, p, out), _pr(y, p, out), _calibration(y, p, out)]
    if importance:
        paths.append(_importance(importance, out))
    return paths


def report_name(run_date: dt.date, model: str | None = None) -> str:
    """``dt=<date>.json``; a model that is not the app's default model reports under ``<model>/``."""
    return f"{model + '/' if model else ''}dt={run_date.isoformat()}.json"


def reports(conf: Conf) -> Documents:
    from lakeloop.lake import Lake

    return Documents.reports(Lake.from_conf(conf), "train")


def report_path(conf: Conf, run_date: dt.date) -> Path | str:
    """``<warehouse>/_reports/train/dt=<date>.json`` (a Path on the local filesystem, else the URI)."""
    return reports(conf).location(report_name(run_date))


def write_run_report(conf: Conf, run_date: dt.date, report: dict[str, Any], model: str | None = None) -> Path | str:
    """Write ``report`` atomically to :func:`report_path` (through :mod:`lakeloop.reports`)."""
    return reports(conf).write_json(report_name(run_date, model), report)
