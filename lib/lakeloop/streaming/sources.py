"""Streaming sources of raw lines: landing files (Spark's file source) or a Kafka topic.

Both give the frame the bronze writer consumes: ``value`` (the raw line) and ``_file``; the file
source also gives ``__block`` (the split a line was read from, for exact line numbers), the Kafka
source ``_line`` (the record's offset) and ``dt`` (its timestamp's UTC date), since a topic has no
files to number lines in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakeloop.conf import ConfError, hadoop_uri
from lakeloop.errors import LakeloopError
from lakeloop.ingest import SUFFIXES, text_lineage

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.schemas import SourceSchema

__all__ = ["StreamError", "KAFKA_PROVIDER", "landing_glob", "file_stream", "kafka_stream", "source_stream"]

KAFKA_PROVIDER = "org.apache.spark.sql.kafka010.KafkaSourceProvider"
_MISSING = ("Failed to find data source: kafka", "DATA_SOURCE_NOT_FOUND", "ClassNotFoundException: kafka")


class StreamError(LakeloopError):
    """A streaming query cannot start or run (missing connector, inconsistent landing area)."""


def landing_glob(conf: Conf, source: str) -> str:
    """``<landing>/<source>/dt=*``: every landing partition of ``source``, present and future (a local landing as a
    ``file://`` URI, :func:`lakeloop.conf.hadoop_uri`)."""
    return f"{hadoop_uri(conf['landing']).rstrip('/')}/{source}/dt=*"


def file_stream(spark: SparkSession, conf: Conf, schema: SourceSchema) -> DataFrame:
    """The lines of files arriving under :func:`landing_glob` (``value``, ``_file``, ``__block``).

    Only names with the source format's suffixes are read (as in batch ingest); hidden and
    ``_``-prefixed files, i.e. files still being written by datagen, are skipped by Spark itself.
    A micro-batch always holds whole files.
    """
    suffixes = ",".join(SUFFIXES[schema.format])
    # a truncated or corrupt compressed file yields its readable lines; the writer inspects every file it
    # claims and records such a file as rejected (lakeloop.streaming.bronze)
    reader = (spark.readStream.format("text").option("pathGlobFilter", f"*{{{suffixes}}}")
              .option("ignoreCorruptFiles", "true"))
    max_files = conf.get("stream.max_files_per_trigger")
    if max_files:
        reader = reader.option("maxFilesPerTrigger", int(max_files))
    lines = reader.load(landing_glob(conf, schema.source))
    return lines.select("value", *text_lineage())


def kafka_stream(spark: SparkSession, conf: Conf, schema: SourceSchema) -> DataFrame:
    """The records of the source's Kafka topic as lines (``value``, ``_file``, ``_line``, ``dt``).

    ``_file`` is ``kafka:<topic>/<partition>`` and ``_line`` the record offset.

    Raises
    ------
    StreamError
        When Spark's Kafka connector (``spark-sql-kafka-0-10``) is not on the classpath.
    """
    servers = conf.get("stream.kafka.bootstrap_servers")
    if not servers:
        raise ConfError("stream.kafka.bootstrap_servers: required when stream.source is kafka")
    if schema.format == "csv" and schema.csv.header:
        raise ConfError(f"stream.source: kafka cannot carry the header line of CSV source {schema.source!r}")
    topic = conf["stream.kafka.topic"] or schema.source
    reader = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", servers)
              .option("subscribe", topic)
              .option("startingOffsets", conf["stream.kafka.starting_offsets"]))
    for key, value in conf["stream.kafka.options"].items():
        reader = reader.option(str(key), str(value))
    try:
        records = reader.load()
    except Exception as exc:  # noqa: BLE001 - only the missing connector is translated
        if any(marker in str(exc) for marker in _MISSING):
            raise StreamError(
                "stream.source is kafka but Spark's Kafka connector is not available (data source 'kafka', "
                f"class {KAFKA_PROVIDER}): add org.apache.spark:spark-sql-kafka-0-10_2.13:<spark version> with "
                "--packages or its jar to spark.jars, or set stream.source: files") from None
        raise
    return records.select(
        F.col("value").cast("string").alias("value"),
        F.concat(F.lit(f"kafka:{topic}/"), F.col("partition").cast("string")).alias("_file"),
        F.col("offset").alias("_line"),
        F.date_format(F.col("timestamp"), "yyyy-MM-dd").alias("dt"))


def source_stream(spark: SparkSession, conf: Conf, schema: SourceSchema) -> DataFrame:
    """The raw-line stream of ``schema.source`` from ``stream.source``."""
    if conf["stream.source"] == "kafka":
        return kafka_stream(spark, conf, schema)
    return file_stream(spark, conf, schema)
