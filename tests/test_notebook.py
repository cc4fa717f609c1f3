"""notebooks/analysis.ipynb runs end to end against a small warehouse built by the real jobs."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory):
    from test_pipeline import build_small_warehouse

    base = tmp_path_factory.mktemp("notebook")
    build_small_warehouse(base, date="2026-11-03", events=1000)
    return base / "warehouse"


def _add_predictions(warehouse: Path) -> None:
    """A small gold.predictions table in the layout jobs/infer.py writes (training is too slow for this test)."""
    import pandas as pd
    from deltalake import write_deltalake

    frame = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12],
                          "score": [0.9, 0.2, 0.55, 0.1], "dt": ["2026-11-03"] * 4})
    write_deltalake(str(warehouse / "gold" / "predictions"), frame, partition_by=["dt"], mode="overwrite")


def _add_closed_loop_report(warehouse: Path) -> None:
    """A pipeline run report with closed-loop rows in the layout lakeloop.pipeline writes (two days)."""
    rows = [{"date": "2026-11-03", "metric": "auc", "model_version": "1", "decision": "promoted", "model_value": 0.81},
            {"date": "2026-11-04", "metric": "auc", "model_version": "2", "decision": "refused", "model_value": 0.8,
             "served_date": "2026-11-03", "served_items": 40, "clicks": 6, "purchases": 2, "ctr": 0.15}]
    report = {"run_id": "loop", "env": "local", "dates": ["2026-11-03", "2026-11-04"], "exit_code": 0, "steps": [],
              "started_at": "2026-11-05T00:00:00+00:00", "finished_at": "2026-11-05T00:10:00+00:00",
              "closed_loop": rows}
    (warehouse / "_reports" / "pipeline" / "loop.json").write_text(json.dumps(report))


def _execute(warehouse: Path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LAKELOOP_WAREHOUSE", str(warehouse))
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's default: the inline backend
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return text, nb


def _images(nb) -> dict[str, int]:
    """Per figure the notebook shows (``show("name", fig)``): the inline PNG outputs of its cell."""
    out = {}
    for cell in nb.cells:
        for name in re.findall(r'show\("([a-z_]+)"', cell.source) if cell.cell_type == "code" else ():
            pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            out[name] = len(pngs)
            for o in pngs:
                assert base64.b64decode(o["data"]["image/png"]).startswith(b"\x89PNG")
    return out


@pytest.mark.slow
def test_analysis_notebook_executes_and_plots(warehouse, monkeypatch):
    text, nb = _execute(warehouse, monkeypatch)
    assert "gold.predictions: not in this warehouse" in text
    assert "no closed-loop figures in the pipeline reports" in text  # a run without train or reactions
    assert "figures: ['item_stats', 'quarantine_rates']" in text
    assert "events" in text and "quarantine_rate" in text
    assert _images(nb) == {"quarantine_rates": 1, "item_stats": 1, "predictions": 0, "closed_loop": 0}
    _add_predictions(warehouse)
    _add_closed_loop_report(warehouse)
    text, nb = _execute(warehouse, monkeypatch)
    assert "figures: ['closed_loop', 'item_stats', 'predictions', 'quarantine_rates']" in text
    assert _images(nb) == {"quarantine_rates": 1, "item_stats": 1, "predictions": 1, "closed_loop": 1}
    assert "matplotlib.use" not in "".join(c.source for c in nb.cells)


def test_zeppelin_note_is_valid_and_has_the_same_sections():
    note = json.loads((ROOT / "notebooks" / "analysis.zpln").read_text())
    texts = [p["text"] for p in note["paragraphs"]]
    assert any(t.startswith("%pyspark") for t in texts) and any(t.startswith("%sql") for t in texts)
    body = "\n".join(texts)
    for needle in ("/_reports/", '"curate/*/dt=*.json"', "gold.item_stats", "gold.predictions",
                   "silver.events_quarantine", '"pipeline/*.json"', "closed_loop", "spark.read"):
        assert needle in body, needle


@pytest.mark.slow
def test_zeppelin_note_runs_on_spark(spark, warehouse, monkeypatch):
    """The note's %pyspark paragraph and every %sql paragraph, run on the test session: everything is read
    through Spark (tables with Lake, reports with spark.read.json), so nothing needs a local filesystem."""
    _add_predictions(warehouse)
    _add_closed_loop_report(warehouse)
    monkeypatch.setenv("LAKELOOP_WAREHOUSE", str(warehouse))
    texts = [p["text"] for p in json.loads((ROOT / "notebooks" / "analysis.zpln").read_text())["paragraphs"]]
    body = "\n".join(t for t in texts if t.startswith("%pyspark"))
    assert "open(" not in body and "glob" not in body
    exec(compile(body.removeprefix("%pyspark"), "analysis.zpln", "exec"), {"spark": spark})  # noqa: S102
    results = {t.splitlines()[1]: spark.sql(t.split("\n", 1)[1]).collect() for t in texts if t.startswith("%sql")}
    by_comment = {k.removeprefix("-- ").split(":")[0]: v for k, v in results.items()}
    assert by_comment["quarantine rates per source and date"]
    assert [r["date"] for r in by_comment["closed loop"]] == ["2026-11-03", "2026-11-04"]
    assert by_comment["closed loop"][1]["ctr"] == pytest.approx(0.15)
    assert sum(r["rows"] for r in by_comment["predicted scores"]) == 4
