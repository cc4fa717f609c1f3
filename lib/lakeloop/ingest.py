"""Batch ingest: landing files -> ``bronze.<source>``, every raw line kept verbatim with its lineage.

Files are read from ``<landing>/<source>/dt=<date>/`` (``.jsonl``/``.json``/``.csv``, optionally
``.gz``).  A file ledger (the Delta table ``ingest.ledger_table``) records each ingested file with
its size, modification time, row count and batch id, so a re-run for the same date reads only files
it has not seen: running twice writes nothing new.  A file that changed after it was ingested is an
error (its lines would otherwise be counted twice).

Line numbers are exact and computed without a Python function per line: ``spark.read.text`` reads
files in splits; rows of one split are contiguous inside a partition, so a row's offset in its split
is ``monotonically_increasing_id() - min(id)`` of the split, and the line number adds the line counts
of the file's earlier splits (one small aggregate, joined back as a broadcast).

For a CSV source with a header, line 1 of each file is the header: it is stored in ``_header`` on
every data line of that file and is not a record itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeloop.errors import LakeloopError
from lakeloop.job import JobResult
from lakeloop.lake import Lake
from lakeloop.schemas import SourceSchema, source_names, source_schema

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["LandingFile", "IngestResult", "IngestError", "SUFFIXES", "file_key", "landing_dir", "list_landing",
           "read_lines", "text_lineage", "number_lines", "ingest_source", "ingest", "read_ledger", "ledger_uri",
           "ledger_frame", "bronze_schema", "run", "add_arguments"]

log = logging.getLogger("lakeloop.ingest")

SUFFIXES = {"jsonl": (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz"),
            "csv": (".csv", ".csv.gz")}

LEDGER_SCHEMA = T.StructType([
    T.StructField("source", T.StringType()),
    T.StructField("path", T.StringType()),
    T.StructField("size", T.LongType()),
    T.StructField("mtime_ms", T.LongType()),
    T.StructField("rows", T.LongType()),
    T.StructField("batch_id", T.StringType()),
    T.StructField("ingested_at", T.TimestampType()),
    T.StructField("dt", T.StringType()),
])


class IngestError(LakeloopError):
    """The landing area is inconsistent with the ledger (e.g. a file changed after ingest)."""


@dataclass(frozen=True)
class LandingFile:
    """One landing file: ``path`` as Hadoop names it (what the reader is given), ``key`` (see
    :func:`file_key`), size in bytes, modification time in epoch milliseconds."""

    path: str
    key: str
    size: int
    mtime_ms: int


def file_key(uri: str) -> str:
    """A file URI with its path percent-decoded: Spark's ``_metadata.file_path`` (``file:/a%20b``)
    and Hadoop's ``Path.toUri()`` (``file:///a%20b``) of one file give the same key."""
    parts = urlsplit(uri)
    return f"{parts.scheme or 'file'}://{parts.netloc}{unquote(parts.path)}"


@dataclass
class IngestResult:
    """What one ingest run did for one source and date."""

    source: str
    dt: str
    batch_id: str
    files: list[str] = field(default_factory=list)  # newly ingested
    rows: int = 0  # records written to bronze
    already_ingested: int = 0  # files seen by an earlier run
    recovered: list[str] = field(default_factory=list)  # in bronze, missing from the ledger: re-recorded
    ignored: list[str] = field(default_factory=list)  # files whose name does not fit the format
    bronze_version: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def bronze_schema(schema: SourceSchema) -> T.StructType:
    """Columns of ``bronze.<source>``; ``_header`` only for CSV sources with a header line."""
    fields = [T.StructField("value", T.StringType())]
    if schema.format == "csv" and schema.csv.header:
        fields.append(T.StructField("_header", T.StringType()))
    fields += [T.StructField("_file", T.StringType()), T.StructField("_line", T.LongType()),
               T.StructField("_ingested_at", T.TimestampType()), T.StructField("_batch_id", T.StringType()),
               T.StructField("dt", T.StringType())]
    return T.StructType(fields)


# -- landing files --------------------------------------------------------------------------------------


def landing_dir(conf: Conf, source: str, date: str) -> str:
    """``<landing>/<source>/dt=<date>``."""
    return f"{conf.path('landing').rstrip('/')}/{source}/dt={date}"


def list_landing(spark: SparkSession, directory: str, fmt: str) -> tuple[list[LandingFile], list[str]]:
    """The files of ``directory`` that fit ``fmt`` (sorted by path) and the names that do not.

    Hidden and marker files (``.*``, ``_*``) are skipped; a missing directory is an empty day.
    Listing goes through Hadoop's FileSystem, so HDFS and object stores work as local disks do.
    """
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(directory)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return [], []
    found: list[LandingFile] = []
    ignored: list[str] = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if status.isDirectory() or name.startswith((".", "_")):
            continue
        hadoop_path = status.getPath().toString()
        if name.lower().endswith(SUFFIXES[fmt]):
            found.append(LandingFile(hadoop_path, file_key(status.getPath().toUri().toString()),
                                     int(status.getLen()), int(status.getModificationTime())))
        else:
            ignored.append(hadoop_path)
    return sorted(found, key=lambda f: f.path), sorted(ignored)


def read_lines(spark: SparkSession, paths: Sequence[str],
               header: bool = False) -> tuple[DataFrame, dict[str, tuple[str, int]]]:
    """Every line of ``paths`` with its file and 1-based line number.

    Returns ``(frame, files)``: ``frame`` has ``value``, ``_file`` (Spark's rendering of the path),
    ``_line`` (and ``_header`` when ``header``: line 1 of each file, which is then not a row
    itself); ``files`` maps :func:`file_key` to ``(_file, records)`` for every file with a line.
    """
    raw = spark.read.text(list(paths)).select(F.col("value"), *text_lineage())
    return number_lines(raw, header)


def text_lineage() -> list[Column]:
    """``_file`` and ``__block`` (the split's start offset) of a text file source's rows: what
    :func:`number_lines` needs beside ``value``."""
    return [F.col("_metadata.file_path").alias("_file"), F.col("_metadata.file_block_start").alias("__block")]


def number_lines(raw: DataFrame, header: bool = False) -> tuple[DataFrame, dict[str, tuple[str, int]]]:
    """Number the lines of ``raw``: rows of Spark's text source (``value``, ``_file``, ``__block``
    from :func:`text_lineage`, any other columns are kept) in their scan order, no shuffle before.

    Returns ``(frame, files)`` as :func:`read_lines`; ``__block`` is dropped.  One small aggregate
    is collected; ``raw`` is evaluated again by the returned frame (persist it to read once).
    """
    kept = [c for c in raw.columns if c != "__block"]
    raw = raw.select("*", F.monotonically_increasing_id().alias("__pos"))
    blocks = raw.groupBy("_file", "__block").agg(F.min("__pos").alias("__first"), F.count("*").alias("__n"))
    earlier = Window.partitionBy("_file").orderBy("__block").rowsBetween(Window.unboundedPreceding, -1)
    offsets = blocks.select("_file", "__block", "__first",
                            F.coalesce(F.sum("__n").over(earlier), F.lit(0)).alias("__offset"),
                            F.sum("__n").over(Window.partitionBy("_file")).alias("__lines")).collect()
    per_file = {file_key(r["_file"]): (r["_file"], int(r["__lines"]) - int(header and r["__lines"] > 0))
                for r in offsets}
    offset_df = raw.sparkSession.createDataFrame(
        [(r["_file"], r["__block"], r["__first"], r["__offset"]) for r in offsets],
        "_file string, __block long, __first long, __offset long")
    lines = (raw.join(F.broadcast(offset_df), ["_file", "__block"])
             .select(*kept, (F.col("__pos") - F.col("__first") + F.col("__offset") + 1).alias("_line")))
    if not header:
        return lines, per_file
    headers = lines.where(F.col("_line") == 1).select("_file", F.col("value").alias("_header"))
    data = lines.where(F.col("_line") > 1).join(F.broadcast(headers), "_file", "left")
    return data.select("value", "_header", *[c for c in kept if c != "value"], "_line"), per_file


# -- ledger ----------------------------------------------------------------------------------------------


def ledger_uri(conf: Conf) -> str:
    """URI of the file ledger shared by batch ingest and the streaming bronze writer."""
    return Lake.from_conf(conf).uri(conf["ingest.ledger_table"])


def read_ledger(spark: SparkSession, conf: Conf, source: str, date: str) -> dict[str, dict]:
    """Ledger rows of ``source`` and ``date`` by :func:`file_key` of their path."""
    uri, lake = ledger_uri(conf), Lake.from_conf(conf)
    if not lake.exists(uri):
        return {}
    rows = lake.read(spark, uri, where=f"dt = '{date}'").where(F.col("source") == source).collect()
    return {file_key(r["path"]): r.asDict() for r in rows}


def _check_unchanged(files: Sequence[LandingFile], ledger: dict[str, dict]) -> None:
    for f in files:
        seen = ledger.get(f.key)
        if seen is None:
            continue
        mtime_ms = seen["mtime_ms"]
        if seen["size"] != f.size or mtime_ms != f.mtime_ms:
            raise IngestError(
                f"landing file {f.path} changed after batch {seen['batch_id']} ingested it "
                f"(size {seen['size']} -> {f.size}, mtime {mtime_ms} -> {f.mtime_ms} ms); "
                "upstream must write new content to a new file")


def _recover(spark: SparkSession, lake: Lake, bronze_uri: str, date: str,
             files: Sequence[LandingFile]) -> dict[str, tuple[str, int, str]]:
    """Files already in bronze but missing from the ledger (a run stopped between the two commits):
    key -> (_file, rows, batch id)."""
    if not files or not lake.exists(bronze_uri):
        return {}
    wanted = {f.key for f in files}
    rows = (lake.read(spark, bronze_uri, where=f"dt = '{date}'")
            .groupBy("_file", "_batch_id").count().collect())
    return {file_key(r["_file"]): (r["_file"], int(r["count"]), r["_batch_id"])
            for r in rows if file_key(r["_file"]) in wanted}


def ledger_frame(spark: SparkSession, source: str, date: str, files: Sequence[LandingFile],
                 seen: dict[str, tuple[str, int]], batch: dict[str, str], at: dt.datetime) -> DataFrame:
    """Ledger rows; ``seen`` maps a file key to ``(_file, rows)`` (absent: an empty file)."""
    data = [(source, seen.get(f.key, (f.path, 0))[0], f.size, f.mtime_ms, seen.get(f.key, (f.path, 0))[1],
             batch[f.key], at, date) for f in files]
    return spark.createDataFrame(data, LEDGER_SCHEMA)


# -- one source, one date -----------------------------------------------------------------------------


def ingest_source(spark: SparkSession, conf: Conf, source: str, date: str, *, batch_id: str | None = None,
                  now: dt.datetime | None = None) -> IngestResult:
    """Append the new landing files of ``source`` for ``date`` to ``bronze.<source>``.

    Parameters
    ----------
    spark : :class:`SparkSession`
    conf : :class:`lakeloop.conf.Conf`
    source : str
        A source declared under ``sources`` in conf.
    date : str
        Run date ``YYYY-MM-DD``: the landing partition read and the bronze ``dt`` written.
    batch_id : str, optional
        Recorded in ``_batch_id`` and the ledger; a fresh id by default.
    now : datetime, optional
        ``_ingested_at`` of the batch (UTC); the current time by default.

    Returns
    -------
    :class:`IngestResult`
    """
    schema = source_schema(conf, source)
    dt.date.fromisoformat(date)
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    result = IngestResult(source, date, batch_id or f"{date}-{uuid.uuid4().hex[:12]}")
    files, result.ignored = list_landing(spark, landing_dir(conf, source, date), schema.format)
    for name in result.ignored:
        log.warning("%s %s: ignored %s (expected %s)", source, date, name, ", ".join(SUFFIXES[schema.format]))
    ledger = read_ledger(spark, conf, source, date)
    _check_unchanged(files, ledger)
    new = [f for f in files if f.key not in ledger]
    result.already_ingested = len(files) - len(new)
    lake = Lake.from_conf(conf)
    bronze_uri = lake.uri(f"bronze.{source}")
    recovered = _recover(spark, lake, bronze_uri, date, new)
    if recovered:
        done = [f for f in new if f.key in recovered]
        result.recovered = [recovered[f.key][0] for f in done]
        lake.write(ledger_frame(spark, source, date, done, {k: (p, n) for k, (p, n, _) in recovered.items()},
                                   {k: b for k, (_, _, b) in recovered.items()}, at), ledger_uri(conf), mode="append")
        new = [f for f in new if f.key not in recovered]
    if not new:
        log.info("%s %s: no new files (%d already ingested)", source, date, result.already_ingested)
        return result
    header = schema.format == "csv" and schema.csv.header
    lines, per_file = read_lines(spark, [f.path for f in new], header=header)
    missing = [f.path for f in new if f.key not in per_file and f.size > 0]
    if missing:
        raise IngestError(f"{source} {date}: Spark read no lines of {missing} although they are not empty; "
                          "check the file paths")
    bronze = lines.select(
        *lines.columns, F.lit(at).cast("timestamp").alias("_ingested_at"),
        F.lit(result.batch_id).alias("_batch_id"), F.lit(date).alias("dt"))
    written = lake.write(bronze.select(*bronze_schema(schema).names), bronze_uri, mode="append",
                         partition_by=["dt"])
    lake.write(ledger_frame(spark, source, date, new, per_file, {f.key: result.batch_id for f in new}, at),
               ledger_uri(conf), mode="append")
    result.files = [f.path for f in new]
    result.rows = sum(per_file.get(f.key, ("", 0))[1] for f in new)
    result.bronze_version = written.version
    log.info("%s %s: %d new file(s), %d rows -> %s v%s", source, date, len(new), result.rows, bronze_uri,
             written.version)
    return result


def ingest(spark: SparkSession, conf: Conf, date: str, sources: Sequence[str] | None = None,
           batch_id: str | None = None) -> list[IngestResult]:
    """Ingest ``sources`` (default: every source in conf) for ``date``; one result per source."""
    names = list(sources) if sources else source_names(conf)
    for name in names:
        source_schema(conf, name)  # every source is checked before any is written
    return [ingest_source(spark, conf, name, date, batch_id=batch_id) for name in names]


DESCRIPTION = "landing files -> bronze.<source> (new files only) for --date"


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[list[IngestResult]]:
    """The ``ingest`` job: ingest ``--source`` (or every source) for ``--date``."""
    results = ingest(spark, ctx.conf, ctx.date, args.source, batch_id=f"{ctx.date}-{ctx.run_id}")
    for r in results:
        ctx.log.info("ingest %s", json.dumps(r.as_dict(), sort_keys=True))
    keep = ("rows", "already_ingested", "bronze_version")
    summary = {"sources": {r.source: {"files": len(r.files), **{k: getattr(r, k) for k in keep}} for r in results}}
    return JobResult(results, summary)


def add_arguments(parser) -> None:
    """The options of the ``ingest`` job beyond the common ones."""
    parser.add_argument("--source", action="append", default=None,
                        help="source to ingest (repeatable; default: every source in conf)")
