"""The closed loop through the real jobs: ``./spark-submit.sh pipeline --from D1 --to D3 --datagen``
killed during a step, re-run to completion without duplicates, re-run again doing nothing new; day
d+1's events hold the reactions to what was served on day d, the manifests reconcile with them and
the run report shows the model metric and the served CTR per day."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from lakeloop_apps.recommender.datagen.files import manifest_path

from tests.server_process import wait_or_kill

ROOT = Path(__file__).resolve().parents[1]
DATES = ["2026-11-01", "2026-11-02", "2026-11-03"]
TOP_N = 10


def _conf_args(tmp: Path) -> list[str]:
    """The demo's data; the test is about the loop and resuming, not the gate, so a challenger within 0.02
    of the champion is promoted and every day is served (docs/pipeline.md, closed loop)."""
    return ["--env", "local", "--conf-dir", str(ROOT / "conf"),
            "--set", f"warehouse={tmp / 'warehouse'}", "--set", f"landing={tmp / 'landing'}",
            "--set", "datagen.events=20000", "--set", f"infer.top_n={TOP_N}", "--set", "spark.master=local[2]",
            "--set", "train.gate_margin=-0.02"]


def _submit(tmp: Path) -> subprocess.Popen:
    cmd = [str(ROOT / "spark-submit.sh"), "pipeline", "--from", DATES[0], "--to", DATES[-1], "--datagen",
           *_conf_args(tmp)]
    log = open(tmp / "pipeline.log", "ab")  # noqa: SIM115 - closed by the caller through the process
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)



def _kill_during(proc: subprocess.Popen, marker: Path, timeout: float, delay: float) -> None:
    """SIGKILL the run (its whole process group) ``delay`` seconds after ``marker`` appears."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) before {marker.name}"
        assert time.monotonic() < deadline, f"no {marker} after {timeout}s"
        time.sleep(0.5)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _table(warehouse: Path, name: str, columns: list[str]):
    from deltalake import DeltaTable

    return DeltaTable(str(warehouse / name)).to_pandas(columns=columns)


def _lines(path: Path) -> list[dict]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def _reports(warehouse: Path) -> list[dict]:
    paths = sorted((warehouse / "_reports" / "pipeline").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in paths]


def _no_duplicates(warehouse: Path, manifests: dict[str, dict]) -> None:
    bronze = _table(warehouse, "bronze/events", ["dt"]).groupby("dt").size()
    silver = _table(warehouse, "silver/events", ["event_id", "dt"])
    predictions = _table(warehouse, "gold/predictions", ["user_id", "item_id", "dt"])
    for date, m in manifests.items():
        events = m["sources"]["events"]
        assert bronze[date] == events["rows"], date  # every landing line once, none twice
        day = silver[silver.dt == date]
        assert len(day) == day.event_id.nunique() == events["expected_silver"], date
        scored = predictions[predictions.dt == date]
        assert len(scored) and not scored.duplicated(["user_id", "item_id"]).any(), date
    for name in ("silver/users", "silver/items", "gold/training_set", "gold/item_stats"):
        counts = _table(warehouse, name, ["dt"]).groupby("dt").size()
        assert sorted(counts.index) == DATES, name
    users = _table(warehouse, "silver/users", ["user_id", "dt"])
    assert not users.duplicated().any()


def _check_reactions(tmp: Path, manifests: dict[str, dict]) -> dict[str, dict]:
    """Day d+1's reaction part against day d's served lists, silver.events and the training set."""
    warehouse = tmp / "warehouse"
    predictions = _table(warehouse, "gold/predictions", ["user_id", "item_id", "rank", "model_version", "dt"])
    silver = _table(warehouse, "silver/events", ["event_id", "dt"])
    training = _table(warehouse, "gold/training_set", ["user_id", "item_id", "label", "dt"])
    assert "reactions" not in manifests[DATES[0]]  # nothing was served before the first day
    found = {}
    for served_day, day in zip(DATES, DATES[1:], strict=False):
        r = manifests[day]["reactions"]
        top = predictions[(predictions.dt == served_day) & (predictions["rank"] <= TOP_N)]
        served = set(zip(top.user_id, top.item_id, strict=True))
        assert r["served_date"] == served_day and r["served_items"] == len(served) > 0
        assert r["served_model_version"] == ",".join(sorted(set(top.model_version)))
        records = _lines(tmp / "landing" / r["path"])
        assert len(records) == r["events"] > 0
        assert all((x["user_id"], x["item_id"]) in served and x["ts"].startswith(day) for x in records)
        types = Counter(x["type"] for x in records)
        assert (types["view"], types["click"], types["purchase"]) == (r["views"], r["clicks"], r["purchases"])
        assert r["ctr"] == round(r["clicks"] / r["served_items"], 6) and r["clicks"] > 0
        # ordinary events of the day: in silver.events, and their purchases are labels of the day's training set
        assert {x["event_id"] for x in records} <= set(silver[silver.dt == day].event_id)
        labelled = training[(training.dt == day) & (training.label == 1)]
        bought = {(x["user_id"], x["item_id"]) for x in records if x["type"] == "purchase"}
        assert bought and bought <= set(zip(labelled.user_id, labelled.item_id, strict=True))
        found[day] = r
    return found


@pytest.mark.slow
def test_killed_closed_loop_backfill_resumes_without_duplicates_then_does_nothing_new(spark, tmp_path):
    warehouse = tmp_path / "warehouse"
    state = warehouse / "_state" / "pipeline"
    # 1. killed during day 2's curate (its ingest is marked done, curate is running)
    _kill_during(_submit(tmp_path), state / f"dt={DATES[1]}" / "ingest.json", timeout=900, delay=3)
    assert (state / "lock").exists()  # left behind by the killed run
    assert not (state / f"dt={DATES[1]}" / "infer.json").exists()
    # 2. the re-run takes the stale lock over, skips what was done and completes the three days
    assert wait_or_kill(_submit(tmp_path), timeout=1500) == 0, (tmp_path / "pipeline.log").read_text()[-3000:]
    resumed = _reports(warehouse)[-1]
    assert resumed["stale_lock"] and resumed["exit_code"] == 0
    status = {(s["date"], s["step"]): s["status"] for s in resumed["steps"]}
    assert all(status[(DATES[0], s)] == "skipped" for s in ("datagen", "ingest", "train", "infer"))
    assert status[(DATES[1], "ingest")] == "skipped" and status[(DATES[1], "curate")] == "ok"
    manifests = {d: json.loads(manifest_path(tmp_path / "landing", d).read_text()) for d in DATES}
    _no_duplicates(warehouse, manifests)
    reactions = _check_reactions(tmp_path, manifests)
    # 3. the run report: model metric and served CTR per day, in the JSON and the HTML page
    loop = {row["date"]: row for row in resumed["closed_loop"]}
    assert sorted(loop) == DATES
    for date in DATES:
        assert loop[date]["metric"] == "auc" and 0.5 < loop[date]["model_value"] <= 1.0
        assert loop[date]["decision"] in ("promoted", "refused")
    for date, r in reactions.items():
        assert loop[date]["ctr"] == r["ctr"] and loop[date]["clicks"] == r["clicks"]
    html = next((warehouse / "_reports" / "pipeline").glob(f"{resumed['run_id']}.html")).read_text()
    assert "<h2>Closed loop</h2>" in html and "served CTR" in html
    assert all(f"<td>{r['ctr']:.4f}</td>" in html for r in reactions.values())
    # 4. once more: every step skipped, the landing files and tables unchanged
    landing = {p: p.read_bytes() for p in (tmp_path / "landing").rglob("*") if p.is_file()}
    versions = {n: _table_version(warehouse / n) for n in ("bronze/events", "silver/events", "gold/predictions")}
    assert wait_or_kill(_submit(tmp_path), timeout=600) == 0
    again = _reports(warehouse)[-1]
    assert again["run_id"] != resumed["run_id"] and {s["status"] for s in again["steps"]} == {"skipped"}
    assert {p: p.read_bytes() for p in (tmp_path / "landing").rglob("*") if p.is_file()} == landing
    assert {n: _table_version(warehouse / n) for n in versions} == versions
    # 5. datagen is idempotent per date: days 2 and 3 again give the same files, reactions included
    from lakeloop.pipeline import load_job

    assert load_job("datagen").main(["--date", DATES[-1], "--days", "2", *_conf_args(tmp_path)]) == 0
    assert {p: p.read_bytes() for p in (tmp_path / "landing").rglob("*") if p.is_file()} == landing


def _table_version(path: Path) -> int:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).version()
