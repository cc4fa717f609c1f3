"""The ``optimize`` job: compaction (optionally z-ordered) and vacuum of the lake's tables, for cron or the DAG.

Small files come from daily appends and streaming micro-batches; ``optimize`` rewrites them into files of
``delta.target_file_size`` (by default only the run date's partition of a table partitioned by ``dt``, so a
daily run costs one day's data; ``--all-partitions`` for the whole table), then vacuums what no version
within ``delta.vacuum_retention_hours`` needs.  Rows and version history are kept: the compaction is a
``dataChange = false`` commit, and time travel works to any version inside the retention.

    ./spark-submit.sh optimize --date 2026-11-01 [--table silver.events ...] [--all-partitions] [--no-vacuum]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloop.job import JobResult
from lakeloop.lake import Lake

if TYPE_CHECKING:
    from lakeloop.session import RunContext

__all__ = ["DESCRIPTION", "TableMaintenance", "optimize_table", "add_arguments", "run"]

DESCRIPTION = "compact (and z-order) the lake's tables, then vacuum them with the conf retention"
NEEDS_SPARK = False  # delta-rs rewrites the files; no Spark job runs


@dataclass
class TableMaintenance:
    """What optimize did to one table."""

    table: str
    partition: str | None
    files_removed: int = 0
    files_added: int = 0
    vacuumed: int = 0
    version: int | None = None
    z_order: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _partition_filter(lake: Lake, table: str, date: str, all_partitions: bool) -> list | None:
    from lakeloop.delta.log import load_table, locate

    if all_partitions:
        return None
    snapshot = load_table(locate(lake.uri(table), lake.storage_options))
    columns = snapshot.metadata().partition_columns if snapshot is not None else []
    return [("dt", "=", date)] if "dt" in columns else None


def optimize_table(lake: Lake, table: str, date: str, *, z_order: list[str] | None = None,
                   all_partitions: bool = False, vacuum: bool = True) -> TableMaintenance:
    """Compact ``table`` (the ``dt = date`` partition unless ``all_partitions``), then vacuum it."""
    filters = _partition_filter(lake, table, date, all_partitions)
    metrics = lake.optimize(table, filters, z_order or None)
    done = TableMaintenance(table, None if filters is None else date, int(metrics.get("numFilesRemoved", 0)),
                            int(metrics.get("numFilesAdded", 0)), z_order=list(z_order or []))
    if vacuum:
        done.vacuumed = len(lake.vacuum(table))
    done.version = lake.version(table)
    return done


def add_arguments(parser) -> None:
    """``--table`` (repeatable), ``--all-partitions``, ``--no-vacuum``."""
    parser.add_argument("--table", action="append", default=None, metavar="LAYER.NAME",
                        help="table to optimize (repeatable; default: conf optimize.tables, else every table)")
    parser.add_argument("--all-partitions", action="store_true",
                        help="compact every partition, not only the run date's")
    parser.add_argument("--no-vacuum", dest="vacuum", action="store_false", help="compact only")


def run(ctx: RunContext, spark: None, args) -> JobResult[list[TableMaintenance]]:
    """The ``optimize`` job: every selected table, one after the other."""
    lake = Lake.from_conf(ctx.conf)
    names = args.table or ctx.conf["optimize.tables"] or lake.table_names()
    z_order = ctx.conf["optimize.z_order"]
    done = []
    for name in names:
        result = optimize_table(lake, name, ctx.date, z_order=z_order.get(name), all_partitions=args.all_partitions,
                                vacuum=args.vacuum)
        ctx.log.info("optimize %s: %d files -> %d, %d vacuumed, version %s", name, result.files_removed,
                     result.files_added, result.vacuumed, result.version)
        done.append(result)
    return JobResult(done, {"tables": {d.table: d.as_dict() for d in done}})
