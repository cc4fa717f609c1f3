"""The run report's charts and model figures (matplotlib PNG inline, MLflow read back), without Spark."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from lakeloop import closed_loop, report_charts
from lakeloop.pipeline import PipelineRun, StepRecord, step_finished, step_started
from lakeloop.report_html import render_pipeline_run

PNG = re.compile(r'<figure class="chart" id="chart-([^"]+)">.*?src="data:image/png;base64,([^"]+)"', re.S)


def _reasons(malformed: int, missing: int) -> dict[str, int]:
    return {"malformed": malformed, "missing_required": missing, "bad_type": 0, "duplicate": 2}


def sample_run(mlflow_run_id: str | None = None) -> PipelineRun:
    """Two days of every step, the second day's validate failing its drift gate."""
    steps = []
    for day, (ctr, auc, decision) in enumerate([(None, 0.81, "promoted"), (0.15, 0.79, "refused")]):
        date = f"2026-11-0{day + 1}"
        reactions = {"served_date": "2026-11-01", "served_items": 40, "clicks": 6, "purchases": 2, "ctr": ctr,
                     "events": 12} if ctr else None
        steps += [
            StepRecord(date, "datagen", "ok", 0, 3.2, {"events": 1000, **({"reactions": reactions} if ctr else {})}),
            StepRecord(date, "ingest", "ok", 0, 2.1, {"sources": {"events": {"rows": 1000, "files": 2}}}),
            StepRecord(date, "curate", "ok", 0, 4.0, {"sources": {"events": {
                "bronze_rows": 1000, "silver_rows": 990 - day, "quarantine_rows": 10 + day,
                "quarantine_rate": 0.008, "quarantine_by_reason": _reasons(5 + day, 3)}}}),
            StepRecord(date, "validate", "ok" if day == 0 else "failed", 0 if day == 0 else 3, 1.5, {"tables": {
                "silver.events": {"columns": 4, "rows": 990 - day, "baseline_dt": "2026-11-01" if day else None,
                                  "psi": {"price": 0.02 + 0.4 * day, "quantity": 0.01},
                                  "psi_thresholds": {"price": 0.25, "quantity": 0.25}}}}),
            StepRecord(date, "features", "ok", 0, 5.5, {"tables": {"gold.training_set": {"rows": 800,
                                                                                          "version": day}}}),
            StepRecord(date, "train", "ok", 0, 9.0, {"model_version": str(day + 1), "mlflow_run_id": mlflow_run_id,
                                                     "gate": {"metric": "auc", "challenger_value": auc,
                                                              "champion_value": 0.81, "decision": decision}}),
            StepRecord(date, "infer", "ok", 0, 6.0, {"rows": 500, "users": 50}),
        ]
    run = PipelineRun("r1", "local", ["2026-11-01", "2026-11-02"], "2026-11-03T00:00:00+00:00",
                      "2026-11-03T00:05:00+00:00", 3, steps=steps, log_file="/tmp/wh/_logs/r1.log")
    run.closed_loop = closed_loop.rows_from_steps(run.steps)
    return run


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return len(img.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_step_rows_come_from_the_step_summaries():
    run = sample_run()
    by = {(s.date, s.step): s for s in run.steps}
    assert report_charts.step_rows("curate", by["2026-11-02", "curate"].summary) == (1000, 989)
    assert report_charts.step_rows("infer", by["2026-11-01", "infer"].summary) == (50, 500)
    assert report_charts.step_rows("validate", by["2026-11-01", "validate"].summary) == (990, None)
    assert report_charts.step_rows("train", by["2026-11-01", "train"].summary) == (None, None)
    assert step_started("pipeline", "2026-11-02", "curate") == "pipeline: 2026-11-02 curate    started"
    assert step_finished("pipeline", by["2026-11-02", "curate"]) == (
        "pipeline: 2026-11-02 curate    ok      rc=0    4.0s rows in 1,000 rows out 989")


def test_report_embeds_one_png_per_chart():
    html = render_pipeline_run(sample_run().as_dict())
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html
    charts = dict(PNG.findall(html))
    assert sorted(charts) == ["closed_loop", "drift", "durations", "quarantine", "rows"]
    for key, data in charts.items():
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and distinct_colours(png) > 50, key
    assert "1 above the threshold" in html and "21 rows quarantined in all" in html
    assert "silver.events: 989 rows, 4 columns, max PSI 0.4200 (price)" in html
    assert "every step's log lines in <code>/tmp/wh/_logs/r1.log</code>" in html


def test_charts_without_figures_are_left_out():
    run = PipelineRun("r2", "local", ["2026-11-01"], "x", "y", 0,
                      steps=[StepRecord("2026-11-01", "ingest", "skipped", None, 0.0, {})])
    assert report_charts.run_charts(run.as_dict()) == []
    assert "<h2>Charts</h2>" not in render_pipeline_run(run.as_dict())


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    """A real MLflow run in a SQLite store, logged the way the train step logs it."""
    import mlflow
    from matplotlib.figure import Figure

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("report-test", artifact_location=str(root / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        from lakeloop.train import registry

        registry.log_history({"training-logloss": [0.6, 0.5, 0.45, 0.42], "validation-logloss": [0.62, 0.55, 0.5, 0.5],
                              "validation-auc": [0.7, 0.75, 0.78, 0.79]})
        plots = root / "plots"
        plots.mkdir()
        fig = Figure(figsize=(4, 3))
        fig.subplots().plot([0, 0.2, 1], [0, 0.7, 1])
        fig.savefig(plots / "roc.png")
        mlflow.log_artifacts(str(plots), "evaluation")
    mlflow.set_tracking_uri(None)
    return uri, run.info.run_id, experiment


def test_model_figures_read_back_from_mlflow(mlflow_run):
    from lakeloop.report_models import mlflow_ui_command, model_figures

    uri, run_id, experiment = mlflow_run
    (found,) = model_figures(uri, [{"mlflow_run_id": run_id, "date": "2026-11-01", "model_version": "1",
                                    "gate": {"decision": "promoted"}}, {"mlflow_run_id": "0" * 32}])
    assert found.link == f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run_id}"
    assert [p.title for p in found.plots] == ["roc"] and found.plots[0].png.startswith(b"\x89PNG")
    assert found.curves is not None and distinct_colours(found.curves.png) > 50
    command = mlflow_ui_command(uri)
    assert command.endswith(f"mlflow ui --backend-store-uri {uri}") and Path(command.split()[0]).name == "mlflow"
    html = render_pipeline_run(sample_run(run_id).as_dict(), [found], mlflow_command=command)
    assert f'<a href="{found.link}">{run_id}</a>' in html and f"<code>{command}</code>" in html
    assert f'id="chart-{run_id}-curves"' in html and f'id="chart-{run_id}-roc"' in html
