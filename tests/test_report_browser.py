"""The run report opened in a real headless Chromium: the charts render and the page logs no error.

CI installs the Debian package ``chromium`` (``.ci/run``); without it the test is skipped with a message.
"""

from __future__ import annotations

import io

import pytest
from headless_browser import CHROMIUM, open_page
from lakeloop.report_html import render_pipeline_run
from lakeloop.report_models import model_figures
from test_report import mlflow_run, sample_run  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); "
                                                          "the report's browser test needs a real Chromium")


def _region_colours(shot, box: dict) -> int:
    region = shot.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    return len(region.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def test_report_renders_its_charts_in_chromium(tmp_path, mlflow_run):  # noqa: F811
    from PIL import Image

    uri, run_id, _ = mlflow_run
    run = sample_run(run_id)
    models = model_figures(uri, [{**s.summary, "date": s.date} for s in run.steps if s.step == "train"])
    html = tmp_path / "r1.html"
    html.write_text(render_pipeline_run(run.as_dict(), models), encoding="utf-8")
    visit = open_page(html)
    (tmp_path / "screenshot.png").write_bytes(visit.screenshot)
    assert visit.errors == []
    shot = Image.open(io.BytesIO(visit.screenshot))
    charts = {i["id"]: i for i in visit.images}
    expected = {f"chart-{k}" for k in ("closed_loop", "quarantine", "drift", "rows", "durations")}
    expected |= {f"chart-{run_id}-curves", f"chart-{run_id}-roc"}
    assert set(charts) == expected
    for key, box in charts.items():
        assert box["complete"] and box["natural"] > 0 and box["width"] > 200 and box["height"] > 100, key
        assert box["y"] + box["height"] <= shot.height, key
        assert _region_colours(shot, box) > 50, key  # drawn lines, text and fills, not a blank or broken image
    blank = shot.crop((0, 0, shot.width, 20)).convert("RGB").getcolors(maxcolors=1 << 20)
    assert blank is not None and len(blank) < 10  # the page's top margin is plain: the measure can tell them apart
