"""What the cluster tests share (tests/test_standalone_cluster.py, tests/test_yarn_cluster.py): one small day of
the daily pipeline, the settings that make a cluster run and a local-mode run comparable, and the comparison of
their tables."""

from __future__ import annotations

from pathlib import Path

from lakeloop import tables

__all__ = ["DAY", "DATA", "SAME", "RUN_COLUMNS", "sets", "table_names", "assert_same_tables"]

DAY = "2026-11-03"
# one small day; the tests are about where the jobs run, not the gates: any trained model is promoted, and the
# drift gate is off (on a first day it has no reference to compare with; its profiles are no table compared
# here, and it would add about a fifth to the test's time)
DATA = ["datagen.events=1500", "datagen.users=60", "datagen.items=40"]
SAME = ["train.gate_margin=-1", "train.split_tolerance=0.3", "infer.candidates_per_user=12", "infer.top_n=5",
        "validate.enabled=false", "spark.sql.shuffle.partitions=4"]
# columns that hold when or by which run a row was written, not what it holds
RUN_COLUMNS = {"_ingested_at", "_batch_id", "run_id", "scored_at"}


def sets(items: list[str]) -> list[str]:
    """``--set`` before each ``key=value``."""
    return [x for item in items for x in ("--set", item)]


def table_names(warehouse: Path) -> list[str]:
    """The ``layer.table`` names of the Delta tables under ``warehouse`` (its ``_``-folders left out)."""
    return sorted(f"{p.parent.name}.{p.name}" for p in warehouse.glob("*/*") if (p / "_delta_log").is_dir()
                  and not p.parent.name.startswith("_"))


def assert_same_tables(spark, local: Path, cluster: Path) -> list[str]:
    """Every table of ``local`` is in ``cluster`` with the same rows, apart from :data:`RUN_COLUMNS`; the names."""
    from pyspark.testing import assertDataFrameEqual

    names = table_names(local)
    assert names == table_names(cluster)
    for name in names:
        layer, table = name.split(".")
        expected, actual = (tables.read(spark, str(w / layer / table)) for w in (local, cluster))
        columns = [c for c in expected.columns if c not in RUN_COLUMNS]
        assert columns == [c for c in actual.columns if c not in RUN_COLUMNS], name
        assert expected.count() > 0, name
        assertDataFrameEqual(actual.select(columns), expected.select(columns))
    return names
