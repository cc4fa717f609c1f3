"""A small self-contained HTML page (inline CSS, no scripts) for a pipeline run report."""

from __future__ import annotations

import json
from html import escape
from typing import Any

__all__ = ["render_pipeline_run"]

_CSS = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.ok{background:#e6f4e6}.skipped{background:#eef}.failed{background:#fbe3e3}.not_run{color:#999}
code{font-size:90%;white-space:pre-wrap}"""


def _summary_cell(summary: dict[str, Any]) -> str:
    if not summary:
        return ""
    sources = summary.get("sources")
    lines = []
    if isinstance(sources, dict):
        for source, figures in sources.items():
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
    rest = {k: v for k, v in summary.items() if k not in ("sources", "gate")}
    if rest:
        lines.append(f"<code>{escape(json.dumps(rest, sort_keys=True, default=str))}</code>")
    return "<br>".join(lines)


def _closed_loop_table(rows: list[dict[str, Any]]) -> str:
    """The per-date model metric and served click-through (:func:`lakeloop.closed_loop.daily_metrics`)."""
    if not rows:
        return ""
    from lakeloop.closed_loop import table_rows

    header, body = table_rows(rows)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    cells = "\n".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in line) + "</tr>" for line in body)
    return f"""<h2>Closed loop</h2>
<p>Per date: the model trained that day (holdout metric, gate decision, the champion after the gate), and
the reactions in that date's sample data to the lists served the day before (served CTR = clicks / served items).</p>
<table class="loop"><tr>{head}</tr>
{cells}
</table>
"""


def render_pipeline_run(report: dict[str, Any]) -> str:
    """The HTML page of a :class:`lakeloop.pipeline.PipelineRun` given as its ``as_dict()``."""
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
exit code <b>{report['exit_code']}</b></p>
<table><tr><th>date</th><th>step</th><th>status</th><th>exit code</th><th>seconds</th><th>summary</th></tr>
{rows}
</table>
{_closed_loop_table(report.get("closed_loop") or [])}</body></html>
"""
