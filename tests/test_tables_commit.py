"""The bridge's commit step under contention: many processes appending to one table at once.

Each process stages a real parquet file (pyarrow, footer stats read back by the bridge) and commits it with the
bridge's commit (:func:`lakeloop.delta.write._commit`, delta-rs's put-if-absent of ``_delta_log/<v>.json``)
and reports the version it was given.  No JVM: the Spark part of a write only produces the staged files.
"""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
from lakeloop.delta.files import list_staged
from lakeloop.delta.log import ConcurrentWriteError, commit_actions, load_table, locate, spark_schema
from lakeloop.delta.write import _commit, _Plan
from pyspark.sql.types import LongType, StructField, StructType

PROCESSES = 4
COMMITS = 5


def _stage(uri: str, writer: int, seq: int) -> tuple[str, list]:
    """One parquet file of 3 rows in a staging folder under the table, as a Spark write leaves it."""
    loc = locate(uri)
    staging = f"w-test-{uuid.uuid4().hex[:12]}"
    ids = [writer * 1000 + seq * 10 + k for k in range(3)]
    folder = loc.fs_join(staging)
    loc.fs.create_dir(folder, recursive=True)
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "writer": pa.array([writer] * 3, pa.int64())}),
                   f"{folder}/part-0.parquet")
    return staging, list_staged(loc, staging, [])


def _append(uri: str, writer: int, seq: int) -> dict:
    """Commit one staged file with the bridge's commit; the outcome as the test sees it."""
    loc = locate(uri)
    staging, staged = _stage(uri, writer, seq)
    snapshot = load_table(loc)
    plan = _Plan(loc, snapshot, spark_schema(snapshot), [], [])
    try:
        result = _commit(None, plan, staged, "append", None, None, {"lakeloop.writeId": staging})
    except ConcurrentWriteError as exc:  # delta-rs gave up after its retries: a clear conflict, nothing committed
        return {"write": staging, "error": str(exc)}
    return {"write": staging, "version": result.version, "rows": result.rows}


def _writer(uri: str, writer: int) -> list[dict]:
    return [_append(uri, writer, seq) for seq in range(COMMITS)]


def test_concurrent_bridge_commits_each_get_their_own_version(tmp_path):
    uri = str(tmp_path / "t")
    loc = locate(uri)
    # version 0 creates the table (the bridge's create path), then every process appends at once
    staging, staged = _stage(uri, 0, 0)
    create = _Plan(loc, None, StructType([StructField("id", LongType()), StructField("writer", LongType())]), [], [])
    assert _commit(None, create, staged, "append", None, None, {"lakeloop.writeId": staging}).version == 0
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = [o for part in pool.map(_writer, [uri] * PROCESSES, range(1, PROCESSES + 1)) for o in part]
    landed = [o for o in outcomes if "version" in o]
    assert len(landed) >= len(outcomes) - 2, [o for o in outcomes if "error" in o]  # conflicts are rare
    versions = [o["version"] for o in landed]
    assert len(set(versions)) == len(versions), "two writers were given the same version"
    latest = load_table(loc).version()
    assert sorted(versions) == list(range(1, latest + 1))  # every commit is someone's, none is lost
    for outcome in landed:  # each reported version is the reporter's own commit
        info = next(a["commitInfo"] for a in commit_actions(loc, outcome["version"]) if "commitInfo" in a)
        assert info["lakeloop.writeId"] == outcome["write"]
    table = load_table(loc)
    assert pa.table(table.get_add_actions()).num_rows == len(landed) + 1
    assert table.to_pyarrow_table().num_rows == 3 * (len(landed) + 1)

