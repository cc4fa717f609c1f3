"""lakeloop.tables streaming: the lakeloop_delta source and the exactly-once sink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lakeloop import tables
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parents[1]


def _append(spark, uri, start, n, day="2026-11-01"):
    tables.write(spark.range(start, start + n).withColumn("dt", F.lit(day)), uri, partition_by=["dt"])


def _ids(spark, uri):
    return sorted(r.id for r in tables.read(spark, uri).select("id").collect())


@pytest.mark.slow  # four micro-batch queries: over 20 s on a shared machine
def test_source_to_sink_available_now_resumes_from_checkpoint(spark, tmp_path):
    src, dst, ckpt = str(tmp_path / "src"), str(tmp_path / "dst"), str(tmp_path / "ckpt")
    _append(spark, src, 0, 10)
    _append(spark, src, 10, 5, day="2026-11-02")
    q = tables.stream_to(tables.read_stream(spark, src), dst, ckpt, partition_by=["dt"])
    q.awaitTermination(120)
    assert q.exception() is None
    assert _ids(spark, dst) == list(range(15))
    back = tables.read(spark, dst)
    assert back.schema == tables.read(spark, src).schema
    _append(spark, src, 15, 3)
    tables.optimize(src)  # compaction rewrites files without data change: nothing is re-read
    q = tables.stream_to(tables.read_stream(spark, src), dst, ckpt, partition_by=["dt"])
    q.awaitTermination(120)
    assert _ids(spark, dst) == list(range(18))
    txn = [h for h in tables.history(dst) if "lakeloop.streamBatch" in h]
    assert sorted(int(h["lakeloop.streamBatch"]) for h in txn) == [0, 1]


def test_starting_version_and_processing_time_trigger(spark, tmp_path):
    src, dst, ckpt = str(tmp_path / "src"), str(tmp_path / "dst"), str(tmp_path / "ckpt")
    _append(spark, src, 0, 10)
    _append(spark, src, 100, 2)
    q = tables.stream_to(tables.read_stream(spark, src, starting_version=1), dst, ckpt, trigger="1 second")
    try:
        q.processAllAvailable()
        assert _ids(spark, dst) == [100, 101]
        _append(spark, src, 200, 3)
        q.processAllAvailable()
        assert _ids(spark, dst) == [100, 101, 200, 201, 202]
    finally:
        q.stop()


def test_source_refuses_deletes_unless_ignore_changes(spark, tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    _append(spark, src, 0, 3)
    tables.write(spark.range(5, 6).withColumn("dt", F.lit("2026-11-01")), src, mode="overwrite")
    q = tables.stream_to(tables.read_stream(spark, src, starting_version=0), dst, str(tmp_path / "c1"))
    with pytest.raises(Exception, match="deleted or rewrote rows"):
        q.awaitTermination(120)
    q = tables.stream_to(tables.read_stream(spark, src, starting_version=0, ignore_changes=True), dst,
                         str(tmp_path / "c2"))
    q.awaitTermination(120)
    assert _ids(spark, dst) == [0, 1, 2, 5]


QUERY = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {lib!r})
    from pyspark.sql import SparkSession
    from lakeloop import tables
    from lakeloop.delta import stream
    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    src, dst, ckpt = sys.argv[1:4]
    real = stream._BatchWriter.__call__

    def crash_after_commit(self, batch, batch_id):
        real(self, batch, batch_id)  # the batch is committed to the table ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... but never marked done in the checkpoint

    stream._BatchWriter.__call__ = crash_after_commit
    q = tables.stream_to(tables.read_stream(spark, src), dst, ckpt, partition_by=["dt"])
    q.awaitTermination()
""")


@pytest.mark.slow  # a Spark start-up in a subprocess: ~30 s on a shared machine
def test_query_killed_after_sink_commit_restarts_exactly_once(spark, tmp_path):
    src, dst, ckpt = str(tmp_path / "src"), str(tmp_path / "dst"), str(tmp_path / "ckpt")
    _append(spark, src, 0, 10)
    q = tables.stream_to(tables.read_stream(spark, src), dst, ckpt, partition_by=["dt"])
    q.awaitTermination(120)
    _append(spark, src, 10, 7)
    script = tmp_path / "query.py"
    script.write_text(QUERY.format(lib=str(ROOT / "lib")))
    proc = subprocess.Popen([sys.executable, str(script), src, dst, ckpt], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the killed driver's JVM
            except ProcessLookupError:
                pass
    assert proc.returncode == -signal.SIGKILL
    assert _ids(spark, dst) == list(range(17))  # batch 1 landed before the kill
    assert not (Path(ckpt) / "commits" / "1").exists()  # ... and was never checkpointed
    q = tables.stream_to(tables.read_stream(spark, src), dst, ckpt, partition_by=["dt"])
    q.awaitTermination(120)
    assert q.exception() is None
    assert _ids(spark, dst) == list(range(17))  # the replayed batch 1 was skipped
    _append(spark, src, 17, 3)
    q = tables.stream_to(tables.read_stream(spark, src), dst, ckpt, partition_by=["dt"])
    q.awaitTermination(120)
    assert _ids(spark, dst) == list(range(20))
