"""Speed layer on real Spark streaming queries, real Delta tables and real landing files."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest
import yaml
from lakeloop import tables
from lakeloop.conf import ConfError, load_conf
from lakeloop.ingest import ingest_source
from lakeloop.serving import open_store
from lakeloop.streaming import StreamError, run_stream
from lakeloop.streaming.realtime_spec import RealtimeSpec
from lakeloop_apps.recommender.datagen import generate_day
from lakeloop_apps.recommender.waves import describe, realtime_waves
from pyspark.sql import functions as F

DATE = "2026-11-01"


def _landed_lines(landing: Path, source: str, date: str) -> dict[str, int]:
    counts = {}
    for path in sorted((landing / source / f"dt={date}").iterdir()):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh:
            counts[path.name] = sum(1 for _ in fh)
    return counts


def _event(event_id: int, user: int, item: int, kind: str, ts: str) -> str:
    return json.dumps({"event_id": f"e{event_id:016x}", "user_id": user, "item_id": item, "type": kind, "ts": ts})


def _land(landing: Path, name: str, lines: list[str], date: str = DATE, source: str = "events") -> None:
    folder = landing / source / f"dt={date}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.rename(folder / name)  # atomic, as upstream systems must land files


def test_available_now_exactly_once_shared_ledger_and_quarantine(spark, conf, tmp_path):
    landing = tmp_path / "landing"
    manifest = generate_day(landing, DATE, events=400, users=30, items=20, seed=11, bad_fraction=0.1, parts=2)
    landed = _landed_lines(landing, "events", DATE)

    first = run_stream(spark, conf, "events", trigger="availableNow")

    bronze_uri = conf.table_uri("bronze.events")
    bronze = tables.read(spark, bronze_uri)
    per_file = {Path(r["_file"]).name: (r["n"], r["lo"], r["hi"], r["d"]) for r in bronze.groupBy("_file").agg(
        F.count("*").alias("n"), F.min("_line").alias("lo"), F.max("_line").alias("hi"),
        F.countDistinct("_line").alias("d")).collect()}
    assert {name: v[0] for name, v in per_file.items()} == landed
    assert all(v[1] == 1 and v[2] == v[0] == v[3] for v in per_file.values())  # exact 1-based line numbers
    assert bronze.select("_file", "_line").distinct().count() == sum(landed.values())
    assert {r["dt"] for r in bronze.select("dt").distinct().collect()} == {DATE}
    assert first.bronze.rows == sum(landed.values()) and first.bronze.files == len(landed)

    # rejected lines carry curate's reason codes; duplicates are left to curate
    expected = {k: v for k, v in manifest["sources"]["events"]["expected_quarantine"].items() if k != "duplicate"}
    quarantine = tables.read(spark, conf.table_uri("silver.events_stream_quarantine"))
    got = {r["reason"]: r["count"] for r in quarantine.groupBy("reason").count().collect()}
    assert got == expected
    assert quarantine.where(F.col("detail").isNull() | F.col("_line").isNull()).count() == 0

    # the real-time view reached the serving store
    assert first.realtime is not None and first.realtime.keys_published > 0

    # second run: nothing new, nothing written
    version = tables.version(bronze_uri)
    second = run_stream(spark, conf, "events", trigger="availableNow")
    assert second.bronze.rows == 0 and second.bronze.files == 0
    assert tables.version(bronze_uri) == version

    # batch ingest of the same day sees the stream's files in the ledger
    batch = ingest_source(spark, conf, "events", DATE)
    assert batch.files == [] and batch.already_ingested == len(landed)
    assert tables.read(spark, bronze_uri).count() == sum(landed.values())


def test_stream_skips_files_batch_ingest_already_took(spark, conf, tmp_path):
    landing = tmp_path / "landing"
    generate_day(landing, DATE, events=100, users=10, items=10, seed=5, bad_fraction=0.0, parts=2)
    ingested = ingest_source(spark, conf, "events", DATE)
    _land(landing, "part-00009.jsonl", [_event(1, 1, 1, "view", f"{DATE}T10:00:00Z"),
                                       _event(2, 1, 2, "view", f"{DATE}T10:01:00Z")])

    report = run_stream(spark, conf, "events", trigger="availableNow", realtime=False)

    assert report.bronze.files_already_ingested == len(ingested.files)
    assert report.bronze.files == 1 and report.bronze.rows == 2
    bronze = tables.read(spark, conf.table_uri("bronze.events"))
    assert bronze.count() == ingested.rows + 2
    assert bronze.select("_file", "_line").distinct().count() == ingested.rows + 2


def test_watermark_late_events_and_lookup_merges_views(spark, conf, tmp_path):
    conf = conf.with_overrides({"stream.window": "10 minutes", "stream.watermark": "5 minutes"})
    landing = tmp_path / "landing"
    items = spark.createDataFrame([(7, "home/kitchen", DATE), (8, "toys/games", DATE)],
                                  "item_id long, category string, dt string")
    tables.write(items, conf.table_uri("silver.items"), partition_by=["dt"])
    t = f"{DATE}T10:"
    _land(landing, "part-00000.jsonl", [_event(1, 1, 7, "view", t + "00:00Z"), _event(2, 1, 7, "view", t + "02:00Z"),
                                       _event(3, 1, 8, "click", t + "31:00Z"), "{not json"])
    first = run_stream(spark, conf, "events", trigger="availableNow")
    assert first.late_rows_dropped == 0
    assert first.bronze.quarantine_by_reason == {"malformed": 1}

    # watermark now 10:26: 10:27 (window 10:20-10:30, still open) counts
    _land(landing, "part-00001.jsonl", [_event(4, 1, 8, "view", t + "27:00Z")])
    second = run_stream(spark, conf, "events", trigger="availableNow")
    assert second.late_rows_dropped == 0
    # 10:05 (window 10:00-10:10 ended before the watermark) is dropped and counted; late rows are judged
    # against the previous micro-batch's watermark (two stateful operators: dedup, then windows)
    _land(landing, "part-00002.jsonl", [_event(5, 1, 7, "view", t + "05:00Z")])
    third = run_stream(spark, conf, "events", trigger="availableNow")
    assert third.late_rows_dropped > 0
    assert third.bronze.rows == 1  # bronze keeps every line; only the real-time view drops it

    counts = tables.read(spark, conf.table_uri("gold.realtime_counts")).select(
        "entity", "key", F.date_format("window_start", "HH:mm").alias("start"), "views", "clicks", "categories",
        "_stream_batch")
    latest = {}  # the update log's newest row per window and key
    for r in sorted(counts.collect(), key=lambda r: r["_stream_batch"]):
        latest[(r["entity"], r["key"], r["start"])] = r
    assert latest[("item", 7, "10:00")]["views"] == 2  # the late view did not count
    assert latest[("item", 8, "10:20")]["views"] == 1  # the late-but-inside-the-watermark view did
    assert latest[("item", 8, "10:30")]["clicks"] == 1
    assert latest[("user", 1, "10:00")]["categories"] == ["home/kitchen"]

    store = open_store(conf)
    try:
        # the store keeps each key's newest window: the 10:20 update does not replace item 8's 10:30 window
        assert store.get_realtime("item:8")["window_start"] == f"{t}30:00Z"
        store.begin_load("v1")
        store.write_batch("v1", [(1, {"items": [{"item_id": 8, "score": 0.9}]})])
        store.commit_load("v1", 1)
        found = store.lookup(1)
        assert found["items"] == [{"item_id": 8, "score": 0.9}]
        assert found["realtime"]["window_start"] == f"{t}30:00Z"
        assert found["realtime"]["categories"] == ["toys/games"] and found["realtime"]["clicks"] == 1
    finally:
        store.close()


def test_kafka_without_connector_names_it(spark, conf):
    conf = conf.with_overrides({"stream.source": "kafka", "stream.kafka.bootstrap_servers": "127.0.0.1:9"})
    with pytest.raises(StreamError, match="spark-sql-kafka-0-10"):
        run_stream(spark, conf, "events", trigger="availableNow")


def test_realtime_view_changes_wave_by_wave(spark, conf):
    now = dt.datetime(2026, 11, 2, 10, 0, 0, tzinfo=dt.UTC)  # after DATE: the waves' event time
    views = realtime_waves(spark, conf, DATE, user=5, waves=2, now=now)

    assert [(v["events"], v["views"], v["clicks"]) for v in views] == [(3, 2, 1), (6, 4, 2)]
    assert views[0]["window_start"] == views[1]["window_start"] == "2026-11-02T10:00:00Z"
    assert views[0]["updated_at"] <= views[1]["updated_at"]
    assert describe(views[1]).endswith("events=6, views=4, clicks=2, carts=0, purchases=0")
    bronze = tables.read(spark, conf.table_uri("bronze.events"))
    assert bronze.count() == 6 and bronze.select("_file").distinct().count() == 2


def test_csv_with_header_classified_after_numbering(spark, conf, tmp_path):
    landing = tmp_path / "landing"
    manifest = generate_day(landing, DATE, events=50, users=10, items=40, seed=9, bad_fraction=0.1, parts=1)
    landed = _landed_lines(landing, "items", DATE)

    report = run_stream(spark, conf, "items", trigger="availableNow")

    assert report.realtime is None  # a CSV source with a header has no real-time view
    bronze = tables.read(spark, conf.table_uri("bronze.items"))
    assert bronze.count() == report.bronze.rows == sum(n - 1 for n in landed.values())  # header lines are not rows
    assert bronze.where(F.col("_header").isNull() | (F.col("_line") < 2)).count() == 0
    expected = {k: v for k, v in manifest["sources"]["items"]["expected_quarantine"].items()
                if k != "duplicate" and v}
    assert report.bronze.quarantine_by_reason == expected


# -- the real-time view is the app's conf -------------------------------------------------------------------
READINGS = """source: readings
primary_key: [reading_id]
event_time: at
columns:
  - {name: reading_id, type: string, nullable: false}
  - {name: sensor, type: long, nullable: false}
  - {name: site, type: long, nullable: false}
  - {name: level, type: string, nullable: false}
  - {name: at, type: timestamp, nullable: false}
"""


def _sensor_app(tmp_path: Path):
    """An app of its own (no recommender key): sensor readings counted per sensor and per site."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "readings.yaml").write_text(READINGS)
    base = {"warehouse": str(tmp_path / "warehouse"), "landing": str(tmp_path / "landing"),
            "sources": {"readings": {"format": "jsonl", "schema": "readings.yaml"}}, "schema_dir": str(folder),
            "stream": {"realtime": {"entities": {"sensor": "sensor", "site": "site"}, "type_column": "level",
                                    "counts": {"alarms": "alarm", "warnings": "warn"}, "lookup_entity": "site",
                                    "group": {"table": "silver.sensors", "key": "sensor", "column": "zone",
                                              "field": "zones"}}}}
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    (folder / "local.yaml").write_text((Path(__file__).resolve().parents[1] / "conf" / "local.yaml").read_text())
    return load_conf("local", conf_dir=folder)


def test_a_realtime_view_of_other_columns_declared_in_conf(spark, tmp_path):
    conf = _sensor_app(tmp_path)
    sensors = spark.createDataFrame([(11, "north", DATE), (12, "south", DATE)], "sensor long, zone string, dt string")
    tables.write(sensors, conf.table_uri("silver.sensors"), partition_by=["dt"])
    t = f"{DATE}T10:0"
    lines = [json.dumps({"reading_id": f"r{i}", "sensor": sensor, "site": 3, "level": level, "at": f"{t}{i}:00Z"})
             for i, (sensor, level) in enumerate([(11, "alarm"), (11, "warn"), (12, "ok"), (12, "alarm")])]
    _land(tmp_path / "landing", "part-00000.jsonl", [*lines, lines[0]], source="readings")  # one line twice

    report = run_stream(spark, conf, "readings", trigger="availableNow")

    assert report.realtime is not None and report.realtime.keys_published == 3
    rows = tables.read(spark, conf.table_uri("gold.realtime_counts")).collect()
    got = {(r["entity"], r["key"]): (r["events"], r["alarms"], r["warnings"], r["zones"]) for r in rows}
    assert got == {("sensor", 11): (2, 1, 1, ["north"]), ("sensor", 12): (2, 1, 0, ["south"]),
                   ("site", 3): (4, 2, 1, ["north", "south"])}
    store = open_store(conf)
    try:
        site = store.get_realtime(3)  # the lookup entity: under the bare key, with the group's values
        assert (site["events"], site["alarms"], site["zones"]) == (4, 2, ["north", "south"])
        sensor = store.get_realtime("sensor:11")  # keyed by the group's key: its own zone is not repeated
        assert (sensor["events"], sensor["warnings"]) == (2, 1) and "zones" not in sensor
    finally:
        store.close()


@pytest.mark.parametrize(("override", "message"), [
    ({"stream.realtime.lookup_entity": "shop"}, r"stream.realtime.lookup_entity: 'shop' is not one of"),
    ({"stream.realtime.entities": {"bad name": "x"}}, r"stream.realtime.entities.bad name: expected a name"),
    ({"stream.realtime.counts": {"events": "view"}}, r"stream.realtime.counts: 'events' is a column of every"),
    ({"stream.realtime.group": {"table": "silver.items", "key": "item_id", "column": "category"}},
     r"stream.realtime.group.field: required"),
    ({"stream.realtime.group": {"tabel": "x"}}, r"stream.realtime.group.tabel: unknown key"),
    ({"stream.realtime.type_column": None}, r"stream.realtime.type_column: required when"),
])
def test_a_bad_realtime_conf_names_its_key(conf, override, message):
    if "stream.realtime.group" in override:  # a group replaced whole, not merged into the app's
        conf = conf.with_overrides({"stream.realtime.group": None})
    with pytest.raises(ConfError, match=message):
        RealtimeSpec.from_conf(conf.with_overrides(override))


def test_a_bad_realtime_conf_stops_the_stream_before_any_query(spark, conf):
    with pytest.raises(ConfError, match="stream.realtime.lookup_entity"):
        run_stream(spark, conf.with_overrides({"stream.realtime.lookup_entity": "shop"}), "events",
                   trigger="availableNow")
