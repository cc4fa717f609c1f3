"""A self-contained HTML page for a pipeline run report: inline CSS, charts as inline PNG, no scripts.

The page opens offline from a single file: the charts (:mod:`lakeloop.report_charts`) and the models'
training curves and evaluation plots (:mod:`lakeloop.report_models`) are embedded as ``data:`` URIs.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from lakeloop.report_charts import run_charts

if TYPE_CHECKING:
    from lakeloop.report_models import ModelFigures

__all__ = ["render_pipeline_run"]

_CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.ok{background:#e6f4e6}.skipped{background:#eef}.failed{background:#fbe3e3}.not_run{color:#999}
code{font-size:90%;white-space:pre-wrap}
.charts{display:flex;flex-wrap:wrap;gap:1em}figure.chart{margin:0;border:1px solid #ddd;padding:.5em}
figure.chart h3{margin:.2em 0;font-size:100%}figure.chart img{display:block;max-width:100%}
figcaption{font-size:85%;color:#555;max-width:60em}"""


def _summary_cell(summary: dict[str, Any]) -> str:
    if not summary:
        return ""
    sources = summary.get("sources")
    lines = []
    if isinstance(sources, dict):
        for source, figures in sources.items():
            if "silver_rows" not in figures:  # ingest: rows landed in bronze
                lines.append(f"{escape(source)}: {figures.get('rows', '?')} rows from {figures.get('files', '?')} "
                             "new file(s)")
                continue
            rate = figures.get("quarantine_rate")
            rate_text = f"{rate:.2%}" if isinstance(rate, (int, float)) else "?"
            lines.append(f"{escape(source)}: {figures.get('silver_rows', '?')} silver rows, "
                         f"{figures.get('quarantine_rows', '?')} quarantined ({rate_text})")
    gate = summary.get("gate")
    if isinstance(gate, dict):
        verdict = gate.get("decision") or ("promoted" if gate.get("passed") else "refused")
        reasons = gate.get("reasons") or []
        lines.append(f"model version {escape(str(summary.get('model_version')))} {escape(str(verdict))}: "
                     f"{gate.get('metric', '')} {gate.get('challenger_value')} vs champion "
                     f"{gate.get('champion_value')}{'; ' if reasons else ''}"
                     f"{escape('; '.join(map(str, reasons)) if isinstance(reasons, list) else str(reasons))}")
    tables = summary.get("tables")
    if isinstance(tables, dict) and any(isinstance(t, dict) and "psi" in t for t in tables.values()):
        for table, figures in tables.items():
            psi = figures.get("psi") or {}
            worst = max(psi, key=psi.get) if psi else None
            against = f", max PSI {psi[worst]:.4f} ({escape(worst)})" if worst else ", no baseline yet"
            lines.append(f"{escape(table)}: {figures.get('rows', '?')} rows, {figures.get('columns', '?')} columns"
                         f"{against}")
        summary = {k: v for k, v in summary.items() if k != "tables"}
    rest = {k: v for k, v in summary.items() if k not in ("sources", "gate")}
    if rest:
        lines.append(f"<code>{escape(json.dumps(rest, sort_keys=True, default=str))}</code>")
    return "<br>".join(lines)


def _closed_loop_table(rows: list[dict[str, Any]], reactions: dict[str, str]) -> str:
    """The per-date model metric and served click-through (:func:`lakeloop.closed_loop.daily_metrics`)."""
    if not rows:
        return ""
    from lakeloop.closed_loop import table_rows

    header, body = table_rows(rows, reactions)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    cells = "\n".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in line) + "</tr>" for line in body)
    return f"""<h2>Closed loop</h2>
<p>Per date: the model trained that day (holdout metric, gate decision, the champion after the gate), and
the reactions in that date's sample data to the lists served the day before (served CTR = clicks / served items).</p>
<table class="loop"><tr>{head}</tr>
{cells}
</table>
"""


def _charts_section(report: dict[str, Any]) -> str:
    charts = run_charts(report)
    if not charts:
        return ""
    return '<h2>Charts</h2>\n<div class="charts">\n' + "\n".join(c.html() for c in charts) + "\n</div>\n"


def _models_section(models: list[ModelFigures], mlflow_command: str | None) -> str:
    if not models:
        return ""
    how = (f" (start it with <code>{escape(mlflow_command)}</code>)" if mlflow_command else "")
    parts = [f"<h2>Models</h2>\n<p>Training curves and evaluation plots of each training run, from MLflow; "
             f"each run's page in the MLflow UI is linked{how}.</p>"]
    for m in models:
        figures = [c for c in [m.curves, *m.plots] if c is not None]
        parts.append(f'<h3 id="model-{escape(m.run_id)}">{escape(m.date)}: model version '
                     f'{escape(str(m.model_version))} ({escape(str(m.decision))}), MLflow run '
                     f'<a href="{escape(m.link)}">{escape(m.run_id)}</a></h3>\n'
                     f'<div class="charts">{"".join(c.html() for c in figures)}</div>')
    return "\n".join(parts) + "\n"


def _log_file(report: dict[str, Any]) -> str:
    found = report.get("log_file")
    return f", every step's log lines in <code>{escape(found)}</code>" if found else ""


def render_pipeline_run(report: dict[str, Any], models: list[ModelFigures] | None = None, *,
                        mlflow_command: str | None = None) -> str:
    """The HTML page of a :class:`lakeloop.pipeline.PipelineRun` given as its ``as_dict()``.

    Parameters
    ----------
    report : dict
        The run report payload.
    models : list of ModelFigures, optional
        Figures of the run's trained models (:func:`lakeloop.report_models.model_figures`).
    mlflow_command : str, optional
        The ``mlflow ui`` command that serves the linked runs.
    """
    rows = "\n".join(
        f"<tr class=\"{escape(s['status'])}\"><td>{escape(s['date'])}</td><td>{escape(s['step'])}</td>"
        f"<td>{escape(s['status'])}</td><td>{'' if s['exit_code'] is None else s['exit_code']}</td>"
        f"<td>{s['seconds']:.1f}</td><td>{_summary_cell(s.get('summary') or {})}</td></tr>"
        for s in report["steps"])
    title = f"lakeloop pipeline run {escape(report['run_id'])}"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body><h1>{title}</h1>
<p>env <b>{escape(report['env'])}</b>, dates {escape(', '.join(report['dates']))},
started {escape(report['started_at'])}, finished {escape(report['finished_at'])},
exit code <b>{report['exit_code']}</b>{_log_file(report)}</p>
<table><tr><th>date</th><th>step</th><th>status</th><th>exit code</th><th>seconds</th><th>summary</th></tr>
{rows}
</table>
{_closed_loop_table(report.get("closed_loop") or [], report.get("closed_loop_columns") or {})}{_charts_section(report)}\
{_models_section(models or [], mlflow_command)}</body></html>
"""
