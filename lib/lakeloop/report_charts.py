"""The charts of a pipeline run report, drawn with matplotlib (Agg) and embedded as base64 PNG.

Every chart is built from the run report's payload (:meth:`lakeloop.pipeline.PipelineRun.as_dict`): the step
records and the summaries the steps returned, and the closed-loop rows.  A chart whose figures the run does
not have (no train step, no drift baseline yet) is left out, never drawn empty.

=================  ===================================================================================
``closed_loop``    per day the model's holdout metric, the served click-through and the gate decision
``quarantine``     quarantined rows per day and source, stacked by reason (curate)
``drift``          PSI per column against its threshold, per day (validate)
``rows``           rows into and out of each step, per day
``durations``      seconds of each step, per day
=================  ===================================================================================
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

__all__ = ["Chart", "figure", "to_chart", "step_rows", "run_charts", "CHARTS"]

_PROMOTED, _REFUSED = "tab:green", "tab:red"


@dataclass(frozen=True)
class Chart:
    """One rendered chart: a key (the HTML id), a title, the PNG bytes and a caption."""

    key: str
    title: str
    png: bytes
    caption: str = ""

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def html(self) -> str:
        """A ``<figure>`` with the PNG inline (no file next to the page, no script)."""
        caption = f"<figcaption>{escape(self.caption)}</figcaption>" if self.caption else ""
        return (f'<figure class="chart" id="chart-{escape(self.key)}"><h3>{escape(self.title)}</h3>'
                f'<img alt="{escape(self.title)}" src="{self.data_uri()}">{caption}</figure>')


def figure(width: float = 7.0, height: float = 3.2, ncols: int = 1) -> tuple[Any, Any]:
    """A new matplotlib figure and its axes, on the Agg canvas (no display, no global backend switch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(1, ncols)
    return fig, axes


def to_chart(key: str, title: str, fig: Any, caption: str = "") -> Chart:
    """``fig`` as PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return Chart(key, title, buf.getvalue(), caption)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- closed loop ----------------------------------------------------------------------------------------

def closed_loop_chart(rows: list[dict[str, Any]]) -> Chart | None:
    """Holdout metric per day (marker colour: gate decision) and served CTR on a second axis."""
    dates = [r["date"] for r in rows]
    metric = [_num(r.get("model_value")) for r in rows]
    ctr = [_num(r.get("ctr")) for r in rows]
    if not any(v is not None for v in metric + ctr):
        return None
    name = next((r["metric"] for r in rows if r.get("metric")), "metric")
    fig, ax = figure()
    x = range(len(dates))
    pts = [(i, v, r.get("decision")) for i, (v, r) in enumerate(zip(metric, rows, strict=True)) if v is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", label=f"holdout {name}")
        for decision, colour in (("promoted", _PROMOTED), ("refused", _REFUSED)):
            chosen = [p for p in pts if p[2] == decision]
            if chosen:
                ax.scatter([p[0] for p in chosen], [p[1] for p in chosen], color=colour, s=60, zorder=3,
                           label=f"gate {decision}")
    ax.set_ylabel(f"holdout {name}")
    served = [(i, v) for i, v in enumerate(ctr) if v is not None]
    if served:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in served], [p[1] for p in served], color="tab:orange", marker="s", label="served CTR")
        ax2.set_ylabel("served CTR")
        handles, labels = ax2.get_legend_handles_labels()
    else:
        handles, labels = [], []
    own_h, own_l = ax.get_legend_handles_labels()
    ax.legend(own_h + handles, own_l + labels, loc="best", fontsize=8)
    ax.set_xticks(list(x), dates, rotation=30, fontsize=8)
    return to_chart("closed_loop", "Closed loop: model metric, gate and served CTR per day", fig,
                    "the model trained each day (dot colour: the gate's decision) and the click-through of the "
                    "lists served the day before, measured in that day's data")


# -- per-step figures -------------------------------------------------------------------------------------

def _int(value: Any) -> int | None:
    found = _num(value)
    return None if found is None else int(found)


def _sum(values: Iterable[Any]) -> int | None:
    found = [v for v in (_num(x) for x in values) if v is not None]
    return int(sum(found)) if found else None


def _sources(summary: Mapping[str, Any], key: str) -> int | None:
    return _sum(s.get(key) for s in (summary.get("sources") or {}).values() if isinstance(s, dict))


def _tables(summary: Mapping[str, Any], key: str) -> int | None:
    return _sum(t.get(key) for t in (summary.get("tables") or {}).values() if isinstance(t, dict))


# rows into and out of a step, from the summary it returned (None: the step does not report it)
_ROWS: dict[str, Callable[[Mapping[str, Any]], tuple[int | None, int | None]]] = {
    "datagen": lambda s: (None, _int(s.get("events"))),
    "ingest": lambda s: (None, _sources(s, "rows")),
    "curate": lambda s: (_sources(s, "bronze_rows"), _sources(s, "silver_rows")),
    "validate": lambda s: (_tables(s, "rows"), None),
    "features": lambda s: (None, _tables(s, "rows")),
    "infer": lambda s: (_int(s.get("users")), _int(s.get("rows"))),
}


def step_rows(step: str, summary: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(rows in, rows out)`` of a step from its summary; None where the step does not report it."""
    found = _ROWS.get(step)
    return found(summary or {}) if found else (None, None)


def _ran(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in steps if s.get("status") in ("ok", "failed")]


def _grouped_bars(ax: Any, steps: list[str], dates: list[str], value: Callable[[str, str], float | None]) -> bool:
    """Bars per step (x) and date (colour); False when no bar has a value."""
    width = 0.8 / max(len(dates), 1)
    drawn = False
    for j, date in enumerate(dates):
        xs, ys = [], []
        for i, step in enumerate(steps):
            v = value(step, date)
            if v is not None:
                xs.append(i + (j - (len(dates) - 1) / 2) * width)
                ys.append(v)
        if xs:
            ax.bar(xs, ys, width=width, label=date)
            drawn = True
    ax.set_xticks(range(len(steps)), steps, fontsize=8)
    return drawn


def rows_chart(steps: list[dict[str, Any]]) -> Chart | None:
    """Rows into and out of every step that reports them, per day (log scale)."""
    ran = _ran(steps)
    figures = {(s["step"], s["date"]): step_rows(s["step"], s.get("summary") or {}) for s in ran}
    names = list(dict.fromkeys(s for (s, _), v in figures.items() if v != (None, None)))
    if not names:
        return None
    dates = list(dict.fromkeys(s["date"] for s in ran))
    fig, axes = figure(9.0, 3.4, ncols=2)
    drawn = False
    for ax, side, label in ((axes[0], 0, "rows in"), (axes[1], 1, "rows out")):
        drawn |= _grouped_bars(ax, names, dates, lambda step, date, k=side: (figures.get((step, date)) or
                                                                               (None, None))[k])
        ax.set(title=label, yscale="log")
        ax.legend(fontsize=7)
    if not drawn:
        return None
    return to_chart("rows", "Rows in and out per step", fig,
                    "curate: bronze rows in, silver rows out (the rest quarantined); validate: rows profiled; "
                    "infer: users scored in, prediction rows out")


def durations_chart(steps: list[dict[str, Any]]) -> Chart | None:
    """Seconds of every step that ran, per day."""
    ran = _ran(steps)
    if not ran:
        return None
    seconds = {(s["step"], s["date"]): float(s.get("seconds") or 0.0) for s in ran}
    names = list(dict.fromkeys(s["step"] for s in ran))
    dates = list(dict.fromkeys(s["date"] for s in ran))
    fig, ax = figure(7.0, 3.2)
    _grouped_bars(ax, names, dates, lambda step, date: seconds.get((step, date)))
    ax.set_ylabel("seconds")
    ax.legend(fontsize=7)
    total = sum(seconds.values())
    return to_chart("durations", "Step durations", fig, f"{total:.0f} s in all over {len(ran)} step runs")


def quarantine_chart(steps: list[dict[str, Any]]) -> Chart | None:
    """Quarantined rows per day and source, stacked by reason (the curate step's summary)."""
    bars: dict[str, dict[str, int]] = {}
    for s in steps:
        if s.get("step") != "curate":
            continue
        for source, figures in ((s.get("summary") or {}).get("sources") or {}).items():
            reasons = figures.get("quarantine_by_reason") if isinstance(figures, dict) else None
            if isinstance(reasons, dict):
                bars[f"{s['date']}\n{source}"] = {k: int(v) for k, v in reasons.items() if _num(v)}
    if not bars:
        return None
    labels = list(bars)
    reasons = sorted({r for b in bars.values() for r in b})
    fig, ax = figure(max(6.0, 0.7 * len(labels) + 2), 3.4)
    bottom = [0] * len(labels)
    for reason in reasons:
        values = [bars[label].get(reason, 0) for label in labels]
        ax.bar(range(len(labels)), values, bottom=bottom, label=reason)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("quarantined rows")
    if reasons:
        ax.legend(fontsize=7, ncol=2)
    total = sum(bottom)
    return to_chart("quarantine", "Quarantine by reason", fig,
                    f"{total} rows quarantined in all" if total else "no row quarantined")


def _drift_points(steps: list[dict[str, Any]]) -> list[tuple[str, str, float, float | None]]:
    """``(date, table.column, psi, threshold)`` of every column the validate steps compared."""
    out = []
    for s in steps:
        if s.get("step") != "validate":
            continue
        for table, figures in ((s.get("summary") or {}).get("tables") or {}).items():
            if not isinstance(figures, dict):
                continue
            limits = figures.get("psi_thresholds") or {}
            for column, value in (figures.get("psi") or {}).items():
                if _num(value) is not None:
                    out.append((s["date"], f"{table}.{column}", float(value), _num(limits.get(column))))
    return out


def drift_chart(steps: list[dict[str, Any]]) -> Chart | None:
    """PSI of every compared column (bars per day) and its threshold (black tick); red: above it."""
    points = _drift_points(steps)
    if not points:
        return None
    columns = list(dict.fromkeys(p[1] for p in points))
    dates = list(dict.fromkeys(p[0] for p in points))
    fig, ax = figure(8.0, max(2.5, 0.28 * len(columns) * max(len(dates), 1) + 1.2))
    height = 0.8 / len(dates)
    for j, date in enumerate(dates):
        mine = [p for p in points if p[0] == date]
        ys = [columns.index(p[1]) + (j - (len(dates) - 1) / 2) * height for p in mine]
        colours = ["tab:red" if p[3] is not None and p[2] > p[3] else f"C{j % 10}" for p in mine]
        ax.barh(ys, [p[2] for p in mine], height=height, color=colours, label=date)
    limits = {p[1]: p[3] for p in points if p[3] is not None}
    if limits:
        ax.scatter(list(limits.values()), [columns.index(c) for c in limits], marker="|", s=300, color="black",
                   zorder=3, label="threshold")
    ax.set_yticks(range(len(columns)), columns, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("PSI against the baseline run")
    ax.legend(fontsize=7, loc="lower right")
    above = sum(1 for p in points if p[3] is not None and p[2] > p[3])
    return to_chart("drift", "Drift: PSI per column", fig,
                    f"{len(points)} column comparisons, {above} above the threshold")


# chart builders of a run report, in page order: each takes the report payload
CHARTS: tuple[Callable[[dict[str, Any]], Chart | None], ...] = (
    lambda r: closed_loop_chart(r.get("closed_loop") or []),
    lambda r: quarantine_chart(r.get("steps") or []),
    lambda r: drift_chart(r.get("steps") or []),
    lambda r: rows_chart(r.get("steps") or []),
    lambda r: durations_chart(r.get("steps") or []),
)


def run_charts(report: dict[str, Any]) -> list[Chart]:
    """Every chart the run report has figures for, in page order."""
    return [c for c in (build(report) for build in CHARTS) if c is not None]
