"""Interop with delta-spark, both ways: the bridge's tables read by delta-spark, delta-spark's read by the bridge,
and one writer per engine on one table.

delta-spark runs in its own process (tests/delta_spark_peer.py, in the delta-spark runtime ``.venv-delta``
whose Spark the Delta jars are built for), one session for the whole module; the bridge side uses the shared
``spark`` fixture.  Skipped when ``./setup.sh jvm`` has not fetched the jars and built the runtime.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest
from lakeloop import jvm, tables
from lakeloop.delta.log import UnsupportedFeatureError, commit_actions, locate

from tests.conftest import ROOT

PYTHON = jvm.delta_runtime_python(ROOT)
_DELTA = jvm.connector("delta", jvm.connector("delta").versions.get("spark.version"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    PYTHON is None or not _DELTA.usable,
    reason=f"delta-spark jars or the delta-spark runtime missing: run {jvm.SETUP_HINT}")]


class Peer:
    """The delta-spark process: ``peer("read", path=...)`` sends one request and returns its answer."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), str(ROOT)]),
               "PYSPARK_PYTHON": str(PYTHON), "PYSPARK_DRIVER_PYTHON": str(PYTHON)}
        self.process = subprocess.Popen([str(PYTHON), str(ROOT / "tests" / "delta_spark_peer.py")], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.version = self._reply()["ready"]

    def _reply(self) -> dict:
        for line in self.process.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the delta-spark peer exited ({self.process.wait()})")

    def send(self, op: str, **request) -> None:
        self.process.stdin.write(json.dumps({"op": op, **request}) + "\n")  # type: ignore[union-attr]

    def __call__(self, op: str, **request):
        self.send(op, **request)
        return self.answer()

    def answer(self, expect_error: bool = False):
        reply = self._reply()
        if expect_error:
            assert "error" in reply, reply
            return reply
        assert "ok" in reply, reply.get("trace") or reply
        return reply["ok"]

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def peer():
    process = Peer()
    yield process
    process.close()


def _rows(frame) -> list[dict]:
    return sorted((json.loads(json.dumps(r.asDict(recursive=True), default=str)) for r in frame.collect()),
                  key=lambda r: json.dumps(r, sort_keys=True))


def _history(uri: str) -> list[list]:
    return sorted([h["version"], h["operation"]] for h in tables.history(uri))


def _events(spark, ids, dt_value, amount=1.0):
    from pyspark.sql import Row

    return spark.createDataFrame([Row(id=i, amount=float(amount * i), kind=f"k{i % 3}",
                                      ts=dt.datetime(2026, 11, 1, 12, i % 60, tzinfo=dt.UTC), dt=dt_value)
                                  for i in ids])


def test_bridge_tables_read_by_delta_spark(spark, peer, tmp_path):
    """Partitioned, with stats, after MERGE, OPTIMIZE, VACUUM and txn-id writes: equal rows and history."""
    uri = str(tmp_path / "events")
    tables.write(_events(spark, range(0, 40), "2026-11-01"), uri, partition_by=["dt"], engine="bridge")
    tables.write(_events(spark, range(40, 80), "2026-11-02"), uri, engine="bridge")
    tables.merge(spark, uri, _events(spark, range(30, 50), "2026-11-02", amount=2.0).where("dt = '2026-11-02'"),
                 keys=["id", "dt"])
    tables.optimize(uri)
    tables.vacuum(uri, retention_hours=0)
    for batch in (0, 1):  # what the streaming sink does: (query id, batch id) as the txn
        tables.write(_events(spark, range(100 + 10 * batch, 110 + 10 * batch), "2026-11-03"), uri,
                     txn=("query-a", batch), engine="bridge")
    seen = peer("read", path=uri)
    assert seen["rows"] == _rows(tables.read(spark, uri, engine="bridge"))
    assert len(seen["rows"]) == 110  # 80 written, 10 inserted by the merge, 2 x 10 with txn ids
    assert seen["history"] == _history(uri)
    operations = [op for _, op in seen["history"]]
    assert operations[:3] == ["CREATE TABLE", "WRITE", "MERGE"] and "OPTIMIZE" in operations
    # file statistics written by the bridge drive delta-spark's data skipping: a filtered read is still exact
    narrow = peer("read", path=uri, where="amount > 70 AND dt = '2026-11-02'")
    assert narrow["rows"] == _rows(tables.read(spark, uri, where="amount > 70 AND dt = '2026-11-02'", engine="bridge"))
    # delta-spark honours the txn ids the bridge recorded: batch 1 again is skipped, batch 2 lands
    row = {"id": 999, "amount": 1.0, "kind": "k", "dt": "2026-11-03"}
    schema = "id long, amount double, kind string, dt string"
    again = peer("write", path=uri, rows=[row], schema=schema, txn=["query-a", 1])
    assert again["skipped"] and tables.version(uri) == seen["history"][-1][0]
    landed = peer("write", path=uri, rows=[row], schema=schema, txn=["query-a", 2])
    assert not landed["skipped"] and tables.version(uri) == landed["version"]
    assert tables.read(spark, uri, where="id = 999", engine="bridge").count() == 1


def test_delta_spark_engine_writes_with_the_same_arguments(spark, peer, tmp_path):
    uri = str(tmp_path / "daily")
    schema = "id long, dt string"
    first = peer("write", path=uri, rows=[{"id": i, "dt": d} for i in range(5) for d in ("2026-11-01", "2026-11-02")],
                 schema=schema, partition_by=["dt"])
    assert first == {"version": 0, "files": first["files"], "rows": 10, "skipped": False} and first["files"] >= 2
    peer("write", path=uri, rows=[{"id": 7, "dt": "2026-11-02"}], schema=schema, mode="overwrite",
         replace_where="dt = '2026-11-02'")
    assert _rows(tables.read(spark, uri, engine="bridge")) == sorted(
        [{"id": i, "dt": "2026-11-01"} for i in range(5)] + [{"id": 7, "dt": "2026-11-02"}],
        key=lambda r: json.dumps(r, sort_keys=True))
    peer.send("write", path=uri, rows=[{"id": 8, "dt": "2026-11-01"}], schema=schema, mode="overwrite",
              replace_where="dt = '2026-11-02'")
    refused = peer.answer(expect_error=True)
    assert refused["error"] == "ReplaceWhereViolation" and "delta-spark" in refused["message"]
    done = peer("write", path=uri, rows=[{"id": 9, "dt": "2026-11-03"}], schema=schema, txn=["q", 3])
    skipped = peer("write", path=uri, rows=[{"id": 9, "dt": "2026-11-03"}], schema=schema, txn=["q", 3])
    assert not done["skipped"] and skipped == {"version": done["version"], "files": 0, "rows": 0, "skipped": True}
    assert tables.read(spark, uri, engine="bridge").where("id = 9").count() == 1


def test_delta_spark_tables_read_by_the_bridge(spark, peer, tmp_path):
    """Checkpoints and timestamp_ntz are read; deletion vectors and column mapping are refused by name."""
    base = tmp_path.as_posix()
    peer("sql", statements=[
        f"CREATE TABLE delta.`{base}/ckpt` (id BIGINT, ntz TIMESTAMP_NTZ) USING delta "
        "TBLPROPERTIES ('delta.checkpointInterval' = '2')",
        *[f"INSERT INTO delta.`{base}/ckpt` VALUES ({i}, TIMESTAMP_NTZ'2026-11-01 0{i}:00:00')" for i in range(5)],
        f"CREATE TABLE delta.`{base}/dv` (id BIGINT) USING delta TBLPROPERTIES ('delta.enableDeletionVectors' = true)",
        f"INSERT INTO delta.`{base}/dv` SELECT id FROM range(100)",
        f"DELETE FROM delta.`{base}/dv` WHERE id % 10 = 0",
        f"CREATE TABLE delta.`{base}/cm` (id BIGINT, name STRING) USING delta "
        "TBLPROPERTIES ('delta.columnMapping.mode' = 'name', 'delta.minReaderVersion' = '2', "
        "'delta.minWriterVersion' = '5')",
        f"INSERT INTO delta.`{base}/cm` VALUES (1, 'a')",
        f"ALTER TABLE delta.`{base}/cm` RENAME COLUMN name TO label",
    ])
    assert any(p.name.endswith(".checkpoint.parquet") for p in (tmp_path / "ckpt" / "_delta_log").iterdir())
    theirs = peer("read", path=f"{base}/ckpt")
    mine = tables.read(spark, f"{base}/ckpt", engine="bridge")
    assert dict(mine.dtypes)["ntz"] == "timestamp_ntz"
    assert _rows(mine) == theirs["rows"] and len(theirs["rows"]) == 5
    assert _history(f"{base}/ckpt") == theirs["history"]
    with pytest.raises(UnsupportedFeatureError, match="deletionVectors"):
        tables.read(spark, f"{base}/dv", engine="bridge")
    assert len(peer("read", path=f"{base}/dv")["rows"]) == 90
    with pytest.raises(UnsupportedFeatureError, match="columnMapping"):
        tables.read(spark, f"{base}/cm", engine="bridge")
    # the bridge appends to delta-spark's checkpointed table (delta-spark reads the new commit), but writes no
    # timestamp_ntz values: it stores timestamps as UTC instants, and says so naming the column
    with pytest.raises(tables.SchemaMismatchError, match="column ntz: table has timestamp_ntz, data has timestamp"):
        tables.write(spark.sql("SELECT 5L AS id, TIMESTAMP_NTZ'2026-11-02 00:00:00' AS ntz"), f"{base}/ckpt",
                     engine="bridge")
    tables.write(spark.sql("SELECT 5L AS id"), f"{base}/ckpt", engine="bridge")
    after = peer("read", path=f"{base}/ckpt")["rows"]
    assert len(after) == 6 and {"id": 5, "ntz": None} in after


def test_one_writer_per_engine_on_one_table(spark, peer, tmp_path):
    """Appends from both engines at once: each lands or fails with a conflict error; the log stays whole."""
    uri = str(tmp_path / "shared")
    schema = "id long, writer string"
    tables.write(spark.createDataFrame([(0, "bridge")], schema), uri, engine="bridge")
    n = 8
    peer.send("appends", path=uri, n=n, schema=schema, first=1000)
    mine = []
    for i in range(1, n + 1):
        try:
            mine.append({"id": i, "version": tables.write(spark.createDataFrame([(i, "bridge")], schema), uri,
                                                          engine="bridge").version})
        except tables.ConcurrentWriteError as exc:
            mine.append({"id": i, "error": "ConcurrentWriteError", "message": str(exc)})
    theirs = peer.answer()
    for outcome in mine + theirs:
        assert "version" in outcome or outcome["error"] == "ConcurrentWriteError", outcome
    landed = {0} | {o["id"] for o in mine + theirs if "version" in o}
    versions = [o["version"] for o in mine + theirs if "version" in o]
    assert len(set(versions)) == len(versions), "two writers were given the same version"
    for outcome in mine + theirs:  # each engine reports its own commit, not the latest one after it
        if "version" in outcome:
            info = next(a["commitInfo"] for a in commit_actions(locate(uri), outcome["version"]) if "commitInfo" in a)
            by = "delta-spark" if "Delta-Lake/" in (info.get("engineInfo") or "") else "bridge"
            assert by == ("bridge" if outcome["id"] < 1000 else "delta-spark"), (outcome, info.get("engineInfo"))
    assert {r.id for r in tables.read(spark, uri, engine="bridge").collect()} == landed
    seen = peer("read", path=uri)
    assert {r["id"] for r in seen["rows"]} == landed
    assert [v for v, _ in seen["history"]] == list(range(tables.version(uri) + 1))
