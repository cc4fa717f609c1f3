"""A delta-spark session in its own process, driven over stdin/stdout by tests/test_delta_spark_interop.py.

Run with the delta-spark runtime (``.venv-delta/bin/python tests/delta_spark_peer.py``): it builds one local
SparkSession with the Delta jars of ``./setup.sh jvm`` (``delta.engine: delta-spark``), prints ``ready``, then
answers one JSON request per stdin line with one JSON line: ``{"ok": ...}`` or ``{"error": class, "message": ...}``.
Requests: ``read`` (rows and history of a table), ``sql`` (statements), ``write`` (rows through
``lakeloop.tables.write`` on delta-spark), ``appends`` (N one-row appends, each result or error recorded).
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any


def _session():
    from lakeloop.jvm import spark_settings
    from pyspark.sql import SparkSession

    jars, props = spark_settings("delta-spark")
    builder = (SparkSession.builder.master("local[2]").appName("delta-spark-peer")
               .config("spark.jars", ",".join(str(j) for j in jars))
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2").config("spark.default.parallelism", "2")
               .config("spark.databricks.delta.snapshotPartitions", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"))
    for key, value in props.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _rows(frame) -> list[dict[str, Any]]:
    return sorted((json.loads(json.dumps(r.asDict(recursive=True), default=str)) for r in frame.collect()),
                  key=lambda r: json.dumps(r, sort_keys=True))


def _read(spark, path: str, where: str | None = None, version: int | None = None) -> dict[str, Any]:
    from lakeloop import tables

    frame = tables.read(spark, path, version, where=where)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").collect()
    return {"rows": _rows(frame), "columns": frame.columns,
            "history": sorted([r.version, r.operation] for r in history)}


def _write(spark, path: str, rows: list[dict], schema: str, **kwargs: Any) -> dict[str, Any]:
    from lakeloop import tables

    result = tables.write(spark.createDataFrame(rows, schema), path, **kwargs)
    return {"version": result.version, "files": result.files, "rows": result.rows, "skipped": result.skipped}


def _appends(spark, path: str, n: int, schema: str, first: int) -> list[dict[str, Any]]:
    from lakeloop import tables

    out = []
    for i in range(n):
        try:
            result = tables.write(spark.createDataFrame([{"id": first + i, "writer": "delta-spark"}], schema), path)
            out.append({"id": first + i, "version": result.version})
        except Exception as exc:  # noqa: BLE001 - every outcome is reported to the test
            out.append({"id": first + i, "error": type(exc).__name__, "message": str(exc)[:500]})
    return out


def handle(spark, request: dict[str, Any]) -> Any:
    op = request.pop("op")
    if op == "read":
        return _read(spark, **request)
    if op == "sql":
        return [_rows(spark.sql(statement)) for statement in request["statements"]]
    if op == "write":
        return _write(spark, **request)
    if op == "appends":
        return _appends(spark, **request)
    raise ValueError(f"unknown op {op!r}")


def main() -> int:
    spark = _session()
    print(json.dumps({"ready": spark.version}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = {"ok": handle(spark, json.loads(line))}
        except Exception as exc:  # noqa: BLE001 - the test asserts on the error class and message
            reply = {"error": type(exc).__name__, "message": str(exc)[:2000],
                     "trace": traceback.format_exc()[-3000:]}
        print(json.dumps(reply, default=str), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
