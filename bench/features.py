"""Benchmark: the feature kernels on every path, then the recommender's features job, declarative vs hand-written.

    .venv/bin/python bench/features.py [--events 2000000] [--users 50000] [--categories 200] [--repeats 3]
                                       [--arrow-batch 10000] [--app-events 1000000] [--only kernel|app]

Every figure is the median of ``--repeats`` (>= 3) timed runs after one warm-up run of every method on the
full data (Python workers started, numba compiled, the JVM's JIT warm), the methods of a comparison run round
robin so a change of load hits all of them; each line shows the spread (min-max) and the runs.  All
methods of a comparison read the same cached input in one Spark session and write to the ``noop`` sink.

**Sessions** (sequential per-entity state, :mod:`lakeloop.kernels`): ``--events`` events of ``--users`` users
in bursts (about 12 bursts of 3 events per user, split by a 30-minute inactivity gap):

* ``numba``  -- :func:`~lakeloop.kernels.sessions_numba` after :func:`~lakeloop.kernels.prepare_keyed`
  (repartition by key, sort by key and time), ``mapInArrow``, one pass per batch;
* ``sql``    -- :func:`~lakeloop.kernels.sessions_sql`: ``lag`` and a running sum over a window per key, two
  aggregations (its own repartition and sort);
* ``pandas`` -- :func:`~lakeloop.kernels.sessions_pandas_partitions` after the same preparation
  (``mapInPandas``, sort/diff/cumsum/groupby per partition).

End to end from unsorted cached events each pays one shuffle and one sort (targets: sql / numba >= 1.5x,
pandas / numba >= 3x); the same three on the prepared (partitioned, sorted, cached) input show the paths
without the shuffle, with ``floor`` (``mapInArrow`` consuming the batches, computing nothing).

**Decayed sum** (user x category affinity, 200 categories, 8 per user): end to end from the same cached
events, each with exactly one shuffle:

* ``sql``     -- :func:`~lakeloop.kernels.decay_sql`: ``groupBy(key, group)`` of ``exp(-age ln2 / half_life)``;
* ``numba``   -- :func:`~lakeloop.kernels.decay_numba` after :func:`~lakeloop.kernels.prepare_decay_input`;
* ``pandas``  -- :func:`~lakeloop.kernels.decay_pandas_partitions` after the same preparation;
* ``row_udf`` -- a plain (pickled, not Arrow) Python ``udf`` per row, summed by ``groupBy(key, group)``.

The faster of ``sql`` and ``numba`` standalone is printed as information.  On the prepared input (no path
shuffles: the bench checks every plan) the kernel is compared with pandas and ``row_weight``, the row UDF's
weights alone: Spark sees no partitioning through a Python UDF, so a ``groupBy`` after it shuffles even rows
already partitioned by key; without the sum, ``row_weight`` is a lower bound of the row UDF.

**In a feature set** (:data:`IN_SET_SHAPES`): the same declared feature set, a count plus a decayed sum (a map
per key next to a grouped count, and per ``(key, group)``), computed by :func:`lakeloop.featuresets.compute` on
the same cached events with ``impl: sql`` (one more aggregate of the set's ``groupBy``) and ``impl: numba`` (its
own frame, joined back), ``spark.sql.shuffle.partitions`` = ``--partitions``.  The faster of the two must be
what ``impl: auto`` picks (:data:`lakeloop.featuresets.decay.AUTO`) in every shape; the bench says so or
exits 1.  Last, the kernels, pandas and a Python loop on Arrow batches in the driver process, without Spark.
numba, SQL and pandas are checked to agree (sessions exactly, decayed sums to 1e-9 relative, in a feature set
every other column exactly).

The app part builds synthetic silver ``events`` and ``items`` frames (``--app-events`` events over 35
days, 20,000 users, 5,000 catalog items plus items missing from it), caches them, and times the
three gold tables of the recommender (``user_favours``, ``item_stats``, ``training_set``) through
``lakeloop_apps.recommender.reference`` (hand-written) and through the conf files computed by
``lakeloop.featuresets`` (declarative), each written to the ``noop`` sink, round robin, median of
``--repeats`` (target: declarative <= 1.1x hand-written); it checks that both give the same row counts.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

_LIB = str(Path(__file__).resolve().parents[1] / "lib")
sys.path.insert(0, _LIB)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_LIB, os.environ.get("PYTHONPATH")]))  # Python workers
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

import datetime as dt  # noqa: E402

from lakeloop import kernels  # noqa: E402

T_REF_US = 1_794_268_800_000_000  # 2026-11-10T00:00:00Z
HALF_LIFE_S = 7 * 86400.0
SPAN_US = 60 * 86400 * 1_000_000
INTERESTS = 8  # categories per user
BURSTS = 12  # bursts of activity per user
BURST_US = 20 * 60 * 1_000_000  # events of a burst fall within 20 minutes
GAP_US = 30 * 60 * 1_000_000  # the sessions' inactivity gap
KEYS = ["key"]


def session(master: str, arrow_batch: int):
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(master).appName("bench-features")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC").config("spark.driver.memory", "4g")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch))
             .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC")
             # a cached frame keeps its partitioning, so a groupBy or window by key on the prepared input
             # needs no shuffle (with the default, true, every one of them re-shuffled the cached rows)
             .config("spark.sql.optimizer.canChangeCachedPlanOutputPartitioning", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def synthetic_events(spark, n: int, users: int, categories: int, partitions: int):
    """``(key, group, ts)``: user, category, time; each user's events in bursts, in a few nearby categories."""
    from pyspark.sql import functions as F

    user = F.pmod(F.xxhash64("id", F.lit(1)), F.lit(users))
    # each user's events fall in a handful of categories near a user-specific one, as real interests do
    category = F.pmod(user * 7919 + F.pmod(F.xxhash64("id", F.lit(2)), F.lit(INTERESTS)), F.lit(categories))
    burst = F.pmod(F.xxhash64("id", F.lit(4)), F.lit(BURSTS))
    start = F.pmod(F.xxhash64(user, burst, F.lit(5)), F.lit(SPAN_US - BURST_US))
    age = start + F.pmod(F.xxhash64("id", F.lit(3)), F.lit(BURST_US))
    return (spark.range(n, numPartitions=partitions).select(
        user.alias("key"), F.concat(F.lit("cat/"), category.cast("string")).alias("group"),
        F.timestamp_micros(F.lit(T_REF_US) - 1 - age).alias("ts")))


def row_udf_weight():
    """A pickled (not Arrow) per-row Python UDF: the decay weight of one ``ts``."""
    from pyspark.sql import functions as F

    t_ref, rate = T_REF_US, math.log(2.0) / (HALF_LIFE_S * 1_000_000)

    @F.udf("double", useArrow=False)
    def weight(ts):  # a datetime per row, as a row UDF sees it
        age_us = t_ref - (ts.timestamp() * 1_000_000)
        return math.exp(-age_us * rate)

    return weight


def row_udf_affinity(rows):
    """The row UDF's weights summed by ``groupBy(key, group)``."""
    from pyspark.sql import functions as F

    weight = row_udf_weight()
    return rows.groupBy("key", "group").agg(F.sum(weight("ts")).alias("value"), F.count(F.lit(1)).alias("n"))


def row_udf_weights(rows):
    """The row UDF's weights alone, not summed: Spark sees no partitioning through a Python UDF, so a ``groupBy``
    after it shuffles even rows already partitioned by the grouping; this is the UDF's part without that shuffle
    (a lower bound of the row UDF on prepared rows)."""
    weight = row_udf_weight()
    return rows.select("key", "group", weight("ts").alias("w"))


def arrow_floor(prepared, schema: str):
    """The same input through ``mapInArrow`` with nothing computed: the JVM <-> Python transfer cost."""

    def consume(batches):
        for _ in batches:
            pass
        return iter(())

    return prepared.mapInArrow(consume, schema)


def exchanges(df) -> int:
    """Exchanges (shuffles and broadcasts) in ``df``'s physical plan, not counting those that built a cached
    input (under an ``InMemoryRelation``: they ran once, when it was cached)."""
    count, cached_at = 0, None
    for line in df._jdf.queryExecution().executedPlan().toString().splitlines():
        indent = len(line) - len(line.lstrip(" +-:"))
        if cached_at is not None and indent > cached_at:
            continue
        cached_at = indent if "InMemoryRelation" in line else None
        count += "Exchange " in line
    return count


def timed(df) -> float:
    start = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def measure(methods: dict[str, Callable], repeats: int, warm: bool = True) -> dict[str, list[float]]:
    """Seconds per run of each method (a callable giving a frame or a list of frames), round robin, after one
    warm-up run of each on the same data."""

    def run(make) -> float:
        frames = make()
        return sum(timed(df) for df in (frames if isinstance(frames, list) else [frames]))

    if warm:
        for make in methods.values():
            run(make)
    runs: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, make in methods.items():
            runs[name].append(run(make))
    return runs


def report(runs: dict[str, list[float]], rows: int, base: str) -> dict[str, float]:
    """Print median, spread and runs per method; return the medians."""
    seconds = {name: statistics.median(v) for name, v in runs.items()}
    print(f"{'method':13s} {'median s':>9s} {'spread s':>13s} {'events/s':>12s} {'x ' + base:>10s}  runs")
    for name, values in runs.items():
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(f"{name:13s} {seconds[name]:9.2f} {spread:>13s} {rows / seconds[name]:12,.0f} "
              f"{seconds[name] / seconds[base]:10.2f}  {', '.join(f'{s:.2f}' for s in values)}", flush=True)
    return seconds


def target(label: str, ratio: float, wanted: float) -> bool:
    met = ratio >= wanted
    print(f"{label} = {ratio:.2f}x (target >= {wanted}x): {'met' if met else 'MISSED'}")
    return met


# -- sessions --------------------------------------------------------------------------------------------

def sessions_part(events, partitions: int, repeats: int) -> None:
    rows = events.select("key", "ts")
    prep = lambda: kernels.prepare_keyed(rows, KEYS, ["ts"], partitions)  # noqa: E731
    end_to_end = {
        "numba": lambda: kernels.sessions_numba(prep(), KEYS, GAP_US),
        "sql": lambda: kernels.sessions_sql(rows, KEYS, GAP_US),
        "pandas": lambda: kernels.sessions_pandas_partitions(prep(), KEYS, GAP_US),
    }
    n = rows.count()
    check_sessions(end_to_end)
    print(f"\nsessions, end to end from unsorted cached events ({n:,} events, gap {GAP_US // 60_000_000} min, "
          f"one shuffle + sort each):")
    seconds = report(measure(end_to_end, repeats), n, "numba")
    target("sql / numba   ", seconds["sql"] / seconds["numba"], 1.5)
    target("pandas / numba", seconds["pandas"] / seconds["numba"], 3.0)

    prepared = prep().cache()
    prepared.count()
    above = {
        "floor": lambda: arrow_floor(prepared, kernels.sessions_schema("key long")),
        "numba": lambda: kernels.sessions_numba(prepared, KEYS, GAP_US),
        "sql": lambda: kernels.sessions_sql(prepared, KEYS, GAP_US),
        "pandas": lambda: kernels.sessions_pandas_partitions(prepared, KEYS, GAP_US),
    }
    print(f"\nsessions on the prepared input (partitioned by key, sorted, cached; the sql window adds "
          f"{exchanges(above['sql']())} shuffles):")
    report(measure(above, repeats), n, "numba")
    prepared.unpersist()


def check_sessions(methods: dict[str, Callable]) -> None:
    """numba, SQL and pandas give the same sessions, exactly."""
    from pyspark.sql import functions as F

    numba, sql, pandas = (methods[m]() for m in ("numba", "sql", "pandas"))
    for name, other in (("sql", sql), ("pandas", pandas)):
        diff = numba.exceptAll(other).count() + other.exceptAll(numba).count()
        if diff:
            raise AssertionError(f"numba and {name} sessions differ in {diff} rows")
    total = numba.agg(F.sum("sessions"), F.sum("events"), F.count(F.lit(1))).first()
    print(f"sessions: {total[2]:,} users, {total[0]:,} sessions of {total[1] / total[0]:.2f} events; "
          "numba = sql = pandas exactly")


# -- decayed sums ----------------------------------------------------------------------------------------

def decay_part(events, partitions: int, repeats: int) -> bool:
    from lakeloop.featuresets import decay

    prep = lambda: kernels.prepare_decay_input(events, T_REF_US, partitions)  # noqa: E731
    end_to_end = {
        "sql": lambda: kernels.decay_sql(events, T_REF_US, HALF_LIFE_S),
        "numba": lambda: kernels.decay_numba(prep(), T_REF_US, HALF_LIFE_S),
        "pandas": lambda: kernels.decay_pandas_partitions(prep(), T_REF_US, HALF_LIFE_S),
        "row_udf": lambda: row_udf_affinity(events),
    }
    shuffles = {name: exchanges(make()) for name, make in end_to_end.items()}
    if set(shuffles.values()) != {1}:
        raise AssertionError(f"every decay path must shuffle once, got {shuffles}")
    n = events.count()
    rel = max_relative_difference(end_to_end["numba"](), end_to_end["sql"]())
    rel_pd = max_relative_difference(end_to_end["numba"](), end_to_end["pandas"]())
    groups = end_to_end["sql"]().count()
    print(f"\ndecayed sum, end to end from the same cached events ({n:,} events, {groups:,} (user, category) "
          "groups, one shuffle each):")
    seconds = report(measure(end_to_end, repeats), n, "sql")
    faster = min(("sql", "numba"), key=seconds.__getitem__)
    print(f"numba / sql = {seconds['numba'] / seconds['sql']:.2f}x: the faster standalone is {faster} (information: "
          f"impl: auto, now {decay.AUTO}, follows the comparison inside a feature set below)")
    print(f"max relative difference numba vs sql {rel:.2e}, numba vs pandas {rel_pd:.2e} (must be <= 1e-9)")

    prepared = prep().cache()
    prepared.count()
    above = {
        "floor": lambda: arrow_floor(prepared, kernels.DECAY_SCHEMA),
        "numba": lambda: kernels.decay_numba(prepared, T_REF_US, HALF_LIFE_S),
        "pandas": lambda: kernels.decay_pandas_partitions(prepared, T_REF_US, HALF_LIFE_S),
        "row_weight": lambda: row_udf_weights(prepared),
    }
    shuffles = {name: exchanges(make()) for name, make in above.items()}
    if any(shuffles.values()):
        raise AssertionError(f"no path on the prepared input may shuffle, got {shuffles}")
    print("\ndecayed sum on the prepared input (partitioned by key, sorted, cached; no shuffle in any plan; "
          "row_weight: the row UDF's weights alone, not summed):")
    s = report(measure(above, repeats), n, "numba")
    print(f"row_weight / numba >= {s['row_weight'] / s['numba']:.1f}x, pandas / numba = "
          f"{s['pandas'] / s['numba']:.1f}x; above the floor ({s['floor']:.2f} s): "
          f"{(s['row_weight'] - s['floor']) / max(s['numba'] - s['floor'], 1e-9):.1f}x and "
          f"{(s['pandas'] - s['floor']) / max(s['numba'] - s['floor'], 1e-9):.1f}x")
    prepared.unpersist()
    return rel <= 1e-9 and rel_pd <= 1e-9


def max_relative_difference(a, b) -> float:
    from pyspark.sql import functions as F

    joined = a.alias("a").join(b.alias("b"), ["key", "group"], "full")
    row = joined.agg(
        F.max(F.abs(F.col("a.value") - F.col("b.value")) / F.abs(F.col("b.value"))).alias("rel"),
        F.count_if(F.col("a.value").isNull() | F.col("b.value").isNull() | (F.col("a.n") != F.col("b.n")))
        .alias("mismatched")).first()
    if row["mismatched"]:
        raise AssertionError(f"{row['mismatched']} (key, group) groups differ between implementations")
    return row["rel"]


# -- decayed sums in a feature set ----------------------------------------------------------------------

#: the declared feature sets of the in-set comparison, on the bench's ``(key, group, ts)`` events
IN_SET_SHAPES = {
    "map per key": {
        "entity": "key",
        "features": [
            {"name": "events", "kind": "aggregate", "agg": "count"},
            {"name": "group_counts", "kind": "aggregate", "agg": "count", "group_by": "`group`"},
            {"name": "affinity", "kind": "decay", "half_life": "7d", "group_by": "`group`"},
        ],
    },
    "per (key, group)": {
        "entity": ["key", "group"],
        "features": [
            {"name": "events", "kind": "aggregate", "agg": "count"},
            {"name": "affinity", "kind": "decay", "half_life": "7d"},
        ],
    },
}


def in_set_feature_set(shape: dict, impl: str):
    """The feature set of ``shape`` (:data:`IN_SET_SHAPES`) with its decay feature on ``impl``."""
    from lakeloop.featuresets.sets import parse_feature_set
    from lakeloop.featuresets.spec import Node

    features = [{**f, "impl": impl} if f["kind"] == "decay" else f for f in shape["features"]]
    spec = {"source": "bench.events", "entity": shape["entity"], "time": "ts", "window": "60d",
            "features": features}
    return parse_feature_set("bench_in_set", Node(spec, "bench/features.py"))


def in_set_part(spark, events, partitions: int, repeats: int) -> bool:
    """Each shape of :data:`IN_SET_SHAPES` computed by :func:`lakeloop.featuresets.compute` with ``impl: sql`` and
    ``impl: numba``; True when ``impl: auto`` is the faster in every shape and the two agree to 1e-9 relative."""
    from lakeloop.featuresets import Scope, compute, decay
    from lakeloop.featuresets.scope import day_start

    previous = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))  # as conf/local.yaml sets it for the job
    scope = Scope(day_start(dt.datetime.fromtimestamp(T_REF_US / 1_000_000, dt.UTC).date()))
    read = {"bench.events": events}.__getitem__
    n, ok = events.count(), True
    for label, shape in IN_SET_SHAPES.items():
        sets = {impl: in_set_feature_set(shape, impl) for impl in ("sql", "numba")}
        paths = {impl: (lambda fs=fs: compute(fs, read, scope)) for impl, fs in sets.items()}
        entity = list(sets["sql"].entity)
        rel = in_set_difference(paths["numba"](), paths["sql"](), entity, "affinity")
        shuffles = {impl: exchanges(make()) for impl, make in paths.items()}
        print(f"\ndecayed sum in a feature set, {label} ({n:,} events; features "
              f"{', '.join(f['name'] for f in shape['features'])}; exchanges in the plan: sql {shuffles['sql']}, "
              f"numba {shuffles['numba']}):")
        seconds = report(measure(paths, repeats), n, "sql")
        winner = min(seconds, key=seconds.__getitem__)
        print(f"numba / sql = {seconds['numba'] / seconds['sql']:.2f}x: the faster in the set is {winner}; "
              f"impl: auto uses {decay.AUTO}: {'ok' if decay.AUTO == winner else 'MISMATCH'}; max relative "
              f"difference {rel:.2e} (must be <= 1e-9)")
        ok = ok and decay.AUTO == winner and rel <= 1e-9
    spark.conf.set("spark.sql.shuffle.partitions", previous)
    return ok


def in_set_difference(a, b, entity: list[str], value: str) -> float:
    """Max relative difference of ``value`` (a double or a map of doubles) between two outputs of one feature set;
    raises AssertionError when any other column differs or an entity (or map key) is in one output only."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def exact(df):
        return df.select(*[F.map_entries(c).alias(c) if isinstance(df.schema[c].dataType, T.MapType) else c
                           for c in df.columns if c != value])

    diff = exact(a).exceptAll(exact(b)).count() + exact(b).exceptAll(exact(a)).count()
    if diff:
        raise AssertionError(f"{diff} rows differ between the sql and numba feature sets outside {value}")

    def flat(df):
        if isinstance(df.schema[value].dataType, T.MapType):
            return df.select(*entity, F.explode(value).alias("_k", "_v")), [*entity, "_k"]
        return df.select(*entity, F.col(value).alias("_v")), entity

    (fa, keys), (fb, _) = flat(a), flat(b)
    row = fa.alias("a").join(fb.alias("b"), keys, "full").agg(
        F.max(F.abs(F.col("a._v") - F.col("b._v")) / F.abs(F.col("b._v"))).alias("rel"),
        F.count_if(F.col("a._v").isNull() | F.col("b._v").isNull()).alias("missing")).first()
    if row["missing"]:
        raise AssertionError(f"{row['missing']} values of {value} are in one feature set only")
    return row["rel"]


# -- in one process --------------------------------------------------------------------------------------

def in_process(n: int, users: int, categories: int, batch_rows: int) -> dict[str, float]:
    """Seconds of the kernels, pandas and a Python loop on Arrow batches in this process, without Spark."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    user = rng.integers(0, users, n)
    t = T_REF_US - 1 - (rng.integers(0, SPAN_US - BURST_US, (users, BURSTS))[user, rng.integers(0, BURSTS, n)]
                        + rng.integers(0, BURST_US, n))
    order = np.lexsort((t, user))
    user, t = user[order], t[order]
    names = np.array([f"cat/{k}" for k in range(categories)], dtype=object)
    table = pa.table({"key": pa.array(user, pa.int64()),
                      "group": pa.array(names[(user * 7919 + rng.integers(0, INTERESTS, n)) % categories]),
                      "ts": pa.array(t, pa.timestamp("us", tz="UTC"))})
    batches = table.to_batches(max_chunksize=batch_rows)
    rate = math.log(2.0) / (HALF_LIFE_S * 1_000_000)

    def decay_rows():  # what a row UDF does per row, minus Spark's pickling
        sums: dict[tuple[int, str], float] = {}
        for u, c, ts in zip(*(table.column(k).to_pylist() for k in ("key", "group", "ts")), strict=True):
            sums[(u, c)] = sums.get((u, c), 0.0) + math.exp(-(T_REF_US - ts.timestamp() * 1_000_000) * rate)
        return sums

    cases = {
        "decay numba": lambda: list(kernels.decay_batches(iter(batches), T_REF_US, HALF_LIFE_S)),
        "decay pandas": lambda: kernels.decay_pandas(table.to_pandas(), T_REF_US, HALF_LIFE_S),
        "decay python": decay_rows,
        "sessions numba": lambda: list(kernels.sessions_batches(iter(batches), KEYS, GAP_US)),
        "sessions pandas": lambda: kernels.sessions_pandas(table.select(["key", "ts"]).to_pandas(), KEYS, GAP_US),
    }
    out = {}
    for name, fn in cases.items():
        fn()  # compile, warm
        out[name] = statistics.median(_seconds(fn) for _ in range(1 if "python" in name else 3))
    return out


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


APP_TYPES = ["view"] * 10 + ["click"] * 3 + ["add_to_cart", "purchase", "like", "review"]
APP_RUN_DATE = dt.date(2026, 11, 10)


def app_silver(spark, n: int, users: int, items: int, partitions: int):
    """Synthetic silver ``events`` and ``items`` in the schemas of ``schemas/``, cached."""
    from pyspark.sql import functions as F

    end_us = int(dt.datetime(2026, 11, 11, tzinfo=dt.UTC).timestamp() * 1_000_000)
    span_us = 35 * 86400 * 1_000_000
    h = lambda k: F.xxhash64("id", F.lit(k))  # noqa: E731
    etype = F.element_at(F.array(*[F.lit(t) for t in APP_TYPES]), (F.pmod(h(3), F.lit(len(APP_TYPES))) + 1).cast("int"))
    ts = F.timestamp_micros(F.lit(end_us) - 1 - F.pmod(h(4), F.lit(span_us)))
    events = (spark.range(n, numPartitions=partitions)
              .select("id", F.concat(F.lit("e"), F.lpad(F.hex("id"), 16, "0")).alias("event_id"),
                      (F.pmod(h(1), F.lit(users)) + 1).alias("user_id"),
                      (F.pmod(h(2), F.lit(items + items // 50)) + 1).alias("item_id"), etype.alias("type"),
                      ts.alias("ts"),
                      F.concat(F.lit("s"), F.pmod(h(5), F.lit(n // 8)).cast("string")).alias("session_id"))
              .withColumn("price", F.when(F.col("type") == "purchase", F.pmod(h(6), F.lit(500)).cast("double") + 1))
              .withColumn("quantity", F.lit(1))
              .withColumn("rating", F.when(F.col("type") == "review", (F.pmod(h(7), F.lit(5)) + 1).cast("int")))
              .withColumn("review_text", F.lit(None).cast("string")).withColumn("_extra", F.lit(None).cast("string"))
              .withColumn("dt", F.date_format("ts", "yyyy-MM-dd")).drop("id"))
    catalog = (spark.range(items * 2, numPartitions=2)
               .select((F.col("id") % items + 1).alias("item_id"),
                       F.concat(F.lit("cat/c"), F.pmod(h(8), F.lit(60)).cast("string")).alias("category"),
                       (F.pmod(h(9), F.lit(300)) + 1).cast("double").alias("price"), F.lit("acme").alias("brand"),
                       F.timestamp_micros(F.lit(end_us) - F.pmod(h(10), F.lit(span_us + 86400 * 1_000_000)))
                       .alias("updated_at"))
               .withColumn("dt", F.date_format("updated_at", "yyyy-MM-dd")))
    events, catalog = events.cache(), catalog.cache()
    return events, catalog, events.count(), catalog.count()


def app_comparison(spark, n: int, repeats: int, partitions: int) -> dict[str, float]:
    """Seconds of the recommender's three gold tables, hand-written vs declarative (module docstring)."""
    from lakeloop.conf import load_conf
    from lakeloop.featuresets import build, load_specs, training_frame
    from lakeloop_apps.recommender import reference

    spark.conf.set("spark.sql.shuffle.partitions", "4")  # as conf/local.yaml sets it for the job
    events, items, n_events, n_items = app_silver(spark, n, users=20_000, items=5_000, partitions=partitions)
    conf = load_conf("local", conf_dir=Path(__file__).resolve().parents[1] / "conf")
    specs = load_specs(conf)
    params = reference.FeatureParams.from_conf(conf)
    read = {"silver.events": events, "silver.items": items}.__getitem__
    end = reference.day_start(APP_RUN_DATE) + dt.timedelta(days=1)
    paths = {
        "hand_written": lambda: [reference.user_favours(events, items, end, params),
                                 reference.item_stats(events, items, end, params),
                                 reference.training_set(events, items, reference.day_start(APP_RUN_DATE), params)],
        "declarative": lambda: [build.feature_frame(specs.sets["user_favours"], read, APP_RUN_DATE),
                                build.feature_frame(specs.sets["item_stats"], read, APP_RUN_DATE),
                                training_frame(specs.training["training_set"], specs.sets, read, APP_RUN_DATE)],
    }
    counts = {name: [df.count() for df in make()] for name, make in paths.items()}  # warm-up, and a check
    if counts["hand_written"] != counts["declarative"]:
        raise AssertionError(f"row counts differ: {counts}")
    runs = measure({name: (lambda make=make: make()) for name, make in paths.items()}, repeats, warm=False)
    print(f"\nrecommender features job: {n_events:,} events, {n_items:,} catalog records, run date {APP_RUN_DATE}, "
          f"rows (user_favours, item_stats, training_set) = {counts['declarative']}")
    seconds = report(runs, n_events, "hand_written")
    ratio = seconds["declarative"] / seconds["hand_written"]
    print(f"declarative / hand-written = {ratio:.2f}x (target <= 1.1x)")
    events.unpersist()
    items.unpersist()
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--categories", type=int, default=200)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arrow-batch", type=int, default=10_000, help="spark.sql.execution.arrow.maxRecordsPerBatch")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--app-events", type=int, default=1_000_000)
    p.add_argument("--only", choices=("kernel", "sessions", "decay", "app"), default=None)
    args = p.parse_args(argv)
    if args.repeats < 3:
        p.error("--repeats: every figure is a median of at least 3 runs")

    spark = session(args.master, args.arrow_batch)
    print(f"spark {spark.version}, master {args.master}, {args.partitions} partitions, Arrow batches of "
          f"{args.arrow_batch:,} rows, median of {args.repeats} runs after a warm-up run", flush=True)
    ok = True
    if args.only in (None, "app"):
        app_comparison(spark, args.app_events, args.repeats, args.partitions)
    if args.only != "app":
        events = synthetic_events(spark, args.events, args.users, args.categories, args.partitions).cache()
        events.count()
        if args.only in (None, "kernel", "sessions"):
            sessions_part(events, args.partitions, args.repeats)
        if args.only in (None, "kernel", "decay"):
            ok = decay_part(events, args.partitions, args.repeats)
            ok = in_set_part(spark, events, args.partitions, args.repeats) and ok
        events.unpersist()
    spark.stop()
    if args.only != "app":
        local = in_process(args.events, args.users, args.categories, args.arrow_batch)
        print(f"\nin one Python process, no Spark ({args.events:,} events, {args.arrow_batch:,}-row Arrow batches, "
              "median of 3, the Python loop 1 run):")
        for name, s in local.items():
            print(f"{name:16s} {s:7.2f} s {args.events / s:12,.0f} events/s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
