"""jobs/stream.py as a process: killed with SIGKILL mid-stream, restarted from its checkpoints, then
stopped with SIGTERM after its current micro-batch.  Bronze holds every landed line exactly once."""

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
from lakeloop_apps.recommender.datagen import generate_day

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _landed(landing: Path) -> int:
    total = 0
    for path in (landing / "events").rglob("part-*"):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh:
            total += sum(1 for _ in fh)
    return total


def _rows(uri: Path) -> int:
    if not (uri / "_delta_log").is_dir():
        return 0
    return DeltaTable(str(uri)).to_pyarrow_dataset().count_rows()


def _start(tmp_path: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "jobs" / "stream.py"), "--trigger", "processingTime", "--interval", "1 second",
           "--set", f"warehouse={tmp_path / 'warehouse'}", "--set", f"landing={tmp_path / 'landing'}",
           "--set", "log_level=INFO", "--set", "stream.max_files_per_trigger=1",
           "--set", "spark.sql.shuffle.partitions=2", "--set", "spark.master=local[2]"]
    # own process group: SIGKILL reaches the JVM too, as when a node dies
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


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


def test_kill_restart_then_sigterm_keeps_every_line_once(spark, tmp_path):
    landing, log = tmp_path / "landing", tmp_path / "stream.log"
    bronze = tmp_path / "warehouse" / "bronze" / "events"
    generate_day(landing, "2026-11-01", events=600, users=30, items=20, seed=3, bad_fraction=0.05, parts=6)

    first = _start(tmp_path, log)
    _wait(lambda: _rows(bronze) > 0, first, log, timeout=420)
    os.killpg(first.pid, signal.SIGKILL)  # kill -9, whatever batch is running
    first.wait(30)
    killed_at = _rows(bronze)

    generate_day(landing, "2026-11-02", events=200, users=30, items=20, seed=4, bad_fraction=0.05, parts=2)
    total = _landed(landing)
    assert killed_at < total

    second = _start(tmp_path, log)
    _wait(lambda: _rows(bronze) >= total, second, log, timeout=480)
    second.send_signal(signal.SIGTERM)
    assert second.wait(180) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "stopping after the current micro-batch" in text and "stream done" in text

    rows = spark.read.parquet(*DeltaTable(str(bronze)).file_uris())
    assert rows.count() == total
    assert rows.select("_file", "_line").distinct().count() == total
    ledger = DeltaTable(str(tmp_path / "warehouse" / "_state" / "ingest_ledger")).to_pyarrow_table().to_pylist()
    assert len(ledger) == len({r["path"] for r in ledger}) == 8
    assert sum(r["rows"] for r in ledger) == total
