"""``stream --source kafka`` against a real Kafka broker (KRaft, tests/kafka_broker.py): jobs/stream.py killed
with SIGKILL mid-stream and restarted from its checkpoints keeps every record in bronze exactly once,
quarantines the malformed ones with reasons and updates the real-time view.  Skipped without the jars of
``./setup.sh jvm`` (the broker and Spark's Kafka connector)."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from lakeloop import jvm
from lakeloop_apps.recommender.datagen import generate_day

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not jvm.connector("kafka").usable, reason=jvm.connector("kafka").reason)]
pytest_plugins = ["tests.kafka_broker"]
MALFORMED = ['{"event_id": "broken', "not json at all", '{"event_id": 17, "user_id": "x", "ts": "yesterday"}']


def _lines(landing: Path) -> list[str]:
    out = []
    for path in sorted((landing / "events").rglob("part-*")):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh:
            out += [line.rstrip("\n") for line in fh if line.strip()]
    return out


def _rows(uri: Path) -> int:
    if not (uri / "_delta_log").is_dir():
        return 0
    return DeltaTable(str(uri)).to_pyarrow_dataset().count_rows()


def _start(tmp_path: Path, log: Path, bootstrap: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "jobs" / "stream.py"), "--trigger", "processingTime", "--interval", "1 second",
           "--set", f"warehouse={tmp_path / 'warehouse'}", "--set", f"landing={tmp_path / 'landing'}",
           "--set", "log_level=INFO", "--set", "stream.source=kafka",
           "--set", f"stream.kafka.bootstrap_servers={bootstrap}", "--set", "stream.kafka.topic=events",
           "--set", "stream.kafka.options={maxOffsetsPerTrigger: 150}",
           "--set", "spark.sql.shuffle.partitions=2", "--set", "spark.master=local[2]"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), str(ROOT)])}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(predicate, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"stream job exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"timed out after {timeout} s:\n{log.read_text()[-4000:]}")


def test_kafka_to_bronze_exactly_once_across_kill_and_restart(spark, kafka_broker, tmp_path):
    topic_lines = tmp_path / "source"
    generate_day(topic_lines, "2026-11-01", events=500, users=30, items=20, seed=5, bad_fraction=0.0, parts=2)
    first_wave = _lines(topic_lines) + MALFORMED
    kafka_broker.create_topic("events", partitions=2)
    kafka_broker.produce("events", first_wave)
    log = tmp_path / "stream.log"
    warehouse = tmp_path / "warehouse"
    bronze = warehouse / "bronze" / "events"

    first = _start(tmp_path, log, kafka_broker.bootstrap)
    _wait(lambda: _rows(bronze) > 0, first, log, timeout=420)
    os.killpg(first.pid, signal.SIGKILL)  # kill -9, whatever batch is running
    first.wait(30)
    killed_at = _rows(bronze)

    generate_day(tmp_path / "source2", "2026-11-01", events=200, users=30, items=20, seed=6, bad_fraction=0.0,
                 parts=1)
    second_wave = _lines(tmp_path / "source2")
    kafka_broker.produce("events", second_wave)
    total = len(first_wave) + len(second_wave)
    assert killed_at < total

    second = _start(tmp_path, log, kafka_broker.bootstrap)
    _wait(lambda: _rows(bronze) >= total, second, log, timeout=480)
    second.send_signal(signal.SIGTERM)
    assert second.wait(180) == 0, log.read_text()[-4000:]

    rows = spark.read.parquet(*DeltaTable(str(bronze)).file_uris())
    assert rows.count() == total
    assert rows.select("_file", "_line").distinct().count() == total
    assert {r._file for r in rows.select("_file").distinct().collect()} <= {"kafka:events/0", "kafka:events/1"}
    assert sorted(r.value for r in rows.collect()) == sorted(first_wave + second_wave)
    quarantine = DeltaTable(str(warehouse / "silver" / "events_stream_quarantine")).to_pyarrow_table().to_pylist()
    assert sorted(q["value"] for q in quarantine if q["value"] in MALFORMED) == sorted(MALFORMED)
    assert all(q["reason"] for q in quarantine)
    realtime = DeltaTable(str(warehouse / "gold" / "realtime_counts")).to_pyarrow_table()
    assert realtime.num_rows > 0
