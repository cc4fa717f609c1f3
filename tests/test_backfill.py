"""Range runs: ingest and curate a range of dates in one pass, validate it date by date, each date recorded and
idempotent on its own (a re-run skips before reading data), the pipeline's backfill running its range steps once
over the dates, write sizes, per-model train markers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from lakeloop import cli, pipeline, tables
from lakeloop.curate import curate, curate_source, report_uri
from lakeloop.errors import EXIT_DATA_QUALITY, DataQualityError
from lakeloop.ingest import ingest
from lakeloop.job import JobResult, date_summaries, per_date_summary, run_dates
from lakeloop.pipeline import Step, run_pipeline
from lakeloop.validate import run_validate
from test_curate import eid, ev
from test_ingest import land

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
TABLES = ("bronze.events", "silver.events", "silver.events_quarantine", "_state.ingest_ledger")


def land_days(conf, bad_day: str | None = None) -> None:
    """Per date: event eid(1) (on every date: kept once per date), one event of the date, a broken line;
    the second date also repeats its own event (a duplicate); ``bad_day`` gets three more broken lines."""
    for i, day in enumerate(DAYS):
        lines = [ev(event_id=eid(1)), ev(event_id=eid(10 + i)), "{broken"]
        lines += [ev(event_id=eid(10 + i))] if i == 1 else []
        lines += ["{broken"] * 3 if day == bad_day else []
        land(conf, "events", "part-00000.jsonl", lines, date=day)


def state(spark, conf, names=TABLES) -> list[tuple]:
    """Version and sorted rows of every table the range wrote."""
    out = []
    for name in names:
        uri = conf.table_uri(name)
        out.append((name, tables.version(uri), sorted(map(repr, tables.read(spark, uri).collect()))))
    return out


def test_range_ingest_and_curate_in_one_pass_then_a_single_date_rerun_changes_nothing(spark, conf):
    # two events a day: their ids are all different, so event_id's PSI means nothing here
    conf = conf.with_overrides({"curate.max_quarantine_rate": 0.5,
                                "validate.columns": {"silver.events.event_id": "ignore"}})
    land_days(conf)
    results = ingest(spark, conf, DAYS, ["events"], batch_id=lambda d: f"{d}-r1")
    rows = list(zip(DAYS, (3, 4, 3), strict=True))
    assert [(r.dt, r.rows, r.batch_id) for r in results] == [(d, n, f"{d}-r1") for d, n in rows]
    assert {r.bronze_version for r in results} == {0}  # one bronze commit for the whole range
    bronze = tables.read(spark, conf.table_uri("bronze.events"))
    assert sorted((r["dt"], r["_batch_id"], r["c"]) for r in bronze.groupBy("dt", "_batch_id").count()
                  .withColumnRenamed("count", "c").collect()) == [(d, f"{d}-r1", n) for d, n in rows]

    reports = curate(spark, conf, DAYS, ["events"], run_id="r1")
    assert [(r.dt, r.bronze_rows, r.silver_rows, r.quarantine_rows) for r in reports] == [
        (DAYS[0], 3, 2, 1), (DAYS[1], 4, 2, 2), (DAYS[2], 3, 2, 1)]
    assert all(r.reconciled for r in reports) and reports[1].quarantine_by_reason["duplicate"] == 1
    assert {r.silver_version for r in reports} == {0}  # one silver commit for the range
    on_disk = json.loads(Path(report_uri(conf, "events", DAYS[1])).read_text())
    assert (on_disk["dt"], on_disk["run_id"], on_disk["silver_rows"]) == (DAYS[1], "r1", 2)
    silver = tables.read(spark, conf.table_uri("silver.events"))
    assert sorted((r["dt"], r["event_id"]) for r in silver.collect()) == sorted(
        [(d, eid(1)) for d in DAYS] + [(d, eid(10 + i)) for i, d in enumerate(DAYS)])

    for table in ("bronze.events", "silver.events", "silver.events_quarantine"):  # a small day is one file
        assert {d: len(sizes) for d, sizes in files_per_date(conf, table).items()} == {d: 1 for d in DAYS}, table

    checked = run_validate(spark, conf, [dt.date.fromisoformat(d) for d in DAYS], "r1", ["silver.events"])
    assert [(r.dt, r.baseline_dt, r.skipped) for r in checked] == [(DAYS[0], None, False), (DAYS[1], DAYS[0], False),
                                                                   (DAYS[2], DAYS[1], False)]

    before = state(spark, conf, (*TABLES, "_state.column_stats"))
    (revalidated,) = run_validate(spark, conf, dt.date.fromisoformat(DAYS[1]), "r2", ["silver.events"])
    assert revalidated.skipped and revalidated.run_id == "r1" and revalidated.baseline_dt == DAYS[0]
    (again,) = ingest(spark, conf, DAYS[1], ["events"])
    assert (again.rows, again.already_ingested, again.files) == (0, 1, [])
    rerun = curate_source(spark, conf, "events", DAYS[1], run_id="r2")
    assert rerun.skipped and (rerun.run_id, rerun.silver_rows) == ("r1", 2)  # the run that did the work
    assert state(spark, conf, (*TABLES, "_state.column_stats")) == before

    # the date curated alone gives the rows the range gave it
    day_rows = sorted(map(repr, silver.where(f"dt = '{DAYS[1]}'").collect()))
    forced = curate_source(spark, conf, "events", DAYS[1], run_id="r3", force=True)
    assert not forced.skipped and forced.silver_rows == 2
    after = tables.read(spark, conf.table_uri("silver.events"))
    assert sorted(map(repr, after.where(f"dt = '{DAYS[1]}'").collect())) == day_rows
    assert after.count() == 6


def test_a_pipeline_backfill_writes_the_dates_that_pass_and_stops_at_the_first_that_fails(spark, conf):
    land_days(conf, bad_day=DAYS[1])
    args = ["--set", f"warehouse={conf.path('warehouse')}", "--set", f"landing={conf.path('landing')}",
            "--set", "curate.max_quarantine_rate=0.5", "--source", "events", "--step", "ingest", "--step", "curate"]
    assert pipeline.load_job("pipeline").main([*args, "--from", DAYS[0], "--to", DAYS[2]]) == EXIT_DATA_QUALITY
    silver = tables.read(spark, conf.table_uri("silver.events"))
    assert sorted({r["dt"] for r in silver.collect()}) == [DAYS[0], DAYS[2]]
    quarantine = tables.read(spark, conf.table_uri("silver.events_quarantine"))
    assert quarantine.where(f"dt = '{DAYS[1]}'").count() == 5
    assert tables.version(conf.table_uri("bronze.events")) == 0  # one ingest commit for the range
    state = pipeline.state_dir(conf)
    marker = json.loads((state / f"dt={DAYS[2]}" / "curate.json").read_text())
    assert marker["summary"]["sources"]["events"]["silver_rows"] == 2
    assert marker["summary"]["range"] == f"{DAYS[0]}..{DAYS[2]}"
    assert not (state / f"dt={DAYS[1]}" / "curate.json").exists()
    with pytest.raises(DataQualityError, match=f"dt={DAYS[1]}"):
        curate_source(spark, conf, "events", DAYS[1])
    assert curate_source(spark, conf, "events", DAYS[2]).skipped  # the dates that passed are done


def test_run_dates_and_per_date_summaries(conf):
    import argparse

    def ns(**kw):
        return argparse.Namespace(**{"date": None, "first": None, "last": None, **kw})

    today = dt.date(2026, 11, 5)
    assert run_dates(today, ns()) == [today]
    assert run_dates(today, ns(first=DAYS[0], last=DAYS[2])) == [dt.date.fromisoformat(d) for d in DAYS]
    from lakeloop.conf import ConfError

    for bad in (ns(first=DAYS[0]), ns(first=DAYS[2], last=DAYS[0]), ns(date=DAYS[0], first=DAYS[0], last=DAYS[1])):
        with pytest.raises(ConfError):
            run_dates(today, bad)

    class R:
        def __init__(self, day, n):
            self.dt, self.n = day, n

    results = [R(DAYS[0], 1), R(DAYS[1], 2), R(DAYS[1], 3)]
    summary = per_date_summary(DAYS[:2], results, lambda rs: {"n": sum(r.n for r in rs)})
    assert date_summaries(summary, DAYS[:2]) == {DAYS[0]: {"n": 1}, DAYS[1]: {"n": 5}}
    assert date_summaries(per_date_summary(DAYS[:1], results[:1], lambda rs: {"n": 1}), DAYS[:1]) == {
        DAYS[0]: {"n": 1}}


class RangeRecorder:
    """Step mains for the pipeline: ranged steps record their --from/--to, others their --date;
    ``failed[name]`` lists dates the step reports as failed (exit code 3)."""

    def __init__(self, failed: dict[str, list[str]] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failed = failed or {}

    def step(self, name: str, ranged: bool) -> Step:
        def main(argv):
            if "--from" in argv:
                dates = [d.isoformat() for d in pipeline.date_range(
                    dt.date.fromisoformat(argv[argv.index("--from") + 1]),
                    dt.date.fromisoformat(argv[argv.index("--to") + 1]))]
                self.calls.append((name, f"{dates[0]}..{dates[-1]}"))
            else:
                dates = [argv[argv.index("--date") + 1]]
                self.calls.append((name, dates[0]))
            bad = [d for d in dates if d in self.failed.get(name, [])]
            summary = per_date_summary(dates, [type("R", (), {"dt": d})() for d in dates],
                                       lambda rs: {"rows": len(rs)})
            return cli.Outcome(EXIT_DATA_QUALITY if bad else 0, JobResult(None, {**summary, "failed": bad}))
        return Step(name, main=main, ranged=ranged)


def test_pipeline_backfill_runs_range_steps_once_and_daily_steps_per_date(conf):
    rec = RangeRecorder()
    days = [dt.date.fromisoformat(d) for d in DAYS]
    steps = [rec.step("ingest", True), rec.step("curate", True), rec.step("train", False)]
    result = run_pipeline(conf, days, [], "b1", steps=steps)
    assert result.exit_code == 0
    assert rec.calls == [("ingest", f"{DAYS[0]}..{DAYS[2]}"), ("curate", f"{DAYS[0]}..{DAYS[2]}"),
                         ("train", DAYS[0]), ("train", DAYS[1]), ("train", DAYS[2])]
    markers = pipeline.state_dir(conf)
    for day in DAYS:
        marker = json.loads((markers / f"dt={day}" / "curate.json").read_text())
        assert marker["date"] == day and marker["summary"]["rows"] == 1
    assert [(r.date, r.step) for r in result.steps][:3] == [(DAYS[0], "ingest"), (DAYS[0], "curate"),
                                                            (DAYS[0], "train")]
    # a second backfill over a longer range runs the range steps only for the new date
    rec.calls.clear()
    more = days + [days[-1] + dt.timedelta(days=1)]
    run_pipeline(conf, more, [], "b2", steps=steps)
    assert rec.calls == [("ingest", "2026-11-04"), ("curate", "2026-11-04"), ("train", "2026-11-04")]


def test_pipeline_backfill_stops_at_the_first_date_a_range_step_fails(conf):
    rec = RangeRecorder(failed={"curate": [DAYS[1]]})
    days = [dt.date.fromisoformat(d) for d in DAYS]
    steps = [rec.step("ingest", True), rec.step("curate", True), rec.step("validate", True), rec.step("train", False)]
    result = run_pipeline(conf, days, [], "b1", steps=steps)
    assert result.exit_code == EXIT_DATA_QUALITY
    assert rec.calls == [("ingest", f"{DAYS[0]}..{DAYS[2]}"), ("curate", f"{DAYS[0]}..{DAYS[2]}"),
                         ("validate", DAYS[0]), ("train", DAYS[0])]
    status = {(r.date, r.step): r.status for r in result.steps}
    assert status[(DAYS[1], "curate")] == "failed" and status[(DAYS[1], "validate")] == "not_run"
    assert status[(DAYS[2], "curate")] == "ok"  # finished by the same call: marked, not re-run next time
    assert status[(DAYS[0], "train")] == "ok" and (DAYS[2], "train") not in status
    assert not (pipeline.state_dir(conf) / f"dt={DAYS[1]}" / "curate.json").exists()


def files_per_date(conf, table: str) -> dict[str, list[int]]:
    """Sizes of the data files of each ``dt`` in ``table``'s latest snapshot."""
    import pyarrow as pa
    from lakeloop.delta.log import load_table, locate

    actions = pa.table(load_table(locate(conf.table_uri(table))).get_add_actions(flatten=True))
    out: dict[str, list[int]] = {}
    for day, size in zip(actions.column("partition.dt").to_pylist(), actions.column("size_bytes").to_pylist(),
                         strict=True):
        out.setdefault(day, []).append(size)
    return out


def test_a_large_partition_is_split_near_the_target_file_size(spark, conf):
    from lakeloop.filesize import row_bytes, sized
    from lakeloop.lake import Lake
    from pyspark.sql import functions as F

    lake = Lake.from_conf(conf)
    frame = (spark.range(20_000).select((F.col("id") * 7919 % 1_000_003).alias("n"),
                                        F.sha2(F.col("id").cast("string"), 256).alias("s"),
                                        F.when(F.col("id") < 200, F.lit(DAYS[0])).otherwise(F.lit(DAYS[1]))
                                        .alias("dt")))
    lake.write(frame.coalesce(1), "silver.sizes", partition_by=["dt"])  # gives the table its bytes per row
    per_row = row_bytes(lake, "silver.sizes")
    target = int(per_row * 19_800 / 4)  # the big date needs 4 files
    lake.write(sized(frame, {DAYS[0]: 200, DAYS[1]: 19_800}, per_row, target), "silver.sizes", mode="overwrite",
               partition_by=["dt"])
    sizes = files_per_date(conf, "silver.sizes")
    assert len(sizes[DAYS[0]]) == 1
    assert 3 <= len(sizes[DAYS[1]]) <= 5 and all(size < 1.6 * target for size in sizes[DAYS[1]])
    assert tables.read(spark, conf.table_uri("silver.sizes")).count() == 20_000


def test_a_failed_train_of_one_model_never_shows_another_models_outcome(conf):
    """Markers are per model: a run of model B on a date where model A trained runs B's training, and when it
    fails the run's closed loop has no line of A's outcome."""
    from lakeloop import closed_loop

    promoted = {"model_name": "a", "model_version": "1", "mlflow_run_id": "m1",
                "gate": {"metric": "auc", "decision": "promoted", "challenger_value": 0.915}}

    def train(rc: int, summary: dict):
        return Step("train", main=lambda argv: cli.Outcome(rc, JobResult(None, summary) if summary else None))

    day = [dt.date.fromisoformat(DAYS[0])]
    first = run_pipeline(conf.with_overrides({"train.model": "a"}), day, [], "r1", steps=[train(0, promoted)])
    assert closed_loop.format_table(closed_loop.rows_from_steps(first.steps))[1].split()[2:4] == ["promoted", "0.9150"]
    second = run_pipeline(conf.with_overrides({"train.model": "b"}), day, [], "r2", steps=[train(3, {})])
    assert [(r.step, r.status, r.exit_code) for r in second.steps] == [("train", "failed", 3)]
    assert closed_loop.rows_from_steps(second.steps) == []
    state = pipeline.state_dir(conf) / f"dt={DAYS[0]}"
    assert sorted(p.name for p in state.glob("train*.json")) == ["train@a.json"]
    # the same model again: its own marker, skipped
    again = run_pipeline(conf.with_overrides({"train.model": "a"}), day, [], "r3", steps=[train(3, {})])
    assert [r.status for r in again.steps] == ["skipped"]
