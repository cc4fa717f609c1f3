"""Benchmark: the speed layer on this machine, in one run.

    .venv/bin/python bench/stream.py --events 100000 --files 20 --repeats 3

1. Sustained throughput: ``--events`` generated events (one day, 4 files), processed by
   ``run_stream(trigger="availableNow")``.  Both paths are first warmed up once on a small day in the
   same session (JIT, code generation), so that neither pays the session's first-use costs for the
   other; the warm-up times are printed.  Then ``--repeats`` rounds, each on fresh copies of the day:
   the bronze query alone and batch ingest (``ingest_source``) of the same files, in alternating order
   (bronze first in rounds 1, 3, ...; batch ingest first in rounds 2, 4, ...), the realtime query alone,
   and both queries side by side over another copy (what a cron run does).  Each figure is printed as
   median, min, max and the runs; events/s and the ratio of the bronze query's time to batch ingest's
   from the medians.
2. Freshness: with both queries running on a ``processingTime`` trigger (``--interval``), ``--files``
   small event files are landed one at a time, each the only events of a new user; the time from the
   file's rename into landing to that user's real-time view appearing in the serving store is
   measured.  Prints p50/p99.
3. Kafka (when ``./setup.sh jvm`` fetched the broker and Spark's Kafka connector; ``--no-kafka`` skips it): a
   real broker (KRaft, ``tests/kafka_broker.py``) on loopback, topic of 2 partitions.  Throughput: the same
   ``--events`` day published as records, then ``stream --source kafka`` to bronze alone (availableNow):
   events/s.  Freshness: both queries running on ``processingTime``, ``--files`` batches of ``--per-file``
   records of a new user published one at a time (the broker's console producer, acks=all); the time from
   the broker's acknowledgement to that user's real-time view appearing in the serving store.  Prints p50/p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "lib"), str(Path(__file__).resolve().parents[1])]
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers (the lakeloop_delta source) import lakeloop

from lakeloop import jvm  # noqa: E402
from lakeloop.conf import load_conf  # noqa: E402
from lakeloop.ingest import ingest_source  # noqa: E402
from lakeloop.serving import open_store  # noqa: E402
from lakeloop.streaming import run_stream  # noqa: E402
from lakeloop_apps.recommender.datagen import generate_day  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATE = "2026-11-01"


def session(kafka: bool) -> SparkSession:
    builder = (SparkSession.builder.master("local[2]").appName("bench-stream")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.session.timeZone", "UTC").config("spark.driver.memory", "4g"))
    if kafka:  # Spark's Kafka connector (and not delta-spark: the bridge is the stream's engine)
        jars, _ = jvm.spark_settings("bridge")
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def conf_at(root: Path, **extra: object):
    overrides = [f"warehouse={root / 'warehouse'}", f"landing={root / 'landing'}"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_conf("local", overrides, conf_dir=ROOT / "conf")


def _land_day(landing: Path, events: int, date: str = DATE) -> None:
    generate_day(landing, date, events=events, users=max(50, events // 100), items=300, seed=7, bad_fraction=0.02,
                 parts=4)


def warm_up(spark: SparkSession, root: Path, events: int = 500) -> dict[str, float]:
    """One small run of the stream and of batch ingest, so that neither measured run is the first."""
    stream_root, batch_root = root / "warmup-stream", root / "warmup-batch"
    _land_day(stream_root / "landing", events)
    shutil.copytree(stream_root / "landing", batch_root / "landing")
    start = time.perf_counter()
    run_stream(spark, conf_at(stream_root), "events", trigger="availableNow")
    stream_s = time.perf_counter() - start
    start = time.perf_counter()
    ingest_source(spark, conf_at(batch_root), "events", DATE)
    return {"events": events, "stream_s": stream_s, "batch_ingest_s": time.perf_counter() - start}


def _timed(run: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def _round(spark: SparkSession, day: Path, root: Path, stream_first: bool) -> dict[str, float]:
    """One measured round on fresh copies of ``day``: the bronze query alone and batch ingest (in the
    order ``stream_first`` says), the realtime query alone, then both queries over another copy."""
    roots = {name: root / name for name in ("stream", "batch", "both")}
    for folder in roots.values():
        shutil.copytree(day, folder / "landing")
    conf = conf_at(roots["stream"])
    steps = {"bronze": lambda: run_stream(spark, conf, "events", trigger="availableNow", realtime=False),
             "batch": lambda: ingest_source(spark, conf_at(roots["batch"]), "events", DATE)}
    done = {name: _timed(steps[name]) for name in (("bronze", "batch") if stream_first else ("batch", "bronze"))}
    # bronze has nothing new: the realtime query alone
    _, realtime_s = _timed(lambda: run_stream(spark, conf, "events", trigger="availableNow"))
    both, both_s = _timed(lambda: run_stream(spark, conf_at(roots["both"]), "events", trigger="availableNow"))
    (batch, batch_s), (bronze_only, bronze_s) = done["batch"], done["bronze"]
    assert batch.rows == bronze_only.bronze.rows == both.bronze.rows, (batch.rows, bronze_only.bronze.rows)
    return {"rows": batch.rows, "bronze_s": bronze_s, "batch_ingest_s": batch_s, "realtime_s": realtime_s,
            "both_queries_s": both_s}


def _spread(runs: list[float]) -> dict[str, object]:
    return {"median": round(statistics.median(runs), 3), "min": round(min(runs), 3), "max": round(max(runs), 3),
            "runs": [round(r, 3) for r in runs]}


def throughput(spark: SparkSession, root: Path, events: int, repeats: int) -> dict[str, object]:
    """``repeats`` rounds over fresh copies of one landed day, the bronze query and batch ingest in
    alternating order; median, spread and runs of each figure, the ratio from the medians."""
    day = root / "throughput-day" / "landing"
    _land_day(day, events)
    rounds = [_round(spark, day, root / f"throughput-{i}", stream_first=i % 2 == 0) for i in range(repeats)]
    assert all(r["rows"] == events for r in rounds), [r["rows"] for r in rounds]
    figures = {name: _spread([r[name] for r in rounds])
               for name in ("bronze_s", "batch_ingest_s", "realtime_s", "both_queries_s")}
    median = {name: f["median"] for name, f in figures.items()}
    return {"events": events, "repeats": repeats,
            "order": ["bronze, batch" if i % 2 == 0 else "batch, bronze" for i in range(repeats)], **figures,
            "bronze_events_per_s": round(events / median["bronze_s"]),
            "realtime_events_per_s": round(events / median["realtime_s"]),
            "end_to_end_events_per_s": round(events / median["both_queries_s"]),
            "stream_bronze_vs_batch_ingest": round(median["bronze_s"] / median["batch_ingest_s"], 2)}


def _event_file(folder: Path, n: int, user: int, now: dt.datetime) -> Path:
    """Land ``n`` view events of ``user`` at ``now`` atomically (write hidden, rename)."""
    ts = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [json.dumps({"event_id": f"e{user * 1000 + i:016x}", "user_id": user, "item_id": 1 + i % 50,
                         "type": "view", "ts": ts}) for i in range(n)]
    tmp = folder / f".part-{user}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    final = folder / f"part-{user}.jsonl"
    tmp.rename(final)
    return final


def _measure_freshness(spark: SparkSession, conf, first_user: int, count: int,
                       deliver: Callable[[int], float]) -> dict[str, float]:
    """Both queries on ``processingTime`` in the background; ``deliver(user)`` lands one new user's events and
    returns the time to measure from.  ``first_user`` warms up (both queries started, plans compiled), then
    ``count`` users follow one at a time; p50/p99/max of the time until each user's real-time view is served."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            run_stream(spark, conf, "events", trigger="processingTime", stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    runner = threading.Thread(target=serve, daemon=True)
    runner.start()
    store = open_store(conf)
    try:
        deliver(first_user)
        _wait(store, first_user, failure, 600)
        latencies = []
        for user in range(first_user + 1, first_user + 1 + count):
            sent = deliver(user)
            latencies.append(_wait(store, user, failure, 300) - sent)
    finally:
        stop.set()
        runner.join(600)
        store.close()
    latencies.sort()
    return {"p50_s": statistics.median(latencies),
            "p99_s": latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))],
            "max_s": latencies[-1]}


def freshness(spark: SparkSession, root: Path, files: int, interval: str, per_file: int) -> dict[str, float]:
    """Files landed one at a time; measured from the file's rename into landing."""
    base = root / "freshness"
    folder = base / "landing" / "events" / f"dt={dt.datetime.now(dt.UTC).date().isoformat()}"
    folder.mkdir(parents=True)

    def land(user: int) -> float:
        landed = time.perf_counter()
        _event_file(folder, per_file, user, dt.datetime.now(dt.UTC))
        return landed

    figures = _measure_freshness(spark, conf_at(base, **{"stream.interval": interval}), 9_000_000, files, land)
    return {"files": files, "events_per_file": per_file, "interval": interval, **figures}


def _wait(store, user: int, failure: list, timeout: float) -> float:
    """When ``user`` appears in the real-time view (perf_counter seconds)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if failure:
            raise failure[0]
        if store.get_realtime(user) is not None:
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(f"user {user} never reached the real-time view")


def kafka_available() -> str | None:
    """None when the Kafka part can run, else why not."""
    if not jvm.connector("kafka").usable:
        return jvm.connector("kafka").reason
    if not jvm.kafka_broker_jars():
        return "no Kafka broker jars in jars/kafka-broker (./setup.sh jvm)"
    return None


def _kafka_conf(root: Path, broker, **extra: object):
    return conf_at(root, **{"stream.source": "kafka", "stream.kafka.bootstrap_servers": broker.bootstrap,
                            "stream.kafka.topic": "events", **extra})


def kafka_throughput(spark: SparkSession, broker, root: Path, events: int) -> dict[str, float]:
    """The ``--events`` day published to the topic, then bronze alone from Kafka (availableNow)."""
    source = root / "kafka-source"
    _land_day(source, events)
    lines = []
    for path in sorted((source / "events").rglob("part-*")):
        with (gzip.open if path.name.endswith(".gz") else open)(path, "rt") as fh:
            lines += [line.rstrip("\n") for line in fh if line.strip()]
    start = time.perf_counter()
    broker.produce("events", lines)
    produce_s = time.perf_counter() - start
    conf = _kafka_conf(root / "kafka-throughput", broker)
    start = time.perf_counter()
    result = run_stream(spark, conf, "events", trigger="availableNow", realtime=False)
    bronze_s = time.perf_counter() - start
    assert result.bronze.rows == len(lines), (result.bronze.rows, len(lines))
    return {"records": len(lines), "produce_s": produce_s, "bronze_s": bronze_s,
            "bronze_events_per_s": len(lines) / bronze_s}


def kafka_freshness(spark: SparkSession, broker, root: Path, files: int, interval: str,
                    per_file: int) -> dict[str, float]:
    """Batches of a new user's records published one at a time; measured from the broker's ack (acks=all)."""
    broker.create_topic("fresh", partitions=2)
    conf = _kafka_conf(root / "kafka-freshness", broker, **{"stream.interval": interval,
                                                            "stream.kafka.topic": "fresh"})

    def publish(user: int) -> float:
        ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        broker.produce("fresh", [json.dumps({"event_id": f"e{user * 1000 + i:016x}", "user_id": user,
                                             "item_id": 1 + i % 50, "type": "view", "ts": ts})
                                 for i in range(per_file)])
        return time.perf_counter()

    figures = _measure_freshness(spark, conf, 8_000_000, files, publish)
    return {"batches": files, "records_per_batch": per_file, "interval": interval, **figures}


def kafka_phase(spark: SparkSession, root: Path, args: argparse.Namespace) -> None:
    from tests.kafka_broker import KafkaBroker

    with KafkaBroker(root / "kafka") as broker:
        broker.create_topic("events", partitions=2)
        print(json.dumps({"kafka_throughput": kafka_throughput(spark, broker, root, args.events)}, indent=2),
              flush=True)
        print(json.dumps({"kafka_freshness": kafka_freshness(spark, broker, root, args.files, args.interval,
                                                             args.per_file)}, indent=2), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--files", type=int, default=20, help="files landed one by one for the freshness figures")
    p.add_argument("--per-file", type=int, default=50, help="events per freshness file")
    p.add_argument("--interval", default="1 second")
    p.add_argument("--repeats", type=int, default=3, help="measured rounds of the throughput figures")
    p.add_argument("--no-kafka", action="store_true", help="leave out the Kafka part")
    p.add_argument("--only-kafka", action="store_true", help="the Kafka part alone")
    args = p.parse_args()
    # a SIGTERM (timeout, CI) unwinds like Ctrl-C: the broker and the queries are stopped by the finally blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    missing = None if args.no_kafka else kafka_available()
    if missing and not args.no_kafka:
        print(f"Kafka part left out: {missing}", flush=True)
    kafka = not args.no_kafka and missing is None
    spark = session(kafka)
    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        # each phase is printed as soon as it is measured
        print(json.dumps({"warm_up": warm_up(spark, root)}, indent=2), flush=True)
        if not args.only_kafka:
            print(json.dumps({"throughput": throughput(spark, root, args.events, args.repeats)}, indent=2), flush=True)
            print(json.dumps({"freshness": freshness(spark, root, args.files, args.interval, args.per_file)},
                             indent=2), flush=True)
        if kafka:
            kafka_phase(spark, root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
