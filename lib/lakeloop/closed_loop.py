"""The closed loop in the run report: per day the trained model's holdout metric and gate decision, and
the reactions to what was served the day before (the counts the app's sample data records; which of them
the table shows, and under which titles, is conf ``closed_loop.reactions``).

:func:`rows_from_steps` builds the table from what the pipeline's steps returned (the train step's gate,
the reactions the landing day's manifest records); :func:`daily_metrics` builds it from stored reports
(``_reports/train`` and the landing manifests) for a notebook or a later look.  The sample-data side of
the loop (reactions to yesterday's served lists) lives in :mod:`lakeloop_apps.recommender.datagen.served`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lakeloop.lake import Lake
from lakeloop.reports import Documents, manifest_name

if TYPE_CHECKING:
    from lakeloop.conf import Conf

__all__ = ["daily_metrics", "rows_from_steps", "table_rows", "format_table"]


def _model_row(report: dict[str, Any]) -> dict[str, Any]:
    """The model side of a row from one train report; every row names the run it comes from."""
    run = {"model": report.get("model"), "run_id": report.get("job_run_id"),
           "mlflow_run_id": report.get("mlflow_run_id")}
    if report.get("status") in ("failed", "running"):  # a failed run, or one killed before it finished
        return {**run, "decision": report["status"], "error": report.get("error")}
    gate = report.get("gate") or {}
    if not gate:
        return {}
    promoted = gate.get("decision") == "promoted" or bool(gate.get("passed"))
    return {**run, "metric": gate.get("metric"), "model_version": report.get("model_version"),
            "decision": gate.get("decision") or ("promoted" if promoted else "refused"),
            "model_value": gate.get("challenger_value"),
            "champion_version": report.get("model_version") if promoted else gate.get("champion_version"),
            "champion_value": gate.get("challenger_value") if promoted else gate.get("champion_value")}


_SERVED = ("served_date", "served_model_version", "served_items")


def _reaction_row(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the landing day's manifest says of the reactions to the lists served the day before: which lists
    (date, model version, items) and every count the app measured."""
    r = manifest.get("reactions")
    if not r:
        return {}
    counts = {k: v for k, v in r.items() if k not in (*_SERVED, "events")}
    return {**{k: r.get(k) for k in _SERVED}, "reaction_events": r.get("events"), **counts}


def _row(date: str, train: dict[str, Any] | None, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    row = {**_model_row(train or {}), **_reaction_row(manifest or {})}
    return {"date": date, **row} if row else None


def daily_metrics(conf: Conf, dates: list[str], model: str | None = None) -> list[dict[str, Any]]:
    """Per date: the latest train run of ``model`` (default: the app's model) -- its run ids, holdout metric
    and gate decision, or ``failed`` / ``running`` for a run that did not finish (``_reports/train``) -- and
    the reactions of that date's landing day to the previous day's served lists (its manifest).
    Dates with neither are left out."""
    from lakeloop.train.report import report_name
    from lakeloop.train.spec import default_name

    lake = Lake.from_conf(conf)
    train, landing = Documents.reports(lake, "train"), Documents(conf.path("landing"), lake.storage_options)
    named = model if model and model != default_name(conf) else None
    rows = (_row(d, train.read_json(report_name(dt.date.fromisoformat(d), named)), landing.read_json(manifest_name(d)))
            for d in dates)
    return [r for r in rows if r]


def rows_from_steps(steps: Iterable[Any]) -> list[dict[str, Any]]:
    """The closed-loop rows of a pipeline run from its step records (``date``, ``step``, ``summary``):
    the train step's summary holds its report, the datagen step's the day's reactions."""
    by_date: dict[str, dict[str, dict[str, Any]]] = {}
    for record in steps:
        if record.summary:
            by_date.setdefault(record.date, {})[record.step] = record.summary
    rows = (_row(d, found.get("train"), found.get("datagen")) for d, found in sorted(by_date.items()))
    return [r for r in rows if r]


_COLUMNS = (("date", "date"), ("model_version", "model"), ("decision", "gate"), ("model_value", "holdout {m}"),
            ("champion_version", "champion"), ("champion_value", "champion {m}"), ("served_date", "reacting to"),
            ("served_model_version", "served model"), ("served_items", "served"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table_rows(rows: list[dict[str, Any]],
               reactions: Mapping[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the closed-loop table; the metric is the gate's (AUC by default).  ``reactions``
    (conf ``closed_loop.reactions``: reaction count -> column title) are the app's columns after ``served``."""
    metric = next((r["metric"] for r in rows if r.get("metric")), "auc")
    columns = [*_COLUMNS, *(reactions or {}).items()]
    return ([title.format(m=metric) for _, title in columns],
            [[_cell(r.get(key)) for key, _ in columns] for r in rows])


def format_table(rows: list[dict[str, Any]], reactions: Mapping[str, str] | None = None) -> list[str]:
    """The closed-loop table as aligned text lines, header first (``reactions``: see :func:`table_rows`)."""
    header, body = table_rows(rows, reactions)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    return ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
