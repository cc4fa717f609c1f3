"""The closed loop: what was served on day d becomes the exposures of day d + 1's sample data, and
the run report follows the model and the served click-through day by day.

:func:`served_lists` reads the top ``infer.top_n`` items per user of ``infer.table`` for a date (what
``infer`` pushed to the serving store); ``datagen`` (with ``datagen.closed_loop``) hands them to
:func:`lakeloop.datagen.generate` as exposures of the next day.  :func:`daily_metrics` joins, per
date, the train report's gate figures and the datagen manifest's reactions.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakeloop.datagen import files

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf

__all__ = ["Served", "served_lists", "daily_metrics", "table_rows", "format_table"]

log = logging.getLogger(__name__)


class Served(dict):
    """User id -> item ids served, best first; ``info`` says where they came from (manifest figures)."""

    def __init__(self, lists: dict[int, list[int]], info: dict[str, Any]) -> None:
        super().__init__(lists)
        self.info = info


def served_lists(spark: SparkSession, conf: Conf, served_date: dt.date, users: int, items: int) -> Served | None:
    """The ranked top-N lists of ``infer.table`` for ``served_date``; None when it has no such partition.

    Pairs outside the generated shop (user id above ``users``, item id above ``items``) are left out
    and counted in ``info["outside_world"]``.
    """
    from pyspark.sql import functions as F

    from lakeloop import tables

    uri = conf.table_uri(conf["infer.table"])
    if not tables.exists(uri):
        return None
    day = served_date.isoformat()
    rows = (tables.read(spark, uri, where=f"dt = '{day}'").where(F.col("rank") <= conf["infer.top_n"])
            .select("user_id", "item_id", "rank", "model_version").orderBy("user_id", "rank").collect())
    if not rows:
        return None
    lists: dict[int, list[int]] = {}
    outside = 0
    for r in rows:
        if 1 <= r.user_id <= users and 1 <= r.item_id <= items:
            lists.setdefault(int(r.user_id), []).append(int(r.item_id))
        else:
            outside += 1
    if outside:
        log.warning("closed loop: %d served pairs of %s are outside the generated shop (%d users, %d items)",
                    outside, day, users, items)
    versions = sorted({str(r.model_version) for r in rows})
    return Served(lists, {"served_date": day, "served_model_version": ",".join(versions),
                          "outside_world": outside})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _model_row(report: dict[str, Any]) -> dict[str, Any]:
    gate = report.get("gate") or {}
    if not gate:
        return {}
    promoted = gate.get("decision") == "promoted" or bool(gate.get("passed"))
    return {"metric": gate.get("metric"), "model_version": report.get("model_version"),
            "decision": gate.get("decision") or ("promoted" if promoted else "refused"),
            "model_value": gate.get("challenger_value"),
            "champion_version": report.get("model_version") if promoted else gate.get("champion_version"),
            "champion_value": gate.get("challenger_value") if promoted else gate.get("champion_value")}


def _reaction_row(manifest: dict[str, Any]) -> dict[str, Any]:
    r = manifest.get("reactions")
    if not r:
        return {}
    return {"served_date": r.get("served_date"), "served_model_version": r.get("served_model_version"),
            "served_items": r.get("served_items"), "reaction_events": r.get("events"), "clicks": r.get("clicks"),
            "purchases": r.get("purchases"), "ctr": r.get("ctr")}


def daily_metrics(conf: Conf, dates: list[str]) -> list[dict[str, Any]]:
    """Per date: the trained model's holdout metric and the gate decision (``_reports/train``), and
    the reactions of that date's sample data to the previous day's served lists (datagen manifest).
    Dates with neither are left out."""
    warehouse = Path(conf.path("warehouse"))
    landing = conf.path("landing")
    out = []
    for date in dates:
        row = {**_model_row(_read_json(warehouse / "_reports" / "train" / f"dt={date}.json")),
               **_reaction_row(_read_json(files.manifest_path(landing, date)))}
        if row:
            out.append({"date": date, **row})
    return out


_COLUMNS = (("date", "date"), ("model_version", "model"), ("decision", "gate"), ("model_value", "holdout {m}"),
            ("champion_version", "champion"), ("champion_value", "champion {m}"), ("served_date", "reacting to"),
            ("served_model_version", "served model"), ("served_items", "served"), ("clicks", "clicks"),
            ("purchases", "purchases"), ("ctr", "served CTR"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the closed-loop table; the metric is the gate's (AUC by default)."""
    metric = next((r["metric"] for r in rows if r.get("metric")), "auc")
    return ([title.format(m=metric) for _, title in _COLUMNS],
            [[_cell(r.get(key)) for key, _ in _COLUMNS] for r in rows])


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    """The closed-loop table as aligned text lines, header first."""
    header, body = table_rows(rows)
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    return ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
