"""Scoring a table on disk without moving its rows through the JVM: the file path of :mod:`lakeloop.infer`.

When the frame to score is exactly a Delta snapshot (a scoring spec with ``rows: {table: ...}`` and
``features: rows``: the run date's ``dt`` partition of a gold table or of a materialized scoring frame), the
driver lists the snapshot's data files through the Delta bridge and hands them out as Spark tasks
(``sc.parallelize(parts, n).mapPartitions``).  Each task reads its files with pyarrow, builds the feature
matrix and scores it with the code of the ``mapInArrow`` path (:func:`lakeloop.scorer.task_scorer`,
:func:`lakeloop.scorer.scored_batch`), writes one parquet prediction file into a staging folder of the
predictions table and returns its add action's facts; the driver commits every file as one transaction
(:func:`lakeloop.delta.write.commit_files`), replacing the run date's partition as the ``mapInArrow`` path's
write does.  Frames computed on the fly (feature joins, SQL, a generator), per-key ranking and BigDL models
keep the ``mapInArrow`` path; :func:`table_source` says which path applies and why.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.delta.log import FileEntry, TableLocation

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark import Accumulator
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

    from lakeloop.conf import Conf
    from lakeloop.delta.files import StagedFile
    from lakeloop.delta.write import WriteResult
    from lakeloop.scorer import ModelRef
    from lakeloop.scoring import ScoringSpec

__all__ = ["TableFiles", "table_source", "split", "write_scored"]

PARTITION = "dt"
#: rows per row group of a prediction file (at least; a row group ends on a scored batch's boundary)
ROW_GROUP_ROWS = 100_000
#: a task's input: (file path relative to the table root, its row groups or None for all of them)
Part = tuple[tuple[str, tuple[int, ...] | None], ...]


@dataclass(frozen=True)
class TableFiles:
    """The data files of the rows to score: one snapshot's files of the run date's partition."""

    name: str
    loc: TableLocation
    schema: StructType  # the table's Spark schema
    version: int
    entries: tuple[FileEntry, ...]


def table_source(conf: Conf, spec: ScoringSpec, ref: ModelRef, run_date: dt.date) -> tuple[TableFiles | None, str]:
    """The files the tasks read when the file path applies, else None; and why, for the log."""
    import importlib.util

    if not conf["infer.read_files"]:
        return None, "infer.read_files is false"
    if not spec.stored_features:
        return None, "the scoring frame is computed (the training set's features are joined to the rows)"
    if spec.rows.kind != "table":
        return None, f"the scoring frame is computed (rows from {spec.rows.kind})"
    if spec.serving.rank_by:
        return None, "serving.rank_by ranks each key's rows together, which needs a shuffle"
    if "bigdl" in ref.flavors and importlib.util.find_spec("bigdl") is not None:
        return None, "a bigdl model is scored by BigDL"
    return _snapshot_files(conf, spec.rows.value, run_date)


def _snapshot_files(conf: Conf, name: str, run_date: dt.date) -> tuple[TableFiles | None, str]:
    from lakeloop.delta.log import (
        UnsupportedFeatureError,
        check_readable,
        locate,
        open_table,
        snapshot_files,
        spark_schema,
    )
    from lakeloop.lake import Lake

    lake = Lake.from_conf(conf)
    loc = locate(lake.uri(name), lake.storage_options)
    table = open_table(loc)
    try:
        check_readable(table, loc)
    except UnsupportedFeatureError as exc:
        return None, str(exc)
    schema, partitions = spark_schema(table), list(table.metadata().partition_columns)
    if [c for c in partitions if c != PARTITION]:
        return None, f"{name} is partitioned by {partitions}; the file path reads {PARTITION} partitions only"
    if PARTITION in schema.fieldNames() and PARTITION not in partitions:
        return None, f"{name}: {PARTITION} is a data column, not the partition column"
    where = f"{PARTITION} = '{run_date.isoformat()}'" if partitions else None
    entries = tuple(snapshot_files(table, partitions, where))
    if any("://" in e.path or e.path.startswith("/") for e in entries):
        return None, f"{name}: the snapshot names files outside the table root"
    found = TableFiles(name, loc, schema, table.version(), entries)
    what = f"the {PARTITION}={run_date.isoformat()} partition" if partitions else "the table"
    return found, f"{len(entries)} files of {what} of {name} (version {found.version}) read by the tasks"


def _row_groups(source: TableFiles) -> list[tuple[int, str, tuple[int, ...] | None]]:
    """``(rows, path, row groups)`` of every row group of the files, from their footers."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    fs = source.loc.fs

    def groups(entry: FileEntry) -> list[tuple[int, str, tuple[int, ...] | None]]:
        meta = pq.read_metadata(source.loc.fs_join(entry.path), filesystem=fs)
        return [(meta.row_group(g).num_rows, entry.path, (g,)) for g in range(meta.num_row_groups)]

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(source.entries)))) as pool:
        return [unit for found in pool.map(groups, source.entries) for unit in found]


def split(source: TableFiles, tasks: int) -> tuple[list[Part], int]:
    """The files (or their row groups, when there are fewer files than ``tasks``) in at most ``tasks`` parts of
    about equal rows, and the rows in all (from the log, else the footers)."""
    counted = all(e.num_records is not None for e in source.entries)
    if len(source.entries) >= tasks and counted:
        units = [(int(e.num_records), e.path, None) for e in source.entries]
    else:
        units = _row_groups(source)
    bins: list[list[tuple[str, tuple[int, ...] | None]]] = [[] for _ in range(max(1, min(tasks, len(units))))]
    load = [0] * len(bins)
    for rows, path, groups in sorted(units, key=lambda u: (-u[0], u[1], u[2] or ())):
        i = load.index(min(load))
        bins[i].append((path, groups))
        load[i] += rows
    return [_merged(b) for b in bins if b], sum(load)


def _merged(units: list[tuple[str, tuple[int, ...] | None]]) -> Part:
    """One entry per file, its row groups in order."""
    by_file: dict[str, list[int] | None] = {}
    for path, groups in sorted(units, key=lambda u: (u[0], u[1] or ())):
        if groups is None:
            by_file[path] = None
        elif by_file.get(path, []) is not None:
            by_file.setdefault(path, []).extend(groups)
    return tuple((p, None if g is None else tuple(g)) for p, g in by_file.items())


@dataclass(frozen=True)
class _ScoreFiles:
    """The ``mapPartitions`` function: read a part's files, score them, write one prediction file.

    A module-level class, so that workers use the model cache of the installed :mod:`lakeloop.scorer`.
    """

    ref: ModelRef
    features: tuple[str, ...]
    keep: tuple[str, ...]
    task: str
    loads: Accumulator | None
    source: TableLocation  # the rows' table
    target: TableLocation  # the predictions table
    staging: str  # folder under the target's root
    partition: tuple[str, str]  # (column, value) of the files written
    constants: tuple[tuple[str, Any], ...]  # run columns: (name, value)
    schema: pa.Schema  # of the files written
    batch_size: int

    def __call__(self, parts: Iterator[Part]) -> Iterator[StagedFile]:
        from lakeloop.scorer import scored_batch, task_scorer

        for part in parts:
            scorer = task_scorer(self.ref, self.features, self.loads)
            scored = (scored_batch(scorer, batch, self.features, self.keep, self.task) for batch in self._read(part))
            written = self._write(scored)
            if written is not None:
                yield written

    def _columns(self) -> list[tuple[str, pa.DataType]]:
        """What a task reads: the kept columns with their target types, then the features as doubles."""
        import pyarrow as pa

        return [*((c, self.schema.field(c).type) for c in self.keep),
                *((c, pa.float64()) for c in self.features if c not in self.keep)]

    def _read(self, part: Part) -> Iterator[pa.RecordBatch]:
        """The part's rows in batches of the read columns; columns a file lacks are nulls (schema evolution)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        fs, columns = self.source.fs, self._columns()
        for path, groups in part:
            with fs.open_input_file(self.source.fs_join(path)) as handle:
                reader = pq.ParquetFile(handle)
                present = set(reader.schema_arrow.names)
                wanted = [c for c, _ in columns if c in present]
                for batch in reader.iter_batches(self.batch_size, row_groups=groups, columns=wanted):
                    arrays = [batch.column(c).cast(t) if c in present else pa.nulls(batch.num_rows, t)
                              for c, t in columns]
                    yield pa.RecordBatch.from_arrays(arrays, names=[c for c, _ in columns])

    def _write(self, batches: Iterator[pa.RecordBatch]) -> StagedFile | None:
        """One parquet file of the scored batches with the run columns; None when there were no rows.

        Batches are written in row groups of at least :data:`ROW_GROUP_ROWS` rows, dictionary-encoded only
        in the text columns (keys and scores are mostly distinct: their dictionaries are built and dropped)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from lakeloop.delta.files import staged_file

        column, value = self.partition
        relative = f"{self.staging}/{column}={value}/part-{uuid.uuid4().hex}.snappy.parquet"
        fs, writer, pending, rows = self.target.fs, None, [], 0

        def flush() -> None:  # one row group (below pyarrow's default maximum of 1Mi rows)
            nonlocal writer, rows
            if writer is None:
                fs.create_dir(self.target.fs_join(relative.rsplit("/", 1)[0]), recursive=True)
                text = [f.name for f in self.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
                writer = pq.ParquetWriter(self.target.fs_join(relative), self.schema, filesystem=fs,
                                          use_dictionary=text or False)
            writer.write_table(pa.Table.from_batches(pending, schema=self.schema))
            pending.clear()
            rows = 0

        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                run = [pa.repeat(pa.scalar(v, self.schema.field(n).type), batch.num_rows) for n, v in self.constants]
                pending.append(pa.RecordBatch.from_arrays([*batch.columns, *run], schema=self.schema))
                rows += batch.num_rows
                if rows >= ROW_GROUP_ROWS:
                    flush()
            if pending:
                flush()
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            return None
        return staged_file(self.target, fs.get_file_info(self.target.fs_join(relative)), {column: value}, fs)


def _output_schema(source: TableFiles, keep: Sequence[str], task: str, run: Sequence[str]) -> StructType:
    """The predictions' Spark schema as the ``mapInArrow`` path writes it (without the partition column)."""
    from pyspark.sql.types import StringType, StructField, StructType, TimestampType

    from lakeloop.scorer import output_fields

    return StructType([*(source.schema[c] for c in keep), *output_fields(task),
                       *(StructField(c, StringType(), True) for c in run), StructField("scored_at", TimestampType())])


def _arrow_schema(schema: StructType) -> pa.Schema:
    """``schema`` in Arrow, timestamps in UTC (Spark 4 asks for the zone; Spark 3.5 takes no argument: UTC)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        return to_arrow_schema(schema, timezone="UTC")
    except TypeError:
        return to_arrow_schema(schema)


def write_scored(spark: SparkSession, conf: Conf, spec: ScoringSpec, run_date: dt.date, ref: ModelRef,
                 loads: Accumulator, source: TableFiles, features: Sequence[str], keep: Sequence[str],
                 run: dict[str, str]) -> WriteResult:
    """Score ``source``'s files in Spark tasks and replace the run date's partition of ``infer.table`` with the
    predictions in one commit; ``run``: the run's string columns (model name and version, run id)."""
    from pyspark.sql.types import StringType, StructField, StructType

    from lakeloop import scoring
    from lakeloop.delta.files import delete_staging, publish, staging_name
    from lakeloop.delta.log import locate
    from lakeloop.delta.write import commit_files, delete_files
    from lakeloop.errors import LakeloopError
    from lakeloop.lake import Lake
    from lakeloop.scorer import check_scoring_rows

    day, lake = run_date.isoformat(), Lake.from_conf(conf)
    missing = [c for c in (*keep, *features) if c not in source.schema.fieldNames()]
    if missing:
        raise LakeloopError(f"scoring frame lacks columns {', '.join(missing)}")
    schema = _output_schema(source, keep, conf["train.task"], list(run))
    scoring.check_serving(spec, [*schema.fieldNames(), PARTITION])  # before the write: a bad spec changes nothing
    parts, rows = split(source, int(spark.conf.get("spark.sql.shuffle.partitions")))
    check_scoring_rows(rows, conf["infer.min_rows"], f"{conf['infer.table']} dt={day}")
    target, staging = locate(lake.uri(conf["infer.table"]), lake.storage_options), staging_name()
    scored_at = dt.datetime.now(dt.UTC)
    task = _ScoreFiles(ref, tuple(features), tuple(keep), conf["train.task"], loads, source.loc, target, staging,
                       (PARTITION, day), (*run.items(), ("scored_at", scored_at)),
                       _arrow_schema(schema), int(conf["infer.batch_size"]))
    files: list[StagedFile] = []
    try:
        files = spark.sparkContext.parallelize(parts, len(parts)).mapPartitions(task).collect()
        files = publish(target, staging, files)
        delete_staging(target, staging)
        return commit_files(spark, target.delta, files, StructType([*schema, StructField(PARTITION, StringType())]),
                            mode="overwrite", partition_by=[PARTITION], replace_partition={PARTITION: day},
                            write_id=staging, storage_options=lake.storage_options,
                            commit_metadata={"lakeloop.scoredFrom": f"{source.name}@{source.version}"})
    except BaseException:
        delete_files(target, files)  # the published ones; the staging folder holds the rest
        delete_staging(target, staging)
        raise
