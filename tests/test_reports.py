"""Reports and state documents through the tables' filesystem layer: local paths and file:// URIs."""

from __future__ import annotations

from pathlib import Path

import pytest
from lakeloop.lake import Lake
from lakeloop.reports import Documents


@pytest.fixture(params=["path", "file-uri"])
def root(request, tmp_path) -> str:
    folder = tmp_path / "w h" / "_reports"  # a space: URIs and paths must not be confused
    return str(folder) if request.param == "path" else f"file://{folder}"


def test_write_read_replace_list_delete(root, tmp_path):
    docs = Documents(root)
    where = docs.write_json("curate/events/dt=2026-11-01.json", {"rows": 3, "reasons": {"bad_json": 1}})
    assert where == tmp_path / "w h" / "_reports" / "curate" / "events" / "dt=2026-11-01.json"
    assert docs.read_json("curate/events/dt=2026-11-01.json") == {"rows": 3, "reasons": {"bad_json": 1}}
    docs.write_json("curate/events/dt=2026-11-01.json", {"rows": 4})  # replaced, no temporary left behind
    assert docs.read_json("curate/events/dt=2026-11-01.json") == {"rows": 4}
    assert sorted(p.name for p in where.parent.iterdir()) == ["dt=2026-11-01.json"]
    docs.write_text("curate/events/dt=2026-11-02.json", "not json")
    assert docs.list("curate/events", ".json") == ["curate/events/dt=2026-11-01.json",
                                                   "curate/events/dt=2026-11-02.json"]
    assert docs.read_json("curate/events/dt=2026-11-02.json") is None  # unreadable: None, not an exception
    assert docs.exists("curate/events/dt=2026-11-01.json")
    docs.delete("curate/events/dt=2026-11-01.json")
    assert not docs.exists("curate/events/dt=2026-11-01.json")
    assert docs.read_text("curate/events/dt=2026-11-01.json") is None
    assert docs.list("nothing/here") == []


def test_reports_of_a_lake_live_under_its_warehouse(tmp_path):
    lake = Lake(warehouse=f"file://{tmp_path}/wh")
    docs = Documents.reports(lake, "train")
    assert docs.root == f"file://{tmp_path}/wh/_reports/train"
    docs.write_json("dt=2026-11-01.json", {"model_version": "3"})
    assert (Path(tmp_path) / "wh" / "_reports" / "train" / "dt=2026-11-01.json").is_file()
    assert docs.sub("x").uri("y.json") == f"file://{tmp_path}/wh/_reports/train/x/y.json"


def test_curate_and_train_reports_go_through_the_same_layer(conf):
    """The jobs' report locations are the documents' (local warehouse: plain paths)."""
    import datetime as dt

    from lakeloop.curate import report_uri
    from lakeloop.train.report import report_path, write_run_report

    warehouse = Path(conf.path("warehouse"))
    assert report_uri(conf, "events", "2026-11-01") == str(warehouse / "_reports/curate/events/dt=2026-11-01.json")
    out = write_run_report(conf, dt.date(2026, 11, 1), {"gate": {"decision": "promoted"}})
    assert out == report_path(conf, dt.date(2026, 11, 1)) == warehouse / "_reports/train/dt=2026-11-01.json"
