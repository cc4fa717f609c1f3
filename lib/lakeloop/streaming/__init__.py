"""Speed layer: Structured Streaming into bronze (exactly once) and real-time views.

Two queries per source, each with its own checkpoint (:func:`lakeloop.streaming.runner.checkpoint_dir`):

``bronze_<source>``
    landing files (or a Kafka topic, ``stream.source``) -> ``bronze.<source>`` with the lineage
    columns of batch ingest, sharing its file ledger; rejected lines -> ``silver.<source>_stream_quarantine``
    (:mod:`lakeloop.streaming.bronze`).
``realtime_<source>``
    the same arriving lines (its own file source or Kafka reader) -> valid events -> event-time window
    counts with a watermark -> ``stream.realtime_table`` and the serving store's real-time view
    (:mod:`lakeloop.streaming.realtime`).  Only for sources with an event time and the columns the app's
    ``stream.realtime.*`` keys count by (the recommender's ``events``).  Both queries run side by side
    with either trigger; neither starts a Python worker (no Python data source), so no query waits on
    one to connect back.

>>> report = run_stream(spark, conf, "events", trigger="availableNow")  # doctest: +SKIP
>>> report.bronze.rows, report.queries["realtime_events"].late_rows_dropped  # doctest: +SKIP

See docs/streaming.md.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloop.job import JobResult
from lakeloop.schemas import source_schema
from lakeloop.streaming.bronze import BronzeStats, BronzeWriter, classified_early, quarantine_table, verdict
from lakeloop.streaming.realtime import (
    RealtimeSpec,
    RealtimeStats,
    RealtimeWriter,
    group_values,
    realtime_frame,
    supports_realtime,
    valid_events,
)
from lakeloop.streaming.runner import TRIGGERS, Supervisor, checkpoint_dir, start, trigger_kwargs
from lakeloop.streaming.sources import StreamError, source_stream

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["StreamError", "StreamReport", "TRIGGERS", "run_stream", "checkpoint_dir", "quarantine_table", "run",
           "add_arguments"]

log = logging.getLogger("lakeloop.stream")


@dataclass
class StreamReport:
    """What one run of the speed layer did."""

    source: str
    trigger: str
    bronze: BronzeStats
    realtime: RealtimeStats | None
    queries: dict[str, Any] = field(default_factory=dict)  # name -> QueryProgress
    stopped_by_request: bool = False

    @property
    def late_rows_dropped(self) -> int:
        return sum(q.late_rows_dropped for q in self.queries.values())

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "trigger": self.trigger, "bronze": asdict(self.bronze),
                "realtime": asdict(self.realtime) if self.realtime else None,
                "queries": {k: q.as_dict() for k, q in self.queries.items()},
                "late_rows_dropped": self.late_rows_dropped, "stopped_by_request": self.stopped_by_request}


def run_stream(spark: SparkSession, conf: Conf, source: str = "events", *, trigger: str | None = None,
               interval: str | None = None, stop: threading.Event | None = None,
               realtime: bool = True) -> StreamReport:
    """Run the bronze and realtime queries of ``source``.

    Parameters
    ----------
    trigger : str, optional
        ``availableNow`` (process what has arrived, then return) or ``processingTime`` (run until
        ``stop`` is set); default ``stream.trigger``.
    interval : str, optional
        processingTime interval, default ``stream.interval``.
    stop : :class:`threading.Event`, optional
        Set it to stop the queries after their current micro-batch.
    realtime : bool
        Also run the realtime query (when the source supports it).

    Returns
    -------
    :class:`StreamReport`
    """
    schema = source_schema(conf, source)
    trigger = trigger or conf["stream.trigger"]
    how = trigger_kwargs(trigger, interval or conf.get("stream.interval"))
    files = conf["stream.source"] == "files"
    supervisor = Supervisor(stop)
    bronze_cp = checkpoint_dir(conf, f"bronze_{source}")
    bronze_writer = BronzeWriter(conf, schema, bronze_cp, files=files)
    lines = source_stream(spark, conf, schema)
    if classified_early(schema):
        lines = verdict(lines, schema)  # analysed once per query, not per micro-batch
    spec = RealtimeSpec.from_conf(conf) if realtime else None
    realtime_writer = RealtimeWriter(conf, checkpoint_dir(conf, f"realtime_{source}"), spec) \
        if spec is not None and supports_realtime(schema, spec) else None
    report = StreamReport(source, trigger, bronze_writer.stats, realtime_writer.stats if realtime_writer else None)
    try:
        queries = [start(lines, f"bronze_{source}", bronze_cp, bronze_writer, how)]
        if realtime_writer is not None:
            queries.append(_start_realtime(spark, conf, schema, realtime_writer, how))
        supervisor.watch(queries)
    finally:
        if realtime_writer is not None:
            realtime_writer.close()
        report.queries = supervisor.progress
        report.stopped_by_request = supervisor.stopped_by_request
    log.info("stream report %s", json.dumps(report.as_dict(), sort_keys=True))
    return report


def _start_realtime(spark: SparkSession, conf: Conf, schema: Any, writer: RealtimeWriter,
                    how: dict[str, Any]) -> Any:
    events = valid_events(source_stream(spark, conf, schema), schema)
    spec = writer.spec
    counts = realtime_frame(events, schema, spec, conf["stream.window"], conf["stream.watermark"],
                            group_values(spark, conf, spec.group))
    return start(counts, f"realtime_{schema.source}", writer.checkpoint, writer, how, output_mode="update")


DESCRIPTION = "arriving events -> bronze (exactly once) + real-time views"


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[StreamReport]:
    """The ``stream`` job: SIGTERM/SIGINT stop the queries after their current batch."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        ctx.log.info("signal %d: stopping after the current micro-batch", signum)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = run_stream(spark, ctx.conf, args.source, trigger=args.trigger, interval=args.interval, stop=stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    ctx.log.info("stream done %s", json.dumps(report.as_dict(), sort_keys=True))
    if report.late_rows_dropped:
        ctx.log.warning("stream %s: %d late rows dropped by the watermark (%s)", args.source,
                        report.late_rows_dropped, ctx.conf["stream.watermark"])
    return JobResult(report, {"source": args.source, "trigger": report.trigger, "bronze_rows": report.bronze.rows,
                              "late_rows_dropped": report.late_rows_dropped})


def add_arguments(parser) -> None:
    """The options of the ``stream`` job beyond the common ones."""
    parser.add_argument("--source", default="events", help="source to stream (default: events)")
    parser.add_argument("--trigger", choices=TRIGGERS, default=None,
                        help="availableNow: process what has arrived and exit; processingTime: run until "
                             "SIGTERM (default: stream.trigger)")
    parser.add_argument("--interval", default=None,
                        help="processingTime interval, e.g. '10 seconds' (default: stream.interval)")
