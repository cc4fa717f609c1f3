"""Ingest under concurrency and broken input: nothing lost, nothing doubled, nothing fatal.

Concurrent runs claim their files in the ledger; invalid UTF-8 is kept in ``_raw`` and quarantined as
``invalid_encoding``; a truncated ``.gz`` is ingested up to its damage and recorded as rejected; the
BOM of line 1 stays in bronze.
"""

from __future__ import annotations

import gzip
import os
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from lakeloop import tables
from lakeloop.curate import curate_source
from lakeloop.delta.files import file_stats
from lakeloop.ingest import BOM, ingest, ingest_source, rejected_table
from lakeloop.ledger import claims_uri, ledger_uri
from lakeloop.streaming import run_stream
from pyspark.sql import functions as F
from test_ingest import DATE, bronze, land

LINES = [f'{{"event_id":"e{i:016x}","user_id":{i + 1},"item_id":3,"type":"view","ts":"2026-11-01T10:00:00Z"}}'
         for i in range(400)]


def landing(conf, source: str) -> Path:
    return Path(conf.path("landing")) / source / f"dt={DATE}"


def bronze_lines(spark, conf, source: str) -> list[tuple[str, int, str]]:
    return sorted((os.path.basename(r["_file"]), r["_line"], r["value"])
                  for r in bronze(spark, conf, source).collect())


def ledger_rows(spark, conf):
    return tables.read(spark, ledger_uri(conf)).collect()


# -- 1. two runs at once -------------------------------------------------------------------------------


def test_two_ingests_at_once_ingest_every_file_once(spark, conf):
    for i in range(4):
        land(conf, "events", f"part-{i:05d}.jsonl", LINES[i * 100:(i + 1) * 100])
    land(conf, "users", "part-00000.jsonl", ['{"user_id":1}', '{"user_id":2}'])
    start = threading.Barrier(2)
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            start.wait()
            results[name] = ingest(spark, conf, DATE, ["events", "users"], batch_id=name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    expected = sorted((f"part-{i // 100:05d}.jsonl", i % 100 + 1, line) for i, line in enumerate(LINES))
    assert bronze_lines(spark, conf, "events") == expected  # bronze = landing lines exactly
    assert bronze(spark, conf, "users").count() == 2
    by_run = {n: {r.source: r for r in rs} for n, rs in results.items()}
    files = sorted(f for n in by_run for f in by_run[n]["events"].files)
    assert len(files) == len(set(files)) == 4  # every file ingested by exactly one run
    for n, other in (("a", "b"), ("b", "a")):
        ev = by_run[n]["events"]
        # what one run did not ingest, it says: already ingested or in progress in the other run
        assert len(ev.files) + ev.already_ingested + len(ev.in_progress) == 4
        assert all(holder.startswith(f"{other} (") for holder in ev.in_progress.values())
    done = [r for r in ledger_rows(spark, conf) if r["source"] == "events"]
    assert len(done) == 4 and {r["status"] for r in done} == {"ingested"}
    again = ingest_source(spark, conf, "events", DATE)
    assert (again.rows, again.already_ingested, again.in_progress) == (0, 4, {})


def test_a_claim_of_a_finished_run_is_taken_over(spark, conf):
    """A claim left by a run that stopped before writing bronze (here: released claims of a failure)."""
    land(conf, "users", "part-00000.jsonl", ['{"user_id":1}'])
    first = ingest_source(spark, conf, "users", DATE)
    # as if the run had stopped after its claim: drop ledger and bronze, keep the claim
    shutil.rmtree(ledger_uri(conf))
    shutil.rmtree(conf.table_uri("bronze.users"))
    again = ingest_source(spark, conf, "users", DATE)
    assert again.rows == 1 and again.in_progress == {} and first.batch_id != again.batch_id
    assert tables.read(spark, claims_uri(conf)).count() == 2


# -- 2. bytes that are not UTF-8 -------------------------------------------------------------------------


def test_invalid_utf8_is_kept_in_raw_and_quarantined(spark, conf):
    folder = landing(conf, "events")
    folder.mkdir(parents=True)
    bad = b'\xff\xfe{"event_id":"e0000000000000001"}'  # sorts last: the file's max of value
    latin1 = '{"event_id":"e0000000000000002","review_text":"café"}'.encode("latin-1")
    (folder / "part-00000.jsonl").write_bytes(b"\n".join([LINES[0].encode(), bad, latin1, LINES[3].encode()]) + b"\n")
    [result] = ingest(spark, conf, DATE, ["events"])
    assert result.rows == 4 and result.invalid_encoding == 2
    rows = {r["_line"]: r for r in bronze(spark, conf, "events").collect()}
    assert rows[2]["_raw"] == bytearray(bad) and rows[3]["_raw"] == bytearray(latin1)
    assert rows[1]["_raw"] is None and rows[1]["value"] == LINES[0]
    assert rows[2]["value"].startswith("\ufffd") and rows[3]["value"].endswith('caf\ufffd"}')
    # bronze is valid UTF-8 for every reader, not only Spark
    from deltalake import DeltaTable
    assert DeltaTable(conf.table_uri("bronze.events")).to_pyarrow_table().num_rows == 4
    report = curate_source(spark, conf.with_overrides({"curate.max_quarantine_rate": 1.0}), "events", DATE)
    assert report.quarantine_by_reason["invalid_encoding"] == 2 and report.reconciled
    quarantine = tables.read(spark, conf.table_uri("silver.events_quarantine")).collect()
    assert sorted((r["_line"], r["reason"]) for r in quarantine) == [(2, "invalid_encoding"), (3, "invalid_encoding")]


def test_file_stats_of_a_string_column_that_is_not_utf8(tmp_path):
    path = tmp_path / "bad.parquet"
    table = pa.table({"value": pa.array([b"ok", b"\xff\xfe"], pa.binary()).cast(pa.string(), safe=False),
                      "n": [1, 2]})
    pq.write_table(table, path)
    from pyarrow import fs as pafs
    rows, stats = file_stats(pafs.LocalFileSystem(), str(path))
    assert rows == 2
    assert '"value"' not in stats.split('"nullCount"')[0]  # no min/max for value
    assert '"nullCount": {"value": 0, "n": 0}' in stats and '"minValues": {"n": 1}' in stats


# -- 3. a truncated .gz ------------------------------------------------------------------------------------


def test_truncated_gz_ingests_its_readable_lines_and_is_rejected(spark, conf):
    land(conf, "events", "part-00000.jsonl", LINES[:50])
    full = gzip.compress("".join(line + "\n" for line in LINES).encode())
    broken = landing(conf, "events") / "part-00001.jsonl.gz"
    broken.write_bytes(full[: len(full) // 2])
    land(conf, "users", "part-00000.jsonl", ['{"user_id":1}'])
    results = {r.source: r for r in ingest(spark, conf, DATE, ["events", "users"])}
    ev = results["events"]
    assert len(ev.files) == 2 and list(ev.rejected) and "EOF" in next(iter(ev.rejected.values())).upper()
    assert results["users"].rows == 1  # the other sources go on
    got = bronze_lines(spark, conf, "events")
    partial = [(line, value) for name, line, value in got if name == "part-00001.jsonl.gz"]
    assert 0 < len(partial) < len(LINES)
    assert partial == [(i + 1, LINES[i]) for i in range(len(partial))]  # a verbatim prefix
    assert len([g for g in got if g[0] == "part-00000.jsonl"]) == 50
    [rej] = tables.read(spark, conf.table_uri(rejected_table("events"))).collect()
    assert rej["path"].endswith("part-00001.jsonl.gz") and rej["rows_ingested"] == len(partial) and rej["reason"]
    status = {os.path.basename(r["path"]): (r["status"], r["rows"]) for r in ledger_rows(spark, conf)
              if r["source"] == "events"}
    assert status == {"part-00000.jsonl": ("ingested", 50), "part-00001.jsonl.gz": ("rejected", len(partial))}

    again = ingest_source(spark, conf, "events", DATE)  # not retried silently
    assert again.rows == 0 and [os.path.basename(p) for p in again.rejected_earlier] == ["part-00001.jsonl.gz"]

    broken.write_bytes(full)  # the fixed file: new content, new size
    fixed = ingest_source(spark, conf, "events", DATE)
    assert fixed.rows == len(LINES) - len(partial) and fixed.rejected == {}
    got = [(line, value) for name, line, value in bronze_lines(spark, conf, "events") if name == "part-00001.jsonl.gz"]
    assert got == [(i + 1, line) for i, line in enumerate(LINES)]  # every line once


def test_gz_that_is_not_gzip_at_all_is_rejected_with_no_rows(spark, conf):
    (landing(conf, "users")).mkdir(parents=True)
    (landing(conf, "users") / "part-00000.jsonl.gz").write_bytes(b"this is not gzip\n")
    land(conf, "users", "part-00001.jsonl", ['{"user_id":1}'])
    [result] = ingest(spark, conf, DATE, ["users"])
    assert result.rows == 1 and len(result.rejected) == 1
    assert [r["rows_ingested"] for r in tables.read(spark, conf.table_uri(rejected_table("users"))).collect()] == [0]


# -- 5. the BOM of line 1 -----------------------------------------------------------------------------------


def test_bom_is_kept_in_bronze_and_removed_when_parsing(spark, conf):
    land(conf, "events", "part-00000.jsonl", [BOM + LINES[0], LINES[1]])
    land(conf, "events", "part-00001.jsonl.gz", [BOM + LINES[2]])
    land(conf, "items", "part-00000.csv", [BOM + "item_id,category,price,updated_at", "1,a/b,2.5,2026-11-01"])
    ingest(spark, conf, DATE, ["events", "items"])
    ev = {(os.path.basename(r["_file"]), r["_line"]): r["value"] for r in bronze(spark, conf, "events").collect()}
    assert ev == {("part-00000.jsonl", 1): BOM + LINES[0], ("part-00000.jsonl", 2): LINES[1],
                  ("part-00001.jsonl.gz", 1): BOM + LINES[2]}
    [item] = bronze(spark, conf, "items").collect()
    assert item["_header"] == BOM + "item_id,category,price,updated_at" and item["value"] == "1,a/b,2.5,2026-11-01"
    loose = conf.with_overrides({"curate.max_quarantine_rate": 1.0})
    events = curate_source(spark, loose, "events", DATE)
    assert (events.silver_rows, events.quarantine_by_reason["malformed"]) == (3, 0)
    items = curate_source(spark, loose, "items", DATE)
    assert items.quarantine_rows == 0 and items.silver_rows == 1
    silver = tables.read(spark, conf.table_uri("silver.events")).where(F.col("_line") == 1)
    assert silver.count() == 2


# -- 6. the speed layer shares the ledger --------------------------------------------------------------


def test_two_streams_and_a_batch_ingest_at_once_take_every_file_once(spark, conf, tmp_path):
    for i in range(4):
        land(conf, "events", f"part-{i:05d}.jsonl", LINES[i * 100:(i + 1) * 100])
    streams = [conf.with_overrides({"stream.checkpoint_dir": str(tmp_path / f"cp-{n}"),
                                    "stream.max_files_per_trigger": 2}) for n in ("a", "b")]
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def at_once(body) -> None:
        try:
            start.wait()
            body()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    bodies = [lambda c=c: run_stream(spark.newSession(), c, "events", trigger="availableNow", realtime=False)
              for c in streams] + [lambda: ingest_source(spark, conf, "events", DATE, batch_id="batch")]
    threads = [threading.Thread(target=at_once, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    expected = sorted((f"part-{i // 100:05d}.jsonl", i % 100 + 1, line) for i, line in enumerate(LINES))
    assert bronze_lines(spark, conf, "events") == expected  # bronze = landing lines exactly
    done = [r for r in ledger_rows(spark, conf) if r["source"] == "events"]
    assert sorted(os.path.basename(r["path"]) for r in done) == [f"part-{i:05d}.jsonl" for i in range(4)]
    assert {r["status"] for r in done} == {"ingested"} and sum(r["rows"] for r in done) == len(LINES)


def test_stream_keeps_the_bom_and_rejects_a_truncated_gz_going_on(spark, conf):
    whole = gzip.compress("".join(line + "\n" for line in LINES[:200]).encode())
    land(conf, "events", "part-00000.jsonl", [BOM + LINES[300], LINES[301]])
    (landing(conf, "events") / "part-00001.jsonl.gz").write_bytes(whole[:len(whole) // 2])

    report = run_stream(spark, conf, "events", trigger="availableNow", realtime=False)

    lines = bronze_lines(spark, conf, "events")
    assert lines[:2] == [("part-00000.jsonl", 1, BOM + LINES[300]), ("part-00000.jsonl", 2, LINES[301])]
    partial = [(n, v) for name, n, v in lines if name == "part-00001.jsonl.gz"]
    assert 0 < len(partial) < 200 and partial == [(i + 1, LINES[i]) for i in range(len(partial))]
    assert report.bronze.files == 2 and report.bronze.rows == 2 + len(partial)
    [rejected] = tables.read(spark, conf.table_uri(rejected_table("events"))).collect()
    assert rejected["rows_ingested"] == len(partial) and "part-00001.jsonl.gz" in rejected["path"]
    status = {os.path.basename(r["path"]): r["status"] for r in ledger_rows(spark, conf)}
    assert status == {"part-00000.jsonl": "ingested", "part-00001.jsonl.gz": "rejected"}
    # batch ingest of the day does not read the rejected file again
    again = ingest_source(spark, conf, "events", DATE)
    assert again.files == [] and len(again.rejected_earlier) == 1
