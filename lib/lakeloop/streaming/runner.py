"""Query lifecycle: checkpoints, triggers, progress accounting and the graceful stop.

``availableNow`` runs the queries to the end of what has arrived and returns.  ``processingTime``
runs them until ``stop`` is set (the job sets it on SIGTERM/SIGINT) or a query fails.  A stop
waits for the current micro-batch of each query to finish (``status['isTriggerActive']``) before
stopping it; a query stopped mid-batch anyway (timeout) replays that batch from its checkpoint on
the next start, and the transactional sinks skip what it had already committed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.streaming import StreamingQuery

    from lakeloop.conf import Conf

__all__ = ["TRIGGERS", "QueryProgress", "checkpoint_dir", "trigger_kwargs", "start", "Supervisor"]

log = logging.getLogger("lakeloop.stream")

TRIGGERS = ("availableNow", "processingTime")
POLL_SECONDS = 0.5


def checkpoint_dir(conf: Conf, query: str) -> str:
    """``stream.checkpoint_dir/<query>``, by default ``<warehouse>/_checkpoints/<query>``."""
    root = conf["stream.checkpoint_dir"] or f"{conf.path('warehouse').rstrip('/')}/_checkpoints"
    return f"{root.rstrip('/')}/{query}"


def trigger_kwargs(trigger: str, interval: str | None) -> dict[str, Any]:
    """Keyword arguments of :meth:`DataStreamWriter.trigger`."""
    if trigger == "availableNow":
        return {"availableNow": True}
    if trigger == "processingTime":
        return {"processingTime": interval or "10 seconds"}
    raise ValueError(f"trigger {trigger!r}: expected one of {', '.join(TRIGGERS)}")


def start(df: DataFrame, name: str, checkpoint: str, writer: Any, trigger: dict[str, Any],
          output_mode: str = "append") -> StreamingQuery:
    """Start ``df`` with ``foreachBatch(writer)`` under ``name`` and ``checkpoint``."""
    return (df.writeStream.queryName(name).outputMode(output_mode).foreachBatch(writer)
            .option("checkpointLocation", checkpoint).trigger(**trigger).start())


@dataclass
class QueryProgress:
    """Totals over the progress reports of one query (``StreamingQuery.recentProgress``)."""

    name: str
    batches: int = 0
    input_rows: int = 0
    late_rows_dropped: int = 0  # stateOperators[].numRowsDroppedByWatermark
    state_rows: int = 0  # rows held in state after the last batch
    watermark: str | None = None
    last_batch_id: int | None = None
    _seen: set = field(default_factory=set, repr=False)

    def absorb(self, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add the reports not seen yet; returns them."""
        fresh = [p for p in reports if (p.get("batchId"), p.get("timestamp")) not in self._seen]
        for p in fresh:
            self._seen.add((p.get("batchId"), p.get("timestamp")))
            if "addBatch" in (p.get("durationMs") or {}):
                self.batches += 1
                self.last_batch_id = int(p["batchId"])
            self.input_rows += int(p.get("numInputRows") or 0)
            ops = p.get("stateOperators") or []
            self.late_rows_dropped += sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in ops)
            if ops:
                self.state_rows = sum(int(op.get("numRowsTotal") or 0) for op in ops)
            self.watermark = (p.get("eventTime") or {}).get("watermark", self.watermark)
        return fresh

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


class Supervisor:
    """Polls running queries: accounts their progress, surfaces failures, stops them on request."""

    def __init__(self, stop: threading.Event | None = None, stop_timeout: float = 300.0) -> None:
        self.stop = stop or threading.Event()
        self.stop_timeout = stop_timeout
        self.progress: dict[str, QueryProgress] = {}
        self.stopped_by_request = False

    def watch(self, queries: list[StreamingQuery]) -> None:
        """Return when every query has terminated (raising a query's failure) or, after a stop
        request, once each query finished its current batch and was stopped."""
        for q in queries:
            self.progress.setdefault(q.name, QueryProgress(q.name))
        try:
            while any(q.isActive for q in queries):
                if self.stop.is_set():
                    self.stopped_by_request = True
                    for q in queries:
                        self._stop_after_batch(q)
                    break
                for q in queries:
                    if q.isActive:
                        q.awaitTermination(POLL_SECONDS / len(queries))
                    elif q.exception() is not None:
                        raise q.exception()
                self._account(queries)
        except BaseException:
            for q in queries:  # one query failed: the others stop with it
                if q.isActive:
                    q.stop()
            raise
        finally:
            self._account(queries)
        for q in queries:
            failure = q.exception()
            if failure is not None:
                raise failure

    def _account(self, queries: list[StreamingQuery]) -> None:
        for q in queries:
            for p in self.progress[q.name].absorb(q.recentProgress):
                ops = p.get("stateOperators") or []
                dropped = sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in ops)
                if not p.get("numInputRows") and not dropped:
                    continue  # an idle trigger or a no-data batch (watermark, state eviction)
                log.info("%s batch %s: %s input rows%s", q.name, p.get("batchId"), p.get("numInputRows"),
                         f", {dropped} late rows dropped by the watermark" if dropped else "")

    def _stop_after_batch(self, q: StreamingQuery) -> None:
        deadline = time.monotonic() + self.stop_timeout
        while q.isActive and q.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.1)
        if q.isActive and q.status.get("isTriggerActive"):
            log.warning("%s: batch still running after %.0f s; stopping it (it replays on restart)", q.name,
                        self.stop_timeout)
        q.stop()
        log.info("%s stopped", q.name)
